#!/usr/bin/env bash
# make test-molecule: every molecule scenario (`molecule test -s X`), in
# PYFLANNEL_MOLECULE_JOBS lanes (default 2) that take the next scenario from one queue; fails
# when any fails, after running all of them. Each scenario: three systemd nodes,
# site.yml, an idempotence run, testinfra + ping matrix, nodes removed (also on failure);
# default adds faults (a node restarted, an etcd member down when site.yml starts);
# live-switch instead, under live workload containers with pingers, switches the backend twice,
# rolls an agent upgrade, SIGKILLs every flanneld and runs a roll that must stop
# (molecule/live-switch/molecule.yml); day2-nodes runs remove-node, a rejoin, reset, a rebuild
# and etcd 3 -> 1 -> 3 instead of the idempotence run; join adds a node with --limit.
#   scripts/molecule-all.sh              default (vxlan), cni, udp, host-gw, ipip, live-switch, join, day2-nodes
#   scripts/molecule-all.sh udp ipip     only these
#   PYFLANNEL_MOLECULE_SCENARIOS="udp ipip" scripts/molecule-all.sh   the same (make test-molecule)
# Lanes: lane 1 uses PYFLANNEL_MOLECULE_PREFIX / _BRIDGE_PREFIX (pyflannel / pyfl), lane N
# appends N; the underlay PYFLANNEL_MOLECULE_SUBNET is split evenly between the lanes. Much of a
# scenario is waiting (systemd boots, dpkg, retries, pingers), so two lanes on two cores take
# about 0.6 of the serial time. Each scenario's output goes to build/molecule-logs/<name>.log;
# a failed scenario's log tail is printed.
# Starts dockerd and builds the images when missing (scripts/ensure-dockerd.sh,
# scripts/build-images.sh); dist/ (the wheelhouse and the collection, scripts/build-dist.sh)
# is built once and shared by all scenarios.
set -Euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Longest first, so the lanes end close together.
SCENARIOS=(live-switch day2-nodes join default cni udp host-gw ipip)
JOBS=${PYFLANNEL_MOLECULE_JOBS:-2}
PREFIX=${PYFLANNEL_MOLECULE_PREFIX:-pyflannel}
BRIDGE_PREFIX=${PYFLANNEL_MOLECULE_BRIDGE_PREFIX:-pyfl}
LOG_DIR=$REPO/build/molecule-logs
TAIL_LINES=200
# The scenarios' underlay (.config/molecule/config.yml reads the same variable).
export PYFLANNEL_MOLECULE_SUBNET=${PYFLANNEL_MOLECULE_SUBNET:-198.51.100.0/26}

log() { echo "molecule-all: $*"; }
die() { echo "molecule-all: $*" >&2; exit 1; }

# The nodes' network must not shadow a route this machine uses (its own network, its
# package proxy: pip and apt would break while a scenario runs).
check_subnet_free() {
    local clash
    clash=$(python3 "$REPO/scripts/subnet-in-use.py" "$PYFLANNEL_MOLECULE_SUBNET") || true
    [ -z "$clash" ] || die "subnet $PYFLANNEL_MOLECULE_SUBNET is in use here ($clash);" \
        "set PYFLANNEL_MOLECULE_SUBNET to a free one (or remove a leftover network)"
}

# The lane's share of the underlay: the N-th of JOBS equal subnets of PYFLANNEL_MOLECULE_SUBNET.
lane_subnet() {
    python3 - "$PYFLANNEL_MOLECULE_SUBNET" "$JOBS" "$1" <<'PY'
import ipaddress, math, sys
net, jobs, lane = ipaddress.ip_network(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bits = math.ceil(math.log2(jobs)) if jobs > 1 else 0
parts = list(net.subnets(prefixlen_diff=bits))
if net.prefixlen + bits > 29:
    sys.exit(f"PYFLANNEL_MOLECULE_SUBNET {net} is too small for {jobs} lanes; give a larger one")
print(parts[lane - 1])
PY
}

# Next scenario index from the shared queue (a counter file under a lock); empty when done.
next_index() {
    local i
    i=$(flock "$QUEUE.lock" bash -c 'i=$(cat "$1"); echo $((i + 1)) >"$1"; echo "$i"' _ "$QUEUE")
    [ "$i" -lt "${#RUN[@]}" ] && echo "$i"
}

run_lane() {
    local lane=$1 suffix="" i s start rc
    [ "$lane" = 1 ] || suffix=$lane
    export PYFLANNEL_MOLECULE_PREFIX=$PREFIX$suffix
    export PYFLANNEL_MOLECULE_BRIDGE_PREFIX=$BRIDGE_PREFIX$suffix
    PYFLANNEL_MOLECULE_SUBNET=$(lane_subnet "$lane") || exit 1
    export PYFLANNEL_MOLECULE_SUBNET
    while i=$(next_index); do
        s=${RUN[$i]}
        log "lane $lane ($PYFLANNEL_MOLECULE_PREFIX, $PYFLANNEL_MOLECULE_SUBNET): molecule test -s $s"
        start=$SECONDS
        molecule test -s "$s" >"$LOG_DIR/$s.log" 2>&1
        rc=$?
        if [ "$rc" = 0 ]; then
            echo "$s: passed in $((SECONDS - start))s" >"$LOG_DIR/$s.result"
        else
            echo "$s: FAILED (rc $rc) after $((SECONDS - start))s" >"$LOG_DIR/$s.result"
            log "$s failed; last $TAIL_LINES lines of $LOG_DIR/$s.log:"
            tail -n "$TAIL_LINES" "$LOG_DIR/$s.log"
        fi
        log "lane $lane: $(cat "$LOG_DIR/$s.result")"
    done
}

main() {
    local -a scenarios=("$@")
    if [ ${#scenarios[@]} -eq 0 ] && [ -n "${PYFLANNEL_MOLECULE_SCENARIOS:-}" ]; then
        read -r -a scenarios <<<"$PYFLANNEL_MOLECULE_SCENARIOS"
    fi
    [ ${#scenarios[@]} -gt 0 ] || scenarios=("${SCENARIOS[@]}")
    local s
    for s in "${scenarios[@]}"; do
        [ -f "$REPO/molecule/$s/molecule.yml" ] || die "no scenario molecule/$s"
    done
    [[ "$JOBS" =~ ^[1-8]$ ]] || die "PYFLANNEL_MOLECULE_JOBS=$JOBS: give a number of lanes from 1 to 8"
    # <prefix><lane>-nodes must fit Linux's 15 characters of a device name.
    [ "${#BRIDGE_PREFIX}" -le 8 ] ||
        die "PYFLANNEL_MOLECULE_BRIDGE_PREFIX=$BRIDGE_PREFIX: 8 characters at most (bridge <prefix><lane>-nodes)"
    command -v molecule >/dev/null 2>&1 ||
        die "molecule is missing; install the provision extra: pip install -e '.[provision]'"
    bash "$REPO/scripts/ensure-dockerd.sh" || die "no Docker daemon"
    bash "$REPO/scripts/build-images.sh" || die "could not build the node images"
    check_subnet_free
    cd "$REPO" || die "cannot cd to $REPO"
    # The scenarios test this tree: its wheelhouse and collection (make dist), built once for
    # all lanes.
    bash "$REPO/scripts/build-dist.sh" >/dev/null || die "could not build dist/ (scripts/build-dist.sh)"
    # The default scenario converges from the installed collection (molecule/default/molecule.yml).
    rm -rf "$REPO/build/collections"
    ANSIBLE_COLLECTIONS_PATH="$REPO/build/collections" ansible-galaxy collection install --no-deps \
        -p "$REPO/build/collections" "$REPO"/dist/pyflannel-overlay-*.tar.gz >/dev/null ||
        die "could not install the collection into build/collections"

    RUN=("${scenarios[@]}")
    mkdir -p "$LOG_DIR"
    for s in "${RUN[@]}"; do rm -f "$LOG_DIR/$s.log" "$LOG_DIR/$s.result"; done
    QUEUE=$LOG_DIR/.queue
    echo 0 >"$QUEUE"
    local total_start=$SECONDS lane lanes=$JOBS
    [ "$lanes" -le "${#RUN[@]}" ] || lanes=${#RUN[@]}
    local -a pids=()
    for ((lane = 1; lane <= lanes; lane++)); do
        run_lane "$lane" &
        pids+=($!)
    done
    # Stop the lanes (molecule destroys its nodes on SIGTERM) when this script is stopped.
    trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
    wait "${pids[@]}"
    trap - INT TERM

    local passed=0 failed=0 result
    for s in "${RUN[@]}"; do
        result=$(cat "$LOG_DIR/$s.result" 2>/dev/null || echo "$s: FAILED (did not run)")
        log "$result"
        case $result in *FAILED*) failed=$((failed + 1)) ;; *) passed=$((passed + 1)) ;; esac
    done
    log "total $((SECONDS - total_start))s in $lanes lanes"
    # Last, where a CI log's tail shows them: the failed tests and their assertion lines.
    for s in "${RUN[@]}"; do
        case $(cat "$LOG_DIR/$s.result" 2>/dev/null) in *passed*) continue ;; esac
        log "$s: failed tests and assertions (full log: $LOG_DIR/$s.log):"
        sed 's/\x1b\[[0-9;]*m//g' "$LOG_DIR/$s.log" |
            grep -E '(FAILED|ERROR) tests/|[│|] +E  |fatal: \[' | head -n 25
    done
    # A plain closing line CI can count: scenarios passed and failed.
    echo "molecule: ${passed} passed, ${failed} failed"
    [ "$failed" = 0 ]
}

main "$@"
