"""Data plane of real agents in a 3-host namespace lab, for every backend.

One cluster (lab + etcd + 3 agents + one container per host) per backend class, shared by the
class's tests; tests that stop or break something put it back, and `c` restarts agents a failed
test left stopped. Agents run with --ip-masq --iptables-resync=1 --reconcile-interval=2.
Expected kernel state is written out here from docs/compatibility.md and the reference
walk-throughs, not derived from pyflannel's code.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from pyflannel_lab import Lab
from pyflannel_lab.agents import NETWORK, AgentCluster, capture_frames, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

RECONCILE_INTERVAL = 2
RESYNC = 1
AGENT_ARGS = [
    "--ip-masq",
    f"--iptables-resync={RESYNC}",
    f"--reconcile-interval={RECONCILE_INTERVAL}",
]
REPAIR_DEADLINE = 3.0  # reconcile interval (2 s, +-20 % jitter) plus slack
LEAVE_DEADLINE = 1.0
VXLAN_PORT = 8472
UDP_PORT = 8285
STRANGER_ICMP_ID = 0x5353
PEER_ICMP_ID = 0x4343

# A datagram carrying a valid inner ICMP echo request (argv: mode src dst target count id).
SEND_INNER = r"""
import socket, struct, sys
mode, src, dst, target, count, ident = sys.argv[1:7]
def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
icmp = struct.pack("!BBHHH", 8, 0, 0, int(ident), 1) + b"flannel-test" * 4
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 7, 0, 64, 1, 0,
                  socket.inet_aton(src), socket.inet_aton(dst))
packet = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + icmp
if mode == "udp":
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = (target, 8285)
else:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
    address = (target, 0)
for _ in range(int(count)):
    sock.sendto(packet, address)
"""


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def cluster(request: pytest.FixtureRequest) -> Iterator[AgentCluster]:
    """One cluster per backend class (labs never run in parallel: 2 cores)."""
    backend: str = request.cls.backend
    with AgentCluster.running(backend, extra_args=AGENT_ARGS) as built:
        yield built


@pytest.fixture
def c(cluster: AgentCluster) -> AgentCluster:
    """The class's cluster, with any agent an earlier (failed) test left stopped restarted."""
    cluster.heal()
    return cluster


# -- small helpers ----------------------------------------------------------------------------


def sh(lab: Lab, node: str, command: str) -> str:
    return lab.run(node, "sh", "-c", command, timeout=10).stdout


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def mac_of(lab: Lab, node: str, dev: str) -> str:
    return json.loads(lab.run(node, "ip", "-j", "link", "show", dev).stdout)[0]["address"]


def link_info(lab: Lab, node: str, dev: str) -> tuple[int, str] | None:
    """(ifindex, MAC) of a device, None when it does not exist."""
    out = lab.run(node, "ip", "-j", "link", "show", dev, check=False)
    if out.returncode != 0:
        return None
    info = json.loads(out.stdout)[0]
    return int(info["ifindex"]), str(info.get("address", ""))


def true_before(deadline: float, what: str, check: Callable[[], bool]) -> None:
    """Assert `check()` turns True, and is seen so, before monotonic time `deadline`."""
    while True:
        ok = check()
        now = time.monotonic()
        if ok and now <= deadline:
            return
        if now >= deadline:
            raise AssertionError(f"{what}: not the case by the deadline")
        time.sleep(0.03)


@dataclass(frozen=True)
class Ipv4:
    src: str
    dst: str
    proto: int
    total_len: int
    payload: bytes


def parse_ipv4(data: bytes) -> Ipv4:
    assert data[0] >> 4 == 4, f"not IPv4: {data[:20].hex()}"
    ihl = (data[0] & 0x0F) * 4
    total = int.from_bytes(data[2:4], "big")
    return Ipv4(
        src=str(ipaddress.IPv4Address(data[12:16])),
        dst=str(ipaddress.IPv4Address(data[16:20])),
        proto=data[9],
        total_len=total,
        payload=data[ihl:total],
    )


def ether(frame: bytes) -> tuple[str, str, int, bytes]:
    """(dst MAC, src MAC, ethertype, payload)."""

    def mac(b: bytes) -> str:
        return ":".join(f"{x:02x}" for x in b)

    return mac(frame[0:6]), mac(frame[6:12]), int.from_bytes(frame[12:14], "big"), frame[14:]


# -- the tests every backend runs --------------------------------------------------------------


class DataPlaneTests:
    """Tests and reference facts common to all backends; subclasses name the backend."""

    backend: ClassVar[str]
    mtu: ClassVar[int]
    device: ClassVar[str | None] = None
    device_survives_restart: ClassVar[bool] = True  # udp: flannel0 goes with the agent
    capture_filter: ClassVar[str]  # BPF filter for the overlay's packets on the underlay

    # Reference facts per backend (overridden below).
    def expected_routes(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        raise NotImplementedError

    def expected_extra(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        """Per-peer state besides routes (vxlan: neigh and fdb lines)."""
        return set()

    def current_extra(self, c: AgentCluster, host: int) -> set[str]:
        return set()

    def check_encapsulated(self, c: AgentCluster, frame: bytes, src: int, dst: int) -> None:
        raise NotImplementedError

    # Helpers built on them.
    def peers_of(self, c: AgentCluster, host: int) -> list[int]:
        return [i for i in c.agents if i != host]

    def flannel_routes(self, c: AgentCluster, host: int) -> set[str]:
        """`ip route` lines the agent owns (everything but the kernel's connected routes)."""
        out = c.lab.run(f"h{host}", "ip", "route").stdout
        return {line for line in lines(out) if "proto kernel" not in line}

    def expected_state(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        return self.expected_routes(c, host, peers) | self.expected_extra(c, host, peers)

    def current_state(self, c: AgentCluster, host: int) -> set[str]:
        return self.flannel_routes(c, host) | self.current_extra(c, host)

    def wait_state(self, c: AgentCluster, host: int, timeout: float) -> float:
        """Wait until host's kernel state is exactly the expected one; return seconds taken."""
        started = time.monotonic()
        expected = self.expected_state(c, host, self.peers_of(c, host))
        wait_for(lambda: self.current_state(c, host) == expected, timeout, 0.1, "kernel state")
        return time.monotonic() - started

    # -- connectivity ----------------------------------------------------------------------

    def test_all_pairs_ping(self, c: AgentCluster) -> None:
        matrix = c.lab.ping_matrix(timeout=1)
        assert len(matrix) == 6
        assert [pair for pair, ok in matrix.items() if not ok] == []

    def test_path_mtu_df_ping_fits_exactly_and_one_byte_more_is_refused(
        self, c: AgentCluster
    ) -> None:
        dst = c.container_ip(2)
        assert c.mtu(1) == self.mtu
        fits = c.lab.ping_result("h1c1", dst, size=self.mtu - 28, df=True, count=2)
        assert fits.returncode == 0, fits.stdout + fits.stderr
        assert f"({self.mtu}) bytes of data" in fits.stdout
        # Containers with Docker's --mtu: the sender's own stack refuses, loudly.
        over = c.lab.ping_result("h1c1", dst, size=self.mtu - 27, df=True, count=1)
        assert over.returncode != 0
        assert f"message too long, mtu={self.mtu}" in over.stdout + over.stderr
        # A container with a bigger MTU than the overlay's: the host answers frag-needed with
        # the overlay MTU (PMTU discovery works), the packet is not silently lost.
        try:
            c.lab.set_container_mtu(1, 9000)
            big = c.lab.ping_result("h1c1", dst, size=self.mtu - 27, df=True, count=2)
            assert big.returncode != 0
            # Frag-needed from the host; a rerun may already have the PMTU cached instead.
            assert (
                f"Frag needed and DF set (mtu = {self.mtu})" in big.stdout
                or f"message too long, mtu={self.mtu}" in big.stdout + big.stderr
            ), big.stdout
        finally:
            c.lab.set_container_mtu(1, self.mtu)

    # -- wire format ------------------------------------------------------------------------

    def test_underlay_capture_shows_the_encapsulation(self, c: AgentCluster) -> None:
        cap = capture_frames(
            c.lab,
            "h1",
            "eth0",
            self.capture_filter,
            count=2,
            timeout=5,
            during=lambda: c.lab.ping("h1c1", c.container_ip(2), count=1),
        )
        assert cap.linktype == 1  # Ethernet
        assert len(cap.frames) == 2, f"expected request and reply, got {len(cap.frames)} frames"
        request, reply = cap.frames
        self.check_encapsulated(c, request, 1, 2)
        self.check_encapsulated(c, reply, 2, 1)

    # -- a host leaves ----------------------------------------------------------------------

    def test_leaving_host_disappears_from_peers_within_a_second(self, c: AgentCluster) -> None:
        leaver, subnet = 3, c.subnet(3)
        for host in (1, 2):
            assert self.current_state(c, host) == self.expected_state(
                c, host, self.peers_of(c, host)
            )
        assert c.stop(leaver) == 0
        c.lab.etcdctl("del", c.lease_key(leaver))
        deadline = time.monotonic() + LEAVE_DEADLINE
        for host in (1, 2):
            remaining = [p for p in self.peers_of(c, host) if p != leaver]
            want = self.expected_state(c, host, remaining)

            def removed(host: int = host, want: set[str] = want) -> bool:
                return self.current_state(c, host) == want

            true_before(deadline, f"state for {subnet} removed on h{host}", removed)
        # Not a blackhole either: the sender is told at once that the net is unreachable.
        true_before(
            deadline,
            "ping to the departed host reports Unreachable",
            lambda: (
                "Unreachable"
                in c.lab.ping_result("h1c1", c.container_ip(leaver), timeout=0.3).stdout
            ),
        )
        # Back again: it takes its old subnet (from its subnet file) and everyone converges.
        c.start(leaver)
        assert c.subnet(leaver) == subnet
        c.wait_converged()

    # -- repairs ----------------------------------------------------------------------------

    def test_route_deleted_by_hand_is_back_within_the_reconcile_interval(
        self, c: AgentCluster
    ) -> None:
        route = sorted(self.expected_routes(c, 1, [2]))[0]
        c.lab.run("h1", "ip", "route", "del", route.split()[0])
        assert route not in self.flannel_routes(c, 1)
        took = self.wait_state(c, 1, REPAIR_DEADLINE)
        assert took < REPAIR_DEADLINE
        assert c.lab.ping("h1c1", c.container_ip(2), timeout=1)

    # -- restart ----------------------------------------------------------------------------

    def test_restart_keeps_subnet_lease_and_devices(self, c: AgentCluster) -> None:
        env, lease = c.env_text(1), c.lease(1)
        device = link_info(c.lab, "h1", self.device) if self.device else None
        assert c.restart(1) == 0
        assert c.env_text(1) == env
        assert c.lease(1) == lease
        if self.device and self.device_survives_restart:
            assert link_info(c.lab, "h1", self.device) == device  # same ifindex and MAC
        self.wait_state(c, 1, 5)
        c.wait_converged(10)

    # -- ip-masq and iptables ----------------------------------------------------------------

    def test_ip_masq_rules_are_flannels_and_masquerade_only_leaving_traffic(
        self, c: AgentCluster
    ) -> None:
        n, s = NETWORK, str(c.subnet(1))
        m = '-m comment --comment "flanneld masq"'
        f = '-m comment --comment "flanneld forward"'
        masq = [
            "-N FLANNEL-POSTRTG",
            f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {m} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {s} -d {n} {m} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {n} -d {s} {m} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {n} -d {s} {m} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {n} ! -d 224.0.0.0/4 {m} -j MASQUERADE --random-fully",
            f"-A FLANNEL-POSTRTG ! -s {n} -d {n} {m} -j MASQUERADE --random-fully",
        ]
        fwd = [
            "-N FLANNEL-FWD",
            f"-A FLANNEL-FWD -s {n} {f} -j ACCEPT",
            f"-A FLANNEL-FWD -d {n} {f} -j ACCEPT",
        ]

        def rules_now() -> tuple[list[str], list[str], list[str], list[str]]:
            lab = c.lab
            return (
                lines(lab.run("h1", "iptables", "-w", "-t", "nat", "-S", "FLANNEL-POSTRTG").stdout),
                lines(lab.run("h1", "iptables", "-w", "-S", "FLANNEL-FWD").stdout),
                lines(lab.run("h1", "iptables", "-w", "-t", "nat", "-S", "POSTROUTING").stdout),
                lines(lab.run("h1", "iptables", "-w", "-S", "FORWARD").stdout),
            )

        def all_in_place() -> bool:
            nat, filt, post, forward = rules_now()
            return (
                nat == masq
                and filt == fwd
                and f"-A POSTROUTING {m} -j FLANNEL-POSTRTG" in post
                and f"-A FORWARD {f} -j FLANNEL-FWD" in forward
            )

        assert all_in_place(), rules_now()

        # Container -> a lab host's underlay address: leaves with h1's address.
        seen = c.lab.capture(
            "h2",
            "eth0",
            "icmp[icmptype] = icmp-echo and dst host 192.0.2.12",
            count=1,
            during=lambda: c.lab.ping("h1c1", "192.0.2.12", count=1),
        )
        assert len(seen) == 1 and "IP 192.0.2.11 > 192.0.2.12: ICMP echo request" in seen[0], seen
        assert c.lab.ping("h1c1", "192.0.2.12")  # the reply finds its way back (de-NAT)
        # Container -> container across hosts: the container's own address arrives.
        src, dst = c.container_ip(1), c.container_ip(2)
        seen = c.lab.capture(
            "h2c1",
            "eth0",
            "icmp[icmptype] = icmp-echo",
            count=1,
            during=lambda: c.lab.ping("h1c1", dst, count=1),
        )
        assert len(seen) == 1 and f"IP {src} > {dst}: ICMP echo request" in seen[0], seen

        # Resync every second must not rewrite rules that are already right.
        def writes() -> tuple[int, int]:
            log = c.log(1, all_runs=True)
            return (
                len(re.findall(r"wrote \d+ rules to nat/FLANNEL-POSTRTG", log)),
                len(re.findall(r"wrote \d+ rules to filter/FLANNEL-FWD", log)),
            )

        assert writes() == (1, 1)
        time.sleep(3 * RESYNC + 0.5)
        assert writes() == (1, 1)

        # Rules deleted by hand come back within a resync period (+1 s for the checks).
        delete = (
            f"iptables -w -t nat -D FLANNEL-POSTRTG -s {n} ! -d 224.0.0.0/4 {m} "
            "-j MASQUERADE --random-fully && "
            f"iptables -w -D FORWARD {f} -j FLANNEL-FWD && iptables -w -F FLANNEL-FWD"
        )
        sh(c.lab, "h1", delete)
        assert not all_in_place()
        wait_for(all_in_place, RESYNC + 1.0, 0.05, "iptables rules repaired")
        assert writes() == (2, 2)

    # -- reference outputs ------------------------------------------------------------------

    def test_reference_outputs(self, c: AgentCluster) -> None:
        sub1 = c.subnet(1)
        assert c.env_text(1) == (
            f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET={sub1.network_address + 1}/24\n"
            f"FLANNEL_MTU={self.mtu}\nFLANNEL_IPMASQ=true\n"
        )
        # The lease in etcd: flannel's key layout and value, naming our public IP.
        keys = lines(c.lab.etcdctl("get", "--prefix", "--keys-only", f"{c.prefix}/subnets/").stdout)
        assert sorted(keys) == sorted(c.lease_key(i) for i in c.agents)
        raw = c.lab.etcdctl("get", "--print-value-only", c.lease_key(1)).stdout.strip()
        assert raw == self.expected_lease_value(c, 1)
        # The whole routing table, line by line.
        table = set(lines(c.lab.run("h1", "ip", "route").stdout))
        assert table == self.expected_routes(c, 1, [2, 3]) | {
            f"{sub1} dev cbr0 proto kernel scope link src {sub1.network_address + 1}",
            "192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.11",
        }
        assert self.current_extra(c, 1) == self.expected_extra(c, 1, [2, 3])
        # Devices: exactly the backend's one, with the overlay MTU and <lease>.0/32.
        names = {
            link["ifname"]
            for link in json.loads(c.lab.run("h1", "ip", "-j", "link").stdout)
            if link["ifname"].startswith("flannel")
        }
        assert names == ({self.device} if self.device else set())
        if self.device:
            detail = c.lab.run("h1", "ip", "-d", "link", "show", self.device).stdout
            assert f" mtu {self.mtu} " in detail
            self.check_device_details(c, detail)
            addrs = lines(c.lab.run("h1", "ip", "-4", "-o", "addr", "show", self.device).stdout)
            assert len(addrs) == 1 and f"inet {sub1.network_address}/32 " in addrs[0], addrs

    def expected_lease_value(self, c: AgentCluster, host: int) -> str:
        return (
            f'{{"PublicIP":"{c.lab.host_ip(host)}","PublicIPv6":null,'
            f'"BackendType":"{self.backend}"}}'
        )

    def check_device_details(self, c: AgentCluster, detail: str) -> None:
        raise NotImplementedError


class DeviceRepairTests(DataPlaneTests):
    """For backends with a device: deleting it by hand is repaired by the next reconcile."""

    def test_device_deleted_by_hand_comes_back(self, c: AgentCluster) -> None:
        assert self.device is not None
        before = link_info(c.lab, "h1", self.device)
        assert before is not None
        c.lab.run("h1", "ip", "link", "del", self.device)
        after = wait_for(
            lambda: link_info(c.lab, "h1", self.device or ""), REPAIR_DEADLINE, 0.05, "device"
        )
        assert after[1] == before[1]  # same MAC (vxlan: peers' fdb/neigh stay valid)
        self.wait_state(c, 1, REPAIR_DEADLINE)
        addrs = c.lab.run("h1", "ip", "-4", "-o", "addr", "show", self.device).stdout
        assert f"inet {c.subnet(1).network_address}/32 " in addrs
        wait_for(lambda: c.lab.ping("h1c1", c.container_ip(2), timeout=1), 5, 0.2, "ping")


class KernelRestartTests(DataPlaneTests):
    """Kernel data paths keep forwarding while the agent restarts."""

    def test_ping_through_agent_restart_loses_nothing(self, c: AgentCluster) -> None:
        dst = c.container_ip(2)
        cmd = ["ping", "-n", "-q", "-i", "0.05", "-c", "100", "-W", "1", dst]
        ping = subprocess.Popen(
            ["ip", "netns", "exec", c.lab.ns("h1c1"), *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            time.sleep(0.5)
            c.restart(1)
            c.restart(2)
            assert ping.poll() is None, "the restarts did not happen while ping ran"
            out, _ = ping.communicate(timeout=20)
        finally:
            if ping.poll() is None:
                ping.kill()
                ping.wait(5)
        assert "100 packets transmitted, 100 received, 0% packet loss" in out, out


class StrangerTests(DataPlaneTests):
    """udp / userspace ipip: encapsulated packets from a non-peer are dropped and counted."""

    def send_inner(self, c: AgentCluster, node: str, ident: int, count: int) -> None:
        src, dst = c.container_ip(2), c.container_ip(1)
        args = [self.backend, src, dst, c.lab.host_ip(1), str(count), str(ident)]
        c.lab.run(node, sys.executable, "-c", SEND_INNER, *args, timeout=10)

    def test_packets_from_a_stranger_are_dropped_and_counted(self, c: AgentCluster) -> None:
        metric = "pyflannel_pump_drop_unknown_source_total"
        # Control: the same packet from a peer's address is delivered to the container.
        seen = c.lab.capture(
            "h1c1",
            "eth0",
            f"icmp and icmp[4:2] = {PEER_ICMP_ID}",
            count=1,
            timeout=3,
            during=lambda: self.send_inner(c, "h2", PEER_ICMP_ID, 1),
        )
        assert len(seen) == 1, "the test packet is not deliverable even from a peer"
        before = c.metrics(1).get(metric, 0.0)
        seen = c.lab.capture(
            "h1c1",
            "eth0",
            f"icmp and icmp[4:2] = {STRANGER_ICMP_ID}",
            count=1,
            timeout=1.5,
            during=lambda: self.send_inner(c, "sw", STRANGER_ICMP_ID, 5),
        )
        assert seen == []
        # Pump counters reach /metrics at each reconcile (every ~2 s).
        wait_for(lambda: c.metrics(1).get(metric, 0.0) == before + 5, 5, 0.3, f"{metric} == +5")


# -- the backends -------------------------------------------------------------------------------


class TestHostGw(KernelRestartTests):
    backend = "host-gw"
    mtu = 1500
    capture_filter = "icmp"

    def expected_routes(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        return {f"{c.subnet(p)} via {c.lab.host_ip(p)} dev eth0" for p in peers}

    def check_encapsulated(self, c: AgentCluster, frame: bytes, src: int, dst: int) -> None:
        dmac, _, ethertype, payload = ether(frame)
        assert ethertype == 0x0800
        ip = parse_ipv4(payload)
        assert (ip.src, ip.dst, ip.proto) == (c.container_ip(src), c.container_ip(dst), 1)
        # Plain routing: the frame goes straight to the peer host's own MAC.
        assert dmac == mac_of(c.lab, f"h{dst}", "eth0")


class TestVxlan(DeviceRepairTests, KernelRestartTests):
    backend = "vxlan"
    mtu = 1450
    device = "flannel.1"
    capture_filter = f"udp port {VXLAN_PORT}"

    def vtep_mac(self, c: AgentCluster, host: int) -> str:
        return mac_of(c.lab, f"h{host}", "flannel.1")

    def expected_routes(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        return {
            f"{c.subnet(p)} via {c.subnet(p).network_address} dev flannel.1 onlink" for p in peers
        }

    def expected_extra(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        found = set()
        for p in peers:
            mac = self.vtep_mac(c, p)
            found.add(f"{c.subnet(p).network_address} dev flannel.1 lladdr {mac} PERMANENT")
            found.add(f"{mac} dev flannel.1 dst {c.lab.host_ip(p)} self permanent")
        return found

    def current_extra(self, c: AgentCluster, host: int) -> set[str]:
        out = sh(c.lab, f"h{host}", "ip neigh show nud permanent; bridge fdb show")
        return {line for line in lines(out) if "dev flannel.1" in line}

    def expected_lease_value(self, c: AgentCluster, host: int) -> str:
        return (
            f'{{"PublicIP":"{c.lab.host_ip(host)}","PublicIPv6":null,"BackendType":"vxlan",'
            f'"BackendData":{{"VNI":1,"VtepMAC":"{self.vtep_mac(c, host)}"}}}}'
        )

    def check_device_details(self, c: AgentCluster, detail: str) -> None:
        assert "vxlan id 1 local 192.0.2.11 dev eth0 srcport 0 0 dstport 8472 nolearning" in (
            detail
        ), detail

    def check_encapsulated(self, c: AgentCluster, frame: bytes, src: int, dst: int) -> None:
        _, _, ethertype, payload = ether(frame)
        assert ethertype == 0x0800
        outer = parse_ipv4(payload)
        assert (outer.src, outer.dst, outer.proto) == (c.lab.host_ip(src), c.lab.host_ip(dst), 17)
        assert int.from_bytes(outer.payload[2:4], "big") == VXLAN_PORT
        vxlan = outer.payload[8:16]
        assert vxlan[0] == 0x08 and int.from_bytes(vxlan[4:7], "big") == 1  # I flag, VNI 1
        idmac, ismac, itype, inner_payload = ether(outer.payload[16:])
        assert (idmac, ismac, itype) == (self.vtep_mac(c, dst), self.vtep_mac(c, src), 0x0800)
        inner = parse_ipv4(inner_payload)
        assert (inner.src, inner.dst, inner.proto) == (c.container_ip(src), c.container_ip(dst), 1)

    @pytest.mark.parametrize("kind", ["neigh", "fdb"])
    def test_neigh_or_fdb_deleted_by_hand_is_back(self, c: AgentCluster, kind: str) -> None:
        vtep, mac = c.subnet(2).network_address, self.vtep_mac(c, 2)
        if kind == "neigh":
            c.lab.run("h1", "ip", "neigh", "del", str(vtep), "dev", "flannel.1")
        else:
            c.lab.run("h1", "bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", "192.0.2.12")
        assert self.current_state(c, 1) != self.expected_state(c, 1, [2, 3])
        assert self.wait_state(c, 1, REPAIR_DEADLINE) < REPAIR_DEADLINE
        assert c.lab.ping("h1c1", c.container_ip(2), timeout=1)

    def test_vtep_mac_in_etcd_is_the_device_mac(self, c: AgentCluster) -> None:
        for i in c.agents:
            lease = c.lease(i)
            assert lease is not None
            assert lease["BackendData"] == {"VNI": 1, "VtepMAC": self.vtep_mac(c, i)}


class TestUdp(DeviceRepairTests, StrangerTests):
    backend = "udp"
    mtu = 1472
    device = "flannel0"
    device_survives_restart = False
    capture_filter = f"udp port {UDP_PORT}"

    def expected_routes(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        return {f"{NETWORK} dev flannel0 scope link"}  # one route; the pump picks the peer

    def check_device_details(self, c: AgentCluster, detail: str) -> None:
        # Not persistent: flannel0 lives as long as the agent, as flanneld's (tests/interop).
        assert "tun type tun pi off" in detail and "persist off" in detail, detail

    def expected_lease_value(self, c: AgentCluster, host: int) -> str:
        # flanneld's udp lease has no BackendType (measured with flanneld v0.20.2).
        return f'{{"PublicIP":"{c.lab.host_ip(host)}","PublicIPv6":null}}'

    def check_encapsulated(self, c: AgentCluster, frame: bytes, src: int, dst: int) -> None:
        _, _, ethertype, payload = ether(frame)
        assert ethertype == 0x0800
        outer = parse_ipv4(payload)
        assert (outer.src, outer.dst, outer.proto) == (c.lab.host_ip(src), c.lab.host_ip(dst), 17)
        udp = outer.payload
        assert int.from_bytes(udp[0:2], "big") == int.from_bytes(udp[2:4], "big") == UDP_PORT
        inner_bytes = udp[8:]
        assert inner_bytes[0] == 0x45  # the raw inner IPv4 packet, no header of our own
        inner = parse_ipv4(inner_bytes)
        assert int.from_bytes(udp[4:6], "big") == 8 + inner.total_len
        assert (inner.src, inner.dst, inner.proto) == (c.container_ip(src), c.container_ip(dst), 1)


class TestIpip(DeviceRepairTests, StrangerTests):
    backend = "ipip"
    mtu = 1480
    device = "flannel.ipip"
    # This kernel has no ipip link kind: the userspace fallback (TUN + raw protocol-4 socket).
    capture_filter = "ip proto 4"

    def expected_routes(self, c: AgentCluster, host: int, peers: list[int]) -> set[str]:
        return {f"{c.subnet(p)} via {c.lab.host_ip(p)} dev flannel.ipip onlink" for p in peers}

    def check_device_details(self, c: AgentCluster, detail: str) -> None:
        assert "tun type tun pi off" in detail and "persist on" in detail, detail

    def check_encapsulated(self, c: AgentCluster, frame: bytes, src: int, dst: int) -> None:
        _, _, ethertype, payload = ether(frame)
        assert ethertype == 0x0800
        outer = parse_ipv4(payload)
        assert (outer.src, outer.dst, outer.proto) == (c.lab.host_ip(src), c.lab.host_ip(dst), 4)
        inner = parse_ipv4(outer.payload)
        assert outer.total_len == 20 + inner.total_len
        assert (inner.src, inner.dst, inner.proto) == (c.container_ip(src), c.container_ip(dst), 1)
