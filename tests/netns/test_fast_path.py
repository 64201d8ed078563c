"""The eBPF fast path of the userspace backends (udp, ipip fallback), on real agents.

Labs are wire-like (the hosts' underlay veths checksum and segment in software, as a NIC puts
packets on a wire): what crosses the underlay is what a flanneld peer would receive. Bulk
transfers are a fixed number of bytes with a digest checked at the receiver.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyflannel.backend.ebpf import syscall
from pyflannel.backend.ebpf.fastpath import FastPath
from pyflannel.backend.ebpf.programs import TC_ACT_OK, TC_ACT_REDIRECT, Layout
from pyflannel_lab.agents import AgentCluster, capture_frames, wait_for
from pyflannel_lab.transfer import TRANSFER_BYTES, transfer

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

UDP_PORT = 8285
ARGS = ["--reconcile-interval=1"]
VETH_WARNING = "eth0 is a veth with tx checksumming on"
CAPTURE = {"udp": f"udp dst port {UDP_PORT}", "ipip": "ip proto 4"}


def tc_filters(c: AgentCluster, host: int, dev: str, hook: str) -> str:
    return c.lab.run(f"h{host}", "tc", "filter", "show", "dev", dev, hook, check=False).stdout


def ones_complement(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def tcp_checksum_ok(packet: bytes) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    segment = packet[ihl:total]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(segment))
    return ones_complement(pseudo + segment) == 0xFFFF


@pytest.fixture(scope="module", params=["udp", "ipip"])
def cluster(request: pytest.FixtureRequest) -> Iterator[AgentCluster]:
    with AgentCluster.running(
        request.param, hosts=2, prefix="pff", wire_like=True, extra_args=ARGS
    ) as c:
        yield c


@pytest.fixture
def c(cluster: AgentCluster) -> AgentCluster:
    for i in cluster.agents:
        if not cluster.is_running(i):
            cluster.start(i)
    cluster.wait_converged(30)
    return cluster


def pump_processes(pid: int) -> list[int]:
    """Children of `pid` running multiprocessing's spawn entry (not its resource tracker)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def test_the_pump_is_spawned_before_the_lease_is_out(c: AgentCluster) -> None:
    """Peers send to us as soon as they read our lease: the slow part of a pump (a new
    interpreter) starts before the lease is written, and is the one that serves it."""
    c.restart(1)
    c.wait_converged(30)
    log = c.log(1)
    spawned = re.search(r"packet pump process spawned ahead of our lease \(pid (\d+)\)", log)
    lease = re.search(r"claimed previous subnet|reusing own lease|claimed subnet", log)
    running = re.search(r"packet pump running \(pid (\d+)\)", log)
    assert spawned and lease and running, log
    assert spawned.start() < lease.start() < running.start(), log
    assert running.group(1) == spawned.group(1), "the pump spawned ahead was not the one used"
    agent = c.agents[1].proc
    assert agent is not None
    assert pump_processes(agent.pid) == [int(running.group(1))], "an idle pump process was left"


def test_known_peers_go_through_the_kernel(c: AgentCluster) -> None:
    device = "flannel0" if c.backend == "udp" else "flannel.ipip"
    for i in c.agents:
        assert f"{c.backend} data path: eBPF" in c.log(i)
        assert VETH_WARNING not in c.log(i), "a wire-like veth (tx off) needs no warning"
        assert "pyflannel-decap" in tc_filters(c, i, "eth0", "ingress")
        assert "pyflannel-encap" in tc_filters(c, i, device, "egress")
    before = {i: c.metrics(i) for i in c.agents}
    transfer(c, 1, 2)
    transfer(c, 2, 1)

    def counted() -> bool:
        now = {i: c.metrics(i) for i in c.agents}
        return all(
            now[i].get("pyflannel_fast_path_encap_bytes_total", 0.0)
            - before[i].get("pyflannel_fast_path_encap_bytes_total", 0.0)
            >= TRANSFER_BYTES
            and now[i].get("pyflannel_fast_path_decap_bytes_total", 0.0)
            - before[i].get("pyflannel_fast_path_decap_bytes_total", 0.0)
            >= TRANSFER_BYTES
            for i in c.agents
        )

    wait_for(counted, 5, 0.3, "fast-path byte counters cover both transfers")
    for i in c.agents:
        pumped = c.metrics(i)["pyflannel_pump_net_tx_total"] - before[i].get(
            "pyflannel_pump_net_tx_total", 0.0
        )
        assert pumped < 20, f"h{i}: the pump sent {pumped} packets of a bulk transfer"
        assert c.metrics(i)["pyflannel_fast_path_active"] == 1.0


def test_the_wire_carries_one_inner_packet_per_datagram(c: AgentCluster) -> None:
    """Wire-sized datagrams, each exactly one inner packet with a final TCP checksum, the TTL
    as flanneld's udp proxy (one more decrement) or the kernel's ipip device (outer = inner)."""
    frames = capture_frames(
        c.lab,
        "h2",
        "eth0",
        f"{CAPTURE[c.backend]} and src host {c.lab.host_ip(1)}",
        count=200,
        timeout=20,
        during=lambda: transfer(c, 1, 2, 4 << 20),
    ).frames
    assert len(frames) >= 100, f"only {len(frames)} datagrams captured"
    big = 0
    for frame in frames:
        outer = frame[14:]
        assert int.from_bytes(frame[12:14], "big") == 0x0800
        assert len(outer) == int.from_bytes(outer[2:4], "big") <= 1500, "not wire-sized"
        assert ones_complement(outer[:20]) == 0xFFFF, "outer header checksum"
        assert outer[6] & 0x40, "DF not set"
        if c.backend == "udp":
            assert outer[9] == 17
            assert int.from_bytes(outer[20:22], "big") == UDP_PORT
            assert int.from_bytes(outer[24:26], "big") == len(outer) - 20
            inner = outer[28:]
            assert inner[8] == 62, "TTL: container 64, forwarded once, then flanneld's -1"
        else:
            assert outer[9] == 4
            inner = outer[20:]
            assert inner[8] == 63 and outer[8] == 63, "ipip: outer TTL inherited from inner"
        assert int.from_bytes(inner[2:4], "big") == len(inner), "more than one inner packet"
        src, dst = ipaddress.IPv4Address(inner[12:16]), ipaddress.IPv4Address(inner[16:20])
        assert (str(src), str(dst)) == (c.container_ip(1), c.container_ip(2))
        if inner[9] == 6:
            assert tcp_checksum_ok(inner), "inner TCP checksum not final"
        big += len(inner) > 1400
    assert big >= 50, f"only {big} full-size inner packets: was it a bulk transfer?"


FIREWALL = {"udp": ["-p", "udp", "--dport", str(UDP_PORT)], "ipip": ["-p", "4"]}


def test_known_peers_pass_before_netfilter(c: AgentCluster) -> None:
    """As the README says: tc ingress comes before netfilter, so an INPUT rule dropping the
    tunnel protocol does not stop known peers' packets on the fast path."""
    rule = ["INPUT", *FIREWALL[c.backend], "-j", "DROP"]
    c.lab.run("h2", "iptables", "-w", "-I", *rule)
    try:
        transfer(c, 1, 2, 2 << 20)
        listing = c.lab.run("h2", "iptables", "-w", "-L", "INPUT", "-v", "-n", "-x").stdout
        drop = next(line for line in listing.splitlines() if " DROP " in f" {line} ")
        assert int(drop.split()[0]) == 0, f"netfilter saw tunnel packets: {drop}"
    finally:
        c.lab.run("h2", "iptables", "-w", "-D", *rule)


def test_a_killed_agent_leaves_the_kernel_forwarding_or_cleans_up(c: AgentCluster) -> None:
    """ipip (persistent TUN): the filters keep carrying known peers' packets while no agent
    runs. udp (flannel0 goes with the pump): its pump takes the decap filter away with it, so
    a flanneld or a new agent on this node gets its packets."""
    agent = c.agents[1].proc
    assert agent is not None
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)
    c.agents[1].proc = None
    if c.backend == "ipip":
        time.sleep(1)  # the pump saw its pipe close and left
        transfer(c, 1, 2, 4 << 20)
        transfer(c, 2, 1, 4 << 20)
    else:
        wait_for(
            lambda: "pyflannel-decap" not in tc_filters(c, 1, "eth0", "ingress"),
            5,
            0.2,
            "udp decap filter gone with the pump",
        )
        assert c.lab.run("h1", "ip", "link", "show", "flannel0", check=False).returncode != 0
    c.start(1)
    c.wait_converged(30)
    transfer(c, 1, 2, 4 << 20)


def test_pump_only_when_the_fast_path_is_off() -> None:
    with AgentCluster.running(
        "udp",
        hosts=2,
        prefix="pff",
        wire_like=True,
        extra_args=[*ARGS, "--userspace-fast-path=false"],
    ) as c:
        for i in c.agents:
            assert "udp data path: the packet pump (--userspace-fast-path=false)" in c.log(i)
            assert "pyflannel-decap" not in tc_filters(c, i, "eth0", "ingress")
        transfer(c, 1, 2, 4 << 20)
        wait_for(
            lambda: c.metrics(1).get("pyflannel_pump_net_tx_total", 0.0) > 2000,
            5,
            0.3,
            "the pump carried the transfer",
        )
        assert c.metrics(1)["pyflannel_fast_path_active"] == 0.0
        # Without the fast path netfilter sees the tunnel packets: the same rule stops them.
        rule = ["INPUT", *FIREWALL["udp"], "-j", "DROP"]
        c.lab.run("h2", "iptables", "-w", "-I", *rule)
        try:
            ping = c.lab.ping_result("h1c1", c.container_ip(2), count=2, timeout=1)
            assert ping.returncode != 0, "the pump's packets passed an INPUT drop rule"
        finally:
            c.lab.run("h2", "iptables", "-w", "-D", *rule)


def test_switching_to_a_kernel_backend_removes_the_decap_filter() -> None:
    with AgentCluster.running("ipip", hosts=2, prefix="pff", extra_args=ARGS) as c:
        assert all("pyflannel-decap" in tc_filters(c, i, "eth0", "ingress") for i in c.agents)
        # A plain veth underlay: the agent says what its userspace-reading peers would lose.
        assert all(VETH_WARNING in c.log(i) for i in c.agents)
        c.backend = "vxlan"
        c.put_config()
        for i in c.agents:
            c.restart(i)
        for i in c.agents:
            wait_for(
                lambda i=i: "pyflannel-decap" not in tc_filters(c, i, "eth0", "ingress"),
                10,
                0.3,
                f"h{i}: the ipip decap filter removed after the switch to vxlan",
            )
            assert "eBPF decap filter" in c.log(i)


# -- the programs on their own (root, no lab) ----------------------------------------------------

LOCAL, PEER, STRANGER = "198.51.100.7", "198.51.100.8", "198.51.100.9"
NETWORK_16 = ipaddress.IPv4Network("10.5.0.0/16")


def _ipv4(
    src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, frag: int = 0x4000
) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        frag,
        ttl,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    check = (~ones_complement(header)) & 0xFFFF
    return header[:10] + check.to_bytes(2, "big") + header[12:] + payload


def _frame(mode: str, outer_src: str, inner_dst: str, frag: int = 0x4000) -> tuple[bytes, bytes]:
    """(Ethernet frame from the underlay, the inner packet it carries)."""
    inner = _ipv4("10.5.2.3", inner_dst, 1, b"\x08\x00\x00\x00" + b"x" * 60)
    if mode == "udp":
        payload = struct.pack("!HHHH", UDP_PORT, UDP_PORT, 8 + len(inner), 0) + inner
        outer = _ipv4(outer_src, LOCAL, 17, payload, frag=frag)
    else:
        outer = _ipv4(outer_src, LOCAL, 4, inner, frag=frag)
    eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    return eth + outer, eth + inner


@pytest.fixture(params=["udp", "ipip"])
def fast_path(request: pytest.FixtureRequest) -> Iterator[FastPath]:
    layout = Layout(request.param, NETWORK_16, 24, ipaddress.IPv4Address(LOCAL), UDP_PORT, 1, 1)
    fp = FastPath(layout)
    fp.set_peers({"10.5.2.0/24": PEER})
    try:
        yield fp
    finally:
        fp.close()


def test_decap_strips_the_outer_header_of_a_known_peer(fast_path: FastPath) -> None:
    frame, inner_frame = _frame(fast_path.layout.mode, PEER, "10.5.1.9")
    verdict, out = syscall.test_run(fast_path.decap_fd, frame)
    assert verdict == TC_ACT_REDIRECT
    assert out == inner_frame
    assert fast_path.stats()["decap_packets"] == 1


@pytest.mark.parametrize(
    ("outer_src", "inner_dst", "frag", "why"),
    [
        (STRANGER, "10.5.1.9", 0x4000, "a stranger's"),
        (PEER, "192.0.2.77", 0x4000, "inner destination outside the Network"),
        (PEER, "10.5.1.9", 0x2000, "a first fragment"),
        (PEER, "10.5.1.9", 0x0010, "a later fragment"),
    ],
)
def test_decap_leaves_the_rest_to_the_pump(
    fast_path: FastPath, outer_src: str, inner_dst: str, frag: int, why: str
) -> None:
    frame, _ = _frame(fast_path.layout.mode, outer_src, inner_dst, frag)
    verdict, out = syscall.test_run(fast_path.decap_fd, frame)
    assert (verdict, out) == (TC_ACT_OK, frame), why
    assert fast_path.stats()["decap_packets"] == 0


def test_a_peer_gone_from_the_table_is_a_stranger(fast_path: FastPath) -> None:
    fast_path.set_peers({})
    frame, _ = _frame(fast_path.layout.mode, PEER, "10.5.1.9")
    assert syscall.test_run(fast_path.decap_fd, frame) == (TC_ACT_OK, frame)
    assert fast_path.peer_map.keys() == [] and fast_path.source_map.keys() == []


@pytest.mark.parametrize(
    ("mode", "network", "subnet_len", "port"),
    [
        ("udp", "10.0.0.0/8", 24, 8285),
        ("udp", "10.5.0.0/16", 28, 8399),
        ("ipip", "172.16.0.0/12", 20, 0),
        ("ipip", "100.64.0.0/10", 26, 0),
    ],
)
def test_programs_pass_the_verifier_for_any_layout(
    mode: str, network: str, subnet_len: int, port: int
) -> None:
    layout = Layout(
        mode,  # type: ignore[arg-type]
        ipaddress.IPv4Network(network),
        subnet_len,
        ipaddress.IPv4Address(LOCAL),
        port,
        1,
        1,
    )
    fp = FastPath(layout)  # raises FastPathUnavailable with the verifier's words otherwise
    fp.close()
