#!/usr/bin/env bash
# Smoke test of the node image: two systemd nodes on an internal Docker network, each
# installing docker.io with apt from the image's own apt cache (no mirror: the network is
# internal), its dockerd on a volume, busybox:local loaded from the image archive the way
# an air-gapped node would, and a busybox container run in each node. Everything it
# creates carries the label pyflannel.smoke and is removed on exit, pass or fail.
# Needs: scripts/ensure-dockerd.sh, then scripts/build-images.sh.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_IMAGE=pyflannel-node:bookworm-plain
BUSYBOX_IMAGE=busybox:local
BUSYBOX_ARCHIVE="$REPO/build/images/busybox-local.tar"
NETWORK=pft-smoke
# A documentation range that no route of this machine uses (its own network is 192.0.2.0/24
# on some of our machines); molecule and the lab use 198.51.100.0/26 and .64/26.
SUBNET=${PYFLANNEL_SMOKE_SUBNET:-198.51.100.128/26}
NODES=(pft-smoke-1 pft-smoke-2)
LABEL=pyflannel.smoke=1
BOOT_TIMEOUT=90
DOCKERD_TIMEOUT=60

# systemd as PID 1 in a container without --privileged.
# shellcheck source=scripts/node-run-flags.sh
. "$REPO/scripts/node-run-flags.sh"

T0=$(date +%s.%N)
PHASE_T=$T0
TIMINGS=()

log() { echo "node-smoke: $*"; }
die() { echo "node-smoke: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Record how long the phase that just ended took.
phase_done() {
    TIMINGS+=("$1 $(since "$PHASE_T")s")
    PHASE_T=$(now)
}

volume_of() { echo "$1-docker"; }

# Remove what this script creates, found by label so nothing else is touched.
# Containers first (forced: nodes are running), then the volumes and network they used.
cleanup() {
    local -a ids
    mapfile -t ids < <(docker container ls -aq --filter "label=$LABEL")
    [ "${#ids[@]}" = 0 ] || docker container rm -f "${ids[@]}" >/dev/null 2>&1 || true
    mapfile -t ids < <(docker volume ls -q --filter "label=$LABEL")
    [ "${#ids[@]}" = 0 ] || docker volume rm "${ids[@]}" >/dev/null 2>&1 || true
    mapfile -t ids < <(docker network ls -q --filter "label=$LABEL")
    [ "${#ids[@]}" = 0 ] || docker network rm "${ids[@]}" >/dev/null 2>&1 || true
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" != 0 ]; then
        diagnostics
    fi
    PHASE_T=$(now)
    cleanup
    TIMINGS+=("cleanup $(since "$PHASE_T")s")
    local t
    for t in "${TIMINGS[@]}"; do log "timing: $t"; done
    if [ "$rc" = 0 ]; then
        log "PASS in $(since "$T0")s"
    else
        log "FAIL in $(since "$T0")s"
    fi
    exit "$rc"
}

diagnostics() {
    local node
    for node in "${NODES[@]}"; do
        docker inspect "$node" >/dev/null 2>&1 || continue
        echo "---- $node: failed units and last journal lines" >&2
        docker exec "$node" systemctl --failed --no-legend --no-pager >&2 || true
        docker exec "$node" journalctl -b --no-pager -n 30 >&2 || true
    done
}

preflight() {
    docker info >/dev/null 2>&1 || die "docker does not answer; run scripts/ensure-dockerd.sh"
    local image
    for image in "$NODE_IMAGE" "$BUSYBOX_IMAGE"; do
        docker image inspect "$image" >/dev/null 2>&1 ||
            die "image $image is missing; run scripts/build-images.sh"
    done
    [ -s "$BUSYBOX_ARCHIVE" ] || die "$BUSYBOX_ARCHIVE is missing; run scripts/build-images.sh"
}

start_nodes() {
    docker network create --internal --subnet "$SUBNET" --label "$LABEL" "$NETWORK" >/dev/null ||
        die "cannot create network $NETWORK ($SUBNET); is another network using that subnet?"
    local node
    for node in "${NODES[@]}"; do
        docker volume create --label "$LABEL" "$(volume_of "$node")" >/dev/null
        docker run -d --name "$node" --hostname "$node" --label "$LABEL" \
            --network "$NETWORK" "${NODE_RUN_FLAGS[@]}" \
            -v "$(volume_of "$node"):/var/lib/docker" "$NODE_IMAGE" >/dev/null
    done
}

# "running" or "degraded" is a booted node; print failed units when degraded.
wait_booted() {
    local node=$1 state deadline=$((SECONDS + BOOT_TIMEOUT))
    # Until systemd's bus is up, systemctl prints nothing and gives up at once: ask again.
    while :; do
        state=$(timeout "$BOOT_TIMEOUT" docker exec "$node" systemctl is-system-running --wait \
            2>/dev/null || true)
        [ -z "$state" ] && [ "$SECONDS" -lt "$deadline" ] || break
        sleep 1
    done
    case "$state" in
        running) log "$node: systemd $state" ;;
        degraded)
            log "$node: systemd degraded; failed units:"
            docker exec "$node" systemctl --failed --no-legend --no-pager
            ;;
        *) die "$node: systemd did not boot within ${BOOT_TIMEOUT}s (state '${state:-none}')" ;;
    esac
}

# The plain image carries the .deb files and the apt lists, not the packages: the install
# must work without a mirror, as the roles' apt tasks do.
SMOKE_PACKAGES=(docker.io iputils-ping)

install_packages() {
    local node=$1
    docker exec -e DEBIAN_FRONTEND=noninteractive "$node" \
        apt-get install -y -qq --no-install-recommends "${SMOKE_PACKAGES[@]}" >/dev/null 2>&1 ||
        die "$node: apt-get install ${SMOKE_PACKAGES[*]} from the image's apt cache failed"
    log "$node: installed $(docker exec "$node" dpkg-query -W -f '${Package} ${Version}\n' \
        "${SMOKE_PACKAGES[@]}" | paste -sd ',' | sed 's/,/, /g')"
}

start_node_dockerd() {
    local node=$1 deadline
    docker exec "$node" systemctl start docker.service
    deadline=$((SECONDS + DOCKERD_TIMEOUT))
    until docker exec "$node" docker info >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$node: dockerd not answering after ${DOCKERD_TIMEOUT}s"
        sleep 1
    done
    log "$node: $(docker exec "$node" docker version --format 'dockerd {{.Server.Version}}')"
}

# Like an air-gapped node: the image comes as an archive, not from a registry.
load_busybox() {
    local node=$1
    docker cp "$BUSYBOX_ARCHIVE" "$node:/tmp/busybox-local.tar"
    docker exec "$node" docker load -q -i /tmp/busybox-local.tar >/dev/null
    docker exec "$node" rm -f /tmp/busybox-local.tar
}

# A busybox container on the node's own docker bridge pings its gateway: proves the
# nested dockerd can create containers, veths and a bridge inside the node.
run_busybox() {
    local node=$1 out
    out=$(docker exec "$node" docker run --rm "$BUSYBOX_IMAGE" \
        sh -c 'gw=$(ip route | awk "/^default/ { print \$3 }");
               ping -c 1 -W 2 "$gw" >/dev/null && echo "busybox ok, gateway $gw"') ||
        die "$node: busybox container failed: ${out:-no output}"
    [[ "$out" == "busybox ok"* ]] || die "$node: busybox container printed: $out"
    log "$node: $out"
}

# Node to node over the internal network ($SUBNET only).
ping_between_nodes() {
    local addr
    addr=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" \
        "${NODES[1]}")
    docker exec "${NODES[0]}" ping -c 1 -W 2 "$addr" >/dev/null ||
        die "${NODES[0]} cannot ping ${NODES[1]} at $addr"
    log "${NODES[0]} -> ${NODES[1]} ($addr): ping ok"
}

main() {
    [ $# = 0 ] || die "takes no arguments"
    preflight
    cleanup # leftovers of an interrupted run
    trap on_exit EXIT
    trap 'echo "node-smoke: failed: $BASH_COMMAND (line $LINENO)" >&2' ERR
    trap 'exit 130' INT TERM
    local node
    start_nodes
    phase_done "start containers"
    for node in "${NODES[@]}"; do wait_booted "$node"; done
    phase_done "systemd boot"
    for node in "${NODES[@]}"; do install_packages "$node"; done
    phase_done "docker.io, iputils-ping install from the apt cache"
    for node in "${NODES[@]}"; do start_node_dockerd "$node"; done
    phase_done "nested dockerd start"
    for node in "${NODES[@]}"; do load_busybox "$node"; done
    phase_done "busybox archive load"
    for node in "${NODES[@]}"; do run_busybox "$node"; done
    ping_between_nodes
    phase_done "busybox run + node ping"
}

main "$@"
