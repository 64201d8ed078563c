"""Backends: one module per type behind the interface in `base.py`."""

from __future__ import annotations

from pyflannel.backend.base import Backend
from pyflannel.backend.settings import BackendSettings
from pyflannel.config import NetworkConfig
from pyflannel.errors import FlannelError
from pyflannel.iface import ExternalInterface


def backend_class(backend_type: str) -> type[Backend]:
    # Imported lazily: the userspace pumps pull in more than a host-gw node needs.
    if backend_type == "host-gw":
        from pyflannel.backend.hostgw import HostGwBackend

        return HostGwBackend
    if backend_type == "vxlan":
        from pyflannel.backend.vxlan import VxlanBackend

        return VxlanBackend
    if backend_type == "udp":
        from pyflannel.backend.udp import UdpBackend

        return UdpBackend
    if backend_type == "ipip":
        from pyflannel.backend.ipip import IpipBackend

        return IpipBackend
    if backend_type == "bgp":
        from pyflannel.backend.bgp import BgpBackend

        return BgpBackend
    raise FlannelError(f"backend {backend_type!r} is not supported")


def create_backend(
    config: NetworkConfig, ext: ExternalInterface, settings: BackendSettings | None = None
) -> Backend:
    return backend_class(config.backend.type)(config, ext, settings)
