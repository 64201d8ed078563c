"""One lease, two allocators: Docker and CNI pods sharing the node's bridge.

With both on one node (the provisioner's flannel_container_networking: both), Docker's
containers and the CNI plugin's pods hang off the same bridge (docker0, the lease's gateway):
Docker allocates from the lower half of the lease (--fixed-cidr), host-local from the upper
half, so neither hands out an address the other already gave.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# The smallest lease that still leaves each half a usable address besides the gateway.
MAX_SHARED_PREFIX = 29


@dataclass(frozen=True, slots=True)
class SharedPools:
    docker_fixed_cidr: ipaddress.IPv4Network
    cni_range_start: ipaddress.IPv4Address
    cni_range_end: ipaddress.IPv4Address


def shared_pools(gateway: ipaddress.IPv4Interface) -> SharedPools:
    """The halves of the lease whose gateway (FLANNEL_SUBNET, e.g. 10.5.3.1/24) is given."""
    subnet = gateway.network
    if subnet.prefixlen > MAX_SHARED_PREFIX:
        raise ValueError(
            f"lease {subnet} is too small to share between Docker and CNI "
            f"(a /{MAX_SHARED_PREFIX} or larger is needed: a smaller SubnetLen)"
        )
    lower, upper = subnet.subnets(prefixlen_diff=1)
    return SharedPools(
        docker_fixed_cidr=lower,
        cni_range_start=upper.network_address,
        cni_range_end=upper.broadcast_address - 1,
    )
