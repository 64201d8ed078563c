"""More data-plane scenarios with real agents in a 3-host namespace lab.

Operator changes on a running cluster (backend and Network switches applied by restarting the
agents, as the provisioner does), a peer's changed VtepMAC, host-gw's refusals, the vxlan
checksum workaround, DirectRouting, and the iptables rules after a Network change. Each test
builds its own cluster (or a class shares one) and takes it down afterwards. Expected kernel
state is written out here from docs/compatibility.md and the reference walk-throughs.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from pyroute2 import netns

from pyflannel.bgp.birdconf import KERNEL_METRIC
from pyflannel_lab import Lab
from pyflannel_lab.agents import AgentCluster, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

RECONCILE_INTERVAL = 2
AGENT_ARGS = ["--ip-masq", "--iptables-resync=1", f"--reconcile-interval={RECONCILE_INTERVAL}"]
RECONCILE_DEADLINE = 3.5  # one reconcile interval (+20 % jitter) plus slack
PEER_UPDATE_DEADLINE = 1.0
# BIRD's sessions: a connect attempt refused by a peer not yet configured is retried after 5 s
# (birdconf's `connect retry time`), then the route reaches the kernel.
BGP_DEADLINE = 12.0
MTU = {"host-gw": 1500, "udp": 1472, "vxlan": 1450, "ipip": 1480, "bgp": 1500}
DEVICE = {
    "host-gw": None,
    "udp": "flannel0",
    "vxlan": "flannel.1",
    "ipip": "flannel.ipip",
    "bgp": None,
}
# A peer that is not on the lab's L2 segment (192.0.2.0/24), with a subnet no agent picks
# (agents choose among the first 100 free subnets).
OFF_LINK_IP = "198.51.100.77"
OFF_LINK_SUBNET = "10.100.177.0/24"
OFF_LINK_MAC = "0a:58:0a:64:b1:00"
TX_CSUM = "tx-checksum-ip-generic"
READ_FEATURE = (
    "import sys; from pyroute2.ethtool import Ethtool; e = Ethtool(); "
    "print(e.get_features(sys.argv[1]).features[sys.argv[2]].enable); e.close()"
)


# -- helpers ----------------------------------------------------------------------------------


def sh(lab: Lab, node: str, command: str) -> str:
    return lab.run(node, "sh", "-c", command, timeout=10).stdout


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def peers_of(c: AgentCluster, host: int) -> list[int]:
    return [i for i in c.agents if i != host]


def mac_of(lab: Lab, node: str, dev: str) -> str:
    return str(json.loads(lab.run(node, "ip", "-j", "link", "show", dev).stdout)[0]["address"])


def devices(c: AgentCluster, host: int) -> set[str]:
    links = json.loads(c.lab.run(f"h{host}", "ip", "-j", "link").stdout)
    return {link["ifname"] for link in links if link["ifname"].startswith("flannel")}


def flannel_routes(c: AgentCluster, host: int) -> set[str]:
    """`ip route` lines the agent owns (not the kernel's connected routes, not BIRD's)."""
    return {
        line
        for line in lines(c.lab.run(f"h{host}", "ip", "route").stdout)
        if "proto kernel" not in line and "proto bird" not in line
    }


def bird_routes(c: AgentCluster, host: int) -> set[str]:
    return set(lines(c.lab.run(f"h{host}", "ip", "route", "show", "proto", "bird").stdout))


def vxlan_entries(c: AgentCluster, host: int) -> set[str]:
    """Permanent neighbours and fdb entries on flannel.1 (none when the device is gone)."""
    out = sh(c.lab, f"h{host}", "ip neigh show nud permanent; bridge fdb show")
    return {line for line in lines(out) if "dev flannel.1" in line}


def expected_routes(c: AgentCluster, host: int, backend: str, direct: bool = False) -> set[str]:
    """The reference route set of `backend` on `host` for the other lab hosts."""
    peers = peers_of(c, host)
    if backend == "host-gw" or direct:
        return {f"{c.subnet(p)} via {c.lab.host_ip(p)} dev eth0" for p in peers}
    if backend == "bgp":
        return set()  # BIRD's (bird_routes), none of the agent's
    if backend == "udp":
        return {f"{c.env(host)['FLANNEL_NETWORK']} dev flannel0 scope link"}
    if backend == "vxlan":
        return {
            f"{c.subnet(p)} via {c.subnet(p).network_address} dev flannel.1 onlink" for p in peers
        }
    return {f"{c.subnet(p)} via {c.lab.host_ip(p)} dev flannel.ipip onlink" for p in peers}


def expected_vxlan_entries(c: AgentCluster, host: int) -> set[str]:
    found = set()
    for p in peers_of(c, host):
        mac = mac_of(c.lab, f"h{p}", "flannel.1")
        found.add(f"{c.subnet(p).network_address} dev flannel.1 lladdr {mac} PERMANENT")
        found.add(f"{mac} dev flannel.1 dst {c.lab.host_ip(p)} self permanent")
    return found


def switch_config(c: AgentCluster, backend: str, network: str | None = None) -> None:
    """Write a new network config and restart every agent, one after the other."""
    c.backend = backend
    if network is not None:
        c.network = ipaddress.IPv4Network(network)
    c.put_config()
    for i in c.agents:
        c.restart(i)


def rebridge(c: AgentCluster, host: int) -> None:
    """What restarting Docker with the new subnet.env does: cbr0 moves, containers follow."""
    lab = c.lab
    state = lab._hosts[host]  # Lab has no public "move the bridge" operation (yet)
    if state.subnet != str(c.subnet(host)):
        for name in state.containers:
            netns.remove(lab.ns(name))
        lab.run(f"h{host}", "ip", "link", "del", "cbr0")
        state.subnet = None
        state.containers.clear()
        lab.add_container_bridge(host, str(c.subnet(host)))
    lab.set_container_mtu(host, c.mtu(host))


def wait_host_state(c: AgentCluster, host: int, backend: str) -> None:
    """Exactly `backend`'s devices, routes and vxlan entries on `host`.

    An agent may first see a peer before that peer's restart is done: allow one reconcile.
    """
    want_devices = {DEVICE[backend]} - {None}

    def kernel_ok() -> bool:
        return devices(c, host) == want_devices and flannel_routes(c, host) == expected_routes(
            c, host, backend
        )

    if c.birds:
        # bgp: BIRD routes every peer first (a peer that switched keeps its direct route until
        # then); any other backend retires BIRD's routes after a switch from bgp.
        want_bird = (
            {
                f"{c.subnet(p)} via {c.lab.host_ip(p)} dev eth0 metric {KERNEL_METRIC}"
                for p in peers_of(c, host)
            }
            | {f"blackhole {c.subnet(host)} metric {KERNEL_METRIC}"}
            if backend == "bgp"
            else set()
        )
        wait_for(lambda: bird_routes(c, host) == want_bird, BGP_DEADLINE, 0.1, f"h{host} BIRD")
    wait_for(kernel_ok, RECONCILE_DEADLINE, 0.1, f"{backend} devices and routes on h{host}")
    want_entries = expected_vxlan_entries(c, host) if backend == "vxlan" else set()

    def entries_ok() -> bool:
        return vxlan_entries(c, host) == want_entries

    wait_for(entries_ok, RECONCILE_DEADLINE, 0.1, f"neigh/fdb on h{host}")


def assert_backend_state(c: AgentCluster, backend: str, network: str) -> None:
    """Exactly the new backend's devices, routes and files on every host; all pairs ping."""
    for i in c.agents:
        subnet = c.subnet(i)
        assert subnet.subnet_of(ipaddress.IPv4Network(network))
        assert c.env_text(i) == (
            f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={subnet.network_address + 1}/24\n"
            f"FLANNEL_MTU={MTU[backend]}\nFLANNEL_IPMASQ=true\n"
        )
        lease: dict[str, Any] = {"PublicIP": c.lab.host_ip(i), "PublicIPv6": None}
        if backend != "udp":  # flanneld's udp lease has no BackendType
            lease["BackendType"] = backend
        if backend == "vxlan":
            lease["BackendData"] = {"VNI": 1, "VtepMAC": mac_of(c.lab, f"h{i}", "flannel.1")}
        assert c.lease(i) == lease
        wait_host_state(c, i, backend)
    # Only the new Network's leases remain: each node deleted its old one on restart.
    keys = lines(c.lab.etcdctl("get", "--prefix", "--keys-only", f"{c.prefix}/subnets/").stdout)
    assert sorted(keys) == sorted(c.lease_key(i) for i in c.agents)
    for i in c.agents:
        rebridge(c, i)
    c.wait_converged(15)


def masq_rules(network: str, subnet: str) -> list[str]:
    n, s, m = network, subnet, '-m comment --comment "flanneld masq"'
    return [
        "-N FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {m} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {s} -d {n} {m} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {n} -d {s} {m} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {n} -d {s} {m} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {n} ! -d 224.0.0.0/4 {m} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s {n} -d {n} {m} -j MASQUERADE --random-fully",
    ]


def put_peer_lease(c: AgentCluster, subnet: str, value: dict[str, Any]) -> str:
    """A lease as another node would write it (etcd lease attached); returns its key."""
    granted = c.lab.etcdctl("lease", "grant", "600").stdout
    match = re.search(r"lease ([0-9a-f]+) granted", granted)
    assert match, granted
    net = ipaddress.IPv4Network(subnet)
    key = f"{c.prefix}/subnets/{net.network_address}-{net.prefixlen}"
    c.lab.etcdctl("put", f"--lease={match.group(1)}", key, json.dumps(value))
    return key


def error_lines(text: str) -> list[str]:
    """Log lines at level ERROR ("<date> <time> E <logger>: ...")."""
    return [line for line in text.splitlines() if re.match(r"^\S+ \S+ E ", line)]


# -- 1. switching backend and Network on running nodes -----------------------------------------


def test_switch_vxlan_to_host_gw_removes_vxlan_state() -> None:
    with AgentCluster.running("vxlan", extra_args=AGENT_ARGS) as c:
        network = str(c.network)
        subnets = {i: c.subnet(i) for i in c.agents}
        assert all(devices(c, i) == {"flannel.1"} for i in c.agents)
        assert all(vxlan_entries(c, i) for i in c.agents)
        switch_config(c, "host-gw")
        # Same Network: every node keeps its subnet (its own lease is reused).
        assert {i: c.subnet(i) for i in c.agents} == subnets
        assert [c.mtu(i) for i in c.agents] == [1500] * 3
        assert_backend_state(c, "host-gw", network)


def test_reference_walkthrough_host_gw_then_udp_then_vxlan_with_new_networks() -> None:
    """As flannel-hostgw-udp-vxlan-walkthrough: 10.100 host-gw, 10.101 udp, 10.102 vxlan."""
    with AgentCluster.running("host-gw", network="10.100.0.0/16", extra_args=AGENT_ARGS) as c:
        assert_backend_state(c, "host-gw", "10.100.0.0/16")
        switch_config(c, "udp", "10.101.0.0/16")
        # The host-gw routes of 10.100.0.0/16 via eth0 are gone: the route set is exactly udp's.
        assert_backend_state(c, "udp", "10.101.0.0/16")
        for i in c.agents:
            assert "10.100." not in c.lab.run(f"h{i}", "ip", "route").stdout
        switch_config(c, "vxlan", "10.102.0.0/16")
        assert_backend_state(c, "vxlan", "10.102.0.0/16")
        for i in c.agents:
            table = c.lab.run(f"h{i}", "ip", "route").stdout
            assert "10.101." not in table and "flannel0" not in table


# -- 6. iptables after a Network change ---------------------------------------------------------


def test_network_change_rewrites_masquerade_rules_and_drops_old_host_gw_routes() -> None:
    with AgentCluster.running("host-gw", extra_args=AGENT_ARGS) as c:
        old, new = str(c.network), "10.101.0.0/16"
        postrtg = ["iptables", "-w", "-t", "nat", "-S", "FLANNEL-POSTRTG"]
        assert lines(c.lab.run("h1", *postrtg).stdout) == masq_rules(old, str(c.subnet(1)))
        old_routes = flannel_routes(c, 1)
        assert old_routes == expected_routes(c, 1, "host-gw")
        # h1 is down while the others move, so it never sees their old leases go: only the
        # old Network in its subnet.env tells it which routes via eth0 are stale.
        assert c.stop(1) == 0
        c.network = ipaddress.IPv4Network(new)
        c.put_config()
        c.restart(2)
        c.restart(3)
        c.start(1)
        assert_backend_state(c, "host-gw", new)  # exactly the new routes on every host
        assert not old_routes & flannel_routes(c, 1)
        time.sleep(1.5)  # resyncs (every second) must not bring old rules back
        for i in c.agents:
            assert lines(c.lab.run(f"h{i}", *postrtg).stdout) == masq_rules(new, str(c.subnet(i)))
            fwd = lines(c.lab.run(f"h{i}", "iptables", "-w", "-S", "FLANNEL-FWD").stdout)
            assert [rule.split(" -m ")[0] for rule in fwd] == [
                "-N FLANNEL-FWD",
                f"-A FLANNEL-FWD -s {new}",
                f"-A FLANNEL-FWD -d {new}",
            ]
            saved = c.lab.run(f"h{i}", "iptables-save").stdout
            assert "10.100." not in saved
            assert saved.count("-j FLANNEL-POSTRTG") == 1 and saved.count("-j FLANNEL-FWD") == 1


# -- 2. a peer's VtepMAC changes ----------------------------------------------------------------


class TestVxlanDevice:
    @pytest.fixture(scope="class")
    def cluster(self) -> Iterator[AgentCluster]:
        with AgentCluster.running("vxlan", extra_args=AGENT_ARGS) as built:
            yield built

    @pytest.fixture
    def c(self, cluster: AgentCluster) -> AgentCluster:
        cluster.heal()  # agents an earlier failed test left stopped
        return cluster

    def test_new_vtep_mac_replaces_the_old_entries_on_peers_within_a_second(
        self, c: AgentCluster
    ) -> None:
        # What a reboot does: the device is gone and comes back with a new random MAC. (A value
        # put into etcd by hand would name a MAC no device has, so nothing could be pinged.)
        old_mac = mac_of(c.lab, "h2", "flannel.1")
        vtep = c.subnet(2).network_address
        assert c.stop(2) == 0
        c.lab.run("h2", "ip", "link", "del", "flannel.1")
        c.start(2)
        deadline = time.monotonic() + PEER_UPDATE_DEADLINE
        new_mac = mac_of(c.lab, "h2", "flannel.1")
        assert new_mac != old_mac
        lease = c.lease(2)
        assert lease is not None and lease["BackendData"] == {"VNI": 1, "VtepMAC": new_mac}
        want = {
            f"{vtep} dev flannel.1 lladdr {new_mac} PERMANENT",
            f"{new_mac} dev flannel.1 dst 192.0.2.12 self permanent",
        }

        def replaced(host: int) -> bool:
            entries = vxlan_entries(c, host)
            return want <= entries and not any(old_mac in e for e in entries)

        for host in (1, 3):
            left = max(0.0, deadline - time.monotonic())
            wait_for(partial(replaced, host), left, 0.03, f"new VtepMAC only, on h{host}")
        for host in (1, 3):
            assert vxlan_entries(c, host) == expected_vxlan_entries(c, host)
        assert c.lab.ping("h1c1", c.container_ip(2)) and c.lab.ping("h3c1", c.container_ip(2))
        c.wait_converged(10)

    # -- 4. --vxlan-disable-tx-checksum -------------------------------------------------------

    def test_disable_tx_checksum_flag_turns_offload_off(self, c: AgentCluster) -> None:
        def offload(host: int) -> bool:
            out = c.lab.run(f"h{host}", sys.executable, "-c", READ_FEATURE, "flannel.1", TX_CSUM)
            return out.stdout.strip() == "True"

        assert all(offload(i) for i in c.agents)  # the kernel's default without the flag
        c.extra_args = [*AGENT_ARGS, "--vxlan-disable-tx-checksum"]
        try:
            for i in c.agents:
                c.restart(i)  # the workaround also applies to an adopted device
            assert not any(offload(i) for i in c.agents)
            assert all(f"turned off {TX_CSUM} on flannel.1" in c.log(i) for i in c.agents)
            c.wait_converged(10)
            assert c.lab.ping("h1c1", c.container_ip(2), size=1400)
        finally:
            c.extra_args = list(AGENT_ARGS)


# -- 3. host-gw refusals --------------------------------------------------------------------------


class TestHostGwRefusals:
    @pytest.fixture(scope="class")
    def cluster(self) -> Iterator[AgentCluster]:
        with AgentCluster.running("host-gw", extra_args=AGENT_ARGS) as built:
            yield built

    @pytest.fixture
    def c(self, cluster: AgentCluster) -> AgentCluster:
        cluster.heal()  # agents an earlier failed test left stopped
        return cluster

    def test_public_ip_other_than_the_interface_address_is_refused(self, c: AgentCluster) -> None:
        assert c.lab.tmpdir is not None
        subnet_file = c.lab.tmpdir / "refused-subnet.env"
        routes = flannel_routes(c, 1)
        overrides = [f"--subnet-file={subnet_file}", "--healthz-port=0", "--public-ip=192.0.2.99"]
        args = [*c.agent_args(1), *overrides]
        result = c.lab.run("h1", *args, check=False, timeout=30)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        errors = error_lines(output)
        assert len(errors) == 1, output
        assert "192.0.2.99" in errors[0] and "eth0" in errors[0] and "192.0.2.11" in errors[0]
        assert "Traceback" not in output
        assert not subnet_file.exists()
        keys = c.lab.etcdctl("get", "--prefix", "--keys-only", f"{c.prefix}/subnets/").stdout
        assert "192.0.2.99" not in c.lab.etcdctl("get", "--prefix", f"{c.prefix}/subnets/").stdout
        assert sorted(lines(keys)) == sorted(c.lease_key(i) for i in c.agents)
        assert flannel_routes(c, 1) == routes  # the running agent's state is untouched

    def test_peer_not_on_link_is_reported_once_counted_and_not_routed(
        self, c: AgentCluster
    ) -> None:
        metric = "pyflannel_unreachable_peers"
        wait_for(lambda: c.metrics(1).get(metric) == 0, RECONCILE_DEADLINE, 0.2, f"{metric} 0")
        key = put_peer_lease(
            c,
            OFF_LINK_SUBNET,
            {"PublicIP": OFF_LINK_IP, "PublicIPv6": None, "BackendType": "host-gw"},
        )
        try:
            wait_for(lambda: c.metrics(1).get(metric) == 1, RECONCILE_DEADLINE, 0.2, f"{metric} 1")
            time.sleep(RECONCILE_INTERVAL * 1.5)  # at least one more reconcile: no new error
            errors = [e for e in error_lines(c.log(1)) if OFF_LINK_IP in e]
            assert len(errors) == 1, c.log(1)[-3000:]
            assert OFF_LINK_SUBNET in errors[0] and "eth0" in errors[0]
            assert "Traceback" not in c.log(1)
            for i in c.agents:
                assert c.lab.run(f"h{i}", "ip", "route", "show", OFF_LINK_SUBNET).stdout == ""
                assert flannel_routes(c, i) == expected_routes(c, i, "host-gw")
            matrix = c.lab.ping_matrix()
            assert [pair for pair, ok in matrix.items() if not ok] == []
            assert all(c.is_running(i) for i in c.agents)
        finally:
            c.lab.etcdctl("del", key)
        wait_for(lambda: c.metrics(1).get(metric) == 0, RECONCILE_DEADLINE, 0.2, f"{metric} 0")


# -- 5. DirectRouting ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["vxlan", "ipip"])
def test_direct_routing_routes_on_link_peers_via_eth0(backend: str) -> None:
    options = {"DirectRouting": True}
    with AgentCluster.running(backend, backend_options=options, extra_args=AGENT_ARGS) as c:
        device = DEVICE[backend]
        for i in c.agents:
            assert devices(c, i) == {device}
            assert flannel_routes(c, i) == expected_routes(c, i, backend, direct=True)
            assert vxlan_entries(c, i) == set()  # no neigh/fdb for on-link peers
        matrix = c.lab.ping_matrix()
        assert [pair for pair, ok in matrix.items() if not ok] == []
        # Plain routed packets on the wire, no encapsulation.
        src, dst = c.container_ip(1), c.container_ip(2)
        seen = c.lab.capture(
            "h2",
            "eth0",
            "icmp[icmptype] = icmp-echo",
            count=1,
            during=lambda: c.lab.ping("h1c1", dst),
        )
        assert len(seen) == 1 and f"IP {src} > {dst}: ICMP echo request" in seen[0], seen

        # A peer that is not on-link still goes through the tunnel.
        value: dict[str, Any] = {"PublicIP": OFF_LINK_IP, "PublicIPv6": None}
        value["BackendType"] = backend
        if backend == "vxlan":
            value["BackendData"] = {"VNI": 1, "VtepMAC": OFF_LINK_MAC}
            tunnel_route = f"{OFF_LINK_SUBNET} via 10.100.177.0 dev flannel.1 onlink"
        else:
            tunnel_route = f"{OFF_LINK_SUBNET} via {OFF_LINK_IP} dev flannel.ipip onlink"
        put_peer_lease(c, OFF_LINK_SUBNET, value)
        want = expected_routes(c, 1, backend, direct=True) | {tunnel_route}
        wait_for(lambda: flannel_routes(c, 1) == want, PEER_UPDATE_DEADLINE, 0.05, "tunnel route")
        if backend == "vxlan":
            assert vxlan_entries(c, 1) == {
                f"10.100.177.0 dev flannel.1 lladdr {OFF_LINK_MAC} PERMANENT",
                f"{OFF_LINK_MAC} dev flannel.1 dst {OFF_LINK_IP} self permanent",
            }
        assert c.lab.ping("h1c1", c.container_ip(3))
