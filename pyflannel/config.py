"""The network config (`<prefix>/config`): parse, validate and fill defaults as flannel does.

The result is an immutable `NetworkConfig`. Every rule violation raises `ConfigError` with one
line that names the field, the rule and the value seen. Unknown keys are not errors (flannel
ignores them) but are reported as warnings, so typos like "Subnetlen" do not pass unnoticed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyflannel.errors import ConfigError

BACKEND_TYPES = ("udp", "vxlan", "host-gw", "ipip", "bgp")
DEFAULT_BACKEND = "udp"  # flannel's code default when "Backend" is absent

_TOP_LEVEL_KEYS = frozenset(
    {
        "Network",
        "SubnetLen",
        "SubnetMin",
        "SubnetMax",
        "Backend",
        "EnableIPv4",
        "EnableIPv6",
        "IPv6Network",
        "IPv6SubnetLen",
        "IPv6SubnetMin",
        "IPv6SubnetMax",
        "EnableNFTables",
    }
)

# Backend options per type: name -> (python type, default). "Type" is handled separately.
_BACKEND_OPTIONS: dict[str, dict[str, tuple[type, Any]]] = {
    "udp": {"Port": (int, 8285)},
    "vxlan": {
        "VNI": (int, 1),
        "Port": (int, 0),
        "GBP": (bool, False),
        "Learning": (bool, False),
        "DirectRouting": (bool, False),
        "MTU": (int, 0),
        "MacPrefix": (str, ""),
    },
    "host-gw": {},
    "ipip": {"DirectRouting": (bool, False)},
    # pyflannel's own (flanneld has no bgp backend): subnets announced by BIRD.
    "bgp": {"ASN": (int, 64512), "NodeMesh": (bool, True), "Peers": (list, [])},
}
MAX_ASN = (1 << 32) - 1


@dataclass(frozen=True)
class BackendConfig:
    """`Backend` of the network config: the type plus its options with defaults filled in."""

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkConfig:
    """A validated network config with flannel's defaults applied."""

    network: ipaddress.IPv4Network
    subnet_len: int
    subnet_min: ipaddress.IPv4Address
    subnet_max: ipaddress.IPv4Address
    backend: BackendConfig
    warnings: tuple[str, ...] = ()
    raw: str = ""

    @property
    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    def contains_subnet(self, subnet: ipaddress.IPv4Network) -> bool:
        """True when `subnet` is one this config may lease (right length, inside Min..Max)."""
        return (
            subnet.prefixlen == self.subnet_len
            and subnet.subnet_of(self.network)
            and self.subnet_min <= subnet.network_address <= self.subnet_max
        )


def parse_config(text: str | bytes) -> NetworkConfig:
    """Parse and validate the JSON text of `<prefix>/config`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"network config is not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"network config is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f'{exc.colno}); write it as e.g. \'{{"Network":"10.5.0.0/16"}}\''
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"network config must be a JSON object, got {type(data).__name__}; "
            'write it as e.g. \'{"Network":"10.5.0.0/16"}\''
        )
    return config_from_dict(data, raw=text)


def config_from_dict(data: Mapping[str, Any], raw: str = "") -> NetworkConfig:
    warnings = [
        f"unknown key {key!r} in network config is ignored"
        for key in sorted(data)
        if key not in _TOP_LEVEL_KEYS
    ]
    enable_v4 = _typed(data, "EnableIPv4", bool, True)
    enable_v6 = _typed(data, "EnableIPv6", bool, False)
    if enable_v6:
        raise ConfigError("EnableIPv6: IPv6 networks are not supported by pyflannel; remove it")
    if not enable_v4:
        raise ConfigError("EnableIPv4: false leaves no network to manage; remove it or set true")

    network = _parse_network(data)
    subnet_len = _subnet_len(data, network)
    size = 1 << (32 - subnet_len)
    first = int(network.network_address)
    last = int(network.broadcast_address) + 1 - size

    subnet_min = _subnet_bound(data, "SubnetMin", network, subnet_len, first + size)
    subnet_max = _subnet_bound(data, "SubnetMax", network, subnet_len, last)
    if subnet_min > subnet_max:
        raise ConfigError(f"SubnetMin {subnet_min} is greater than SubnetMax {subnet_max}")

    backend = _parse_backend(data.get("Backend"), warnings)
    return NetworkConfig(
        network=network,
        subnet_len=subnet_len,
        subnet_min=subnet_min,
        subnet_max=subnet_max,
        backend=backend,
        warnings=tuple(warnings),
        raw=raw,
    )


def _typed(data: Mapping[str, Any], key: str, kind: type, default: Any, where: str = "") -> Any:
    """Return data[key] checked against `kind` (bool is not an int here, as in Go)."""
    if key not in data or data[key] is None:
        return default
    value = data[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        names = {int: "an integer", bool: "true or false", str: "a string", list: "a JSON list"}
        raise ConfigError(
            f"{where}{key}: must be {names.get(kind, kind.__name__)}, got {json.dumps(value)}"
        )
    return value


def _parse_network(data: Mapping[str, Any]) -> ipaddress.IPv4Network:
    if "Network" not in data:
        raise ConfigError(
            'Network: missing; the config needs an IPv4 CIDR, e.g. {"Network":"10.5.0.0/16"}'
        )
    text = _typed(data, "Network", str, None)
    try:
        # strict=False: flannel masks host bits ("10.5.1.0/16" means 10.5.0.0/16).
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise ConfigError(
            f"Network: {text!r} is not an IPv4 CIDR; write it as e.g. 10.5.0.0/16"
        ) from None
    if "/" not in text:
        raise ConfigError(f"Network: {text!r} has no prefix length; write it as e.g. {text}/16")
    return network


def _subnet_len(data: Mapping[str, Any], network: ipaddress.IPv4Network) -> int:
    prefix = network.prefixlen
    subnet_len = _typed(data, "SubnetLen", int, 0)
    if subnet_len == 0:
        if prefix > 28:
            raise ConfigError(
                f"Network: {network} is too small; the smallest useful network is a /28"
            )
        return 24 if prefix <= 22 else prefix + 2
    if subnet_len > 30:
        raise ConfigError(
            f"SubnetLen: {subnet_len} is too long; at most 30 (each host needs a tunnel and "
            "a bridge address)"
        )
    if subnet_len < prefix + 2:
        raise ConfigError(
            f"SubnetLen: {subnet_len} must be at least {prefix + 2} (Network /{prefix} "
            "plus 2) so that the Network holds at least four subnets"
        )
    return int(subnet_len)


def _subnet_bound(
    data: Mapping[str, Any],
    key: str,
    network: ipaddress.IPv4Network,
    subnet_len: int,
    default: int,
) -> ipaddress.IPv4Address:
    text = _typed(data, key, str, None)
    if text is None:
        return ipaddress.IPv4Address(default)
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not an IPv4 address") from None
    if address not in network:
        raise ConfigError(f"{key}: {address} is not inside Network {network}")
    if int(address) % (1 << (32 - subnet_len)):
        aligned = ipaddress.IPv4Network((address, subnet_len), strict=False).network_address
        raise ConfigError(
            f"{key}: {address} is not on a /{subnet_len} boundary (SubnetLen); use the "
            f"subnet's network address, e.g. {aligned}"
        )
    return address


def _parse_backend(value: Any, warnings: list[str]) -> BackendConfig:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(
            f'Backend: must be a JSON object like {{"Type":"vxlan"}}, got {json.dumps(value)}'
        )
    if value and "Type" not in value:
        # flannel defaults to udp only when "Backend" is absent altogether.
        raise ConfigError(
            'Backend.Type: missing; name the backend, e.g. "Backend":{"Type":"vxlan"}, or drop '
            '"Backend" to get udp'
        )
    backend_type = _typed(value, "Type", str, DEFAULT_BACKEND, "Backend.")
    if backend_type not in BACKEND_TYPES:
        hint = ""
        lowered = backend_type.lower().replace("_", "-")
        if lowered in BACKEND_TYPES:
            hint = f" (did you mean {lowered!r}?)"
        raise ConfigError(
            f"Backend.Type: {backend_type!r} is not supported{hint}; use one of "
            + ", ".join(BACKEND_TYPES)
        )
    spec = _BACKEND_OPTIONS[backend_type]
    options: dict[str, Any] = {}
    for name, (kind, default) in spec.items():
        options[name] = _typed(value, name, kind, default, "Backend.")
    for key in sorted(value):
        if key != "Type" and key not in spec:
            warnings.append(f"unknown key 'Backend.{key}' for backend {backend_type} is ignored")

    _check_range(options, "Port", 0, 65535)
    _check_range(options, "VNI", 0, (1 << 24) - 1)
    if backend_type == "vxlan" and options["MTU"] and not 68 + 50 <= options["MTU"] <= 65535:
        raise ConfigError(
            f"Backend.MTU: {options['MTU']} is out of range; the vxlan MTU must be 118..65535 "
            "(the underlay MTU; flannel.N gets it minus 50)"
        )
    if backend_type == "bgp":
        _check_range(options, "ASN", 1, MAX_ASN)
        options["Peers"] = tuple(
            _parse_bgp_peer(i, peer) for i, peer in enumerate(options["Peers"])
        )
        if not options["NodeMesh"] and not options["Peers"]:
            raise ConfigError(
                "Backend.NodeMesh: false with no Backend.Peers leaves every node alone; set "
                'NodeMesh true or list route reflectors or routers, e.g. "Peers":[{"Address":'
                '"203.0.113.1","ASN":64513}]'
            )
    return BackendConfig(type=backend_type, options=options)


_PEER_EXAMPLE = '{"Address":"203.0.113.1","ASN":64513,"Name":"tor1"}'


def _parse_bgp_peer(index: int, peer: Any) -> Mapping[str, Any]:
    """One of Backend.Peers: a BGP speaker outside the mesh (a router, a route reflector)."""
    where = f"Backend.Peers[{index}]."
    if not isinstance(peer, dict):
        raise ConfigError(f"{where[:-1]}: must be an object like {_PEER_EXAMPLE}")
    unknown = sorted(set(peer) - {"Address", "ASN", "Name"})
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown key; a peer is {_PEER_EXAMPLE}")
    for key in ("Address", "ASN"):
        if key not in peer:
            raise ConfigError(f"{where}{key}: missing; a peer is {_PEER_EXAMPLE}")
    text = _typed(peer, "Address", str, "", where)
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigError(f"{where}Address: {text!r} is not an IPv4 address") from None
    asn = _typed(peer, "ASN", int, 0, where)
    if not 1 <= asn <= MAX_ASN:
        raise ConfigError(f"{where}ASN: {asn} is out of range 1..{MAX_ASN}")
    name = _typed(peer, "Name", str, "", where)
    if name and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", name):
        raise ConfigError(
            f"{where}Name: {name!r} must be 1-32 letters, digits or _ (BIRD's protocol name)"
        )
    return {"Address": str(address), "ASN": asn, "Name": name}


def _check_range(options: Mapping[str, Any], name: str, low: int, high: int) -> None:
    if name in options and not low <= options[name] <= high:
        raise ConfigError(f"Backend.{name}: {options[name]} is out of range {low}..{high}")


def config_to_json(config: NetworkConfig) -> str:
    """A canonical JSON rendering (defaults filled in), for `flannelctl config show --effective`."""
    backend: dict[str, Any] = {"Type": config.backend.type, **dict(config.backend.options)}
    return json.dumps(
        {
            "Network": str(config.network),
            "SubnetLen": config.subnet_len,
            "SubnetMin": str(config.subnet_min),
            "SubnetMax": str(config.subnet_max),
            "Backend": backend,
        },
        indent=2,
    )
