"""flannelctl and flanneld: a config and reservations written by flannelctl, used by both kinds.

h1 and h3 run flanneld v0.20.2, h2 and h4 pyflannel. Before any agent starts, flannelctl writes
the config (VNI 9, SubnetMin/SubnetMax narrower than the Network) and one reservation per node:
h1 and h2 inside SubnetMin..SubnetMax, h3 and h4 outside it (still inside the Network).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest

from pyflannel_lab.agents import AgentCluster
from pyflannel_lab.peers import Peers
from tests.interop.support import etcd_lease_id, flannelctl, link_details, mixed_cluster

CONFIG = {
    "Network": "10.100.0.0/16",
    "SubnetLen": 24,
    "SubnetMin": "10.100.10.0",
    "SubnetMax": "10.100.99.0",
    "Backend": {"Type": "vxlan", "VNI": 9},
}
RESERVED = {
    1: "10.100.77.0/24",
    2: "10.100.88.0/24",
    3: "10.100.120.0/24",  # outside SubnetMin..SubnetMax
    4: "10.100.121.0/24",  # outside SubnetMin..SubnetMax
}


@pytest.fixture(scope="module")
def cluster(lab_ready: Peers) -> Iterator[AgentCluster]:
    with mixed_cluster(lab_ready, "vxlan", (1, 3), hosts=4, start=False) as c:
        flannelctl(c, "config", "set", json.dumps(CONFIG))
        for host, subnet in RESERVED.items():
            flannelctl(c, "leases", "reserve", subnet, c.lab.host_ip(host))
        # h3's flanneld deletes its out-of-range reservation and claims a pool subnet, two
        # events in a row; a flanneld already watching could miss the second (see start_all).
        # h3 goes first, so h1 lists its lease instead of having to catch it in flight.
        c.start_all(one_by_one=True, order=(3, 1, 2, 4))
        yield c


def test_flanneld_runs_on_the_config_flannelctl_wrote(cluster: AgentCluster) -> None:
    assert json.loads(flannelctl(cluster, "config", "show")) == CONFIG
    for i in cluster.agents:
        info = link_details(cluster, i, "flannel.9")["linkinfo"]["info_data"]
        assert info["id"] == 9, (i, info)
    assert "VXLAN config: VNI=9" in cluster.log(1)


def test_reservation_inside_the_pool_is_honoured_by_both(cluster: AgentCluster) -> None:
    for host in (1, 2):
        assert str(cluster.subnet(host)) == RESERVED[host], f"h{host} ({cluster.kind(host)})"
    # pyflannel keeps the key a reservation (no etcd lease); flanneld v0.20.2 attaches its
    # 24 h lease to it (flannel issue 1329): the subnet stays h1's only while flanneld runs.
    assert etcd_lease_id(cluster, 2) == 0
    assert etcd_lease_id(cluster, 1) != 0


def test_reservation_outside_subnet_min_max(cluster: AgentCluster) -> None:
    # pyflannel honours any reservation inside the Network; flanneld v0.20.2 finds it "not
    # compatible with current config", deletes it and takes a subnet from the pool.
    assert str(cluster.subnet(4)) == RESERVED[4]
    assert etcd_lease_id(cluster, 4) == 0
    h3 = cluster.subnet(3)
    assert str(h3) != RESERVED[3]
    assert ipaddress.IPv4Network("10.100.10.0/24") <= h3 <= ipaddress.IPv4Network("10.100.99.0/24")
    keys = cluster.lab.etcdctl("get", "--prefix", "--keys-only", f"{cluster.prefix}/subnets/")
    assert "10.100.120.0-24" not in keys.stdout


def test_flannelctl_lists_reservations_and_flanneld_leases(cluster: AgentCluster) -> None:
    listed = {
        item["subnet"]: item
        for item in json.loads(flannelctl(cluster, "leases", "list", "-o", "json"))
    }
    assert set(listed) == {str(cluster.subnet(i)) for i in cluster.agents}
    for i in cluster.agents:
        item = listed[str(cluster.subnet(i))]
        assert item["public_ip"] == cluster.lab.host_ip(i)
        assert item["reserved"] is (cluster.kind(i) == "pyflannel"), item
        mac = link_details(cluster, i, "flannel.9")["address"]
        assert item["backend_data"] == {"VNI": 9, "VtepMAC": mac}, item


def test_all_pairs_ping(cluster: AgentCluster) -> None:
    matrix = cluster.lab.ping_matrix(timeout=2)
    assert all(matrix.values()), [pair for pair, ok in matrix.items() if not ok]
