#!/usr/bin/env bash
# make test-molecule: every molecule scenario (`molecule test -s X`), one after another;
# fails when any fails, after running all of them. Each scenario: three systemd nodes,
# site.yml, an idempotence run, testinfra + ping matrix, nodes removed (also on failure);
# day2-nodes runs remove-node, a rejoin, reset and a rebuild instead of the idempotence run.
#   scripts/molecule-all.sh              default (vxlan), udp, host-gw, ipip, day2-nodes
#   scripts/molecule-all.sh udp ipip     only these
# Starts dockerd and builds the images when missing (scripts/ensure-dockerd.sh,
# scripts/build-images.sh); the pyflannel wheelhouse is built once (build/wheelhouse) and
# shared by all scenarios.
set -Euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIOS=(default udp host-gw ipip day2-nodes)
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

main() {
    local -a scenarios=("$@") results=()
    [ ${#scenarios[@]} -gt 0 ] || scenarios=("${SCENARIOS[@]}")
    local s
    for s in "${scenarios[@]}"; do
        [ -f "$REPO/molecule/$s/molecule.yml" ] || die "no scenario molecule/$s"
    done
    command -v molecule >/dev/null 2>&1 ||
        die "molecule is missing; install the provision extra: pip install -e '.[provision]'"
    bash "$REPO/scripts/ensure-dockerd.sh" || die "no Docker daemon"
    bash "$REPO/scripts/build-images.sh" || die "could not build the node images"
    check_subnet_free
    cd "$REPO" || die "cannot cd to $REPO"

    local failed=0 start total_start=$SECONDS rc
    for s in "${scenarios[@]}"; do
        log "== molecule test -s $s"
        start=$SECONDS
        molecule test -s "$s"
        rc=$?
        if [ "$rc" = 0 ]; then
            results+=("$s: passed in $((SECONDS - start))s")
        else
            results+=("$s: FAILED (rc $rc) after $((SECONDS - start))s")
            failed=1
        fi
    done
    for s in "${results[@]}"; do log "$s"; done
    log "total $((SECONDS - total_start))s"
    # A plain closing line CI can count: scenarios passed and failed.
    local n_failed
    n_failed=$(printf '%s\n' "${results[@]}" | grep -c FAILED || true)
    echo "molecule: $(( ${#results[@]} - n_failed )) passed, ${n_failed} failed"
    return "$failed"
}

main "$@"
