"""Kernel state through pyroute2 (netlink), with the replace semantics backends need.

"Already exists" on add and "does not exist" on delete are not errors: backends declare the
state they want, and a second application of the same state must be a no-op.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyflannel.backend import nlbulk

log = logging.getLogger(__name__)

RTPROT_BOOT = 3  # what flanneld's routes carry (`ip route` shows no "proto" for them)
# Above this, a routing daemon's (bird 12, zebra 11, FRR's bgp 186, ...): never ours to touch,
# in the bgp backend BIRD's own and elsewhere an operator's.
RTPROT_STATIC = 4
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
MAIN_TABLE = 254
AF_INET = 2
AF_BRIDGE = 7

_IGNORED_ON_ADD = {errno.EEXIST}
_IGNORED_ON_DELETE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}


@dataclass(frozen=True, slots=True)
class Route:
    dst: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None
    oif: int
    onlink: bool


@dataclass(frozen=True, slots=True)
class Neighbour:
    ip: ipaddress.IPv4Address
    mac: str
    ifindex: int


@dataclass(frozen=True, slots=True)
class FdbEntry:
    mac: str
    dst: ipaddress.IPv4Address
    ifindex: int


@contextmanager
def ignoring(codes: set[int]) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        if exc.code not in codes:
            raise


class Kernel:
    """A thin, typed facade over one pyroute2 IPRoute socket (one owner: the main thread)."""

    def __init__(self, ipr: IPRoute | None = None) -> None:
        self._own = ipr is None
        self.ipr = ipr if ipr is not None else IPRoute()
        self._bulk: nlbulk.BulkNetlink | None = None

    @property
    def bulk(self) -> nlbulk.BulkNetlink:
        """Dumps and batches of per-peer entries (see nlbulk: pyroute2 is slow at 1000s)."""
        if self._bulk is None:
            self._bulk = nlbulk.BulkNetlink()
        return self._bulk

    def close(self) -> None:
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None
        if self._own:
            self.ipr.close()

    def replace_many(
        self, neighbours: Sequence[Neighbour], fdb: Sequence[FdbEntry], routes: Sequence[Route]
    ) -> list[tuple[object, int]]:
        """Install entries in bulk, in this order (a route last: its neighbour is there);
        returns what the kernel refused, with the errno, for the caller to report."""
        entries: list[object] = [*neighbours, *fdb, *routes]
        messages = [nlbulk.neighbour(True, n.ip, n.mac, n.ifindex) for n in neighbours]
        messages += [nlbulk.fdb(True, f.mac, f.dst, f.ifindex) for f in fdb]
        messages += [
            nlbulk.route(
                True, r.dst, r.gateway, r.oif, onlink=r.onlink, proto=RTPROT_BOOT, table=MAIN_TABLE
            )
            for r in routes
        ]
        codes = self.bulk.send(messages)
        return [(entry, code) for entry, code in zip(entries, codes, strict=True) if code]

    # -- links ------------------------------------------------------------------------------

    def add_link(self, name: str, kind: str, **attrs: Any) -> None:
        """Create a link; NetlinkError (e.g. EOPNOTSUPP: no such link kind) goes to the caller."""
        self.ipr.link("add", ifname=name, kind=kind, **attrs)

    def link_names(self) -> list[tuple[int, str]]:
        """(index, name) of every link."""
        return [
            (int(link["index"]), str(link.get_attr("IFLA_IFNAME"))) for link in self.ipr.get_links()
        ]

    @property
    def tc_socket(self) -> IPRoute:
        """The socket for tc (the eBPF filters), which this facade does not wrap."""
        return self.ipr

    def link_index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def link(self, index: int) -> Any:
        return self.ipr.get_links(index)[0]

    def link_kind(self, index: int) -> str | None:
        info = self.link(index).get_attr("IFLA_LINKINFO")
        return info.get_attr("IFLA_INFO_KIND") if info is not None else None

    def delete_link(self, name: str) -> bool:
        index = self.link_index(name)
        if index is None:
            return False
        with ignoring(_IGNORED_ON_DELETE):
            self.ipr.link("del", index=index)
        return True

    def set_up(self, index: int, mtu: int | None = None) -> None:
        if mtu is not None:
            self.ipr.link("set", index=index, mtu=mtu)
        self.ipr.link("set", index=index, state="up")

    def ensure_address(self, index: int, address: ipaddress.IPv4Interface) -> bool:
        """Give the link exactly this one IPv4 address; True when something changed."""
        changed = False
        for addr in self.ipr.get_addr(family=AF_INET, index=index):
            current = ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
            if current != address:
                with ignoring(_IGNORED_ON_DELETE):
                    self.ipr.addr(
                        "del",
                        index=index,
                        address=str(current.ip),
                        prefixlen=current.network.prefixlen,
                    )
                changed = True
        present = any(
            addr.get_attr("IFA_ADDRESS") == str(address.ip)
            and addr["prefixlen"] == address.network.prefixlen
            for addr in self.ipr.get_addr(family=AF_INET, index=index)
        )
        if not present:
            with ignoring(_IGNORED_ON_ADD):
                self.ipr.addr(
                    "add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
                )
            changed = True
        return changed

    # -- routes -----------------------------------------------------------------------------

    def route_replace(self, route: Route) -> None:
        kwargs: dict[str, Any] = {
            "dst": str(route.dst),
            "oif": route.oif,
            "proto": RTPROT_BOOT,
            "table": MAIN_TABLE,
        }
        if route.gateway is not None:
            kwargs["gateway"] = str(route.gateway)
        else:
            kwargs["scope"] = 253  # link
        if route.onlink:
            kwargs["flags"] = RTNH_F_ONLINK
        self.ipr.route("replace", **kwargs)

    def route_delete(self, route: Route) -> None:
        with ignoring(_IGNORED_ON_DELETE):
            # proto: only ours, never a routing daemon's route to the same subnet (bgp).
            self.ipr.route(
                "del", dst=str(route.dst), oif=route.oif, table=MAIN_TABLE, proto=RTPROT_BOOT
            )

    def routes(
        self, within: ipaddress.IPv4Network, oif: int | None = None, *, daemons: bool = False
    ) -> list[Route]:
        """Main-table IPv4 routes whose destination lies inside `within` (optionally on `oif`),
        leaving out those of routing daemons (BIRD's in the bgp backend); daemons: only those."""
        # Integer tests: ipaddress's subnet_of costs 10 us a call, thousands of times a pass.
        base, mask, plen = int(within.network_address), int(within.netmask), within.prefixlen
        return [
            Route(entry.dst, entry.gateway, entry.oif, onlink=bool(entry.flags & RTNH_F_ONLINK))
            for entry in self.bulk.routes(MAIN_TABLE)
            if entry.dst.prefixlen >= plen
            and int(entry.dst.network_address) & mask == base
            and (oif is None or entry.oif == oif)
            and (entry.proto > RTPROT_STATIC) == daemons
        ]

    # -- neighbours and fdb (vxlan) ---------------------------------------------------------

    def neigh_replace(self, neigh: Neighbour) -> None:
        self.ipr.neigh(
            "replace",
            dst=str(neigh.ip),
            lladdr=neigh.mac,
            ifindex=neigh.ifindex,
            state=NUD_PERMANENT,
        )

    def neigh_delete(self, neigh: Neighbour) -> None:
        with ignoring(_IGNORED_ON_DELETE):
            self.ipr.neigh("del", dst=str(neigh.ip), ifindex=neigh.ifindex)

    def neighbours(self, ifindex: int) -> list[Neighbour]:
        return [
            Neighbour(entry.dst, entry.mac, ifindex)
            for entry in self.bulk.neighbours(AF_INET, ifindex)
            if entry.mac and entry.dst is not None and entry.state & NUD_PERMANENT
        ]

    def fdb_replace(self, entry: FdbEntry) -> None:
        self.ipr.fdb(
            "replace",
            ifindex=entry.ifindex,
            lladdr=entry.mac,
            dst=str(entry.dst),
            state=NUD_PERMANENT,
            flags=NTF_SELF,  # the vxlan device's own table ("self"), not a bridge master's
        )

    def fdb_delete(self, entry: FdbEntry) -> None:
        with ignoring(_IGNORED_ON_DELETE):
            self.ipr.fdb("del", ifindex=entry.ifindex, lladdr=entry.mac, dst=str(entry.dst))

    def fdb_entries(self, ifindex: int) -> list[FdbEntry]:
        return [
            FdbEntry(entry.mac, entry.dst, ifindex)
            for entry in self.bulk.neighbours(AF_BRIDGE, ifindex)
            if entry.mac and entry.dst is not None and entry.mac != "00:00:00:00:00:00"
        ]


def on_link(ext_address: ipaddress.IPv4Interface, peer: ipaddress.IPv4Address) -> bool:
    """True when `peer` is in the connected subnet of our external address (L2 adjacent)."""
    return peer in ext_address.network
