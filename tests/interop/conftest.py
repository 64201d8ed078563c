"""Fixtures for the interop tier: the real flanneld v0.20.2 next to pyflannel in namespace labs.

The tier never skips: without flanneld (see pyflannel_lab/peers.py), root or etcd every test
fails with one line saying what is missing and how to get it.
"""

from __future__ import annotations

import os
import shutil

import pytest

from pyflannel_lab.etcd_member import ETCD_BIN
from pyflannel_lab.peers import Peers, PeersMissingError, locate


@pytest.fixture(scope="session")
def peers() -> Peers:
    try:
        return locate()
    except PeersMissingError as exc:
        pytest.fail(f"interop tier: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def lab_ready(peers: Peers) -> Peers:
    """The peers plus what a namespace lab needs (root, etcd, tcpdump)."""
    if os.geteuid() != 0:
        pytest.fail("interop tier: run as root (network namespaces)", pytrace=False)
    for tool in (ETCD_BIN, "tcpdump", "iptables"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"interop tier: {tool} is missing; run `make deps` (scripts/ensure-test-deps.sh)",
                pytrace=False,
            )
    return peers
