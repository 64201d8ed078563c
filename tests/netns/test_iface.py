"""choose_interface against a real network namespace built with veth pairs and a bridge.

Topology (interfaces in index order; veth peers `*p` carry no address):
  lo     127.0.0.1/8 (up)
  ext0   192.0.2.10/24, 192.0.2.11/24      default route via 192.0.2.1, metric 100
  int0   198.51.100.10/24, 198.51.100.20/24, MTU 1400; default via 198.51.100.1, metric 200
  down0  203.0.113.50/24, administratively down
  bare0  up, no IPv4 address
  br0    203.0.113.10/25 (bridge, port int0p)
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address as IP
from pathlib import Path

import pytest
from pyroute2 import IPRoute, NetNS, netns

from pyflannel.errors import InterfaceError
from pyflannel.iface import ExternalInterface, choose_interface, interface_by_name

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
HAVE = "(have: lo, ext0, int0, br0)"
FLAG_HINT = "set --iface, --iface-regex or --iface-can-reach"


@dataclass
class Host:
    name: str
    ipr: IPRoute

    def index(self, ifname: str) -> int:
        return int(self.ipr.link_lookup(ifname=ifname)[0])

    def run_python(self, code: str) -> str:
        """Run `code` in a fresh interpreter inside the namespace (own /proc/sys/net)."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = ["ip", "netns", "exec", self.name, sys.executable, "-c", code]
        done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _veth(ipr: IPRoute, name: str, addrs: list[str], up: bool = True) -> int:
    ipr.link("add", ifname=name, kind="veth", peer=f"{name}p")
    index = int(ipr.link_lookup(ifname=name)[0])
    for cidr in addrs:
        address, plen = cidr.split("/")
        ipr.addr("add", index=index, address=address, prefixlen=int(plen))
    peer = int(ipr.link_lookup(ifname=f"{name}p")[0])
    ipr.link("set", index=peer, state="up")
    if up:
        ipr.link("set", index=index, state="up")
    return index


def _build(ipr: IPRoute) -> None:
    ipr.link("set", index=1, state="up")  # lo
    _veth(ipr, "ext0", ["192.0.2.10/24", "192.0.2.11/24"])
    int0 = _veth(ipr, "int0", ["198.51.100.10/24", "198.51.100.20/24"])
    ipr.link("set", index=int0, mtu=1400)
    _veth(ipr, "down0", ["203.0.113.50/24"], up=False)
    _veth(ipr, "bare0", [])
    ipr.link("add", ifname="br0", kind="bridge")
    br0 = int(ipr.link_lookup(ifname="br0")[0])
    ipr.link("set", index=int(ipr.link_lookup(ifname="int0p")[0]), master=br0)
    ipr.addr("add", index=br0, address="203.0.113.10", prefixlen=25)
    ipr.link("set", index=br0, state="up")
    ipr.route("add", dst="0.0.0.0/0", gateway="192.0.2.1", priority=100)
    ipr.route("add", dst="0.0.0.0/0", gateway="198.51.100.1", priority=200)


@pytest.fixture
def host() -> Iterator[Host]:
    name = f"pft-{secrets.token_hex(4)}"
    netns.create(name)
    ipr: IPRoute | None = None
    try:
        ipr = IPRoute(netns=name)
        _build(ipr)
        yield Host(name, ipr)
    finally:
        if ipr is not None:
            ipr.close()
        netns.remove(name)  # takes every link inside with it


def _drop_default_routes(host: Host) -> None:
    host.ipr.route("del", dst="0.0.0.0/0", gateway="192.0.2.1", priority=100)
    host.ipr.route("del", dst="0.0.0.0/0", gateway="198.51.100.1", priority=200)


def _pick(host: Host, **kwargs: object) -> tuple[str, str, int]:
    ext = choose_interface(ipr=host.ipr, **kwargs)  # type: ignore[arg-type]
    assert ext.public_ip == ext.iface_addr
    assert ext.index == host.index(ext.name)
    return ext.name, str(ext.iface_addr), ext.prefixlen


def _error(host: Host, **kwargs: object) -> str:
    with pytest.raises(InterfaceError) as info:
        choose_interface(ipr=host.ipr, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- rules ---------------------------------------------------------------------------------


def test_iface_by_name(host: Host) -> None:
    ext = choose_interface(ifaces=["int0"], ipr=host.ipr)
    assert ext == ExternalInterface(
        name="int0",
        index=host.index("int0"),
        iface_addr=IP("198.51.100.10"),
        prefixlen=24,
        public_ip=IP("198.51.100.10"),
        mtu=1400,
    )


def test_iface_by_address_uses_that_address(host: Host) -> None:
    assert _pick(host, ifaces=["192.0.2.11"]) == ("ext0", "192.0.2.11", 24)


def test_several_ifaces_first_missing(host: Host) -> None:
    assert _pick(host, ifaces=["ens33", "192.0.2.99", "br0", "int0"]) == (
        "br0",
        "203.0.113.10",
        25,
    )


def test_loopback_when_named(host: Host) -> None:
    assert _pick(host, ifaces=["lo"]) == ("lo", "127.0.0.1", 8)


def test_iface_wins_over_regex_and_can_reach(host: Host) -> None:
    assert _pick(host, ifaces=["ext0"], regexes=["^int"], can_reach="203.0.113.20")[0] == "ext0"


def test_regex_on_name(host: Host) -> None:
    assert _pick(host, regexes=["^br"]) == ("br0", "203.0.113.10", 25)


def test_regexes_in_order_after_missing_iface(host: Host) -> None:
    assert _pick(host, ifaces=["ens33"], regexes=["^wl", "^int"]) == (
        "int0",
        "198.51.100.10",
        24,
    )


def test_regex_on_address_skips_down_interface(host: Host) -> None:
    # down0 (203.0.113.50) comes first in index order but is down.
    assert _pick(host, regexes=[r"^203\.0\.113\."]) == ("br0", "203.0.113.10", 25)


def test_regex_on_second_address(host: Host) -> None:
    assert _pick(host, regexes=[r"\.20$"]) == ("int0", "198.51.100.20", 24)


def test_can_reach_uses_route_lookup_and_source(host: Host) -> None:
    host.ipr.route("add", dst="203.0.113.128/26", gateway="198.51.100.1", prefsrc="198.51.100.20")
    assert _pick(host, can_reach="203.0.113.130") == ("int0", "198.51.100.20", 24)


def test_can_reach_connected_network(host: Host) -> None:
    assert _pick(host, can_reach="203.0.113.20") == ("br0", "203.0.113.10", 25)


def test_can_reach_own_address_means_its_interface(host: Host) -> None:
    assert _pick(host, can_reach="192.0.2.11") == ("ext0", "192.0.2.11", 24)


def test_can_reach_after_failed_regex(host: Host) -> None:
    assert _pick(host, regexes=["^wl"], can_reach="198.51.100.77")[0] == "int0"


def test_default_route_lowest_metric(host: Host) -> None:
    assert _pick(host) == ("ext0", "192.0.2.10", 24)
    host.ipr.route("del", dst="0.0.0.0/0", gateway="192.0.2.1", priority=100)
    assert _pick(host) == ("int0", "198.51.100.10", 24)


def test_public_ip_override(host: Host) -> None:
    ext = choose_interface(ifaces=["ext0"], public_ip="203.0.113.99", ipr=host.ipr)
    assert (ext.iface_addr, ext.public_ip) == (IP("192.0.2.10"), IP("203.0.113.99"))
    ext = choose_interface(public_ip="198.51.100.99", ipr=host.ipr)  # default route too
    assert (ext.name, ext.public_ip) == ("ext0", IP("198.51.100.99"))


def test_netns_socket_kind_works_too(host: Host) -> None:
    ns = NetNS(host.name)
    try:
        assert choose_interface(regexes=["^int"], ipr=ns).name == "int0"
    finally:
        ns.close()


def test_own_iproute_when_none_given(host: Host) -> None:
    out = host.run_python(
        "from pyflannel.iface import choose_interface as c; e = c(); print(e.name, e.iface_addr)"
    )
    assert out == "ext0 192.0.2.10"


def test_interface_by_name(host: Host) -> None:
    ext = interface_by_name("br0", ipr=host.ipr)
    assert (ext.name, ext.iface_addr, ext.prefixlen, ext.public_ip, ext.mtu) == (
        "br0",
        IP("203.0.113.10"),
        25,
        IP("203.0.113.10"),
        1500,
    )
    with pytest.raises(InterfaceError) as info:
        interface_by_name("flannel.1", ipr=host.ipr)
    assert str(info.value) == f"interface flannel.1: no such interface {HAVE}; name one of them"


def test_ensure_ip_forward_in_namespace(host: Host) -> None:
    # A new namespace may inherit forwarding from the host: switch it off there first.
    code = (
        "import logging; from pathlib import Path; from pyflannel.iface import ensure_ip_forward"
        " as f; knob = Path('/proc/sys/net/ipv4/ip_forward'); knob.write_text('0');"
        " log = logging.getLogger('t'); print(f(log), f(log), knob.read_text().strip())"
    )
    assert host.run_python(code) == "True False 1"


# --- errors --------------------------------------------------------------------------------


def test_error_no_such_interface(host: Host) -> None:
    assert _error(host, ifaces=["ens33"]) == (
        f"--iface=ens33: no such interface {HAVE}; set --iface to one of them"
    )


def test_error_lists_every_iface(host: Host) -> None:
    assert _error(host, ifaces=["ens33", "192.0.2.99", "bare0", "down0"]) == (
        "--iface=ens33: no such interface; "
        "--iface=192.0.2.99: no interface carries this address; "
        "--iface=bare0: interface has no IPv4 address; "
        "--iface=down0: interface is down; bring it up (ip link set down0 up) "
        f"{HAVE}; set --iface to one of them"
    )


def test_error_no_ipv4_address(host: Host) -> None:
    assert _error(host, ifaces=["bare0"]).startswith("--iface=bare0: interface has no IPv4 address")


def test_error_regex_matches_nothing(host: Host) -> None:
    assert _error(host, regexes=["^wl"]) == (
        f"--iface-regex=^wl: matches no interface name or IPv4 address {HAVE}; {FLAG_HINT}"
    )


def test_error_regex_matches_only_unusable(host: Host) -> None:
    assert _error(host, regexes=["^(bare|down)0$"]) == (
        "--iface-regex=^(bare|down)0$: matches only unusable interfaces "
        "(down0: interface is down; bring it up (ip link set down0 up), "
        f"bare0: interface has no IPv4 address) {HAVE}; {FLAG_HINT}"
    )


def test_error_invalid_regex(host: Host) -> None:
    assert _error(host, regexes=["eth("]).startswith(
        "--iface-regex=eth(: invalid regular expression"
    )


def test_error_can_reach_unreachable(host: Host) -> None:
    _drop_default_routes(host)
    assert _error(host, can_reach="203.0.113.200") == (
        "--iface-can-reach=203.0.113.200: no route to it (Network is unreachable) "
        f"{HAVE}; {FLAG_HINT}"
    )


def test_error_everything_tried_is_listed(host: Host) -> None:
    _drop_default_routes(host)
    assert _error(host, ifaces=["ens33"], regexes=["^wl"], can_reach="203.0.113.200") == (
        "--iface=ens33: no such interface; "
        "--iface-regex=^wl: matches no interface name or IPv4 address; "
        "--iface-can-reach=203.0.113.200: no route to it (Network is unreachable) "
        f"{HAVE}; {FLAG_HINT}"
    )


def test_error_no_default_route(host: Host) -> None:
    _drop_default_routes(host)
    assert _error(host) == f"no default route to pick the interface from; {FLAG_HINT}"


def test_error_default_route_interface_without_address(host: Host) -> None:
    _drop_default_routes(host)
    host.ipr.route("add", dst="0.0.0.0/0", oif=host.index("bare0"))
    assert _error(host) == (
        f"default route interface bare0: interface has no IPv4 address; {FLAG_HINT}"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"public_ip": "203.0.113"}, "--public-ip=203.0.113: not an IPv4 address"),
        ({"can_reach": "gateway"}, "--iface-can-reach=gateway: not an IPv4 address"),
    ],
)
def test_error_bad_addresses(host: Host, kwargs: dict[str, str], message: str) -> None:
    assert _error(host, **kwargs).startswith(message)
