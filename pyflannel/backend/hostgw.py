"""host-gw: no encapsulation; per peer `<subnet> via <PublicIP> dev <ext>`.

Needs every node on one L2 segment: the peer's public IP must be on-link. A peer that is not is
reported (log + counter) instead of being silently broken. Peers on another backend (a switch
rolling through the cluster) get the same route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from pyflannel.backend.base import Backend
from pyflannel.errors import FlannelError
from pyflannel.mtu import OVERHEAD
from pyflannel.subnet.lease import Lease, LeaseAttrs


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
        if self.serves(lease):
            self.mixed.discard(lease.subnet)
            self.direct.apply(lease)
        else:
            self.apply_mixed_peer(lease)  # the same route: only the log and metric differ

    def remove_peer(self, lease: Lease) -> None:
        self.mixed.discard(lease.subnet)
        self.direct.remove(lease.subnet)

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        _, mixed = self.split_peers(peers)
        self.mixed = set(mixed)
        self.repairs += self.direct.sync(peers)
