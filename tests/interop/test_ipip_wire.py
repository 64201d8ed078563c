"""ipip: is pyflannel's userspace data path the kernel's wire format? A capture says yes.

flanneld v0.20.2 cannot run ipip here (this kernel has no ipip link kind, so flanneld fails with
"operation not supported"), and pyflannel falls back to its userspace data path (TUN + raw
protocol-4 socket). This test captures one echo request as it leaves the container and as it
crosses the underlay, and checks the underlay frame byte by byte against what the kernel's ipip
device, set up as flanneld sets up flannel.ipip (local = public IP, remote any, ttl inherit),
sends for it: RFC 2003, a 20-byte outer IPv4 header (protocol 4, public IP to public IP, TTL
taken from the inner packet) followed by the inner packet after exactly one forwarding hop.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from pyflannel_lab.agents import AgentCluster, Capture, capture_frames
from pyflannel_lab.peers import Peers
from tests.interop.support import mixed_cluster


def checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forwarded(packet: bytes) -> bytes:
    """The IPv4 packet after one router hop: TTL - 1, header checksum recomputed."""
    ihl = (packet[0] & 0x0F) * 4
    header = bytearray(packet[:ihl])
    header[8] -= 1
    header[10:12] = b"\0\0"
    header[10:12] = checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header) + packet[ihl:]


@pytest.fixture(scope="module")
def cluster(lab_ready: Peers) -> Iterator[AgentCluster]:
    with mixed_cluster(lab_ready, "ipip", (), hosts=2) as c:
        yield c


def test_this_kernel_has_no_ipip_so_flanneld_cannot_run_it(cluster: AgentCluster) -> None:
    result = cluster.lab.run(1, "ip", "link", "add", "pfiprobe", "type", "ipip", check=False)
    assert result.returncode != 0, "this kernel has ipip: compare with the kernel's frames too"
    assert "userspace IPIP data path" in cluster.log(1)


def test_userspace_ipip_frame_is_the_kernels(cluster: AgentCluster) -> None:
    inner: list[Capture] = []

    def ping_while_capturing_inside() -> None:
        # Nested: both captures listen before the one echo request is sent.
        inner.append(
            capture_frames(
                cluster.lab,
                1,
                "cbr0",
                "icmp[icmptype] == 8",
                count=1,
                during=lambda: cluster.lab.ping("h1c1", cluster.container_ip(2), timeout=2),
            )
        )

    outer = capture_frames(
        cluster.lab, "sw", "h1", "ip proto 4", count=1, during=ping_while_capturing_inside
    )
    assert inner and inner[0].frames and outer.frames, "no echo request captured"
    sent = inner[0].frames[0][14:]  # the container's packet, as it reached its host
    wire = outer.frames[0][14:]
    header, payload = wire[:20], wire[20:]
    version_ihl, _tos, total_len, _ident, _frag, ttl, proto = struct.unpack("!BBHHHBB", header[:10])
    assert version_ihl == 0x45 and proto == 4 and total_len == len(wire) == 20 + len(sent)
    assert header[12:16] == bytes(map(int, cluster.lab.host_ip(1).split(".")))
    assert header[16:20] == bytes(map(int, cluster.lab.host_ip(2).split(".")))
    assert checksum(header) == 0
    assert payload == forwarded(sent), "the inner packet is not the container's after one hop"
    assert ttl == payload[8], "the outer TTL is not inherited from the inner packet"
