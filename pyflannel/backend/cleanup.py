"""Remove what another backend (or an older Network) left in the kernel.

Switching the backend on a running node is an etcd config change plus an agent restart; the new
backend must not inherit the old one's devices and routes. Devices are ours by name (flannel's
names); routes via the external interface are ours when they point into a flannel Network, the
current one or the one recorded in the previous subnet.env.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from pyflannel.backend.ebpf.fastpath import remove_decap_filter
from pyflannel.backend.netlink import Kernel

log = logging.getLogger(__name__)

_FIXED_DEVICES = ("flannel0", "flannel.ipip")


def flannel_devices(kernel: Kernel) -> list[str]:
    names = []
    for index, name in kernel.link_names():
        if name in _FIXED_DEVICES or (
            name.startswith("flannel.") and kernel.link_kind(index) == "vxlan"
        ):
            names.append(name)
    return names


def remove_stale_devices(
    kernel: Kernel,
    *,
    keep_device: str | None,
    ext_index: int | None = None,
    keep_fast_path: bool = False,
) -> list[str]:
    """Delete the other backends' devices (and, unless the backend now running has one, the
    userspace backends' eBPF decap filter on the external interface); returns what went.

    The agent calls this a moment after its new lease is published and its peers are
    programmed: until then the old device still carries traffic to and from peers that have
    not yet seen the switch.
    """
    removed = []
    for name in flannel_devices(kernel):
        if name != keep_device:
            kernel.delete_link(name)
            removed.append(f"device {name}")
    if (
        ext_index is not None
        and not keep_fast_path
        and remove_decap_filter(ext_index, kernel.tc_socket)
    ):
        removed.append("eBPF decap filter on the external interface")
    _log_removed(removed)
    return removed


def remove_stale_routes(
    kernel: Kernel,
    *,
    ext_index: int,
    networks: Iterable[ipaddress.IPv4Network],
    keep_direct_routes_in: ipaddress.IPv4Network | None,
) -> list[str]:
    """Delete stale gateway routes on the external interface; returns what was removed.

    `keep_direct_routes_in`: the current Network, whose routes through the external interface
    any backend may own (host-gw, DirectRouting, peers on another backend) and repairs itself.
    """
    removed = []
    for network in set(networks):
        for route in kernel.routes(network, oif=ext_index):
            if route.gateway is None:
                continue
            if keep_direct_routes_in is not None and route.dst.subnet_of(keep_direct_routes_in):
                continue
            kernel.route_delete(route)
            removed.append(f"route {route.dst} via {route.gateway}")
    _log_removed(removed)
    return removed


def _log_removed(removed: list[str]) -> None:
    for item in removed:
        log.info("removed leftover %s (other backend or old Network)", item)
