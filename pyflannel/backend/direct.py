"""host-gw style routes on the external interface: `<subnet> via <PublicIP> dev <ext>`.

The route set of the host-gw backend, and of vxlan/ipip peers reached with DirectRouting. Every
backend owns one (`Backend.direct`), so the unreachable-peer metric has one source. It is given
what it needs (kernel, external interface, Network, our own subnet), not the backend: it is a
part of a backend, not a view onto one.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping

from pyflannel.backend.netlink import Kernel, Route, on_link
from pyflannel.iface import ExternalInterface
from pyflannel.subnet.lease import Lease

log = logging.getLogger(__name__)


class DirectRoutes:
    """The host-gw route set on the external interface; also DirectRouting for vxlan/ipip."""

    def __init__(
        self,
        kernel: Kernel,
        ext: ExternalInterface,
        network: ipaddress.IPv4Network,
        *,
        backend_type: str,
        own_subnet: Callable[[], ipaddress.IPv4Network | None],
    ) -> None:
        """backend_type: for the log only; own_subnet: our lease's, once we hold one (its route
        on ext, if any, is not ours to delete)."""
        self.kernel = kernel
        self.ext = ext
        self.network = network
        self.backend_type = backend_type
        self.own_subnet = own_subnet
        self.unreachable: set[ipaddress.IPv4Network] = set()

    @property
    def ext_address(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface((self.ext.iface_addr, self.ext.prefixlen))

    def reachable(self, lease: Lease) -> bool:
        return on_link(self.ext_address, lease.attrs.public_ip)

    def route(self, lease: Lease) -> Route:
        return Route(lease.subnet, lease.attrs.public_ip, self.ext.index, onlink=False)

    def apply(self, lease: Lease, *, mixed: bool = False) -> bool:
        """Route to the peer's public IP; False (logged once) when it is not on-link.

        mixed: the peer runs another backend, reachable only when it is on our segment.
        """
        if not self.reachable(lease):
            if lease.subnet not in self.unreachable:
                why = (
                    f"it runs backend {lease.attrs.backend_type or 'udp'}, we run "
                    f"{self.backend_type}: unreachable until both run one backend"
                    if mixed
                    else "host-gw needs all nodes on one L2 network, use vxlan or ipip instead"
                )
                log.error(
                    "peer %s: public IP %s is not on-link on %s (%s); %s",
                    lease.subnet,
                    lease.attrs.public_ip,
                    self.ext.name,
                    self.ext_address.network,
                    why,
                )
            self.unreachable.add(lease.subnet)
            return False
        self.unreachable.discard(lease.subnet)
        self.kernel.route_replace(self.route(lease))
        return True

    def remove(self, subnet: ipaddress.IPv4Network) -> None:
        self.unreachable.discard(subnet)
        for route in self.kernel.routes(subnet, oif=self.ext.index):
            if route.dst == subnet and route.gateway is not None:
                self.kernel.route_delete(route)

    def sync(self, wanted: Mapping[ipaddress.IPv4Network, Lease]) -> int:
        """Routes via ext inside the Network: add missing, delete ours that are not wanted."""
        repaired = 0
        current = {r.dst: r for r in self.kernel.routes(self.network, oif=self.ext.index)}
        for subnet, lease in wanted.items():
            if current.get(subnet) != self.route(lease) and self.apply(lease):
                repaired += 1
        own = self.own_subnet()
        for dst, route in current.items():
            if dst not in wanted and route.gateway is not None and dst != own:
                self.kernel.route_delete(route)
                repaired += 1
        return repaired
