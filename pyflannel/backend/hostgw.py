"""host-gw: no encapsulation; per peer `<subnet> via <PublicIP> dev <ext>`.

Needs every node on one L2 segment: the peer's public IP must be on-link. A peer that is not is
reported (log + counter) instead of being silently broken.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping

from pyflannel.backend.base import Backend
from pyflannel.errors import FlannelError
from pyflannel.mtu import OVERHEAD
from pyflannel.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)


class HostGwBackend(Backend):
    type = "host-gw"
    overhead = OVERHEAD["host-gw"]

    def routes_via_external(self) -> bool:
        return True

    def check(self) -> None:
        if self.ext.public_ip != self.ext.iface_addr:
            raise FlannelError(
                f"host-gw: public IP {self.ext.public_ip} is not the address of {self.ext.name} "
                f"({self.ext.iface_addr}); peers route to the public IP, so drop --public-ip or "
                "use vxlan"
            )

    def prepare(self) -> LeaseAttrs:
        return self.lease_attrs()

    def activate(self, lease: Lease) -> None:
        self.own_lease = lease

    def apply_peer(self, lease: Lease) -> None:
        if lease.attrs.backend_type != self.type:
            log.warning(
                "peer %s uses backend %s, not host-gw; not routing to it",
                lease.subnet,
                lease.attrs.backend_type,
            )
            return
        self.direct.apply(lease)

    def remove_peer(self, lease: Lease) -> None:
        self.direct.remove(lease.subnet)

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        wanted = {s: lease for s, lease in peers.items() if lease.attrs.backend_type == self.type}
        self.repairs += self.direct.sync(wanted)
