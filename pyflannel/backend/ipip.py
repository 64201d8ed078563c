"""ipip: IPv4-in-IPv4 (protocol 4) to each peer's public IP.

With the kernel's `ipip` link kind: device `flannel.ipip` (local = our address, remote any) and
per peer `<subnet> via <PublicIP> dev flannel.ipip onlink`; the kernel does everything.
Without it (kernels built without ipip, like this project's test machines): a TUN device of the
same name and the same routes, with the userspace pump encapsulating through a raw protocol-4
socket: the same packets on the wire, so both kinds of node interoperate. The log says which
one is in use. DirectRouting gives on-link peers a host-gw route instead.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from pyflannel.backend.base import Backend
from pyflannel.backend.netlink import Route
from pyflannel.backend.userspace import TunDataPath, TunSpec
from pyflannel.mtu import OVERHEAD
from pyflannel.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)

DEVICE = "flannel.ipip"
_NO_LINK_KIND = {errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL, errno.ENODEV}


class IpipBackend(Backend):
    type = "ipip"
    device = DEVICE
    overhead = OVERHEAD["ipip"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_routing: bool = self.config.backend.options["DirectRouting"]
        self.index = 0  # the kernel ipip device's
        # The userspace data path, on kernels without the ipip link kind (chosen in prepare).
        self.tun: TunDataPath | None = None

    def device_index(self) -> int:
        return self.tun.index if self.tun is not None else self.index

    def fast_path_attached(self) -> bool:
        return self.tun is not None and self.tun.fast_path is not None

    # -- device -------------------------------------------------------------------------------

    def prepare(self) -> LeaseAttrs:
        if self._ensure_kernel_device():
            log.info("ipip: using the kernel's ipip device %s", DEVICE)
            self.tun = None
        else:
            log.warning(
                "ipip: this kernel has no ipip link kind; using the userspace IPIP data path "
                "(TUN %s + raw protocol-4 socket, wire-compatible, slower)",
                DEVICE,
            )
            spec = TunSpec(
                backend_type=self.type, mode="ipip", device=DEVICE, mtu=self.mtu(), persistent=True
            )
            self.tun = TunDataPath(
                spec, config=self.config, ext=self.ext, settings=self.settings, kernel=self.kernel
            )
            self.tun.ensure_device()
            self.tun.spawn_pump()
        return self.lease_attrs()

    def _ensure_kernel_device(self) -> bool:
        index = self.kernel.link_index(DEVICE)
        if index is not None:
            kind = self.kernel.link_kind(index)
            if kind == "ipip" and self._tunnel_local(index) == str(self.ext.iface_addr):
                self.index = index
                self.kernel.set_up(index, mtu=self.mtu())
                return True
            # Another kind, or an ipip device bound to an old address (the node's address changed):
            # made anew, as flanneld does.
            if kind == "tun" and not self._kernel_supports_ipip():
                return False
            self.kernel.delete_link(DEVICE)
        try:
            self.kernel.add_link(DEVICE, "ipip", ipip_local=str(self.ext.iface_addr))
        except NetlinkError as exc:
            if exc.code in _NO_LINK_KIND:
                return False
            raise
        index = self.kernel.link_index(DEVICE)
        assert index is not None
        self.index = index
        self.kernel.set_up(index, mtu=self.mtu())
        return True

    def _tunnel_local(self, index: int) -> str | None:
        """The local (outer source) address of an ipip link, None when it has none."""
        info = self.kernel.link(index).get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        local = data.get_attr("IFLA_IPIP_LOCAL") if data is not None else None
        return str(local) if local else None

    def _kernel_supports_ipip(self) -> bool:
        probe = "flannel.ipprobe"
        try:
            self.kernel.add_link(probe, "ipip")
        except NetlinkError:
            return False
        self.kernel.delete_link(probe)
        return True

    def activate(self, lease: Lease) -> None:
        self.own_lease = lease
        if self.tun is not None:
            self.tun.activate(lease)
            return
        address = ipaddress.IPv4Interface((lease.subnet.network_address, 32))
        self.kernel.ensure_address(self.index, address)

    # -- peers --------------------------------------------------------------------------------

    def _route(self, lease: Lease) -> Route:
        return Route(lease.subnet, lease.attrs.public_ip, self.device_index(), onlink=True)

    def _tunnelled(self, lease: Lease) -> bool:
        return not (self.direct_routing and self.direct.reachable(lease))

    def _untunnel(self, subnet: ipaddress.IPv4Network) -> None:
        if self.tun is not None:
            self.tun.forget(subnet)

    def apply_peer(self, lease: Lease) -> None:
        if not self.serves(lease):
            self.apply_mixed_peer(lease)  # replaces the route into our device: no gap
            self.kernel.route_delete(self._route(lease))  # (gone, unless the peer is unreachable)
            self._untunnel(lease.subnet)
            return
        self.mixed.discard(lease.subnet)
        if not self._tunnelled(lease):
            self.kernel.route_delete(self._route(lease))
            self.direct.apply(lease)
            self._untunnel(lease.subnet)
            return
        self.kernel.route_replace(self._route(lease))  # takes over a direct route, if any
        self.direct.remove(lease.subnet)
        if self.tun is not None:
            self.tun.carry(lease)

    def remove_peer(self, lease: Lease) -> None:
        self.kernel.route_delete(self._route(lease))
        self.mixed.discard(lease.subnet)
        self.direct.remove(lease.subnet)
        self._untunnel(lease.subnet)

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        mine, mixed = self.split_peers(peers)
        self.mixed = set(mixed)
        tunnelled = {s: lease for s, lease in mine.items() if self._tunnelled(lease)}
        direct = {s: lease for s, lease in peers.items() if s not in tunnelled}
        if self.tun is not None:
            self.repairs += self.tun.reconcile(tunnelled)
        elif self.kernel.link_index(DEVICE) != self.index:
            log.warning("%s is gone; recreating it", DEVICE)
            self._ensure_kernel_device()
            if self.own_lease is not None:
                self.activate(self.own_lease)
            self.repairs += 1
        self.repairs += self.direct.sync(direct)
        index = self.device_index()
        current = {r.dst: r for r in self.kernel.routes(self.config.network, oif=index)}
        for dst, route in current.items():
            if dst not in tunnelled:
                self.kernel.route_delete(route)
                self.repairs += 1
        for subnet, lease in tunnelled.items():
            if current.get(subnet) != self._route(lease):
                self.kernel.route_replace(self._route(lease))
                self.repairs += 1

    def metrics(self) -> dict[str, float]:
        values = super().metrics()
        return values | self.tun.metrics() if self.tun is not None else values

    def close(self) -> None:
        if self.tun is not None:
            self.tun.close()
        super().close()
