"""The plugin's network config (flannel's keys) and the delegate config made from it."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any

from pyflannel.cni.protocol import (
    DECODING_FAILURE,
    INVALID_CONFIG,
    TRY_AGAIN_LATER,
    UNSUPPORTED_FIELD,
    CniError,
)
from pyflannel.subnetenv import SubnetEnv, load_subnet_env

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
# Where ADD keeps each container's delegate config for DEL and CHECK (flannel's place).
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
# Keys of the runtime's call that the delegate needs as given (capabilities, CHECK's result).
PASSED_THROUGH = ("runtimeConfig", "args", "prevResult")
# IPAM keys the lease decides: an operator's value would put pods outside the node's subnet.
LEASE_IPAM_KEYS = ("subnet", "ranges", "gateway")
# host-local's pool bounds, allowed inside the lease (a pool shared with Docker's --fixed-cidr).
POOL_KEYS = ("rangeStart", "rangeEnd")


@dataclass(frozen=True)
class FlannelNetConf:
    name: str
    cni_version: str
    subnet_file: str = DEFAULT_SUBNET_FILE
    data_dir: str = DEFAULT_DATA_DIR
    delegate: dict[str, Any] = field(default_factory=dict)
    ipam: dict[str, Any] = field(default_factory=dict)
    passed_through: dict[str, Any] = field(default_factory=dict)


def parse_netconf(data: bytes) -> FlannelNetConf:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CniError(DECODING_FAILURE, f"network config on stdin is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CniError(DECODING_FAILURE, "network config on stdin must be a JSON object")
    name = _string(raw, "name", required=True)
    version = _string(raw, "cniVersion", required=True)
    for key in ("delegate", "ipam"):
        if key in raw and not isinstance(raw[key], dict):
            raise CniError(INVALID_CONFIG, f"{key} must be an object, got {json.dumps(raw[key])}")
    ipam = dict(raw.get("ipam") or {})
    lease_keys = [key for key in LEASE_IPAM_KEYS if key in ipam]
    if lease_keys:
        raise CniError(
            UNSUPPORTED_FIELD,
            f"ipam.{lease_keys[0]} is set from the node's lease (the subnet file); remove it",
        )
    return FlannelNetConf(
        name=name,
        cni_version=version,
        subnet_file=_path(raw, "subnetFile", DEFAULT_SUBNET_FILE),
        data_dir=_path(raw, "dataDir", DEFAULT_DATA_DIR),
        delegate=dict(raw.get("delegate") or {}),
        ipam=ipam,
        passed_through={key: raw[key] for key in PASSED_THROUGH if key in raw},
    )


def _string(raw: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        problem = "is missing" if value is None else f"must be a non-empty string, got {value!r}"
        raise CniError(INVALID_CONFIG, f"network config: {key} {problem}")
    return value


def _path(raw: dict[str, Any], key: str, default: str) -> str:
    value = _string(raw, key) or default
    if not os.path.isabs(value):
        raise CniError(INVALID_CONFIG, f"network config: {key} {value!r} must be an absolute path")
    return value


def read_lease(netconf: FlannelNetConf) -> SubnetEnv:
    """The node's lease from the subnet file; a missing file means the agent is not up yet."""
    try:
        env = load_subnet_env(netconf.subnet_file)
    except ValueError as exc:
        raise CniError(INVALID_CONFIG, str(exc)) from None
    except OSError as exc:
        raise CniError(TRY_AGAIN_LATER, f"cannot read {netconf.subnet_file}: {exc}") from None
    if env is None:
        raise CniError(
            TRY_AGAIN_LATER,
            f"{netconf.subnet_file} does not exist: is flanneld (pyflannel) running on this node?",
        )
    return env


def delegate_config(netconf: FlannelNetConf, env: SubnetEnv) -> dict[str, Any]:
    """The delegate plugin's config: the operator's delegate keys win over the lease's."""
    delegate = dict(netconf.delegate)
    delegate.setdefault("type", "bridge")
    # The agent masquerades already when the lease says so (--ip-masq): not twice.
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    delegate["name"] = netconf.name
    delegate["cniVersion"] = netconf.cni_version
    delegate["ipam"] = _ipam(netconf.ipam, env)
    delegate.update(netconf.passed_through)
    return delegate


def _ipam(ipam: dict[str, Any], env: SubnetEnv) -> dict[str, Any]:
    result = dict(ipam)
    result.setdefault("type", "host-local")
    ranges: list[list[dict[str, str]]] = [
        [{"subnet": str(env.subnet.network), **_pool(result, env)}]
    ]
    routes = list(result.get("routes", []))
    # With the gateway spelled out (flannel's plugin leaves it out; the kernel route is the
    # same): the bridge plugin's CHECK (1.1) looks for a route without one and fails.
    routes.append({"dst": str(env.network), "gw": str(env.subnet.ip)})
    if env.ipv6_subnet is not None and env.ipv6_network is not None:
        ranges.append([{"subnet": str(env.ipv6_subnet.network)}])
        routes.append({"dst": str(env.ipv6_network), "gw": str(env.ipv6_subnet.ip)})
    result["ranges"] = ranges
    result["routes"] = routes
    return result


def _pool(ipam: dict[str, Any], env: SubnetEnv) -> dict[str, str]:
    """rangeStart/rangeEnd moved into the lease's range, once checked to lie inside it."""
    pool = {key: ipam.pop(key) for key in POOL_KEYS if key in ipam}
    subnet = env.subnet.network
    for key, value in pool.items():
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise CniError(INVALID_CONFIG, f"ipam.{key} {value!r} is not an IPv4 address") from None
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            raise CniError(
                INVALID_CONFIG,
                f"ipam.{key} {value} is outside the node's lease {subnet}: "
                "write the config for this node's lease (re-run the provisioner) or remove it",
            )
    if len(pool) == 2 and ipaddress.IPv4Address(pool["rangeStart"]) > ipaddress.IPv4Address(
        pool["rangeEnd"]
    ):
        raise CniError(INVALID_CONFIG, f"ipam.rangeStart {pool['rangeStart']} is after rangeEnd")
    return {key: str(value) for key, value in pool.items()}


def delegate_subnets(delegate: dict[str, Any]) -> list[str]:
    """The subnets a saved delegate config hands out (to compare with today's lease)."""
    ranges = delegate.get("ipam", {}).get("ranges", [])
    return [entry.get("subnet", "") for ranges_set in ranges for entry in ranges_set]
