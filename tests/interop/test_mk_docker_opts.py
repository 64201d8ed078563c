"""mk-docker-opts against flannel v0.20.2's mk-docker-opts.sh: byte-identical output files.

Every combination of the switches (-i, -c, -m, -k NAME) on subnet files as flanneld writes them
(IP masquerading on and off, every backend's MTU, dual stack). Both run with an empty
environment: the script starts the combined variable from an exported one of the same name.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pyflannel_lab.peers import Peers
from tests.interop.support import run_both_mk_docker_opts

SUBNET_FILES = {
    "vxlan": "FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.50.1/24\n"
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    "udp-ipmasq": "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.201.1/24\n"
    "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
    "host-gw-/26": "FLANNEL_NETWORK=10.244.0.0/20\nFLANNEL_SUBNET=10.244.3.129/26\n"
    "FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
    "dual-stack": "FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.7.1/24\n"
    "FLANNEL_IPV6_NETWORK=fd00:64::/56\nFLANNEL_IPV6_SUBNET=fd00:64:0:7::1/64\n"
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
}
SWITCHES = [
    [s for s in combo if s]
    for combo in itertools.product(("", "-i"), ("", "-c"), ("", "-m"), ("", "-kFLANNEL_OPTS"))
]


@pytest.mark.parametrize("name", SUBNET_FILES)
@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: " ".join(s) or "none")
def test_output_is_the_scripts_byte_for_byte(
    peers: Peers, tmp_path: Path, name: str, switches: list[str]
) -> None:
    run_both_mk_docker_opts(peers, tmp_path, SUBNET_FILES[name], switches)
