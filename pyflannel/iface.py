"""Choosing the external interface and the public IP, following flanneld's rules.

Order (flannel's): every --iface entry (an interface name or one of its IPv4 addresses), then
every --iface-regex pattern (against addresses first, then names, as flannel does), then
--iface-can-reach (the kernel's route lookup). Only when none of these flags is given is the
interface of the default route used. All kernel access goes through pyroute2 (netlink).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyflannel.errors import FlannelError, InterfaceError

IPv4 = ipaddress.IPv4Address

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTN_LOCAL = 2
LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
FLAG_HINT = "set --iface, --iface-regex or --iface-can-reach"


@dataclass(frozen=True)
class ExternalInterface:
    name: str
    index: int
    iface_addr: IPv4  # the IPv4 address on the interface used for the underlay
    prefixlen: int  # prefix length of that address
    public_ip: IPv4  # --public-ip if given, else iface_addr
    mtu: int


@dataclass(frozen=True)
class Link:
    """What the selection rules need to know about one interface (kernel-independent)."""

    name: str
    index: int
    up: bool
    loopback: bool
    mtu: int
    addrs: tuple[tuple[IPv4, int], ...] = ()  # (address, prefixlen) in kernel order


@dataclass(frozen=True)
class Choice:
    link: Link
    addr: IPv4
    prefixlen: int

    def external(self, public_ip: IPv4 | None) -> ExternalInterface:
        return ExternalInterface(
            name=self.link.name,
            index=self.link.index,
            iface_addr=self.addr,
            prefixlen=self.prefixlen,
            public_ip=public_ip if public_ip is not None else self.addr,
            mtu=self.link.mtu,
        )


# ---------------------------------------------------------------------------------------------
# Pure rules: they work on Link records so that they can be tested without a kernel.


def preferred_addr(link: Link) -> tuple[IPv4, int] | None:
    """flannel's pick: the first global address, else a link-local one, else any (e.g. lo's)."""
    if not link.addrs:
        return None
    for addr, plen in link.addrs:
        if not (addr in LINK_LOCAL or addr.is_loopback):
            return addr, plen
    for addr, plen in link.addrs:
        if addr in LINK_LOCAL:
            return addr, plen
    return link.addrs[0]


def unusable_reason(link: Link, explicit: bool) -> str | None:
    """Why `link` cannot carry the underlay, or None when it can."""
    if link.loopback and not explicit:
        return "loopback (name it with --iface to use it)"
    if not link.up:
        return f"interface is down; bring it up (ip link set {link.name} up)"
    if preferred_addr(link) is None:
        return "interface has no IPv4 address"
    if link.mtu <= 0:
        return "interface reports no MTU"
    return None


def choose_on(link: Link, explicit: bool, addr: IPv4 | None = None) -> Choice | str:
    """`link` with `addr` (or its preferred address), or the reason it is unusable."""
    reason = unusable_reason(link, explicit)
    if reason is not None:
        return reason
    if addr is None:
        found = preferred_addr(link)
        assert found is not None  # unusable_reason checked it
        return Choice(link, *found)
    plen = prefixlen_of(link, addr)
    return Choice(link, addr, 32 if plen is None else plen)


def prefixlen_of(link: Link, addr: IPv4) -> int | None:
    return next((plen for a, plen in link.addrs if a == addr), None)


def match_iface_entry(links: Sequence[Link], entry: str) -> Choice | str:
    """One --iface entry: an IPv4 address carried by an interface, or an interface name."""
    try:
        ip = ipaddress.ip_address(entry)
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv6Address):
        return "IPv6 addresses are not supported; give an IPv4 address or an interface name"
    if isinstance(ip, IPv4):
        owner = next((link for link in links if prefixlen_of(link, ip) is not None), None)
        if owner is None:
            return "no interface carries this address"
        return choose_on(owner, explicit=True, addr=ip)
    named = next((link for link in links if link.name == entry), None)
    if named is None:
        return "no such interface"
    return choose_on(named, explicit=True)


def match_regex(links: Sequence[Link], pattern: re.Pattern[str]) -> Choice | str:
    """flannel's order: every interface's IPv4 addresses first, then the names (index order)."""
    rejected: list[str] = []
    for link in links:
        for addr, _ in link.addrs:
            if pattern.search(str(addr)):
                found = choose_on(link, explicit=False, addr=addr)
                if isinstance(found, Choice):
                    return found
                rejected.append(f"{link.name} {addr}: {found}")
    for link in links:
        if pattern.search(link.name):
            found = choose_on(link, explicit=False)
            if isinstance(found, Choice):
                return found
            rejected.append(f"{link.name}: {found}")
    if rejected:
        return "matches only unusable interfaces (" + ", ".join(rejected) + ")"
    return "matches no interface name or IPv4 address"


def compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InterfaceError(
            f"--iface-regex={pattern}: invalid regular expression ({exc}); fix the pattern"
        ) from None


def usable_names(links: Iterable[Link]) -> str:
    names = [link.name for link in links if unusable_reason(link, explicit=True) is None]
    return ", ".join(names) or "none"


def no_match_message(failures: Sequence[str], links: Sequence[Link], flags: Sequence[str]) -> str:
    """One line: every entry tried and why it failed, the usable interfaces, what to set."""
    hint = "set --iface to one of them" if list(flags) == ["--iface"] else FLAG_HINT
    return f"{'; '.join(failures)} (have: {usable_names(links)}); {hint}"


@dataclass(frozen=True)
class Route:
    """A route as the default-route rule sees it."""

    dst_len: int
    table: int
    type: int
    oif: int | None
    metric: int


def default_route_oif(routes: Iterable[Route]) -> int | None:
    """Outgoing interface of the main table's default route with the lowest metric."""
    candidates = [
        r
        for r in routes
        if r.dst_len == 0 and r.table == RT_TABLE_MAIN and r.type == RTN_UNICAST and r.oif
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda r: r.metric).oif


def parse_ipv4(value: str, flag: str) -> IPv4:
    try:
        return IPv4(value)
    except ValueError:
        raise InterfaceError(
            f"{flag}={value}: not an IPv4 address; give one like 192.0.2.10"
        ) from None


# ---------------------------------------------------------------------------------------------
# Kernel side (netlink via pyroute2).


@contextlib.contextmanager
def _netlink(ipr: Any | None) -> Iterator[Any]:
    """The caller's socket (e.g. a NetNS in tests), or a fresh IPRoute closed afterwards."""
    if ipr is not None:
        yield ipr
        return
    own = IPRoute()
    try:
        yield own
    finally:
        own.close()


def read_links(ipr: Any) -> list[Link]:
    addrs: dict[int, list[tuple[IPv4, int]]] = {}
    for msg in ipr.get_addr(family=socket.AF_INET):
        # IFA_LOCAL is our end; IFA_ADDRESS is the peer on point-to-point links.
        address = msg.get("local") or msg.get("address")
        if address:
            addrs.setdefault(msg["index"], []).append((IPv4(address), int(msg["prefixlen"])))
    links = [
        Link(
            name=msg.get("ifname"),
            index=msg["index"],
            up=bool(msg["flags"] & IFF_UP),
            loopback=bool(msg["flags"] & IFF_LOOPBACK),
            mtu=int(msg.get("mtu") or 0),
            addrs=tuple(addrs.get(msg["index"], ())),
        )
        for msg in ipr.get_links()
    ]
    return sorted(links, key=lambda link: link.index)


def read_routes(ipr: Any) -> list[Route]:
    routes = []
    for msg in ipr.get_routes(family=socket.AF_INET):
        oif = msg.get("oif")
        multipath = msg.get("multipath")
        if oif is None and multipath:
            oif = multipath[0].get("oif")  # first nexthop of an ECMP route
        routes.append(
            Route(
                dst_len=msg["dst_len"],
                table=msg.get_attr("RTA_TABLE") or msg["table"],  # header is 252 above 255
                type=msg["type"],
                oif=oif,
                metric=msg.get("priority") or 0,
            )
        )
    return routes


def _by_default_route(ipr: Any, links: Sequence[Link]) -> Choice:
    oif = default_route_oif(read_routes(ipr))
    if oif is None:
        raise InterfaceError(f"no default route to pick the interface from; {FLAG_HINT}")
    link = next((link for link in links if link.index == oif), None)
    if link is None:
        raise InterfaceError(f"default route uses interface index {oif}, now gone; {FLAG_HINT}")
    found = choose_on(link, explicit=False)
    if isinstance(found, str):
        raise InterfaceError(f"default route interface {link.name}: {found}; {FLAG_HINT}")
    return found


def _by_route_lookup(ipr: Any, links: Sequence[Link], target: IPv4) -> Choice | str:
    """Like `ip route get`: the outgoing interface and preferred source address to `target`."""
    try:
        msg = ipr.route("get", dst=str(target))[0]
    except NetlinkError as exc:
        return f"no route to it ({exc.args[1] if len(exc.args) > 1 else exc})"
    if msg["type"] == RTN_LOCAL:
        # Our own address: the kernel answers "dev lo"; the interface carrying it is meant.
        return match_iface_entry(links, str(target))
    if msg["type"] != RTN_UNICAST:
        return "no route to it (unreachable, blackhole or prohibit route)"
    link = next((link for link in links if link.index == msg.get("oif")), None)
    if link is None:
        return "route lookup named no outgoing interface"
    found = choose_on(link, explicit=False)
    src = msg.get("prefsrc")
    if isinstance(found, str) or src is None:
        return found
    # flannel keeps the kernel's source address, which may live on another interface.
    src_ip = IPv4(src)
    plen = next((p for lk in (link, *links) if (p := prefixlen_of(lk, src_ip)) is not None), 32)
    return Choice(link, src_ip, plen)


def _by_flags(
    ipr: Any,
    links: Sequence[Link],
    ifaces: Sequence[str],
    regexes: Sequence[re.Pattern[str]],
    can_reach: IPv4 | None,
) -> Choice:
    failures: list[str] = []
    for entry in ifaces:
        found = match_iface_entry(links, entry)
        if isinstance(found, Choice):
            return found
        failures.append(f"--iface={entry}: {found}")
    for pattern in regexes:
        found = match_regex(links, pattern)
        if isinstance(found, Choice):
            return found
        failures.append(f"--iface-regex={pattern.pattern}: {found}")
    if can_reach is not None:
        found = _by_route_lookup(ipr, links, can_reach)
        if isinstance(found, Choice):
            return found
        failures.append(f"--iface-can-reach={can_reach}: {found}")
    flags = [
        flag
        for flag, given in (
            ("--iface", ifaces),
            ("--iface-regex", regexes),
            ("--iface-can-reach", can_reach),
        )
        if given
    ]
    raise InterfaceError(no_match_message(failures, links, flags))


def choose_interface(
    ifaces: Sequence[str] = (),
    regexes: Sequence[str] = (),
    can_reach: str | None = None,
    public_ip: str | None = None,
    ipr: IPRoute | None = None,
) -> ExternalInterface:
    """The external interface by flannel's rules; raises InterfaceError when none fits."""
    # Validate the flags before touching the kernel so typos are reported as such.
    public = parse_ipv4(public_ip, "--public-ip") if public_ip else None
    target = parse_ipv4(can_reach, "--iface-can-reach") if can_reach else None
    patterns = [compile_regex(r) for r in regexes]
    with _netlink(ipr) as nl:
        links = read_links(nl)
        if ifaces or patterns or target is not None:
            choice = _by_flags(nl, links, ifaces, patterns, target)
        else:
            choice = _by_default_route(nl, links)
    return choice.external(public)


def interface_by_name(name: str, ipr: IPRoute | None = None) -> ExternalInterface:
    """The named interface with its preferred IPv4 address (public IP = that address)."""
    with _netlink(ipr) as nl:
        links = read_links(nl)
    found = match_iface_entry(links, name)
    if isinstance(found, str):
        raise InterfaceError(
            f"interface {name}: {found} (have: {usable_names(links)}); name one of them"
        )
    return found.external(None)


def ensure_ip_forward(log: logging.Logger, path: Path = IP_FORWARD) -> bool:
    """Turn on IPv4 forwarding (flannel users often forget it); True when it was off."""
    try:
        if path.read_text().strip() != "0":
            return False
        path.write_text("1\n")
    except OSError as exc:
        raise FlannelError(
            f"cannot enable IPv4 forwarding ({path}: {exc.strerror}); "
            "set net.ipv4.ip_forward=1 on the host"
        ) from None
    log.info("net.ipv4.ip_forward was 0; set it to 1 so this node forwards overlay traffic")
    return True
