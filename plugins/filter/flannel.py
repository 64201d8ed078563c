"""Jinja filters with the flannel network arithmetic the roles' templates need.

The rules come from the agent itself (the `pyflannel` package, which the controller needs
installed: the wheel of `make dist`, or `pip install -e` of the checkout), so the provisioner and
the agent cannot disagree: config validation is `pyflannel.config.config_from_dict`, MTU
overheads are `pyflannel.mtu`'s, lease keys come from `pyflannel.subnet.lease`, subnet file
values are parsed with `pyflannel.subnetenv`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

try:
    from pyflannel.config import BACKEND_TYPES, config_from_dict
    from pyflannel.dockeropts import dockerd_settings
    from pyflannel.errors import ConfigError
    from pyflannel.etcd_options import DEFAULT_PREFIX
    from pyflannel.mtu import OVERHEAD, backend_mtu
    from pyflannel.pools import shared_pools
    from pyflannel.subnet.lease import subnet_key
    from pyflannel.subnetenv import cidr_parser
except ImportError as exc:  # the filters say it when called (a plugin load error names no fix)
    PYFLANNEL_MISSING: str | None = (
        f"cannot import the pyflannel package on the controller ({exc}); install the agent's "
        "wheel of this collection's version into Ansible's Python (pip install "
        "pyflannel-<version>-py3-none-any.whl, built by `make dist`), see the collection's README"
    )
else:
    PYFLANNEL_MISSING = None

MIN_MTU = 68  # the IPv4 minimum

# Config field (as in ConfigError messages) -> the inventory variable that sets it.
_FIELD_VARIABLES = {
    "Network": "flannel_network_cidr",
    "SubnetLen": "flannel_network_subnet_len",
    "SubnetMin": "flannel_network_subnet_min",
    "SubnetMax": "flannel_network_subnet_max",
    "Backend.Type": "flannel_network_backend",
    "Backend": "flannel_network_backend_options",
}
_FIELD_RE = re.compile(r"^(Backend\.Type|Backend|Network|SubnetLen|SubnetMin|SubnetMax)\b")

_display = Display()


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise AnsibleFilterError(f"{name}: must be a whole number, got {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise AnsibleFilterError(f"{name}: must be a whole number, got {value!r}") from None


def _network(value: Any, name: str) -> ipaddress.IPv4Network:
    """A subnet from '10.5.1.0/24' (host bits allowed: FLANNEL_SUBNET's '10.5.1.1/24' works)."""
    text = str(value).strip()
    try:
        return cidr_parser(ipaddress.IPv4Interface)(text).network
    except ValueError:
        raise AnsibleFilterError(
            f"{name}: {value!r} is not an IPv4 subnet like 10.5.1.0/24"
        ) from None


def flannel_backend_mtu(backend_type: str, underlay_mtu: Any, vxlan_mtu: Any = 0) -> int:
    """The MTU flannel gives containers on `backend_type` over an underlay of `underlay_mtu`.

    For vxlan, a non-zero `vxlan_mtu` (the backend's MTU option) replaces the underlay MTU.
    """
    if backend_type not in BACKEND_TYPES:
        raise AnsibleFilterError(
            f"flannel_backend_mtu: backend type {backend_type!r} is unknown; use one of "
            + ", ".join(BACKEND_TYPES)
        )
    underlay = _int(underlay_mtu, "flannel_backend_mtu: underlay_mtu")
    if backend_type == "vxlan":
        underlay = _int(vxlan_mtu, "flannel_backend_mtu: vxlan_mtu") or underlay
    overhead = OVERHEAD[backend_type]
    mtu = backend_mtu(backend_type, underlay)
    if mtu < MIN_MTU:
        raise AnsibleFilterError(
            f"flannel_backend_mtu: underlay MTU {underlay} leaves {mtu} for {backend_type} "
            f"(overhead {overhead}), below the IPv4 minimum {MIN_MTU}"
        )
    return mtu


def flannel_gateway(subnet: Any) -> str:
    """'10.5.1.0/24' -> '10.5.1.1/24': the bridge address (FLANNEL_SUBNET, Docker's --bip)."""
    network = _network(subnet, "flannel_gateway")
    if network.num_addresses < 4:
        raise AnsibleFilterError(f"flannel_gateway: {network} has no room for a gateway")
    return str(ipaddress.IPv4Interface((int(network.network_address) + 1, network.prefixlen)))


def flannel_docker_opts(subnet_env: Mapping[str, Any]) -> dict[str, Any]:
    """{bip, mtu, ip_masq} for dockerd from a subnet.env dict (FLANNEL_SUBNET, FLANNEL_MTU,
    FLANNEL_IPMASQ), by the agent's own rule (pyflannel.dockeropts.dockerd_settings)."""
    return _dockerd(
        subnet_env, "flannel_docker_opts", ("FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ")
    )


def flannel_lease_docker_opts(lease: Mapping[str, Any]) -> dict[str, Any]:
    """{bip, mtu, ip_masq} for dockerd from the flannel role's flannel_lease_facts (gateway,
    mtu, ipmasq), by the same rule."""
    return _dockerd(lease, "flannel_lease_docker_opts", ("gateway", "mtu", "ipmasq"))


def _dockerd(values: Mapping[str, Any], name: str, keys: tuple[str, str, str]) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise AnsibleFilterError(
            f"{name}: expects a dict with {', '.join(keys)}, got {type(values).__name__}"
        )
    # Facts may carry the flag as a bool or as "True"/"False" text; the file says true/false.
    texts = {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value).strip()
        for key, value in values.items()
        if key in keys
    }
    if keys[2] in texts:
        texts[keys[2]] = texts[keys[2]].lower()
    try:
        settings = dockerd_settings(texts, keys)
    except ValueError as exc:
        raise AnsibleFilterError(f"{name}: {exc}") from None
    return {"bip": settings.bip, "mtu": settings.mtu, "ip_masq": settings.ip_masq}


def flannel_lease_shared_pools(lease: Mapping[str, Any]) -> dict[str, str]:
    """{docker_fixed_cidr, cni_range_start, cni_range_end}: the halves of the lease (the flannel
    role's flannel_lease_facts) that Docker and CNI pods sharing its bridge allocate from."""
    name = "flannel_lease_shared_pools"
    if not isinstance(lease, Mapping) or "gateway" not in lease:
        raise AnsibleFilterError(f"{name}: expects the lease facts with a gateway, got {lease!r}")
    try:
        pools = shared_pools(cidr_parser(ipaddress.IPv4Interface)(str(lease["gateway"])))
    except ValueError as exc:
        raise AnsibleFilterError(f"{name}: gateway {lease['gateway']!r}: {exc}") from None
    return {
        "docker_fixed_cidr": str(pools.docker_fixed_cidr),
        "cni_range_start": str(pools.cni_range_start),
        "cni_range_end": str(pools.cni_range_end),
    }


def flannel_lease_key(subnet: Any, prefix: str | None = None) -> str:
    """'10.5.1.0/24' -> '/coreos.com/network/subnets/10.5.1.0-24' (the lease's etcd key)."""
    return subnet_key(prefix or DEFAULT_PREFIX, _network(subnet, "flannel_lease_key"))


def _variable_for(message: str) -> str | None:
    match = _FIELD_RE.match(message)
    return _FIELD_VARIABLES[match.group(1)] if match else None


def flannel_network_config(  # noqa: PLR0917 (positional: how Jinja filters are called)
    network: Any,
    subnet_len: Any = 0,
    subnet_min: Any = "",
    subnet_max: Any = "",
    backend_type: str = "vxlan",
    backend_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `<prefix>/config` dict (only the keys set), validated by the agent's own rules."""
    options = dict(backend_options or {})
    if "Type" in options:
        raise AnsibleFilterError(
            "flannel_network_backend_options: must not contain Type; set flannel_network_backend"
        )
    config: dict[str, Any] = {"Network": network}
    if subnet_len not in (0, "", None):
        config["SubnetLen"] = (
            int(subnet_len) if isinstance(subnet_len, str) and subnet_len.isdigit() else subnet_len
        )
    if subnet_min:
        config["SubnetMin"] = subnet_min
    if subnet_max:
        config["SubnetMax"] = subnet_max
    config["Backend"] = {"Type": backend_type, **options}
    try:
        parsed = config_from_dict(config)
    except ConfigError as exc:
        variable = _variable_for(str(exc))
        raise AnsibleFilterError(f"{variable}: {exc}" if variable else str(exc)) from None
    for warning in parsed.warnings:
        _display.warning(f"flannel_network_config: {warning}")
    return config


def docker_daemon_settings(content_b64: str, path: str) -> dict[str, Any]:
    """The settings of Docker's daemon.json (slurp's base64 content) as a dict.

    Ansible's from_json would fail with a raw templating error; dockerd itself refuses to start
    on such a file, so the role stops before touching it, saying where the file is broken.
    """
    try:
        text = base64.b64decode(content_b64, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, TypeError) as exc:
        raise AnsibleFilterError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    if not text.strip():
        return {}  # dockerd starts on an empty file too
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnsibleFilterError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "dockerd would not start with it either: fix it or remove it"
        ) from None
    if not isinstance(settings, dict):
        raise AnsibleFilterError(
            f"{path}: must hold a JSON object ({{...}}), not a {type(settings).__name__}; "
            "fix it or remove it"
        )
    return settings


class FilterModule:
    """Ansible's entry point for this file's filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        filters: dict[str, Callable[..., Any]] = {
            "flannel_backend_mtu": flannel_backend_mtu,
            "flannel_gateway": flannel_gateway,
            "flannel_docker_opts": flannel_docker_opts,
            "flannel_lease_docker_opts": flannel_lease_docker_opts,
            "flannel_lease_shared_pools": flannel_lease_shared_pools,
            "docker_daemon_settings": docker_daemon_settings,
            "flannel_lease_key": flannel_lease_key,
            "flannel_network_config": flannel_network_config,
        }
        if PYFLANNEL_MISSING is None:
            return filters
        return {name: _missing_pyflannel for name in filters}


def _missing_pyflannel(*_args: Any, **_kwargs: Any) -> Any:
    raise AnsibleFilterError(PYFLANNEL_MISSING)
