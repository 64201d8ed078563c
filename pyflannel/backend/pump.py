"""The userspace packet pump shared by the udp backend and the ipip fallback.

It runs in a process of its own (started with `spawn`: no gRPC threads are inherited, and the
control plane never competes with it for the interpreter). It owns two file descriptors:
the TUN device (inner IPv4 packets) and an underlay socket (UDP for udp, raw IP protocol 4 for
ipip). Per packet the work is a few byte slices and one dict lookup:
    TUN -> underlay: inner destination & subnet mask -> peer public IP; no peer -> ICMP net
                     unreachable back to the sender. udp decrements the TTL once more, as
                     flanneld's proxy; ipip sends the inner packet unchanged with the outer TTL
                     inherited from it, as the kernel's ipip device configured by flannel.
    underlay -> TUN: outer source must be a known peer and the inner destination inside the
                     Network; anything else is dropped and counted.
The parent talks to it over a pipe: peer table updates, stats requests, stop.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Literal

from pyflannel.backend.ebpf.fastpath import remove_decap_filter

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
MAX_PACKET = 65535
BATCH = 64  # packets handled per direction per wake-up before polling again
ICMP_PER_SECOND = 100  # rate limit for generated ICMP errors

Mode = Literal["udp", "ipip"]


@dataclass(frozen=True)
class PumpSpec:
    """Everything the pump process needs; picklable (sent to the spawned process)."""

    mode: Mode
    tun_name: str
    network: str  # the flannel Network, e.g. "10.5.0.0/16"
    subnet_len: int
    bind_ip: str  # underlay address to send from / receive on
    port: int = 8285  # udp only
    tunnel_ip: str = ""  # our address on the TUN (source of ICMP errors we generate)
    # False: the TUN lives only as long as the pump holds it (udp, as flanneld's flannel0).
    persistent: bool = True
    # The underlay device, whose eBPF decap filter (if any) redirects into a TUN that goes
    # with a non-persistent pump: removed when the pump ends (0: nothing to remove).
    underlay_index: int = 0


@dataclass
class PumpStats:
    tun_rx: int = 0
    net_tx: int = 0
    net_rx: int = 0
    tun_tx: int = 0
    drop_no_peer: int = 0
    drop_unknown_source: int = 0
    drop_outside_network: int = 0
    drop_malformed: int = 0
    drop_send_error: int = 0
    icmp_unreachable: int = 0
    icmp_time_exceeded: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}


def attach_tun(name: str, persistent: bool = True) -> int:
    """Open the persistent TUN device `name` (created by the parent through pyroute2).

    pyroute2 creates and configures TUN devices but has no call that hands back an attached
    file descriptor, hence this ioctl. persistent=False clears the device's persist flag, so it
    goes away (with its address and routes) when this descriptor is closed.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        if not persistent:
            fcntl.ioctl(fd, TUNSETPERSIST, 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_error(original: bytes, source: bytes, icmp_type: int, code: int, ident: int = 0) -> bytes:
    """An ICMP error (RFC 792) about `original`, from `source`, quoting its header + 8 bytes."""
    ihl = (original[0] & 0x0F) * 4
    quoted = original[: ihl + 8]
    body = struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    total = 20 + len(body)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0, 64, 1, 0, source, original[12:16]
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


class Pump:
    def __init__(self, spec: PumpSpec, control: Connection) -> None:
        self.spec = spec
        self.control = control
        network = ipaddress.IPv4Network(spec.network)
        self.net_addr = int(network.network_address)
        self.net_mask = int(network.netmask)
        self.subnet_mask = (0xFFFFFFFF << (32 - spec.subnet_len)) & 0xFFFFFFFF
        self.tunnel_ip = ipaddress.IPv4Address(spec.tunnel_ip or network.network_address).packed
        self.peers: dict[int, tuple[str, int]] = {}  # subnet int -> underlay address
        self.sources: set[str] = set()  # public IPs we accept packets from
        self.stats = PumpStats()
        self._icmp_tokens = float(ICMP_PER_SECOND)
        self._icmp_refill = time.monotonic()
        self.outer_ttl = 64  # ipip: the TTL the raw socket currently sends with (Linux default)
        self.tun = attach_tun(spec.tun_name, spec.persistent)
        self.sock = self._open_socket()

    def _open_socket(self) -> socket.socket:
        if self.spec.mode == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.spec.bind_ip, self.spec.port))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
            sock.bind((self.spec.bind_ip, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setblocking(False)
        return sock

    def set_peers(self, peers: dict[str, str]) -> None:
        """peers: subnet CIDR -> public IP."""
        port = self.spec.port if self.spec.mode == "udp" else 0
        table = {}
        for cidr, public_ip in peers.items():
            table[int(ipaddress.IPv4Network(cidr).network_address)] = (public_ip, port)
        self.peers = table
        self.sources = {ip for ip, _ in table.values()}

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        poller = select.poll()
        tun_fd, sock_fd, ctl_fd = self.tun, self.sock.fileno(), self.control.fileno()
        for fd in (tun_fd, sock_fd, ctl_fd):
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll(1000):
                if fd == tun_fd:
                    self.from_tun()
                elif fd == sock_fd:
                    self.from_net()
                elif not self.handle_control():
                    return

    def handle_control(self) -> bool:
        while self.control.poll():
            try:
                kind, payload = self.control.recv()
            except EOFError:
                return False  # parent gone: stop, systemd restarts the agent
            if kind == "peers":
                self.set_peers(payload)
                self.control.send(("ok", None))
            elif kind == "stats":
                self.control.send(("stats", self.stats.as_dict()))
            elif kind == "stop":
                self.control.send(("ok", None))
                return False
        return True

    def from_tun(self) -> None:
        tun, sock, peers, mask = self.tun, self.sock, self.peers, self.subnet_mask
        stats = self.stats
        ipip = self.spec.mode == "ipip"
        for _ in range(BATCH):
            try:
                packet = os.read(tun, MAX_PACKET)
            except BlockingIOError:
                return
            stats.tun_rx += 1
            if len(packet) < 20 or packet[0] >> 4 != 4:
                stats.drop_malformed += 1
                continue
            dst = int.from_bytes(packet[16:20], "big")
            peer = peers.get(dst & mask)
            if peer is None:
                stats.drop_no_peer += 1
                if dst & self.net_mask == self.net_addr:
                    self._reply_icmp(packet, 3, 0)  # destination net unreachable
                continue
            ttl = packet[8]
            if ipip:
                # As the kernel's ipip device set up like flannel's (ttl inherit): the inner
                # packet leaves unchanged (forwarding to the TUN already cost it one hop) and
                # the outer header takes its TTL.
                if ttl != self.outer_ttl:
                    self.outer_ttl = ttl
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, max(1, ttl))
            else:
                # flanneld's udp proxy decrements once more: so do we (the same bytes on the wire).
                if ttl <= 1:
                    self._reply_icmp(packet, 11, 0)  # time exceeded in transit
                    continue
                # Decrement TTL, patch the header checksum incrementally (RFC 1141).
                csum = int.from_bytes(packet[10:12], "big") + 0x100
                csum = (csum & 0xFFFF) + (csum >> 16)
                packet = (
                    packet[:8]
                    + bytes((ttl - 1,))
                    + packet[9:10]
                    + csum.to_bytes(2, "big")
                    + packet[12:]
                )
            try:
                sock.sendto(packet, peer)
                stats.net_tx += 1
            except OSError as exc:
                stats.drop_send_error += 1
                if exc.errno == errno.EMSGSIZE and not ipip:
                    continue

    def from_net(self) -> None:
        sock, tun, stats = self.sock, self.tun, self.stats
        sources, net_mask, net_addr = self.sources, self.net_mask, self.net_addr
        ipip = self.spec.mode == "ipip"
        for _ in range(BATCH):
            try:
                data, (source, _port) = sock.recvfrom(MAX_PACKET)
            except BlockingIOError:
                return
            stats.net_rx += 1
            if source not in sources:
                stats.drop_unknown_source += 1
                continue
            if ipip:
                data = data[(data[0] & 0x0F) * 4 :]  # raw sockets hand us the outer header
            if len(data) < 20 or data[0] >> 4 != 4:
                stats.drop_malformed += 1
                continue
            if int.from_bytes(data[16:20], "big") & net_mask != net_addr:
                stats.drop_outside_network += 1
                continue
            try:
                os.write(tun, data)
                stats.tun_tx += 1
            except OSError:
                stats.drop_send_error += 1

    def _reply_icmp(self, packet: bytes, icmp_type: int, code: int) -> None:
        now = time.monotonic()
        self._icmp_tokens = min(
            float(ICMP_PER_SECOND), self._icmp_tokens + (now - self._icmp_refill) * ICMP_PER_SECOND
        )
        self._icmp_refill = now
        if self._icmp_tokens < 1:
            return
        self._icmp_tokens -= 1
        if icmp_type == 3:
            self.stats.icmp_unreachable += 1
        else:
            self.stats.icmp_time_exceeded += 1
        try:
            os.write(self.tun, icmp_error(packet, self.tunnel_ip, icmp_type, code))
        except OSError:
            self.stats.drop_send_error += 1


def serve(spec: PumpSpec | None, control: Connection) -> None:
    """Entry point of the pump process.

    Without a spec the process waits for ("start", spec): the parent spawns it ahead of need
    (starting an interpreter takes about a second on a loaded host) and hands it the spec once
    our lease is known, so a node switching to udp serves its port as soon as the lease is out.
    """
    if spec is None:
        try:
            kind, payload = control.recv()
        except (EOFError, OSError):
            return  # the parent went away before it needed us
        if kind != "start":
            return
        spec = payload
    assert spec is not None
    try:
        pump = Pump(spec, control)
    except OSError as exc:
        control.send(("error", f"{spec.tun_name}: {exc.strerror or exc}"))
        return
    control.send(("ready", None))
    try:
        pump.run()
    finally:
        if not spec.persistent and spec.underlay_index:
            # Also when the agent was killed (the pipe's EOF ends run()): a filter left behind
            # would swallow the next flannel0's packets (a restarted agent, or flanneld). The
            # TUN goes first (closing its last descriptor deletes it), then the filter into it.
            os.close(pump.tun)
            remove_decap_filter(spec.underlay_index)
