"""Loads, attaches and feeds the eBPF fast path of a userspace backend.

Attached with pyroute2 as tc direct-action filters: encap on the TUN's egress, decap on the
underlay device's ingress (clsact qdiscs, created when missing and left in place: other
software may hang filters on them). Our filters have a fixed priority and name, so a restarted
agent replaces its predecessor's atomically and only ever removes its own. The maps are held by
the programs: the filters keep forwarding with the last peer table while no agent runs (a
restart, a crash), except udp's decap filter, which its pump removes on the way out (the TUN it
feeds goes with the pump).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import struct
from collections.abc import Mapping

from pyroute2.ethtool import Ethtool
from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyflannel.backend.ebpf import programs, syscall
from pyflannel.backend.ebpf.programs import STAT_SLOTS, Layout

log = logging.getLogger(__name__)

FILTER_PRIO = 0x4A1  # ours among a device's filters
INGRESS_PARENT = 0xFFFFFFF2
EGRESS_PARENT = 0xFFFFFFF3
MAX_PEERS = 65536


class FastPathUnavailable(Exception):
    """The kernel refused a step; the pump carries everything (the message says why)."""


def _key(address: ipaddress.IPv4Address) -> bytes:
    return address.packed


class FastPath:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.peers: dict[bytes, bytes] = {}  # subnet -> public IP, as in the kernel map
        self.sources: set[bytes] = set()
        entries = min(MAX_PEERS, 1 << max(0, layout.subnet_len - layout.network.prefixlen))
        self._maps: list[syscall.Map] = []
        self._progs: list[int] = []
        try:
            self.peer_map = self._map("pf_peers", syscall.BPF_MAP_TYPE_HASH, 4, 4, entries)
            self.source_map = self._map("pf_sources", syscall.BPF_MAP_TYPE_HASH, 4, 1, entries)
            self.stats_map = self._map(
                "pf_stats", syscall.BPF_MAP_TYPE_ARRAY, 4, 8, len(STAT_SLOTS)
            )
            self.encap_fd = self._prog(
                "pf_encap",
                programs.encap(layout, self.peer_map.fd, self.stats_map.fd),
                syscall.BPF_PROG_TYPE_SCHED_CLS,
            )
            self.decap_fd = self._prog(
                "pf_decap",
                programs.decap(layout, self.source_map.fd, self.stats_map.fd),
                syscall.BPF_PROG_TYPE_SCHED_CLS,
            )
        except syscall.BpfError as exc:
            self.close()
            raise FastPathUnavailable(str(exc)) from None

    def _map(self, name: str, kind: int, key: int, value: int, entries: int) -> syscall.Map:
        created = syscall.Map(name, kind, key, value, entries)
        self._maps.append(created)
        return created

    def _prog(self, name: str, code: bytes, kind: int) -> int:
        fd = syscall.load_program(name, code, kind)
        self._progs.append(fd)
        return fd

    # -- attachment --------------------------------------------------------------------------

    def attach(self, ipr: IPRoute) -> None:
        """Decap first: a peer's fast path may already send to us."""
        try:
            self._attach(ipr, self.layout.underlay_index, INGRESS_PARENT, self.decap_fd, "decap")
            self._attach(ipr, self.layout.tun_index, EGRESS_PARENT, self.encap_fd, "encap")
        except NetlinkError as exc:
            self.detach(ipr)
            raise FastPathUnavailable(f"tc filter: {exc}") from None

    def _attach(self, ipr: IPRoute, index: int, parent: int, fd: int, name: str) -> None:
        try:
            ipr.tc("add", "clsact", index)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        ipr.tc(
            "replace-filter",
            "bpf",
            index,
            handle=1,
            prio=FILTER_PRIO,
            parent=parent,
            fd=fd,
            name=f"pyflannel-{name}",
            direct_action=True,
            protocol=0x0003,  # ETH_P_ALL: the programs check the headers themselves
        )

    def detach(self, ipr: IPRoute) -> None:
        """Our two filters away (the TUN's also goes with the device)."""
        remove_filter(ipr, self.layout.tun_index, EGRESS_PARENT)
        remove_filter(ipr, self.layout.underlay_index, INGRESS_PARENT)

    # -- the peer table ----------------------------------------------------------------------

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """peers: subnet CIDR -> public IP. Only differences reach the kernel."""
        wanted = {
            _key(ipaddress.IPv4Network(cidr).network_address): _key(ipaddress.IPv4Address(ip))
            for cidr, ip in peers.items()
        }
        sources = set(wanted.values())
        for ip in sources - self.sources:
            self.source_map.update(ip, b"\x01")
        for subnet, ip in wanted.items():
            if self.peers.get(subnet) != ip:
                self.peer_map.update(subnet, ip)
        for subnet in self.peers.keys() - wanted.keys():
            self.peer_map.delete(subnet)
        for ip in self.sources - sources:
            self.source_map.delete(ip)
        self.peers, self.sources = wanted, sources

    def stats(self) -> dict[str, int]:
        values = {}
        for slot, name in enumerate(STAT_SLOTS):
            raw = self.stats_map.lookup(struct.pack("<I", slot))
            values[name] = struct.unpack("<Q", raw)[0] if raw else 0
        return values

    def close(self) -> None:
        """Our descriptors; attached programs (and their maps) stay in the kernel."""
        for fd in self._progs:
            syscall.close_fd(fd)
        for bpf_map in self._maps:
            bpf_map.close()
        self._progs, self._maps = [], []


def remove_filter(ipr: IPRoute, index: int, parent: int) -> bool:
    """Remove our filter from a device's clsact hook; False when it was not there."""
    try:
        ipr.tc("del-filter", "bpf", index, handle=1, prio=FILTER_PRIO, parent=parent)
    except NetlinkError as exc:
        if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            return False
        raise
    return True


def remove_decap_filter(underlay_index: int, ipr: IPRoute | None = None) -> bool:
    """Remove our decap filter from the underlay device; False when there was none."""
    own = ipr is None
    ipr = ipr if ipr is not None else IPRoute()
    try:
        return remove_filter(ipr, underlay_index, INGRESS_PARENT)
    finally:
        if own:
            ipr.close()


def passes_offloaded_packets(ifname: str, kind: str | None) -> bool:
    """True for an underlay that hands segmentation-offload packets with unfinished checksums
    straight to a local peer (a veth with tx checksumming on): what a kernel receiver (our
    decap, a vxlan device) takes, and a userspace one (flanneld's udp proxy, our pump) cannot.
    A NIC, or a veth with `tx off`, puts wire-sized checksummed datagrams on the wire."""
    if kind != "veth":
        return False
    try:
        ethtool = Ethtool()
        try:
            features = ethtool.get_features(ifname).features
        finally:
            ethtool.close()
        return bool(features["tx-checksum-ip-generic"].enable)
    except (OSError, KeyError, NetlinkError):
        return True  # cannot tell: say so
