"""Encapsulation overhead per backend: the one table the agent and the provisioner share.

Kept free of heavy imports so that Ansible filters on the controller can use it.
"""

from __future__ import annotations

OVERHEAD = {
    "udp": 28,  # outer IPv4 20 + UDP 8; the payload is the bare inner packet
    "vxlan": 50,  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
    "host-gw": 0,  # no encapsulation
    "ipip": 20,  # outer IPv4 20
    "bgp": 0,  # routed by BIRD, no encapsulation
}


def backend_mtu(backend_type: str, underlay_mtu: int) -> int:
    """The MTU containers get (FLANNEL_MTU) on `backend_type` over `underlay_mtu`."""
    return underlay_mtu - OVERHEAD[backend_type]
