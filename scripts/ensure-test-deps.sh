#!/usr/bin/env bash
# Installs what the test tiers need when it is missing (idempotent, quick when all is there):
# Debian packages for the etcd/netns tiers (podman with runc and the standard CNI plugins for the
# CNI tests, BIRD 2 for the BGP ones) and the project with its test and provision extras.
# dockerd and the node images are handled by scripts/molecule-all.sh itself.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}

missing=()
for pair in etcd:etcd-server etcdctl:etcd-client ip:iproute2 iptables:iptables ping:iputils-ping \
    tcpdump:tcpdump iperf3:iperf3 make:make setpriv:util-linux pgrep:procps nsenter:util-linux \
    podman:podman runc:runc /usr/lib/cni/bridge:containernetworking-plugins bird:bird2; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "ensure-test-deps: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$PYTHON" -c 'import pyflannel, pyetcd, pyroute2, pytest, pytest_timeout, cryptography, ansible, molecule, testinfra, matplotlib, ansible_runner' \
    >/dev/null 2>&1; then
    echo "ensure-test-deps: pip install -e '${REPO}[test,provision,bench]'"
    "$PYTHON" -m pip install -q -e "${REPO}[test,provision,bench]"
fi
