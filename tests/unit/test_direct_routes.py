"""DirectRoutes on its own: given a route table, not a backend (the seam issue 11 made)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from pyflannel.backend.direct import DirectRoutes
from pyflannel.backend.netlink import Route
from pyflannel.iface import ExternalInterface
from pyflannel.subnet.lease import Lease, LeaseAttrs
from tests.unit.fake_routes import FakeRoutes

EXT = ExternalInterface(
    name="ext0",
    index=7,
    iface_addr=IPv4Address("192.0.2.10"),
    prefixlen=24,
    public_ip=IPv4Address("192.0.2.10"),
    mtu=1500,
)
NETWORK = IPv4Network("10.5.0.0/16")


def lease(subnet: str, public_ip: str) -> Lease:
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(public_ip), "host-gw"))


def direct(kernel: FakeRoutes, own: str | None = None) -> DirectRoutes:
    own_subnet = IPv4Network(own) if own else None
    return DirectRoutes(
        kernel,  # type: ignore[arg-type]
        EXT,
        NETWORK,
        backend_type="host-gw",
        own_subnet=lambda: own_subnet,
    )


def test_on_link_peer_gets_a_route_via_its_public_ip() -> None:
    kernel = FakeRoutes()
    assert direct(kernel).apply(lease("10.5.1.0/24", "192.0.2.11"))
    assert kernel.table[IPv4Network("10.5.1.0/24")] == Route(
        IPv4Network("10.5.1.0/24"), IPv4Address("192.0.2.11"), EXT.index, onlink=False
    )


def test_off_link_peer_is_counted_not_routed() -> None:
    kernel = FakeRoutes()
    routes = direct(kernel)
    assert not routes.apply(lease("10.5.2.0/24", "198.51.100.5"))
    assert routes.unreachable == {IPv4Network("10.5.2.0/24")}
    assert kernel.table == {}
    routes.remove(IPv4Network("10.5.2.0/24"))
    assert routes.unreachable == set()


def test_sync_adds_missing_drops_leftovers_keeps_own_subnet() -> None:
    kernel = FakeRoutes()
    own = Route(IPv4Network("10.5.9.0/24"), IPv4Address("192.0.2.1"), EXT.index, onlink=False)
    stale = Route(IPv4Network("10.5.3.0/24"), IPv4Address("192.0.2.13"), EXT.index, onlink=False)
    kernel.table = {own.dst: own, stale.dst: stale}
    wanted = {IPv4Network("10.5.1.0/24"): lease("10.5.1.0/24", "192.0.2.11")}
    assert direct(kernel, own="10.5.9.0/24").sync(wanted) == 2
    assert set(kernel.table) == {own.dst, IPv4Network("10.5.1.0/24")}
    assert direct(kernel, own="10.5.9.0/24").sync(wanted) == 0  # nothing left to repair
