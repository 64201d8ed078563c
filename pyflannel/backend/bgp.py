"""bgp: no encapsulation; every node's subnet is announced by BIRD 2 and routed by it.

The agent does not program peers' routes: it writes BIRD's configuration from the leases
(node-to-node mesh: one iBGP session per node on bgp; `Backend.Peers`: routers or route
reflectors) and reloads BIRD (`birdc configure`, sessions that did not change stay up). BIRD
installs the routes (`proto bird`) and its blackhole for our own subnet; a router between two
segments learns every subnet, so this works where host-gw cannot. The file is rewritten only
when its text changes, once per batch of lease events (`commit`). BIRD runs on its own: an agent
restart or crash leaves sessions and routes alone.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path

from pyflannel.backend.base import Backend
from pyflannel.backend.netlink import Kernel
from pyflannel.backend.settings import BackendSettings
from pyflannel.bgp.birdconf import BgpPeer, BirdSettings, mesh_peers, render
from pyflannel.bgp.birdctl import BirdControl, BirdError
from pyflannel.config import NetworkConfig
from pyflannel.errors import FlannelError
from pyflannel.iface import ExternalInterface
from pyflannel.mtu import OVERHEAD
from pyflannel.subnet.lease import Lease, LeaseAttrs
from pyflannel.subnetenv import atomic_write_text

log = logging.getLogger(__name__)


def external_peers(
    options: Mapping[str, object], segment: ipaddress.IPv4Network
) -> tuple[BgpPeer, ...]:
    """Backend.Peers of the network config (checked by config.py); a peer outside our
    segment is reached in more than one hop."""
    peers = options.get("Peers") or ()
    assert isinstance(peers, tuple | list)
    found = []
    for p in peers:
        address = ipaddress.IPv4Address(p["Address"])
        found.append(
            BgpPeer(address, int(p["ASN"]), "external", str(p["Name"]), address not in segment)
        )
    return tuple(found)


class BgpBackend(Backend):
    type = "bgp"
    overhead = OVERHEAD["bgp"]

    def __init__(
        self,
        config: NetworkConfig,
        ext: ExternalInterface,
        settings: BackendSettings | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        super().__init__(config, ext, settings, kernel)
        self.config_path = Path(self.settings.bird_config)
        self.bird = BirdControl(self.settings.bird_socket)
        self.mesh: dict[ipaddress.IPv4Network, ipaddress.IPv4Address] = {}
        # bgp peers on our segment that BIRD has not routed yet (a switch rolling, a session
        # coming up, BIRD down): routed directly meanwhile, as peers of another backend.
        self.bridged: set[ipaddress.IPv4Network] = set()
        self.reloads = 0
        self.reload_failures = 0
        self._reload_pending = False
        self._bird_down_reported = False

    def check(self) -> None:
        if self.ext.public_ip != self.ext.iface_addr:
            raise FlannelError(
                f"bgp: public IP {self.ext.public_ip} is not the address of {self.ext.name} "
                f"({self.ext.iface_addr}); BGP peers connect to and route via the public IP, so "
                "drop --public-ip or use vxlan"
            )
        directory = self.config_path.parent
        if not directory.is_dir():
            raise FlannelError(
                f"bgp: {directory} does not exist; install BIRD 2 (apt-get install bird2) or "
                "point --bgp-bird-config at BIRD's configuration file"
            )

    def prepare(self) -> LeaseAttrs:
        return self.lease_attrs()

    def activate(self, lease: Lease) -> None:
        self.own_lease = lease
        self.commit()

    # -- peers ----------------------------------------------------------------------------------

    def apply_peer(self, lease: Lease) -> None:
        self.apply_peers([lease])

    def apply_peers(self, leases: list[Lease]) -> None:
        routed = self._routed_by_bird()
        for lease in leases:
            if self.serves(lease):
                self.mesh[lease.subnet] = lease.attrs.public_ip
                if self._needs_bridge(lease, routed):
                    self._bridge(lease)
            else:
                self.mesh.pop(lease.subnet, None)
                self.bridged.discard(lease.subnet)
                self.apply_mixed_peer(lease)

    def remove_peer(self, lease: Lease) -> None:
        self.mesh.pop(lease.subnet, None)
        self.bridged.discard(lease.subnet)
        self.forget_mixed_peer(lease.subnet)

    def reconcile(self, peers: Mapping[ipaddress.IPv4Network, Lease]) -> None:
        own, mixed = self.split_peers(peers)
        self.mesh = {subnet: lease.attrs.public_ip for subnet, lease in own.items()}
        routed = self._routed_by_bird()
        bridged = {s: lease for s, lease in own.items() if self._needs_bridge(lease, routed)}
        for subnet in self.bridged - set(bridged):
            log.info("peer %s: routed by BIRD now, its direct route is gone", subnet)
        self.bridged = set(bridged)
        self.mixed = set(mixed) | self.bridged
        self.repairs += self.direct.sync({**mixed, **bridged})
        if self._write_config():
            self.repairs += 1
        self._reload()

    def settling(self) -> bool:
        return bool(self.bridged)  # BIRD's routes are on their way: look at every interval

    def _routed_by_bird(self) -> set[ipaddress.IPv4Network]:
        return {r.dst for r in self.kernel.routes(self.config.network, daemons=True)}

    def _needs_bridge(self, lease: Lease, routed: set[ipaddress.IPv4Network]) -> bool:
        """Not routed by BIRD yet, and reachable without it (on our segment)."""
        return lease.subnet not in routed and self.direct.reachable(lease)

    def _bridge(self, lease: Lease) -> None:
        if lease.subnet not in self.bridged:
            log.info("peer %s: routed directly until BIRD routes it", lease.subnet)
            self.bridged.add(lease.subnet)
        self.mixed.add(lease.subnet)
        self.direct.apply(lease, mixed=True)

    def _end_bridges(self) -> None:
        """Direct routes of bridged peers go once BIRD has routed their subnets."""
        if not self.bridged:
            return
        for subnet in self.bridged & self._routed_by_bird():
            self.bridged.discard(subnet)
            self.forget_mixed_peer(subnet)
            log.info("peer %s: routed by BIRD now, its direct route is gone", subnet)

    # -- BIRD -----------------------------------------------------------------------------------

    def bird_settings(self) -> BirdSettings:
        options = self.config.backend.options
        asn = int(options["ASN"])
        mesh = mesh_peers(self.mesh.values(), asn) if options["NodeMesh"] else ()
        own = self.ext.public_ip
        return BirdSettings(
            router_id=own,
            network=self.config.network,
            own_subnet=self.own_lease.subnet if self.own_lease else None,
            asn=asn,
            peers=tuple(p for p in mesh if p.address != own)
            + external_peers(options, self._segment()),
        )

    def _segment(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((self.ext.iface_addr, self.ext.prefixlen), strict=False)

    def commit(self) -> None:
        if self._write_config() or self._reload_pending:
            self._reload()
        self._end_bridges()

    def _write_config(self) -> bool:
        settings = self.bird_settings()
        # Atomically (BIRD may read it at any time), 0644 (BIRD runs as its own user).
        if not atomic_write_text(str(self.config_path), render(settings)):
            return False
        log.info("wrote %s (%d BGP peers)", self.config_path, len(settings.peers))
        self._reload_pending = True
        return True

    def _reload(self) -> None:
        if not self._reload_pending:
            return
        try:
            self.bird.configure()
        except BirdError as exc:
            self.reload_failures += 1
            if not self._bird_down_reported:
                log.warning("bgp: %s; retrying at every reconcile", exc)
                self._bird_down_reported = True
            return
        self.reloads += 1
        self._reload_pending = False
        if self._bird_down_reported:
            log.info("bgp: BIRD reachable again")
            self._bird_down_reported = False
        log.info("reloaded BIRD (%s)", self.bird.socket_path)

    def metrics(self) -> dict[str, float]:
        return super().metrics() | {
            "pyflannel_bgp_mesh_peers": float(len(self.mesh)),
            "pyflannel_bgp_bridged_peers": float(len(self.bridged)),
            "pyflannel_bgp_reloads_total": float(self.reloads),
            "pyflannel_bgp_reload_failures_total": float(self.reload_failures),
            "pyflannel_bgp_reload_pending": 1.0 if self._reload_pending else 0.0,
        }
