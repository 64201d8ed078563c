#!/usr/bin/env bash
# The local lab (make lab / make lab-down): three systemd node containers on an internal Docker
# network, provisioned by site.yml through inventory/lab, then a ping matrix and one line per
# node (subnet, MTU, backend).
#   scripts/lab.sh up [vxlan|udp|host-gw|ipip]   create or reuse the nodes, run site.yml
#   scripts/lab.sh down                          remove nodes, their volumes and the network
# Running `up` again with another backend switches the running lab to it (a day-2 change).
# Installs what is missing: Python packages (the provision extra), docker.io and dockerd
# (scripts/ensure-dockerd.sh), the node and busybox images (scripts/build-images.sh).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_IMAGE=pyflannel-node:bookworm-plain
NETWORK=pyflannel-lab
BRIDGE=pyfl-lab
# A documentation range the test machines do not use themselves (192.0.2.0/24 is their own
# network, 203.0.113.0/24 holds their package proxy); molecule uses 198.51.100.0/26.
SUBNET=${PYFLANNEL_LAB_SUBNET:-198.51.100.64/26}
NODES=(pyflannel-lab-1 pyflannel-lab-2 pyflannel-lab-3)
LABEL=pyflannel.lab=1
BACKENDS=(vxlan udp host-gw ipip)
REPORT="$REPO/build/lab/ping-matrix.txt"
BOOT_TIMEOUT=120

# systemd as PID 1 without --privileged; /var/lib/docker is an anonymous volume (nested
# overlayfs does not work), removed with the node (docker rm -v).
# shellcheck source=scripts/node-run-flags.sh
. "$REPO/scripts/node-run-flags.sh"
NODE_RUN_FLAGS+=(-v /var/lib/docker)

log() { echo "lab: $*"; }
die() { echo "lab: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 up [vxlan|udp|host-gw|ipip] | down"
}

# ansible-playbook with the community.docker and ansible.posix collections (the ansible
# package) and ansible-runner (pyflannel_lab.lab_site drives it), from the provision extra of
# pyproject.toml.
ensure_python_packages() {
    if command -v ansible-playbook >/dev/null 2>&1 &&
        python3 -c 'import ansible_collections.community.docker, ansible_collections.ansible.posix
import ansible_runner' >/dev/null 2>&1; then
        return 0
    fi
    log "installing the provisioner's Python packages (pip install -e '.[provision]')"
    python3 -m pip install -q -e "${REPO}[provision]" ||
        die "pip could not install the provision extra; see the message above"
}

ensure_docker_and_images() {
    bash "$REPO/scripts/ensure-dockerd.sh"
    bash "$REPO/scripts/build-images.sh"
}

# The lab network must not shadow a route this machine uses (its own network, its package
# proxy): refuse a subnet that overlaps any non-default route unless it is the lab's own.
check_subnet_free() {
    docker network inspect "$NETWORK" >/dev/null 2>&1 && return 0
    local clash
    clash=$(python3 "$REPO/scripts/subnet-in-use.py" "$SUBNET") || true
    [ -z "$clash" ] || die "subnet $SUBNET is in use here ($clash); set PYFLANNEL_LAB_SUBNET to a free one"
}

# host-gw sends container traffic between the nodes unencapsulated; with br_netfilter on,
# Docker's isolation rules for internal networks would drop those bridged frames. Accept what
# enters and leaves the lab's own bridge (it never leaves the bridge).
BRIDGE_RULE=(DOCKER-USER -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "pyflannel lab" -j ACCEPT)

allow_bridged_frames() {
    iptables -C "${BRIDGE_RULE[@]}" 2>/dev/null || iptables -I "${BRIDGE_RULE[@]}"
}

start_nodes() {
    if ! docker network inspect "$NETWORK" >/dev/null 2>&1; then
        docker network create --internal --subnet "$SUBNET" --label "$LABEL" \
            --opt "com.docker.network.bridge.name=$BRIDGE" "$NETWORK" >/dev/null
        log "network $NETWORK ($SUBNET, internal, bridge $BRIDGE)"
    fi
    allow_bridged_frames
    local node
    for node in "${NODES[@]}"; do
        if docker container inspect "$node" >/dev/null 2>&1; then
            [ "$(docker inspect -f '{{.State.Running}}' "$node")" = true ] || docker start "$node" >/dev/null
            log "$node: reused"
        else
            docker run -d --name "$node" --hostname "$node" --label "$LABEL" \
                --network "$NETWORK" "${NODE_RUN_FLAGS[@]}" "$NODE_IMAGE" >/dev/null
            log "$node: created"
        fi
    done
}

wait_booted() {
    local node state deadline=$((SECONDS + BOOT_TIMEOUT))
    for node in "${NODES[@]}"; do
        # Until systemd's bus is up, systemctl prints nothing and gives up at once: ask again.
        while :; do
            state=$(timeout "$BOOT_TIMEOUT" docker exec "$node" systemctl is-system-running \
                --wait 2>/dev/null || true)
            [ -z "$state" ] && [ "$SECONDS" -lt "$deadline" ] || break
            sleep 1
        done
        case "$state" in
            running | degraded) ;;
            *) die "$node: systemd did not boot within ${BOOT_TIMEOUT}s (state '${state:-none}')" ;;
        esac
    done
}

run_site() {
    local backend=$1
    mkdir -p "$(dirname "$REPORT")"
    # The report is not removed first: rewriting an identical matrix would make a re-run
    # report changed=1. A failed playbook stops this script before the report is printed.
    # The agent the flannel role installs: this tree's wheelhouse (make dist).
    bash "$REPO/scripts/build-dist.sh" wheelhouse || die "could not build dist/wheelhouse"
    log "ansible-playbook -i inventory/lab site.yml -e flannel_network_backend=$backend (ansible-runner)"
    # Plays and failures as they happen, then changed/failed per node from the runner's events.
    (cd "$REPO" && python3 -m pyflannel_lab.lab_site "$backend")
}

# One line per node: its underlay address, subnet, MTU (subnet.env) and the backend of its
# lease in etcd.
node_lines() {
    local node
    for node in "${NODES[@]}"; do
        docker exec "$node" sh -c '
            # etcdctl.env: the member URL and, with TLS, the CA and admin certificate.
            set -a; . /etc/default/flanneld; . "${FLANNELD_SUBNET_FILE:-/run/flannel/subnet.env}"
            . /etc/etcd/etcdctl.env
            subnet=$(python3 -c "import ipaddress, sys; print(ipaddress.ip_interface(sys.argv[1]).network)" \
                "$FLANNEL_SUBNET")
            lease=$(etcdctl get \
                --print-value-only "$FLANNELD_ETCD_PREFIX/subnets/$(echo "$subnet" | tr / -)")
            backend=$(echo "$lease" | sed -n "s/.*\"BackendType\": *\"\([^\"]*\)\".*/\1/p")
            ip=$(echo "$lease" | sed -n "s/.*\"PublicIP\": *\"\([^\"]*\)\".*/\1/p")
            printf "%-17s %-15s subnet %-15s MTU %-5s backend %s\n" \
                "$(hostname)" "$ip" "$subnet" "$FLANNEL_MTU" "${backend:-?}"'
    done
}

up() {
    local backend=${1:-vxlan}
    [[ " ${BACKENDS[*]} " == *" $backend "* ]] || { usage >&2; die "unknown backend '$backend'"; }
    ensure_python_packages
    ensure_docker_and_images
    check_subnet_free
    start_nodes
    wait_booted
    run_site "$backend"
    echo
    [ -s "$REPORT" ] && cat "$REPORT"
    echo
    node_lines
    echo
    log "up ($backend). Shell on a node: docker exec -it ${NODES[0]} bash; remove: make lab-down"
}

down() {
    local -a ids
    mapfile -t ids < <(docker container ls -aq --filter "label=$LABEL")
    if [ "${#ids[@]}" -gt 0 ]; then
        docker container rm -f -v "${ids[@]}" >/dev/null
        log "removed ${#ids[@]} node(s) and their volumes"
    fi
    mapfile -t ids < <(docker network ls -q --filter "label=$LABEL")
    if [ "${#ids[@]}" -gt 0 ]; then
        docker network rm "${ids[@]}" >/dev/null
        log "removed network $NETWORK"
    fi
    while iptables -C "${BRIDGE_RULE[@]}" 2>/dev/null; do iptables -D "${BRIDGE_RULE[@]}"; done
    rm -rf "$REPO/build/lab"
    log "down"
}

main() {
    trap 'echo "lab: failed: $BASH_COMMAND (line $LINENO)" >&2' ERR
    case "${1:-}" in
        up) shift; [ $# -le 1 ] || { usage >&2; exit 2; }; up "$@" ;;
        down)
            shift
            [ $# = 0 ] || { usage >&2; exit 2; }
            if docker info >/dev/null 2>&1; then down; else log "no Docker daemon: nothing to remove"; fi
            ;;
        -h | --help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
