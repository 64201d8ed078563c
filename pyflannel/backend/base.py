"""The one small interface every backend implements.

A backend owns the kernel state that carries traffic to the other nodes' subnets: it prepares
its device and says what to publish in our lease (`prepare`), configures itself for our own
lease (`activate`), programs one peer (`apply_peer` / `remove_peer`, replace semantics, idempotent)
and repairs drift (`reconcile`, given the full desired peer set). MTU arithmetic lives here too.
Backends leave their devices and routes in place on `close()`, so traffic keeps flowing while
the agent restarts.
"""

from __future__ import annotations

import ipaddress
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from pyflannel.backend.direct import DirectRoutes
from pyflannel.backend.netlink import Kernel
from pyflannel.backend.settings import BackendSettings
from pyflannel.config import NetworkConfig
from pyflannel.iface import ExternalInterface
from pyflannel.subnet.lease import Lease, LeaseAttrs, lease_backend_type

log = logging.getLogger(__name__)


class Backend(ABC):
    type: ClassVar[str]
    # The device this backend owns (None: host-gw has none).
    device: str | None = None
    # Bytes of encapsulation overhead subtracted from the underlay MTU.
    overhead: ClassVar[int] = 0

    def __init__(
        self,
        config: NetworkConfig,
        ext: ExternalInterface,
        settings: BackendSettings | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        self.config = config
        self.ext = ext
        self.settings = settings if settings is not None else BackendSettings()
        self.kernel = kernel if kernel is not None else Kernel()
        self.own_lease: Lease | None = None
        self.repairs = 0  # kernel entries put back by reconcile (a metric)
        # host-gw style routes: host-gw's whole route set, DirectRouting for vxlan and ipip.
        self.direct = DirectRoutes(
            self.kernel,
            ext,
            config.network,
            backend_type=self.type,
            own_subnet=lambda: self.own_lease.subnet if self.own_lease else None,
        )
        # Peers of another backend routed directly (apply_mixed_peer).
        self.mixed: set[ipaddress.IPv4Network] = set()

    def device_index(self) -> int:
        """The ifindex of `device` once prepared; 0 without one (host-gw)."""
        return 0

    def fast_path_attached(self) -> bool:
        """True while an eBPF fast path (userspace backends) holds the external interface's
        decap filter: the stale-device cleanup must leave that filter alone."""
        return False

    def routes_via_external(self) -> bool:
        """True when peers may be routed straight through the external interface."""
        return bool(self.config.backend.options.get("DirectRouting", False))

    def mtu(self) -> int:
        """The MTU containers get (FLANNEL_MTU): the underlay MTU minus our overhead."""
        return self.ext.mtu - self.overhead

    def lease_attrs(self) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self.ext.public_ip, backend_type=lease_backend_type(self.type))

    def serves(self, lease: Lease) -> bool:
        """True for a peer of our own backend (the BackendType its nodes write)."""
        return lease.attrs.backend_type == lease_backend_type(self.type)

    def split_peers(
        self, peers: Mapping[ipaddress.IPv4Network, Lease]
    ) -> tuple[dict[ipaddress.IPv4Network, Lease], dict[ipaddress.IPv4Network, Lease]]:
        """(peers of our backend, peers of other backends: reached by mixed routes)."""
        own = {s: lease for s, lease in peers.items() if self.serves(lease)}
        return own, {s: lease for s, lease in peers.items() if s not in own}

    def apply_mixed_peer(self, lease: Lease) -> None:
        """A peer on another backend (mid-switch): straight through the external interface.

        Unencapsulated packets are what every backend's nodes accept (they forward to their
        bridge), so while a backend switch rolls node by node, switched and not yet switched
        nodes on one L2 segment keep reaching each other. flanneld ignores such peers.
        """
        if lease.subnet not in self.mixed:
            log.info(
                "peer %s (%s) runs backend %s, we run %s: routed directly on %s until both "
                "run one backend",
                lease.subnet,
                lease.attrs.public_ip,
                lease.attrs.backend_type or "udp",
                self.type,
                self.ext.name,
            )
        self.mixed.add(lease.subnet)
        self.direct.apply(lease, mixed=True)

    def forget_mixed_peer(self, subnet: ipaddress.IPv4Network) -> None:
        """The peer runs our backend again (or left): its direct route goes."""
        if subnet in self.mixed:
            self.mixed.discard(subnet)
            self.direct.remove(subnet)

    def settling(self) -> bool:
        """True while the kernel is expected to change by others' hands soon (bgp: BIRD's
        routes for bridged peers): the daemon then reconciles fully at every interval instead
        of waiting for netlink to report a change."""
        return False

    def check(self) -> None:  # noqa: B027  (an optional hook: most backends accept any setup)
        """Refuse a setup that cannot work, before anything in the kernel is touched."""

    @abstractmethod
    def prepare(self) -> LeaseAttrs:
        """Check prerequisites, create devices; return what to publish in our lease."""

    @abstractmethod
    def activate(self, lease: Lease) -> None:
        """Configure for our own lease (device address, route for the Network)."""

    @abstractmethod
    def apply_peer(self, lease: Lease) -> None:
        """Make `lease.subnet` reachable through its node (replace what was there)."""

    def apply_peers(self, leases: list[Lease]) -> None:
        """Many peers at once (a snapshot); backends with a bulk path override this."""
        for lease in leases:
            self.apply_peer(lease)

    def commit(self) -> None:  # noqa: B027  (an optional hook: most backends act at once)
        """Apply what the calls since the last commit changed, where a backend batches them
        (bgp: one BIRD reload for a burst of peers). The daemon calls it after each batch."""

    @abstractmethod
    def remove_peer(self, lease: Lease) -> None:
        """Remove what `apply_peer` installed for that subnet; absent state is not an error."""

    @abstractmethod
    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        """Make the kernel match exactly `peers`: re-add what is missing, drop leftovers."""

    def metrics(self) -> dict[str, float]:
        """Backend counters for /metrics, read by the main loop (the kernel's single owner)."""
        return {
            "pyflannel_backend_repairs_total": float(self.repairs),
            # Peers that host-gw style routing cannot reach (not on our L2 segment).
            "pyflannel_unreachable_peers": float(len(self.direct.unreachable)),
            # Peers on another backend, reached by direct routes (a backend switch rolling).
            "pyflannel_mixed_backend_peers": float(len(self.mixed)),
        }

    def close(self) -> None:
        """Stop helper threads and close the netlink socket; kernel state stays."""
        self.kernel.close()
