"""udp: TUN `flannel0`, inner IP packets carried as UDP payload (port 8285), no extra header.

Wire-compatible with flanneld's udp backend. Containers get the underlay MTU minus 28
(outer IPv4 20 + UDP 8). Leases as flanneld's: no BackendType (see subnet/lease.py).
flannel0 lives as long as the agent, as flanneld's does (it is not persistent): flanneld names
its TUN from the template flannel%d, so a flannel0 left behind would push a flanneld started on
this node onto flannel1 behind a dead flannel0 route.
"""

from __future__ import annotations

import logging
from typing import Any

from pyflannel.backend.netlink import Route
from pyflannel.backend.pump import PumpSpec
from pyflannel.backend.userspace import TunBackend
from pyflannel.mtu import OVERHEAD
from pyflannel.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)


class UdpBackend(TunBackend):
    type = "udp"
    mode = "udp"
    device = "flannel0"
    overhead = OVERHEAD["udp"]
    persistent_tun = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.port: int = self.config.backend.options["Port"]

    def serves(self, lease: Lease) -> bool:
        # flanneld's udp leases carry no BackendType; "udp" is what pyflannel wrote before it
        # matched flanneld, kept so that a rolling upgrade does not cut old nodes off. (flanneld
        # forwards to any lease: a vxlan or host-gw node has nothing listening on our port;
        # we route those directly, see Backend.apply_mixed_peer.)
        return lease.attrs.backend_type in ("", self.type)

    def prepare(self) -> LeaseAttrs:
        self.ensure_tun()
        return self.lease_attrs()

    def install_routes(self, lease: Lease) -> None:
        # One route for the whole Network; our own subnet is more specific (docker0) and wins.
        self.kernel.route_replace(Route(self.config.network, None, self.index, onlink=False))

    def close(self) -> None:
        super().close()
        log.info("%s goes with the packet pump (not persistent, as flanneld's)", self.device)

    def pump_spec(self, lease: Lease) -> PumpSpec:
        return PumpSpec(
            mode="udp",
            tun_name=self.device,
            network=str(self.config.network),
            subnet_len=self.config.subnet_len,
            bind_ip=str(self.ext.iface_addr),
            port=self.port,
            tunnel_ip=str(lease.subnet.network_address),
            persistent=False,
            underlay_index=self.ext.index,
        )
