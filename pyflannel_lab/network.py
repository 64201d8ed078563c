"""Building a lab's network: namespaces, the switch bridge, veths, container bridges, MTUs."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv4Network

from pyroute2 import IPRoute, netns

from pyflannel.errors import FlannelError, UsageError
from pyflannel_lab.layout import (
    CONTAINER_BRIDGE,
    ROUTED_BRIDGE,
    ROUTED_SEGMENT,
    SWITCH_BRIDGE,
    UPLINK,
    Node,
)
from pyflannel_lab.processes import LabProcesses
from pyflannel_lab.state_file import LabStateFile

# Run inside a namespace: tx checksumming off on a device (TSO and tunnel segmentation depend on
# it, so the kernel segments and checksums in software before the device). ethtool's
# `-K dev tx off`; ethtool itself is not on every machine, pyroute2 is.
_TX_CHECKSUM_OFF = """
import sys
from pyroute2.ethtool import Ethtool
ethtool = Ethtool()
features = ethtool.get_features(sys.argv[1])
features.features["tx-checksum-ip-generic"].enable = False
ethtool.set_features(sys.argv[1], features)
"""


class LabNetwork(LabProcesses, LabStateFile):
    """Creates the switch, hosts and containers as namespaces with their links and addresses."""

    @contextlib.contextmanager
    def iproute(self, node: Node) -> Iterator[IPRoute]:
        """A pyroute2 IPRoute bound to a lab namespace (never creates one by accident)."""
        ipr = IPRoute(netns=self.ns(node), flags=0)
        try:
            yield ipr
        finally:
            ipr.close()

    @staticmethod
    def _index(ipr: IPRoute, ifname: str) -> int:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise FlannelError(f"lab interface {ifname} is missing")
        return int(found[0])

    def _create_ns(self, name: str) -> None:
        netns.create(name)
        with self.iproute(name) as ipr:
            ipr.link("set", index=self._index(ipr, "lo"), state="up")

    def _make_switch(self) -> None:
        self._create_ns(self.switch_ns)
        with self.iproute("sw") as ipr:
            ipr.link("add", ifname=SWITCH_BRIDGE, kind="bridge")
            br = self._index(ipr, SWITCH_BRIDGE)
            ipr.addr("add", index=br, address=self.switch_ip, prefixlen=self.underlay.prefixlen)
            ipr.link("set", index=br, state="up")
            if self.routed_hosts:
                ipr.link("add", ifname=ROUTED_BRIDGE, kind="bridge")
                ipr.link("set", index=self._index(ipr, ROUTED_BRIDGE), state="up")
        if self.routed_hosts:
            self._make_router()
            # etcd's answers to the routed hosts.
            self._route_via_router("sw", str(ROUTED_SEGMENT), self.router_ips[0])

    def _make_router(self) -> None:
        self._create_ns(self.router_ns)
        for uplink, bridge, address, segment in (
            ("eth0", SWITCH_BRIDGE, self.router_ips[0], self.underlay),
            ("eth1", ROUTED_BRIDGE, self.router_ips[1], ROUTED_SEGMENT),
        ):
            port = f"rt-{uplink}"
            with self.iproute("sw") as sw:
                sw.link(
                    "add",
                    ifname=port,
                    kind="veth",
                    peer={"ifname": uplink, "net_ns_fd": self.router_ns},
                )
                idx = self._index(sw, port)
                sw.link("set", index=idx, master=self._index(sw, bridge), state="up")
            with self.iproute("rt") as ipr:
                eth = self._index(ipr, uplink)
                ipr.addr("add", index=eth, address=address, prefixlen=segment.prefixlen)
                ipr.link("set", index=eth, state="up")
        self.sysctl("rt", "net.ipv4.ip_forward", "1")

    def _route_via_router(self, node: Node, dst: str, gateway: str) -> None:
        with self.iproute(node) as ipr:
            ipr.route("add", dst=dst, gateway=gateway)

    def _make_host(self, i: int) -> None:
        ns = self.host_ns(i)
        self._create_ns(ns)
        port = f"h{i}"
        with self.iproute("sw") as sw:
            sw.link("add", ifname=port, kind="veth", peer={"ifname": UPLINK, "net_ns_fd": ns})
            idx = self._index(sw, port)
            bridge = ROUTED_BRIDGE if self.is_routed(i) else SWITCH_BRIDGE
            sw.link("set", index=idx, master=self._index(sw, bridge), state="up")
        segment = ROUTED_SEGMENT if self.is_routed(i) else self.underlay
        with self.iproute(i) as ipr:
            eth = self._index(ipr, UPLINK)
            ipr.addr("add", index=eth, address=self.host_ip(i), prefixlen=segment.prefixlen)
            ipr.link("set", index=eth, state="up")
        if self.is_routed(i):
            self._route_via_router(i, str(self.underlay), self.router_ips[1])
        elif self.routed_hosts:
            self._route_via_router(i, str(ROUTED_SEGMENT), self.router_ips[0])
        self.sysctl(i, "net.ipv4.ip_forward", "1")
        if self.wire_like:
            self.run(i, sys.executable, "-c", _TX_CHECKSUM_OFF, UPLINK)

    def add_container_bridge(self, host: int, subnet: str) -> None:
        """Give a host its cbr0 (gateway = first address of subnet) and its containers."""
        net = self._check_subnet(subnet)
        self._check_host(host)
        state = self._hosts[host]
        if state.subnet is not None:
            raise UsageError(f"lab host h{host} already has a container bridge ({state.subnet})")
        gateway = IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")
        with self.iproute(host) as ipr:
            ipr.link("add", ifname=CONTAINER_BRIDGE, kind="bridge")
            br = self._index(ipr, CONTAINER_BRIDGE)
            ipr.addr("add", index=br, address=str(gateway.ip), prefixlen=net.prefixlen)
            ipr.link("set", index=br, state="up")
        state.subnet = str(net)
        for j in range(1, self.containers_per_host + 1):
            self._make_container(host, j, net)
        self.save_state()

    def _make_container(self, host: int, j: int, net: IPv4Network) -> None:
        ns = self.container_ns(host, j)
        self._create_ns(ns)
        port = f"veth-c{j}"
        with self.iproute(host) as ipr:
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": UPLINK, "net_ns_fd": ns})
            ipr.link(
                "set",
                index=self._index(ipr, port),
                master=self._index(ipr, CONTAINER_BRIDGE),
                state="up",
            )
        with self.iproute(ns) as ipr:
            eth = self._index(ipr, UPLINK)
            address = str(net.network_address + 1 + j)
            ipr.addr("add", index=eth, address=address, prefixlen=net.prefixlen)
            ipr.link("set", index=eth, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=str(net.network_address + 1))
        self._hosts[host].containers.append(f"h{host}c{j}")

    def set_container_mtu(self, host: int, mtu: int) -> None:
        """Set the MTU of cbr0 and every container link on a host (Docker's --mtu)."""
        self._check_host(host)
        if self._hosts[host].subnet is None:
            raise UsageError(f"lab host h{host} has no container bridge; call add_container_bridge")
        for j in range(1, self.containers_per_host + 1):
            with self.iproute(self.container_ns(host, j)) as ipr:
                ipr.link("set", index=self._index(ipr, UPLINK), mtu=mtu)
        with self.iproute(host) as ipr:
            for j in range(1, self.containers_per_host + 1):
                ipr.link("set", index=self._index(ipr, f"veth-c{j}"), mtu=mtu)
            ipr.link("set", index=self._index(ipr, CONTAINER_BRIDGE), mtu=mtu)
        self._hosts[host].container_mtu = mtu
        self.save_state()

    def set_underlay_mtu(self, mtu: int) -> None:
        """Set the MTU of every underlay link: host eth0s, switch ports and the switch bridge."""
        for i in self.host_indexes():
            with self.iproute(i) as ipr:
                ipr.link("set", index=self._index(ipr, UPLINK), mtu=mtu)
        with self.iproute("sw") as sw:
            for i in self.host_indexes():
                sw.link("set", index=self._index(sw, f"h{i}"), mtu=mtu)
            sw.link("set", index=self._index(sw, SWITCH_BRIDGE), mtu=mtu)
