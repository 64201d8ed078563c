"""Subnet lease keys and values, byte-compatible with flannel's etcd v3 layout.

Key:   `<prefix>/subnets/10.5.52.0-24`
Value: `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",
        "BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`
flanneld's udp backend publishes no BackendType (`{"PublicIP":"...","PublicIPv6":null}`,
measured with flanneld v0.20.2), so a udp lease names the empty type here too.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_KEY_RE = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3})-(\d{1,2})$")

SUBNETS_DIR = "subnets"

# The BackendType a lease carries for each backend, as flanneld writes it: its udp backend
# leaves the field empty (and Go's omitempty then drops it from the JSON).
_LEASE_BACKEND_TYPES = {"udp": ""}


def lease_backend_type(backend: str) -> str:
    """The BackendType written into the leases of a node running `backend`."""
    return _LEASE_BACKEND_TYPES.get(backend, backend)


def config_key(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/config"


def subnets_prefix(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/{SUBNETS_DIR}/"


def subnet_to_key_name(subnet: ipaddress.IPv4Network) -> str:
    """10.5.52.0/24 -> '10.5.52.0-24' (flannel's key name for a subnet)."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def subnet_key(prefix: str, subnet: ipaddress.IPv4Network) -> str:
    return subnets_prefix(prefix) + subnet_to_key_name(subnet)


def parse_key_name(name: str) -> ipaddress.IPv4Network | None:
    """'10.5.52.0-24' -> 10.5.52.0/24; None for anything else (dual-stack keys, junk).

    Dual-stack keys look like '10.5.52.0-24&fd00::-64'; the IPv4 part is used.
    """
    name = name.split("&", 1)[0]
    match = _KEY_RE.match(name)
    if not match:
        return None
    try:
        return ipaddress.IPv4Network(f"{match.group(1)}/{match.group(2)}", strict=True)
    except ValueError:
        return None


# slots: an agent holds one Lease (and its attrs, events, kernel entries) per peer, thousands.
@dataclass(frozen=True, slots=True)
class LeaseAttrs:
    """What a node publishes about itself in its lease value."""

    public_ip: ipaddress.IPv4Address
    backend_type: str
    backend_data: Mapping[str, Any] | None = None
    public_ipv6: str | None = None

    def to_json(self) -> str:
        # Field order, compact separators and omitempty as Go's encoding/json writes LeaseAttrs.
        value: dict[str, Any] = {"PublicIP": str(self.public_ip), "PublicIPv6": self.public_ipv6}
        if self.backend_type:
            value["BackendType"] = self.backend_type
        if self.backend_data:
            value["BackendData"] = dict(self.backend_data)
        return json.dumps(value, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> LeaseAttrs:
        """Decode a lease value; raises ValueError naming what is wrong."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"lease value is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("lease value is not a JSON object")
        raw_ip = data.get("PublicIP")
        try:
            if not isinstance(raw_ip, str):  # ipaddress would accept an int
                raise ValueError
            public_ip = ipaddress.IPv4Address(raw_ip)
        except ValueError:
            raise ValueError(f"lease PublicIP {data.get('PublicIP')!r} is not IPv4") from None
        backend_data = data.get("BackendData")
        if backend_data is not None and not isinstance(backend_data, dict):
            raise ValueError("lease BackendData is not a JSON object")
        backend_type = data.get("BackendType") or ""
        if not isinstance(backend_type, str):
            raise ValueError("lease BackendType is not a string")
        v6 = data.get("PublicIPv6")
        return cls(
            public_ip=public_ip,
            backend_type=backend_type,
            backend_data=backend_data,
            public_ipv6=v6 if isinstance(v6, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """A subnet lease as stored in etcd.

    `etcd_lease` is the etcd lease ID attached to the key; 0 means a reservation (no expiry).
    `expires_in` is the remaining TTL in seconds when known (None for reservations/unknown).
    """

    subnet: ipaddress.IPv4Network
    attrs: LeaseAttrs
    etcd_lease: int = 0
    mod_revision: int = 0
    expires_in: int | None = field(default=None, compare=False)

    @property
    def is_reservation(self) -> bool:
        return self.etcd_lease == 0

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        """The bridge address (lease network + 1), what Docker's --bip gets."""
        return ipaddress.IPv4Interface(
            (int(self.subnet.network_address) + 1, self.subnet.prefixlen)
        )
