"""The two fast-path programs, built per node (addresses and ports are immediates).

encap (tc egress on the TUN, where the kernel hands over the packets the pump would read):
    inner destination & subnet mask -> peer public IP from the peers map; found: push the
    outer header (udp: IPv4 + UDP to Port, no UDP checksum, as the kernel's own UDP tunnels
    for IPv4; ipip: IPv4 protocol 4) and send it out of the underlay device, the neighbour's
    MAC filled in by the kernel (bpf_redirect_neigh). A segmentation-offload packet stays one
    until the underlay device (or its driver) cuts it into datagrams that each carry one inner
    packet. Not found: the packet goes on to the TUN. The TTL as the pump:
    udp decrements it once more (flanneld's proxy does), ipip copies it to the outer header.
decap (tc ingress on the underlay device): IPv4 to our address, not a fragment, our protocol
    (and UDP port), from a public IP in the sources map, inner packet IPv4 inside the Network:
    strip the outer header and deliver the inner packet as received on the TUN (so rp_filter
    and `-i flannel0` firewall rules see what they see with the pump).
Anything else (no peer, TTL 1, IP options, strangers, short packets) goes the slow way: to
the TUN and the pump, which answers with ICMP errors and counts drops. Counters: packets and
bytes per direction in the stats array map (u64 slots, see STAT_SLOTS).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from pyflannel.backend.ebpf.asm import R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, Program

# helper ids (enum bpf_func_id)
MAP_LOOKUP_ELEM, SKB_STORE_BYTES, L3_CSUM_REPLACE, REDIRECT = 1, 9, 10, 23
CSUM_DIFF, SKB_CHANGE_HEAD, SKB_ADJUST_ROOM, REDIRECT_NEIGH = 28, 43, 50, 152
# __sk_buff offsets
SKB_LEN, SKB_DATA, SKB_DATA_END = 0, 76, 80
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
ADJ_ROOM_MAC = 1
F_FIXED_GSO, F_ENCAP_L3_IPV4, F_ENCAP_L4_UDP = 1 << 0, 1 << 1, 1 << 4
F_INGRESS = 1
ETH_HLEN = 14
IP_HLEN, UDP_HLEN = 20, 8
STAT_SLOTS = ("encap_packets", "encap_bytes", "decap_packets", "decap_bytes")

Mode = Literal["udp", "ipip"]


def _le32(address: ipaddress.IPv4Address) -> int:
    """An IPv4 address (or mask) as a little-endian load of its wire bytes gives it."""
    return int.from_bytes(address.packed, "little")


def _be16_le(value: int) -> int:
    """A 16-bit field in network order, as a little-endian 16-bit load gives it."""
    return int.from_bytes(value.to_bytes(2, "big"), "little")


@dataclass(frozen=True)
class Layout:
    mode: Mode
    network: ipaddress.IPv4Network
    subnet_len: int
    local_ip: ipaddress.IPv4Address
    port: int  # udp only
    underlay_index: int
    tun_index: int

    @property
    def outer_len(self) -> int:
        return IP_HLEN + (UDP_HLEN if self.mode == "udp" else 0)

    @property
    def protocol(self) -> int:
        return 17 if self.mode == "udp" else 4


def _lookup(p: Program, map_fd: int, key_at: int, miss: str) -> None:
    """r0 = the map's value for the u32 key on the stack at r10 + key_at; `miss` when none."""
    p.load_map_fd(R1, map_fd)
    p.mov(R2, src=R10)
    p.alu("add", R2, key_at)
    p.call(MAP_LOOKUP_ELEM)
    p.jump("eq", miss, R0, 0, wide=True)


def _count(p: Program, stats_fd: int, slot: int, length_reg: int) -> None:
    """stats[slot] += 1, stats[slot + 1] += length (r1-r5 and r0 clobbered)."""
    for index, amount in ((slot, None), (slot + 1, length_reg)):
        skip = f"count_done_{slot}_{index}"
        p.store_imm(R10, -40, index, 4)
        _lookup(p, stats_fd, -40, skip)
        if amount is None:
            p.mov(R1, 1)
        else:
            p.mov(R1, src=amount)
        p.atomic_add(R0, 0, R1)
        p.label(skip)


def _ld_ctx_packet(p: Program, need: int, miss: str) -> None:
    """r2 = packet start, r3 = end; jump to `miss` when fewer than `need` bytes."""
    p.load(R2, R6, SKB_DATA, 4)
    p.load(R3, R6, SKB_DATA_END, 4)
    p.mov(R4, src=R2)
    p.alu("add", R4, need)
    p.jump("gt", miss, R4, src=R3, wide=True)


def _call(p: Program, helper: int, *args: int | tuple[str, int]) -> None:
    """Call a helper with r1.. set from immediates or ("r", n) registers / ("fp", off)."""
    for register, arg in zip((R1, R2, R3, R4, R5), args, strict=False):
        if isinstance(arg, tuple):
            kind, value = arg
            if kind == "fp":
                p.mov(register, src=R10)
                p.alu("add", register, value)
            else:
                p.mov(register, src=value)
        else:
            p.mov(register, arg)
    p.call(helper)


def encap(layout: Layout, peers_fd: int, stats_fd: int) -> bytes:
    """The tc egress program of the TUN."""
    p = Program()
    subnet_mask = ipaddress.IPv4Network(f"0.0.0.0/{layout.subnet_len}").netmask
    hdr = layout.outer_len
    ctx = ("r", R6)
    p.mov(R6, src=R1)
    _ld_ctx_packet(p, IP_HLEN, "slow")
    p.load(R5, R2, 0, 1)
    p.jump("ne", "slow", R5, 0x45)  # IPv4 without options
    p.load(R7, R2, 8, 2)  # TTL | protocol << 8 (wire bytes)
    p.load(R8, R2, 16, 4)
    p.alu("and", R8, _le32(subnet_mask), wide=False)
    p.store(R10, -4, R8, 4)
    _lookup(p, peers_fd, -4, "slow")
    p.load(R9, R0, 0, 4)  # the peer's public IP
    p.mov(R8, src=R7)
    p.alu("and", R8, 0xFF)  # inner TTL
    if layout.mode == "udp":
        p.jump("le", "slow", R8, 1)  # the pump sends time exceeded
        p.mov(R8, src=R7)
        p.alu("sub", R8, 1)
        p.store(R10, -8, R8, 2)
        _call(p, SKB_STORE_BYTES, ctx, 8, ("fp", -8), 2, 0)
        p.jump("ne", "drop", R0, 0)
        _call(p, L3_CSUM_REPLACE, ctx, 10, ("r", R7), ("r", R8), 2)
        p.jump("ne", "drop", R0, 0)
        p.mov(R8, 64)  # outer TTL: a socket's default
    p.load(R7, R6, SKB_LEN, 4)  # inner length
    _count(p, stats_fd, 0, R7)
    # Room for the outer header; the flags make a segmentation-offload packet a tunnel one
    # (UDP tunnel or IP-in-IP), cut into wire-sized datagrams by the underlay device.
    flags = F_ENCAP_L3_IPV4 | (F_ENCAP_L4_UDP if layout.mode == "udp" else 0)
    _call(p, SKB_ADJUST_ROOM, ctx, hdr, ADJ_ROOM_MAC, flags)
    p.jump("ne", "drop", R0, 0)
    base = -32  # the outer header, built on the stack
    p.mov(R1, src=R7)
    p.alu("add", R1, hdr)
    p.to_be(R1, 16)
    p.alu("lsh", R1, 16)
    p.alu("or", R1, 0x45)
    p.store(R10, base, R1, 4)  # version/IHL, TOS 0, total length
    p.store_imm(R10, base + 4, int.from_bytes(b"\x00\x00\x40\x00", "little"), 4)  # id 0, DF
    p.mov(R1, layout.protocol)
    p.alu("lsh", R1, 8)
    p.alu("or", R1, src=R8)
    p.store(R10, base + 8, R1, 4)  # TTL, protocol, checksum 0 (below)
    p.store_imm(R10, base + 12, _le32(layout.local_ip), 4)
    p.store(R10, base + 16, R9, 4)
    if layout.mode == "udp":
        port = _be16_le(layout.port)
        p.store_imm(R10, base + 20, port | (port << 16), 4)
        p.mov(R1, src=R7)
        p.alu("add", R1, UDP_HLEN)
        p.to_be(R1, 16)
        p.store(R10, base + 24, R1, 4)  # length, checksum 0
    _call(p, CSUM_DIFF, 0, 0, ("fp", base), IP_HLEN, 0)
    for _ in range(2):  # fold the 32-bit sum to 16 bits
        p.mov(R1, src=R0)
        p.alu("rsh", R1, 16)
        p.alu("and", R0, 0xFFFF)
        p.alu("add", R0, src=R1)
    p.alu("xor", R0, 0xFFFF)
    p.store(R10, base + 10, R0, 2)
    _call(p, SKB_STORE_BYTES, ctx, 0, ("fp", base), hdr, 0)
    p.jump("ne", "drop", R0, 0)
    # bpf_redirect_neigh takes an Ethernet frame (it strips the MAC header and writes the
    # neighbour's): give the L3 packet a placeholder one.
    _call(p, SKB_CHANGE_HEAD, ctx, ETH_HLEN, 0)
    p.jump("ne", "drop", R0, 0)
    _call(p, REDIRECT_NEIGH, layout.underlay_index, 0, 0, 0)
    p.exit()
    p.label("slow")
    p.ret(TC_ACT_OK)
    p.label("drop")
    p.ret(TC_ACT_SHOT)
    return p.assemble()


def decap(layout: Layout, sources_fd: int, stats_fd: int) -> bytes:
    p = Program()
    hdr = layout.outer_len
    inner = ETH_HLEN + hdr
    p.mov(R6, src=R1)
    _ld_ctx_packet(p, inner + IP_HLEN, "pass")
    p.load(R5, R2, 12, 2)
    p.jump("ne", "pass", R5, _be16_le(0x0800))
    p.load(R5, R2, ETH_HLEN, 1)
    p.jump("ne", "pass", R5, 0x45)
    p.load(R5, R2, ETH_HLEN + 6, 2)
    p.alu("and", R5, _be16_le(0x3FFF))
    p.jump("ne", "pass", R5, 0)  # a fragment: the kernel reassembles, the pump reads it
    p.load(R5, R2, ETH_HLEN + 9, 1)
    p.jump("ne", "pass", R5, layout.protocol)
    p.load(R5, R2, ETH_HLEN + 16, 4)
    p.jump("ne", "pass", R5, _le32(layout.local_ip))
    if layout.mode == "udp":
        p.load(R5, R2, ETH_HLEN + IP_HLEN + 2, 2)
        p.jump("ne", "pass", R5, _be16_le(layout.port))
    p.load(R5, R2, inner, 1)
    p.alu("and", R5, 0xF0)
    p.jump("ne", "pass", R5, 0x40)
    p.load(R5, R2, inner + 16, 4)
    p.alu("and", R5, _le32(layout.network.netmask), wide=False)
    p.jump("ne", "pass", R5, _le32(layout.network.network_address))
    p.load(R7, R2, ETH_HLEN + 12, 4)
    p.store(R10, -4, R7, 4)
    _lookup(p, sources_fd, -4, "pass")  # a stranger: the pump drops and counts it
    p.load(R7, R6, SKB_LEN, 4)
    _count(p, stats_fd, 2, R7)
    _call(p, SKB_ADJUST_ROOM, ("r", R6), -hdr, ADJ_ROOM_MAC, F_FIXED_GSO)
    p.jump("ne", "pass", R0, 0)
    _call(p, REDIRECT, layout.tun_index, F_INGRESS)
    p.exit()
    p.label("pass")
    p.ret(TC_ACT_OK)
    return p.assemble()
