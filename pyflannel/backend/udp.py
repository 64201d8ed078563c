"""udp: TUN `flannel0`, inner IP packets carried as UDP payload (port 8285), no extra header.

Wire-compatible with flanneld's udp backend. Containers get the underlay MTU minus 28
(outer IPv4 20 + UDP 8). Leases as flanneld's: no BackendType (see subnet/lease.py).
flannel0 lives as long as the agent, as flanneld's does (it is not persistent): flanneld names
its TUN from the template flannel%d, so a flannel0 left behind would push a flanneld started on
this node onto flannel1 behind a dead flannel0 route.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

from pyflannel.backend.base import Backend
from pyflannel.backend.userspace import TunDataPath, TunSpec
from pyflannel.mtu import OVERHEAD
from pyflannel.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)


class UdpBackend(Backend):
    type = "udp"
    device = "flannel0"
    overhead = OVERHEAD["udp"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = TunSpec(
            backend_type=self.type,
            mode="udp",
            device=self.device,
            mtu=self.mtu(),
            persistent=False,
            port=self.config.backend.options["Port"],
            route_network=True,  # one route for the whole Network, as flanneld's
        )
        self.tun = TunDataPath(
            spec, config=self.config, ext=self.ext, settings=self.settings, kernel=self.kernel
        )

    def serves(self, lease: Lease) -> bool:
        # flanneld's udp leases carry no BackendType; "udp" is what pyflannel wrote before it
        # matched flanneld, kept so that a rolling upgrade does not cut old nodes off. (flanneld
        # forwards to any lease: a vxlan or host-gw node has nothing listening on our port;
        # we route those directly, see Backend.apply_mixed_peer.)
        return lease.attrs.backend_type in ("", self.type)

    def device_index(self) -> int:
        return self.tun.index

    def fast_path_attached(self) -> bool:
        return self.tun.fast_path is not None

    def prepare(self) -> LeaseAttrs:
        self.tun.ensure_device()
        self.tun.spawn_pump()
        return self.lease_attrs()

    def activate(self, lease: Lease) -> None:
        self.own_lease = lease
        self.tun.activate(lease)

    def apply_peer(self, lease: Lease) -> None:
        if not self.serves(lease):
            self.apply_mixed_peer(lease)  # more specific than the Network's route into flannel0
            self.tun.forget(lease.subnet)
            return
        self.tun.carry(lease)
        self.forget_mixed_peer(lease.subnet)  # the pump carries it now

    def remove_peer(self, lease: Lease) -> None:
        self.forget_mixed_peer(lease.subnet)
        self.tun.forget(lease.subnet)

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        own, mixed = self.split_peers(peers)
        self.repairs += self.tun.reconcile(own)
        self.mixed = set(mixed)
        self.repairs += self.direct.sync(mixed)

    def metrics(self) -> dict[str, float]:
        return super().metrics() | self.tun.metrics()

    def close(self) -> None:
        self.tun.close()
        log.info("%s goes with the packet pump (not persistent, as flanneld's)", self.device)
        super().close()
