"""vxlan: kernel VXLAN device `flannel.<VNI>`, per peer neigh + fdb + onlink route.

For a peer with subnet 10.5.19.0/24, public IP P and VTEP MAC M (published in its lease):
    neigh  10.5.19.0 dev flannel.1 lladdr M PERMANENT
    fdb    M dev flannel.1 dst P self permanent
    route  10.5.19.0/24 via 10.5.19.0 dev flannel.1 onlink
With DirectRouting, a peer on our L2 segment gets a host-gw route instead. The device (and so
its MAC) is kept across agent restarts; when it vanishes it is recreated with the same MAC, so
peers need no update.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyflannel.backend.base import Backend
from pyflannel.backend.netlink import FdbEntry, Neighbour, Route
from pyflannel.errors import FlannelError
from pyflannel.mtu import OVERHEAD
from pyflannel.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)

DEFAULT_PORT = 8472  # Linux's vxlan port (flannel's default), not IANA's 4789
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True, slots=True)
class VxlanPeer:
    subnet: ipaddress.IPv4Network
    vtep_ip: ipaddress.IPv4Address
    mac: str
    public_ip: ipaddress.IPv4Address


class VxlanBackend(Backend):
    type = "vxlan"
    overhead = OVERHEAD["vxlan"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.config.backend.options
        self.vni: int = options["VNI"]
        self.port: int = options["Port"] or DEFAULT_PORT
        self.direct_routing: bool = options["DirectRouting"]
        self.learning: bool = options["Learning"]
        self.gbp: bool = options["GBP"]
        self.ifname = f"flannel.{self.vni}"
        self.device = self.ifname
        self.index = 0
        self.mac = ""
        self.applied: dict[ipaddress.IPv4Network, VxlanPeer | None] = {}  # None: direct route

    def device_index(self) -> int:
        return self.index

    def mtu(self) -> int:
        underlay = self.config.backend.options["MTU"] or self.ext.mtu
        return int(underlay) - self.overhead

    # -- device -------------------------------------------------------------------------------

    def prepare(self) -> LeaseAttrs:
        self._ensure_device()
        return LeaseAttrs(
            public_ip=self.ext.public_ip,
            backend_type=self.type,
            backend_data={"VNI": self.vni, "VtepMAC": self.mac},
        )

    def _ensure_device(self, mac: str | None = None) -> None:
        index = self.kernel.link_index(self.ifname)
        if index is not None and not self._device_matches(index):
            log.warning("%s exists with other VNI/local/port settings; recreating it", self.ifname)
            self.kernel.delete_link(self.ifname)
            index = None
        if index is None:
            self._create_device(mac)
            index = self.kernel.link_index(self.ifname)
            if index is None:
                raise FlannelError(f"vxlan: {self.ifname} vanished right after creation")
        else:
            log.info("adopting existing %s", self.ifname)
        self.index = index
        self.mac = str(self.kernel.link(index).get_attr("IFLA_ADDRESS")).lower()
        self.kernel.set_up(index, mtu=self.mtu())
        if self.settings.vxlan_disable_tx_checksum:
            self._disable_tx_checksum()

    def _device_matches(self, index: int) -> bool:
        if self.kernel.link_kind(index) != "vxlan":
            return False
        data = self.kernel.link(index).get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        if data is None:
            return False
        return (
            data.get_attr("IFLA_VXLAN_ID") == self.vni
            and data.get_attr("IFLA_VXLAN_LOCAL") == str(self.ext.iface_addr)
            and data.get_attr("IFLA_VXLAN_PORT") == self.port
        )

    def _create_device(self, mac: str | None) -> None:
        kwargs: dict[str, Any] = {
            "vxlan_id": self.vni,
            "vxlan_local": str(self.ext.iface_addr),
            "vxlan_port": self.port,
            "vxlan_learning": 1 if self.learning else 0,
            "vxlan_link": self.ext.index,
        }
        if self.gbp:
            kwargs["vxlan_gbp"] = True
        if mac:
            kwargs["address"] = mac
        try:
            self.kernel.add_link(self.ifname, "vxlan", **kwargs)
        except Exception as exc:
            raise FlannelError(
                f"vxlan: cannot create {self.ifname} (VNI {self.vni}, port {self.port}): {exc}; "
                "is the vxlan kernel module available?"
            ) from None
        log.info(
            "created %s (VNI %d, local %s, port %d)",
            self.ifname,
            self.vni,
            self.ext.iface_addr,
            self.port,
        )

    def _disable_tx_checksum(self) -> None:
        # What flannel users do by hand: `ethtool -K flannel.1 tx-checksum-ip-generic off`.
        from pyroute2.ethtool import Ethtool

        ethtool = Ethtool()
        try:
            features = ethtool.get_features(self.ifname)
            feature = features.features.get("tx-checksum-ip-generic")
            if feature is not None and feature.enable:
                feature.enable = False
                ethtool.set_features(self.ifname, features)
                log.info("turned off tx-checksum-ip-generic on %s", self.ifname)
        finally:
            ethtool.close()

    def activate(self, lease: Lease) -> None:
        self.own_lease = lease
        vtep = ipaddress.IPv4Interface((lease.subnet.network_address, 32))
        if self.kernel.ensure_address(self.index, vtep):
            log.info("%s address set to %s", self.ifname, vtep)

    # -- peers --------------------------------------------------------------------------------

    def _peer(self, lease: Lease) -> VxlanPeer | None:
        """The vxlan peer of a vxlan lease; None (logged) when its VtepMAC is unusable."""
        data = lease.attrs.backend_data or {}
        mac = str(data.get("VtepMAC", "")).lower()
        if not _MAC_RE.match(mac):
            log.warning(
                "peer %s (%s) has backend vxlan with VtepMAC %r; not a usable vxlan peer, skipped",
                lease.subnet,
                lease.attrs.public_ip,
                data.get("VtepMAC"),
            )
            return None
        if data.get("VNI", self.vni) != self.vni:
            log.warning("peer %s uses VNI %s, we use %d", lease.subnet, data.get("VNI"), self.vni)
        return VxlanPeer(lease.subnet, lease.subnet.network_address, mac, lease.attrs.public_ip)

    def _entries(self, peer: VxlanPeer) -> tuple[Neighbour, FdbEntry, Route]:
        return (
            Neighbour(peer.vtep_ip, peer.mac, self.index),
            FdbEntry(peer.mac, peer.public_ip, self.index),
            Route(peer.subnet, peer.vtep_ip, self.index, onlink=True),
        )

    def apply_peer(self, lease: Lease) -> None:
        if not self.serves(lease):
            old_peer = self.applied.pop(lease.subnet, None)
            self.apply_mixed_peer(lease)  # replaces the route first: no gap
            if old_peer is not None:
                self._remove_entries(old_peer)  # (its route on our device is gone already)
            return
        self.mixed.discard(lease.subnet)
        if self.direct_routing and self.direct.reachable(lease):
            self._forget(lease.subnet)
            if self.direct.apply(lease):
                self.applied[lease.subnet] = None
            return
        # A mixed peer that switched to vxlan: route_replace below takes over its direct route.
        peer = self._peer(lease)
        if peer is None:
            self._forget(lease.subnet)
            self.direct.remove(lease.subnet)
            return
        old = self.applied.get(lease.subnet)
        if old is not None and old != peer:
            self._remove_entries(old)  # a new VtepMAC or public IP replaces the old entries
        elif old is None and lease.subnet in self.applied:
            self.direct.remove(lease.subnet)
        neigh, fdb, route = self._entries(peer)
        self.kernel.neigh_replace(neigh)
        self.kernel.fdb_replace(fdb)
        self.kernel.route_replace(route)
        self.applied[lease.subnet] = peer

    def apply_peers(self, leases: list[Lease]) -> None:
        """New vxlan peers in bulk (neighbours, fdb entries, then routes); the rest one by one."""
        new: list[VxlanPeer] = []
        for lease in leases:
            fresh = lease.subnet not in self.applied and lease.subnet not in self.mixed
            tunnelled = not (self.direct_routing and self.direct.reachable(lease))
            peer = self._peer(lease) if fresh and tunnelled and self.serves(lease) else None
            if peer is None:
                self.apply_peer(lease)
            else:
                new.append(peer)
        self._install_many(new)

    def _install_many(self, peers: list[VxlanPeer]) -> None:
        entries = [self._entries(peer) for peer in peers]
        self._replace_many(
            [n for n, _, _ in entries], [f for _, f, _ in entries], [r for _, _, r in entries]
        )
        for peer in peers:
            self.applied[peer.subnet] = peer

    def _replace_many(
        self, neigh: list[Neighbour], fdb: list[FdbEntry], routes: list[Route]
    ) -> None:
        for entry, code in self.kernel.replace_many(neigh, fdb, routes):
            log.warning("the kernel refused %s: %s (reconcile retries)", entry, os.strerror(code))

    def remove_peer(self, lease: Lease) -> None:
        self._forget(lease.subnet)
        self.mixed.discard(lease.subnet)
        self.direct.remove(lease.subnet)
        peer = self._peer(lease) if self.serves(lease) else None
        if peer is not None:
            self._remove_entries(peer)

    def _forget(self, subnet: ipaddress.IPv4Network) -> None:
        old = self.applied.pop(subnet, None)
        if old is not None:
            self._remove_entries(old)

    def _remove_entries(self, peer: VxlanPeer) -> None:
        neigh, fdb, route = self._entries(peer)
        self.kernel.route_delete(route)
        self.kernel.neigh_delete(neigh)
        self.kernel.fdb_delete(fdb)

    # -- repair -------------------------------------------------------------------------------

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        if self.kernel.link_index(self.ifname) != self.index or self.index == 0:
            log.warning("%s is gone; recreating it with MAC %s", self.ifname, self.mac)
            self._ensure_device(self.mac or None)
            self.repairs += 1
            if self.own_lease is not None:
                self.activate(self.own_lease)
            self.applied.clear()
        elif self.own_lease is not None:
            self.activate(self.own_lease)

        own, mixed = self.split_peers(peers)
        self.mixed = set(mixed)
        direct: dict[ipaddress.IPv4Network, Lease] = dict(mixed)
        wanted: dict[ipaddress.IPv4Network, VxlanPeer] = {}
        for subnet, lease in own.items():
            if self.direct_routing and self.direct.reachable(lease):
                direct[subnet] = lease
            elif (peer := self._peer(lease)) is not None:
                wanted[subnet] = peer
        self.repairs += self.direct.sync(direct)

        entries = {subnet: self._entries(peer) for subnet, peer in wanted.items()}
        # One dump per table: what is not wanted goes, what is wanted and absent is added.
        present_neigh = set(self.kernel.neighbours(self.index))
        present_fdb = set(self.kernel.fdb_entries(self.index))
        present_routes = {r.dst: r for r in self.kernel.routes(self.config.network, oif=self.index)}
        for neigh in present_neigh - {n for n, _, _ in entries.values()}:
            self.kernel.neigh_delete(neigh)
            self.repairs += 1
        for fdb in present_fdb - {f for _, f, _ in entries.values()}:
            self.kernel.fdb_delete(fdb)
            self.repairs += 1
        for dst, route in present_routes.items():
            if dst not in entries:
                self.kernel.route_delete(route)
                self.repairs += 1
        neigh_missing = [n for n, _, _ in entries.values() if n not in present_neigh]
        fdb_missing = [f for _, f, _ in entries.values() if f not in present_fdb]
        routes_missing = [
            r for subnet, (_, _, r) in entries.items() if present_routes.get(subnet) != r
        ]
        repairs = len(neigh_missing) + len(fdb_missing) + len(routes_missing)
        if repairs:
            self._replace_many(neigh_missing, fdb_missing, routes_missing)
            self.repairs += repairs
        self.applied = {**{s: None for s in direct}, **wanted}
