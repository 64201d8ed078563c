"""The namespace lab's layout: its parameters, and the names and addresses of its parts.

Layout for prefix ``p`` and N hosts (nothing is added to the root namespace but the
namespaces themselves)::

    p-sw      switch: bridge br0 (192.0.2.1/24, the lab's etcd listens here), ports h1..hN
    p-hI      host I: eth0 = 192.0.2.(10+I)/24 on the switch, ip_forward=1, no default route,
              bridge cbr0 = first address of the host's overlay subnet (Docker's --bip)
    p-hIcJ    container J of host I: eth0 on cbr0 = subnet .(1+J), default route via cbr0

With routed_hosts=R the last R hosts sit behind a router instead, on a second segment: the
switch gets a second bridge br1 (no address), the router p-rt has eth0 on br0 (the underlay's
last address) and eth1 on br1 (ROUTED_SEGMENT .1), the routed hosts eth0 = ROUTED_SEGMENT
.(10+I) on br1; each side has a route to the other side's segment via the router (no default
routes anywhere). Host-gw cannot cross it; a routing protocol can.

Namespaces are addressed by short names: ``"sw"``, ``"h1"``, ``"h1c2"`` (or an int for a host).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import IO, Any

from pyroute2 import netns

from pyflannel.errors import UsageError

ETCD_PORT = 2379
SWITCH_BRIDGE = "br0"
ROUTED_BRIDGE = "br1"
ROUTED_SEGMENT = IPv4Network("198.51.100.0/24")
CONTAINER_BRIDGE = "cbr0"
UPLINK = "eth0"
# Test traffic must stay on documentation ranges (see docs/ENVIRONMENT.md).
UNDERLAY_RANGES = tuple(
    IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
MAX_HOSTS = 200

Node = int | str


def _lab_ns_re(prefix: str) -> re.Pattern[str]:
    # sw, hosts h<i>, their containers h<i>c<j> and CNI pods p<i>-<name> (pyflannel_lab.cni).
    return re.compile(rf"^{re.escape(prefix)}-(sw|rt|h\d+(c\d+)?|p\d+-[a-z0-9]+)$")


def lab_namespaces(prefix: str) -> list[str]:
    """Names of the existing namespaces that belong to the lab with this prefix."""
    pattern = _lab_ns_re(prefix)
    return sorted(n for n in netns.listnetns() if pattern.match(n))


@dataclass
class HostState:
    """What one host has once built: its container subnet, MTU and container names."""

    subnet: str | None = None
    container_mtu: int | None = None
    containers: list[str] = field(default_factory=list)


class LabLayout:
    """A lab's shape: its validated parameters, namespace names and addresses; the
    attributes the other parts of Lab share are set here."""

    def __init__(
        self,
        name_prefix: str = "pft",
        hosts: int = 3,
        underlay: str = "192.0.2.0/24",
        overlay_subnets: list[str] | None = None,
        containers_per_host: int = 1,
        *,
        wire_like: bool = False,
        routed_hosts: int = 0,
    ) -> None:
        """wire_like: the hosts' underlay veths checksum and segment in software, as a NIC
        puts packets on a wire (by default a veth hands offloaded packets on unsegmented, with
        unfinished checksums, which only kernel receivers take; flanneld's udp proxy does not)."""
        if not PREFIX_RE.match(name_prefix):
            raise UsageError(
                f"lab prefix {name_prefix!r} is invalid; use 1-12 lowercase letters/digits "
                "starting with a letter"
            )
        if not 1 <= hosts <= MAX_HOSTS:
            raise UsageError(f"lab hosts={hosts} is out of range; use 1..{MAX_HOSTS}")
        if not 0 <= containers_per_host <= 50:
            raise UsageError(
                f"containers_per_host={containers_per_host} is out of range; use 0..50"
            )
        self.prefix = name_prefix
        self.hosts = hosts
        self.containers_per_host = containers_per_host
        self.wire_like = wire_like
        self.underlay = self._check_underlay(underlay, hosts)
        if not 0 <= routed_hosts < hosts:
            raise UsageError(
                f"routed_hosts={routed_hosts} is out of range; use 0..{hosts - 1} (at least one "
                "host stays on the first segment, with etcd)"
            )
        if routed_hosts and self.underlay.overlaps(ROUTED_SEGMENT):
            raise UsageError(
                f"lab underlay {self.underlay} overlaps the routed segment {ROUTED_SEGMENT}; "
                "use 192.0.2.0/24 or 203.0.113.0/24"
            )
        self.routed_hosts = routed_hosts
        subnets = overlay_subnets
        if subnets is not None and len(subnets) != hosts:
            raise UsageError(
                f"{len(subnets)} overlay subnets given for {hosts} hosts; give one per host"
            )
        self._initial_subnets = [self._check_subnet(s) for s in subnets] if subnets else None
        self._hosts: dict[int, HostState] = {i: HostState() for i in self.host_indexes()}
        self._procs: list[subprocess.Popen[Any]] = []
        self._logs: list[IO[bytes]] = []
        self._etcd: subprocess.Popen[Any] | None = None
        self._etcd_pid: int | None = None
        self.tmpdir: Path | None = None

    # ---- validation ---------------------------------------------------------------------

    @staticmethod
    def _check_underlay(underlay: str, hosts: int) -> IPv4Network:
        try:
            net = ip_network(underlay)
        except ValueError as exc:
            raise UsageError(f"lab underlay {underlay!r} is not a CIDR: {exc}") from exc
        if not isinstance(net, IPv4Network) or not any(net.subnet_of(r) for r in UNDERLAY_RANGES):
            raise UsageError(
                f"lab underlay {underlay} is outside the documentation ranges; "
                "use a part of 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24"
            )
        if net.num_addresses < hosts + 12:
            raise UsageError(f"lab underlay {underlay} is too small for {hosts} hosts")
        return net

    def _check_subnet(self, subnet: str) -> IPv4Network:
        try:
            net = ip_network(subnet)
        except ValueError as exc:
            raise UsageError(f"overlay subnet {subnet!r} is not a CIDR: {exc}") from exc
        if not isinstance(net, IPv4Network) or net.num_addresses < self.containers_per_host + 4:
            raise UsageError(
                f"overlay subnet {subnet} is too small for "
                f"{self.containers_per_host} containers; use an IPv4 /29 or larger"
            )
        return net

    # ---- names and addresses ----------------------------------------------------------

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def router_ns(self) -> str:
        return f"{self.prefix}-rt"

    def is_routed(self, i: int) -> bool:
        """True for a host on the second segment, behind the router."""
        self._check_host(i)
        return i > self.hosts - self.routed_hosts

    @property
    def router_ips(self) -> tuple[str, str]:
        """The router's addresses on the first and on the routed segment."""
        return str(self.underlay.broadcast_address - 1), str(ROUTED_SEGMENT.network_address + 1)

    def host_indexes(self) -> range:
        return range(1, self.hosts + 1)

    def host_ns(self, i: int) -> str:
        self._check_host(i)
        return f"{self.prefix}-h{i}"

    def container_ns(self, i: int, j: int) -> str:
        return f"{self.host_ns(i)}c{j}"

    def host_names(self) -> list[str]:
        return [f"h{i}" for i in self.host_indexes()]

    def container_names(self) -> list[str]:
        """Short names of the containers that exist (hosts without a bridge have none)."""
        return [c for i in self.host_indexes() for c in self._hosts[i].containers]

    def ns(self, node: Node) -> str:
        """Full namespace name of a short name ("sw", "h2", "h2c1"), a host index or a full name."""
        if isinstance(node, int):
            return self.host_ns(node)
        name = node.removeprefix(f"{self.prefix}-")
        if name == "sw":
            return self.switch_ns
        if name == "rt":
            return self.router_ns
        m = re.fullmatch(r"h(\d+)(?:c(\d+))?", name)
        if not m:
            raise UsageError(f"lab node {node!r} is unknown; use 'sw', 'rt', 'h<i>' or 'h<i>c<j>'")
        host = int(m.group(1))
        self._check_host(host)
        return f"{self.prefix}-{name}"

    def _check_host(self, i: int) -> None:
        if not 1 <= i <= self.hosts:
            raise UsageError(f"lab host {i} does not exist; hosts are 1..{self.hosts}")

    @property
    def switch_ip(self) -> str:
        return str(self.underlay.network_address + 1)

    def host_ip(self, i: int) -> str:
        segment = ROUTED_SEGMENT if self.is_routed(i) else self.underlay
        return str(segment.network_address + 10 + i)

    def subnet(self, i: int) -> str | None:
        self._check_host(i)
        return self._hosts[i].subnet

    def gateway_ip(self, i: int) -> str:
        return str(self._subnet_of(i).network_address + 1)

    def container_ip(self, i: int, j: int) -> str:
        if not 1 <= j <= self.containers_per_host:
            raise UsageError(f"lab container {j} does not exist; use 1..{self.containers_per_host}")
        return str(self._subnet_of(i).network_address + 1 + j)

    def container_ip_of(self, name: str) -> str:
        """The address of a container given by name (h<host>c<n>)."""
        m = re.fullmatch(r"h(\d+)c(\d+)", name)
        assert m is not None
        return self.container_ip(int(m.group(1)), int(m.group(2)))

    def _subnet_of(self, i: int) -> IPv4Network:
        subnet = self.subnet(i)
        if subnet is None:
            raise UsageError(f"lab host h{i} has no container bridge; call add_container_bridge")
        return IPv4Network(subnet)

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.switch_ip}:{ETCD_PORT}"
