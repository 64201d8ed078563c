"""A route table over dicts with the route calls the backends' direct routing makes (unit
tests must not touch the machine's own table): the agent's routes, and a routing daemon's
(BIRD's) apart, as Kernel.routes tells them apart by protocol."""

from __future__ import annotations

from ipaddress import IPv4Network

from pyflannel.backend.netlink import Route


class FakeRoutes:
    def __init__(self) -> None:
        self.table: dict[IPv4Network, Route] = {}
        self.daemon_table: dict[IPv4Network, Route] = {}  # proto bird

    def route_replace(self, route: Route) -> None:
        self.table[route.dst] = route

    def route_delete(self, route: Route) -> None:
        self.table.pop(route.dst, None)

    def routes(
        self, within: IPv4Network, oif: int | None = None, *, daemons: bool = False
    ) -> list[Route]:
        table = self.daemon_table if daemons else self.table
        return [
            r for r in table.values() if r.dst.subnet_of(within) and (oif is None or r.oif == oif)
        ]
