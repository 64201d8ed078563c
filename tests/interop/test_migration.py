"""Migration: a flanneld node is replaced by pyflannel (same subnet.env, same public IP) and back.

The node keeps its subnet and its subnet file (pyflannel also keeps flanneld's etcd lease); its
peers (one flanneld, one pyflannel) keep reaching it, with full-MTU DF pings both ways.
"""

from __future__ import annotations

import pytest

from pyflannel_lab.agents import FLANNELD, PYFLANNEL, AgentCluster
from pyflannel_lab.peers import Peers
from tests.interop.support import etcd_lease_id, full_mtu_ping, leases_of, mixed_cluster

SWAPPED = 1  # h1 and h3 start as flanneld, h2 is pyflannel


def swap(cluster: AgentCluster, kind: str) -> None:
    """Stop what runs on the swapped host and start `kind` there, with the same files."""
    subnet, env, etcd_lease = (
        cluster.subnet(SWAPPED),
        cluster.env_text(SWAPPED),
        etcd_lease_id(cluster, SWAPPED),
    )
    # flanneld v0.20.2 panics on SIGTERM (exit status 2) after writing everything: not ours.
    cluster.stop(SWAPPED)
    cluster.set_kind(SWAPPED, kind)
    cluster.start(SWAPPED, timeout=30)
    assert cluster.subnet(SWAPPED) == subnet
    assert cluster.env_text(SWAPPED) == env
    if kind == PYFLANNEL:
        # pyflannel adopts the running etcd lease; flanneld (updateSubnet) always grants a new one.
        assert etcd_lease_id(cluster, SWAPPED) == etcd_lease, "the etcd lease was not kept"
    assert etcd_lease_id(cluster, SWAPPED) != 0
    assert leases_of(cluster, SWAPPED) == [cluster.lease_key(SWAPPED)]
    cluster.wait_converged(30)
    for peer in (2, 3):
        full_mtu_ping(cluster, SWAPPED, peer)
        full_mtu_ping(cluster, peer, SWAPPED)


@pytest.mark.parametrize("backend", ["udp", "vxlan", "host-gw"])
def test_flanneld_node_becomes_pyflannel_and_back(lab_ready: Peers, backend: str) -> None:
    with mixed_cluster(lab_ready, backend, (1, 3)) as cluster:
        swap(cluster, PYFLANNEL)
        assert "reusing own lease" in cluster.log(SWAPPED)
        swap(cluster, FLANNELD)
        assert "Found lease" in cluster.log(SWAPPED) and "reusing" in cluster.log(SWAPPED)
