"""Mixed clusters: h1 runs the real flanneld v0.20.2, h2 and h3 run pyflannel, one etcd.

For every backend flanneld can run here (host-gw, vxlan with and without DirectRouting and with
a non-default VNI and Port, udp with the default and a non-default Port): both kinds lease
distinct subnets and write the same lease values and subnet files, each programs the same
kernel state towards the other, all pairs of containers ping and a full-MTU ping with DF set
passes in both directions; flannelctl lists what flanneld wrote.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyflannel_lab.agents import FLANNELD, PYFLANNEL, AgentCluster
from pyflannel_lab.peers import Peers
from pyflannel_lab.transfer import transfer
from tests.interop.support import (
    flannelctl,
    lease_template,
    link_details,
    mixed_cluster,
    route_to,
    run_both_mk_docker_opts,
)

FLANNELD_HOSTS = (1,)
MTU = {"host-gw": 1500, "vxlan": 1450, "udp": 1472}


@dataclass(frozen=True)
class Case:
    backend: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.backend}[{opts}]" if opts else self.backend

    @property
    def direct(self) -> bool:
        return self.backend == "host-gw" or bool(self.options.get("DirectRouting"))

    @property
    def vni(self) -> int:
        return int(self.options.get("VNI", 1))


CASES = [
    Case("host-gw"),
    Case("vxlan"),
    Case("vxlan", {"DirectRouting": True}),
    Case("vxlan", {"VNI": 4097, "Port": 4789}),
    Case("udp"),
    Case("udp", {"Port": 8399}),
]


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cluster(lab_ready: Peers, case: Case) -> Iterator[AgentCluster]:
    with mixed_cluster(lab_ready, case.backend, FLANNELD_HOSTS, options=case.options) as c:
        yield c


def pairs(c: AgentCluster) -> list[tuple[int, int]]:
    """Ordered (flanneld host, pyflannel host) pairs in both directions."""
    flanneld = [i for i in c.agents if c.kind(i) == FLANNELD]
    ours = [i for i in c.agents if c.kind(i) == PYFLANNEL]
    return [(a, b) for a in flanneld for b in ours] + [(b, a) for a in flanneld for b in ours]


def test_both_kinds_lease_distinct_subnets(cluster: AgentCluster, case: Case) -> None:
    assert "Running backend." in cluster.log(1)  # h1 really is flanneld
    assert "ready: subnet" in cluster.log(2)
    subnets = [cluster.subnet(i) for i in cluster.agents]
    assert len(set(subnets)) == len(subnets), subnets
    for i in cluster.agents:
        assert cluster.subnet(i).subnet_of(cluster.network)
        assert cluster.lease(i) is not None, f"h{i} has no lease key"
        assert cluster.mtu(i) == MTU[case.backend]


def test_lease_values_are_flanneld_s_byte_for_byte(cluster: AgentCluster, case: Case) -> None:
    flanneld = lease_template(cluster, 1)
    for i in (2, 3):
        assert lease_template(cluster, i) == flanneld
    expected = {
        "host-gw": '{"PublicIP":"<ip>","PublicIPv6":null,"BackendType":"host-gw"}',
        "vxlan": '{"PublicIP":"<ip>","PublicIPv6":null,"BackendType":"vxlan",'
        f'"BackendData":{{"VNI":{case.vni},"VtepMAC":"<mac>"}}}}',
        # No BackendType at all: what flanneld's udp backend writes.
        "udp": '{"PublicIP":"<ip>","PublicIPv6":null}',
    }[case.backend]
    assert flanneld == expected


def test_subnet_files_are_the_same(cluster: AgentCluster) -> None:
    def normalised(i: int) -> str:
        return cluster.env_text(i).replace(str(cluster.lab.gateway_ip(i)), "<gw>")

    assert normalised(2) == normalised(1)
    assert normalised(3) == normalised(1)


def test_each_kind_routes_to_the_other(cluster: AgentCluster, case: Case) -> None:
    for host, peer in pairs(cluster):
        subnet = cluster.subnet(peer)
        if case.backend == "udp":
            # One route for the whole Network through the TUN; the data path picks the peer.
            route = route_to(cluster, host, cluster.network)
            assert route["dev"] == "flannel0" and "gateway" not in route, route
            continue
        route = route_to(cluster, host, subnet)
        if case.direct:
            assert (route["gateway"], route["dev"]) == (cluster.lab.host_ip(peer), "eth0"), route
        else:
            assert route["gateway"] == str(subnet.network_address), route
            assert route["dev"] == f"flannel.{case.vni}" and "onlink" in route["flags"], route


def test_devices_are_alike(cluster: AgentCluster, case: Case) -> None:
    if case.backend == "host-gw":
        return
    device = "flannel0" if case.backend == "udp" else f"flannel.{case.vni}"
    details = {i: link_details(cluster, i, device) for i in cluster.agents}
    for i, link in details.items():
        assert link["mtu"] == MTU[case.backend], (i, link)
        addrs = cluster.lab.run(i, "ip", "-4", "-o", "addr", "show", device).stdout
        assert f"inet {cluster.subnet(i).network_address}/32 " in addrs, (i, addrs)
    if case.backend == "vxlan":
        data = {i: link["linkinfo"]["info_data"] for i, link in details.items()}
        for i, info in data.items():
            assert info["id"] == case.vni and info["port"] == case.options.get("Port", 8472)
            assert info["local"] == cluster.lab.host_ip(i) and info["learning"] is False, info


def test_all_pairs_ping(cluster: AgentCluster) -> None:
    matrix = cluster.lab.ping_matrix(timeout=2)
    assert all(matrix.values()), [pair for pair, ok in matrix.items() if not ok]


def test_full_mtu_ping_with_df_both_ways(cluster: AgentCluster, case: Case) -> None:
    size = MTU[case.backend] - 28  # ICMP payload of a packet of exactly the container MTU
    for src, dst in pairs(cluster):
        result = cluster.lab.ping_result(
            f"h{src}c1", cluster.container_ip(dst), count=2, size=size, df=True, timeout=2
        )
        assert result.returncode == 0, (
            f"h{src} ({cluster.kind(src)}) -> h{dst} ({cluster.kind(dst)}): {result.stdout}"
        )


def test_bulk_tcp_both_ways(cluster: AgentCluster, case: Case) -> None:
    """Pings prove little about offloads: a TCP stream with a digest does (udp: pyflannel's
    eBPF fast path against flanneld's userspace proxy, which takes only wire-sized datagrams
    with final checksums)."""
    if case.backend == "udp":
        assert all(
            "udp data path: eBPF" in cluster.log(i)
            for i in cluster.agents
            if cluster.kind(i) == PYFLANNEL
        )
    for src, dst in pairs(cluster):
        transfer(cluster, src, dst, 8 << 20)


def test_flannelctl_lists_what_flanneld_wrote(cluster: AgentCluster, case: Case) -> None:
    listed = json.loads(flannelctl(cluster, "leases", "list", "-o", "json"))
    by_subnet = {ipaddress.IPv4Network(item["subnet"]): item for item in listed}
    assert set(by_subnet) == {cluster.subnet(i) for i in cluster.agents}
    for i in cluster.agents:
        item = by_subnet[cluster.subnet(i)]
        value = cluster.lease(i)
        assert value is not None
        assert item["public_ip"] == cluster.lab.host_ip(i)
        assert item["backend"] == value.get("BackendType", "")
        assert item["reserved"] is False and 0 < item["expires_in"] <= 86400, item
        assert item["backend_data"] == value.get("BackendData")
    table = flannelctl(cluster, "leases", "list")
    row = next(line.split() for line in table.splitlines() if str(cluster.subnet(1)) in line)
    backend = {"udp": "-"}.get(case.backend, case.backend)
    assert row[:3] == [str(cluster.subnet(1)), cluster.lab.host_ip(1), backend], table
    if case.backend == "vxlan":
        mac = link_details(cluster, 1, f"flannel.{case.vni}")["address"]
        assert row[-1] == mac, table


def test_mk_docker_opts_on_the_file_flanneld_wrote(
    cluster: AgentCluster, lab_ready: Peers, tmp_path: Path
) -> None:
    run_both_mk_docker_opts(lab_ready, tmp_path, cluster.env_text(1), [])
