"""The kernel ipip data path on the VMs (Debian's kernel has the `ipip` link kind).

test_overlay.py (the Docker scenarios' tests, linked here) checks the cluster and the ping
matrix; these check that the agent chose the kernel device and not its userspace fallback (a TUN
device of the same name), and the kernel state flannel's ipip backend sets up: the device with
our underlay address as local end, its MTU, one onlink route per peer via the peer's public IP,
and packets really crossing it.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("flannel")

DEVICE = "flannel.ipip"
NETWORK = ipaddress.IPv4Network("10.5.0.0/16")


def _node(name: str) -> Any:
    """Another node, named as in the inventory (get_hostname() gives that name back)."""
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


def _underlay(host: Any) -> tuple[str, int]:
    iface = RUNNER.get_variables(host.backend.get_hostname())["flannel_iface"][0]
    info = json.loads(host.check_output(f"ip -4 -j addr show dev {iface}"))[0]
    return info["addr_info"][0]["local"], int(info["mtu"])


def _subnet(host: Any) -> ipaddress.IPv4Interface:
    text = host.file("/run/flannel/subnet.env").content_string
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return ipaddress.IPv4Interface(env["FLANNEL_SUBNET"])


def _device(host: Any) -> dict[str, Any]:
    return dict(json.loads(host.check_output(f"ip -d -j link show dev {DEVICE}"))[0])


def _tx_packets(host: Any) -> int:
    return int(host.check_output(f"cat /sys/class/net/{DEVICE}/statistics/tx_packets"))


def test_device_is_a_kernel_ipip_link(host: Any) -> None:
    link = _device(host)
    info = link.get("linkinfo", {})
    assert info.get("info_kind") == "ipip", f"{DEVICE} is not a kernel ipip link: {link}"
    local, _ = _underlay(host)
    assert info["info_data"]["local"] == local
    # Remote "any": one device for every peer, the route's gateway is the outer destination.
    assert info["info_data"].get("remote", "any") == "any"
    assert "UP" in link["flags"]


def test_agent_logged_the_kernel_device(host: Any) -> None:
    journal = host.check_output("journalctl -b -u flanneld --no-pager -o cat")
    assert "using the kernel's ipip device flannel.ipip" in journal
    assert "userspace IPIP data path" not in journal


def test_mtu_is_underlay_minus_20(host: Any) -> None:
    _, underlay_mtu = _underlay(host)
    assert underlay_mtu == 1500
    assert int(_device(host)["mtu"]) == 1480


def test_device_holds_the_subnet_address(host: Any) -> None:
    addrs = json.loads(host.check_output(f"ip -4 -j addr show dev {DEVICE}"))[0]["addr_info"]
    subnet = _subnet(host).network
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [(str(subnet.network_address), 32)]


def test_onlink_route_to_every_peer(host: Any) -> None:
    own = _subnet(host).network
    peers = {}
    for name in testinfra_hosts:
        other = _node(name)
        subnet = _subnet(other).network
        if subnet != own:
            peers[str(subnet)] = _underlay(other)[0]
    assert len(peers) == len(testinfra_hosts) - 1
    routes = json.loads(host.check_output(f"ip -4 -j route show root {NETWORK}"))
    found = {r["dst"]: r for r in routes}
    for subnet, public_ip in peers.items():
        route = found.get(subnet)
        assert route is not None, f"no route to {subnet} (routes: {routes})"
        assert route["gateway"] == public_ip
        assert route["dev"] == DEVICE
        assert "onlink" in route["flags"]
    # Nothing else of the Network through the tunnel (no stale peers, not our own subnet).
    assert sorted(r["dst"] for r in routes if r.get("dev") == DEVICE) == sorted(peers)


def test_packets_cross_the_kernel_device(host: Any) -> None:
    """A ping to every peer's docker0 address goes out through flannel.ipip and is answered."""
    own = _subnet(host).network
    before = _tx_packets(host)
    for name in testinfra_hosts:
        gateway = _subnet(_node(name))
        if gateway.network == own:
            continue
        ping = host.run(f"ping -q -c 3 -W 2 {gateway.ip}")
        assert ping.rc == 0, f"no answer from {name}'s docker0 {gateway.ip}: {ping.stdout}"
    assert _tx_packets(host) >= before + 3 * (len(testinfra_hosts) - 1)
