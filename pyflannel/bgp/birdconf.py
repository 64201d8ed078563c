"""BIRD 2's configuration for the BGP routed mode, made from the leases (and external peers).

Each node announces its own subnet (a static blackhole route, exported to BGP; in the kernel
it sits behind the bridge's own route, which wins on metric, so that traffic for the subnet's
unused addresses is dropped here instead of leaving by the default route, as Calico does) and
installs the subnets it learns, which the kernel shows as `proto bird`. Only prefixes inside the
flannel Network are imported from or exported to peers. Nodes peer with each other (iBGP,
node-to-node mesh) and with external peers such as a top-of-rack router (eBGP). Next hops are
resolved through the kernel's own routes (`learn`), so a peer behind a router works.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_ASN = 64512  # the first private AS number, as Calico's default
# The kernel metric of every route bird installs: the blackhole stays behind the bridge's
# connected route (metric 0), and no route of another source (the agent's, an operator's) is
# replaced, as routes of different metrics do not clash.
KERNEL_METRIC = 32
# The file's first line: how the agent knows a BIRD configuration is its own (birdfile.retire).
HEADER = "# Written by pyflannel from the flannel leases and the network config, and rewritten"
PeerKind = Literal["mesh", "external"]
# BIRD protocol names start with the peer's kind: what `flannelctl bgp status` reads back.
PROTOCOL_PREFIX: dict[PeerKind, str] = {"mesh": "mesh_", "external": "ext_"}


def peer_kind(protocol: str) -> PeerKind | None:
    """The kind of peer a BIRD protocol of ours talks to; None for any other protocol."""
    return next((k for k, prefix in PROTOCOL_PREFIX.items() if protocol.startswith(prefix)), None)


@dataclass(frozen=True, slots=True)
class BgpPeer:
    address: ipaddress.IPv4Address
    asn: int
    kind: PeerKind = "mesh"
    name: str = ""  # external peers: the operator's name for it
    # eBGP to a router that is not on our segment (BIRD's eBGP wants a direct neighbour by
    # default; iBGP, the mesh, is multihop anyway).
    multihop: bool = False

    @property
    def protocol(self) -> str:
        """BIRD's protocol name: mesh_10_0_0_2, ext_<name> (what the status command lists)."""
        address = str(self.address).replace(".", "_")
        name = address if self.kind == "mesh" else self.name or address
        return PROTOCOL_PREFIX[self.kind] + name


@dataclass(frozen=True, slots=True)
class BirdSettings:
    router_id: ipaddress.IPv4Address  # the node's public IP
    network: ipaddress.IPv4Network  # the flannel Network
    own_subnet: ipaddress.IPv4Network | None
    asn: int = DEFAULT_ASN
    peers: tuple[BgpPeer, ...] = field(default_factory=tuple)


def mesh_peers(addresses: Iterable[ipaddress.IPv4Address], asn: int) -> tuple[BgpPeer, ...]:
    return tuple(BgpPeer(address, asn) for address in sorted(set(addresses)))


def render(settings: BirdSettings) -> str:
    network = f"{settings.network}+"
    lines = [
        HEADER,
        "# whenever they change: do not edit (the agent reloads bird with `birdc configure`).",
        f"router id {settings.router_id};",
        "timeformat protocol iso long;",
        "",
        "protocol device { scan time 10; }",
        "# Interface routes and the kernel's own routes: next hops resolve through them. Not the",
        "# bridge's route for our subnet: it would win over the blackhole that announces it.",
        f"protocol direct {{ ipv4 {{ import where net !~ [ {network} ]; }}; }}",
        "protocol kernel flannel_kernel {",
        "  learn;",
        "  scan time 10;",
        f"  metric {KERNEL_METRIC};",
        "  ipv4 {",
        f"    import where net !~ [ {network} ];",
        f'    export where proto = "flannel_own" || source = RTS_BGP && net ~ [ {network} ];',
        "  };",
        "}",
    ]
    if settings.own_subnet is not None:
        lines += [
            "# This node's subnet: announced to the peers.",
            "protocol static flannel_own {",
            "  ipv4;",
            f"  route {settings.own_subnet} blackhole;",
            "}",
        ]
    for kind in ("mesh", "external"):
        lines += [
            f"template bgp flannel_{kind} {{",
            f"  local as {settings.asn};",
            "  connect retry time 5;",
            "  ipv4 {",
            f"    import where net ~ [ {network} ];",
            '    export where proto = "flannel_own";',
            "  };",
            "}",
        ]
    for peer in settings.peers:
        hops = " multihop;" if peer.multihop and peer.kind == "external" else ""
        lines.append(
            f"protocol bgp {peer.protocol} from flannel_{peer.kind} "
            f"{{ neighbor {peer.address} as {peer.asn};{hops} }}"
        )
    return "\n".join(lines) + "\n"
