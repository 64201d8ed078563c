"""inventory_check: every role's inventory values on one host, checked before anything runs.

The rules live in one place each and are only read here:
- types and choices: each role's meta/argument_specs.yml (Ansible's own ArgumentSpecValidator,
  as when the role starts);
- the network config: the flannel_network_config filter (the agent's config rules);
- the agent's flags: pyflannel.flags (the converters flanneld itself parses its settings with);
- ranges, paths, URLs and cross-variable rules that neither can express: RULES and the
  check_* functions below.

A value that cannot be evaluated yet (it refers to facts, e.g. etcd_address from
ansible_facts) is left to the role's own check when the role starts and listed as deferred.
Runs on the controller only: no connection to the host.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.action import ActionBase
from ansible.template import Templar
from ansible.utils.vars import load_extra_vars
from ansible_collections.pyflannel.overlay.plugins.filter.flannel import (
    PYFLANNEL_MISSING,
    flannel_network_config,
)

# plugins/action/ -> the collection's roles/ (their argument specs, defaults and vars).
ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"

try:
    from pyflannel.errors import UsageError
    from pyflannel.flags import parse_flags
except ImportError:  # run() says so, in the filter plugin's words
    pass

Check = Callable[[Any], str | None]  # None: valid; else what is wrong and what would be valid


# -- value checks (each returns the rule broken, worded "must ...") ------------------------------


def in_range(low: float, high: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None  # the argument spec reports the type
        if value < low or (high is not None and value > high):
            return f"must be in {low}..{high}" if high is not None else f"must be >= {low}"
        return None

    return check


def positive(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        return "must be greater than 0"
    return None


PORT = in_range(1, 65535)
NON_NEGATIVE = in_range(0)
AT_LEAST_ONE = in_range(1)


def absolute_path(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("/"):
        return "must be an absolute path such as /etc/example"
    return None


def absolute_path_or_empty(value: Any) -> str | None:
    return None if value == "" else absolute_path(value)


def suffix(ending: str) -> Check:
    def check(value: Any) -> str | None:
        return None if str(value).endswith(ending) else f"must end in {ending}"

    return check


def matches(pattern: str, example: str) -> Check:
    regex = re.compile(pattern)

    def check(value: Any) -> str | None:
        return None if regex.fullmatch(str(value)) else f"must look like {example}"

    return check


def non_empty(value: Any) -> str | None:
    return "must not be empty" if value in ("", None, [], {}) else None


def each(check: Check) -> Check:
    def check_all(values: Any) -> str | None:
        for item in values if isinstance(values, list) else []:
            problem = check(item)
            if problem:
                return f"item {item!r} {problem}"
        return None

    return check_all


def keys_match(pattern: str, example: str) -> Check:
    regex = re.compile(pattern)

    def check(value: Any) -> str | None:
        bad = (
            [key for key in value if not regex.fullmatch(str(key))]
            if isinstance(value, dict)
            else []
        )
        return f"keys {bad} must look like {example}" if bad else None

    return check


def ip_address(value: Any) -> str | None:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return "must be an IP address such as 198.51.100.10"
    return None


HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def host_or_ip(value: Any) -> str | None:
    if ip_address(value) is None or HOST_NAME.fullmatch(str(value)):
        return None
    return "must be an IP address or a host name (no scheme, no port), e.g. 198.51.100.10"


def url(*schemes: str) -> Check:
    def check(value: Any) -> str | None:
        rule = f"must be a URL with scheme {' or '.join(schemes)}, e.g. {schemes[0]}://host:port"
        parts = urlsplit(str(value))
        try:
            parts.port  # noqa: B018 - evaluated only to reject a malformed port
        except ValueError:
            return rule
        if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "file"):
            return rule
        return None

    return check


def etcd_urls(value: Any) -> str | None:
    rule = (
        "must be http:// or https:// URLs with a host and a port, e.g. https://198.51.100.10:2379"
    )
    for item in value if isinstance(value, list) else []:
        parts = urlsplit(str(item))
        try:
            port = parts.port
        except ValueError:
            return f"item {item!r} {rule}"
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            return f"item {item!r} {rule}"
    return non_empty(value)


def controller_file_or_empty(value: Any) -> str | None:
    if value and not Path(str(value)).is_file():
        return "must be a file on the controller (or empty); no such file"
    return None


def url_or_empty(*schemes: str) -> Check:
    check_url = url(*schemes)
    return lambda value: check_url(value) if value else None


def subject_alt_name(value: Any) -> str | None:
    kind, _, name = str(value).partition(":")
    if kind == "IP" and ip_address(name) is None:
        return None
    if kind == "DNS" and name:
        return None
    return "must be DNS:<name> or IP:<address>"


def common_name(value: Any) -> str | None:
    return None if 0 < len(str(value)) <= 64 else "must be 1 to 64 characters (X.509 limit)"


def agent_flag(env_name: str, join: bool = False) -> Check:
    """The value as flanneld parses FLANNELD_<FLAG>: the agent's own rule and message."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif join and isinstance(value, list):
            text = ",".join(str(item) for item in value)
        else:
            text = str(value)
        if text == "":
            return None  # unset
        try:
            parse_flags([], {env_name: text})
        except UsageError as exc:
            return f"is rejected by flanneld: {exc}"
        return None

    return check


def agent_flag_each(env_name: str) -> Check:
    flag = agent_flag(env_name)
    return each(lambda item: non_empty(item) or flag(item))


def agent_args(value: Any) -> str | None:
    try:
        parse_flags([str(item) for item in value] if isinstance(value, list) else [], {})
    except UsageError as exc:
        return f"is rejected by flanneld: {exc}"
    return None


def agent_env(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    try:
        parse_flags([], {str(key): str(item) for key, item in value.items()})
    except UsageError as exc:
        return f"is rejected by flanneld: {exc}"
    unknown = [key for key in value if not re.fullmatch(r"FLANNELD_[A-Z0-9_]+", str(key))]
    return f"keys {unknown} must be FLANNELD_<FLAG> variables" if unknown else None


def docker_args(owned_flags: list[str]) -> Check:
    """No flag the docker role sets itself (its vars/main.yml: docker_role_owned_flags)."""
    pattern = re.compile(rf"^--?({'|'.join(map(re.escape, owned_flags))})(=|$)")

    def check(value: Any) -> str | None:
        owned = [a for a in value if pattern.match(str(a))] if isinstance(value, list) else []
        if owned:
            return (
                f"must not set {', '.join(owned)}: the docker role sets "
                f"{', '.join(owned_flags)} itself (from the flannel lease, docker_live_restore)"
            )
        return None

    return check


DEB_PACKAGES = each(matches(r"[a-z0-9][a-z0-9+.-]+(=[^\s]+)?", "docker.io (Debian package names)"))
POSIX_NAME = matches(r"[a-z_][a-z0-9_-]{0,31}", "etcd (a POSIX user or group name)")
IFNAME = matches(r"[^/\s:]{1,15}", "docker0 (an interface name, 1 to 15 characters)")
CHECKSUM = matches(
    r"|(md5|sha1|sha224|sha256|sha384|sha512):([0-9a-fA-F]+|https?://\S+)", "sha256:<hex>"
)
ETCD_NAME = matches(r"[^\s,=]+", "etcd-1 (no spaces, commas or =)")
ENV_KEYS_ETCD = keys_match(r"ETCD_[A-Z0-9_]+", "ETCD_HEARTBEAT_INTERVAL")
# etcd release tarballs exist for these.
VERSION = matches(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?", "3.4.23")
PY_VERSION = matches(
    r"[0-9]+(\.[0-9]+)*([._-]?(a|b|rc|dev|post)[0-9]*)*(\+[0-9A-Za-z.]+)?", "0.4.0 (PEP 440)"
)
IMAGE = matches(
    r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?",
    "busybox:latest",
)
CONTAINER = matches(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "overlay-verify (a Docker container name)")


def each_dir_absolute(value: Any) -> str | None:
    """A colon-separated list of absolute directories (CNI_PATH)."""
    parts = str(value).split(":")
    relative = [part for part in parts if not part.startswith("/")]
    return f"every directory must be an absolute path, not {relative[0]!r}" if relative else None


# libcni's rule for network names.
CNI_NETWORK = matches(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", "cbr0 (letters, digits, _ . -)")
# Delegate keys the flannel plugin sets itself from the lease and the list.
CNI_PLUGIN_OWNED = ("name", "cniVersion", "ipam")


def cni_delegate(value: Any) -> str | None:
    owned = [key for key in CNI_PLUGIN_OWNED if isinstance(value, Mapping) and key in value]
    if owned:
        return (
            f"must not set {', '.join(owned)}: the flannel plugin sets them (name and cniVersion "
            "from the list, ipam from the lease)"
        )
    return None


# Variable -> the rules its value must follow beyond the argument spec's type and choices.
RULES: dict[str, tuple[Check, ...]] = {
    # etcd
    "etcd_packages": (DEB_PACKAGES,),
    "etcd_tool_packages": (DEB_PACKAGES,),
    "etcd_apt_cache_valid_time": (NON_NEGATIVE,),
    "etcd_version": (VERSION,),
    "etcd_archive_url": (url("https", "http", "ftp", "file"),),
    "etcd_archive_src": (controller_file_or_empty,),
    "etcd_archive_checksum": (CHECKSUM,),
    "etcd_archive_install_dir": (absolute_path,),
    "etcd_bin_dir": (absolute_path,),
    "etcd_binary": (absolute_path,),
    "etcd_etcdctl": (absolute_path,),
    "etcd_user": (POSIX_NAME,),
    "etcd_group": (POSIX_NAME,),
    "etcd_name": (ETCD_NAME,),
    "etcd_address": (host_or_ip,),
    "etcd_client_port": (PORT,),
    "etcd_peer_port": (PORT,),
    "etcd_listen_client_urls": (etcd_urls,),
    "etcd_advertise_client_urls": (etcd_urls,),
    "etcd_listen_peer_urls": (etcd_urls,),
    "etcd_initial_advertise_peer_urls": (etcd_urls,),
    "etcd_data_dir": (absolute_path,),
    "etcd_initial_cluster_token": (non_empty,),
    "etcd_extra_env": (ENV_KEYS_ETCD,),
    "etcd_env_file": (absolute_path,),
    "etcd_bootstrap_env_file": (absolute_path,),
    "etcd_unit_file": (absolute_path, suffix(".service")),
    "etcd_tls_dir": (absolute_path,),
    "etcd_tls_cert_src": (controller_file_or_empty,),
    "etcd_tls_key_src": (controller_file_or_empty,),
    "etcd_cert_file": (absolute_path_or_empty,),
    "etcd_key_file": (absolute_path_or_empty,),
    "etcd_trusted_ca_file": (absolute_path_or_empty,),
    "etcd_peer_cert_file": (absolute_path_or_empty,),
    "etcd_peer_key_file": (absolute_path_or_empty,),
    "etcd_peer_trusted_ca_file": (absolute_path_or_empty,),
    "etcd_etcdctl_cert_file": (absolute_path_or_empty,),
    "etcd_etcdctl_key_file": (absolute_path_or_empty,),
    "etcd_etcdctl_env_file": (absolute_path,),
    "etcd_health_retries": (AT_LEAST_ONE,),
    "etcd_health_delay": (NON_NEGATIVE,),
    "etcd_start_timeout": (AT_LEAST_ONE,),
    # etcd_pki
    "etcd_pki_ca_common_name": (common_name,),
    "etcd_pki_ca_valid_days": (AT_LEAST_ONE,),
    "etcd_pki_valid_days": (AT_LEAST_ONE,),
    "etcd_pki_renew_days": (NON_NEGATIVE,),
    "etcd_pki_member_addresses": (each(ip_address),),
    "etcd_pki_member_names": (each(non_empty),),
    "etcd_pki_member_extra_sans": (each(subject_alt_name),),
    "etcd_pki_flanneld_common_name": (common_name,),
    "etcd_pki_admin_common_name": (common_name,),
    "etcd_pki_node_dir": (absolute_path,),
    # flannel_network (the network config itself: the flannel_network_config filter)
    "flannel_network_etcd_prefix": (agent_flag("FLANNELD_ETCD_PREFIX"),),
    "flannel_network_etcd_endpoints": (agent_flag("FLANNELD_ETCD_ENDPOINTS", join=True),),
    "flannel_network_etcd_tls_dir": (absolute_path,),
    "flannel_network_etcd_ca_cert": (absolute_path_or_empty,),
    "flannel_network_etcd_client_cert": (absolute_path_or_empty,),
    "flannel_network_etcd_client_key": (absolute_path_or_empty,),
    "flannel_network_etcd_timeout": (positive,),
    # flannel
    "flannel_version": (PY_VERSION,),
    "flannel_wheelhouse_dir": (absolute_path,),
    "flannel_package_index": (url_or_empty("https", "http", "file"),),
    "flannel_packages": (DEB_PACKAGES,),
    "flannel_apt_cache_valid_time": (NON_NEGATIVE,),
    "flannel_node_wheelhouse_dir": (absolute_path,),
    "flannel_venv_dir": (absolute_path,),
    "flannel_node_python": (absolute_path,),
    "flannel_etcd_endpoints": (agent_flag("FLANNELD_ETCD_ENDPOINTS", join=True),),
    "flannel_etcd_prefix": (agent_flag("FLANNELD_ETCD_PREFIX"),),
    "flannel_etcd_tls_dir": (absolute_path,),
    "flannel_etcd_cert_src": (controller_file_or_empty,),
    "flannel_etcd_key_src": (controller_file_or_empty,),
    "flannel_etcd_cafile": (absolute_path_or_empty,),
    "flannel_etcd_certfile": (absolute_path_or_empty,),
    "flannel_etcd_keyfile": (absolute_path_or_empty,),
    "flannel_tools_etcd_certfile": (absolute_path_or_empty,),
    "flannel_tools_etcd_keyfile": (absolute_path_or_empty,),
    "flannel_ctl_wrapper": (absolute_path,),
    "flannel_ctl_env_file": (absolute_path,),
    "flannel_iface": (agent_flag_each("FLANNELD_IFACE"),),
    "flannel_iface_regex": (agent_flag_each("FLANNELD_IFACE_REGEX"),),
    "flannel_iface_can_reach": (agent_flag("FLANNELD_IFACE_CAN_REACH"),),
    "flannel_public_ip": (agent_flag("FLANNELD_PUBLIC_IP"),),
    "flannel_subnet_file": (absolute_path,),
    "flannel_subnet_lease_renew_margin": (agent_flag("FLANNELD_SUBNET_LEASE_RENEW_MARGIN"),),
    "flannel_healthz_ip": (agent_flag("FLANNELD_HEALTHZ_IP"),),
    "flannel_healthz_port": (agent_flag("FLANNELD_HEALTHZ_PORT"),),
    "flannel_extra_env": (agent_env,),
    "flannel_extra_args": (agent_args,),
    "flannel_env_file": (absolute_path,),
    "flannel_network_config_record": (absolute_path,),
    "flannel_unit_file": (absolute_path, suffix(".service")),
    "flannel_subnet_file_timeout": (AT_LEAST_ONE,),
    "flannel_health_attempts": (AT_LEAST_ONE,),
    # docker
    "docker_packages": (DEB_PACKAGES,),
    "docker_tool_packages": (DEB_PACKAGES,),
    "docker_apt_cache_valid_time": (NON_NEGATIVE,),
    "docker_dockerd": (absolute_path,),
    "docker_dropin_file": (
        matches(
            r"/etc/systemd/system/docker\.service\.d/[^/]+\.conf",
            "/etc/systemd/system/docker.service.d/10-flannel.conf",
        ),
    ),
    "docker_daemon_json": (absolute_path,),
    "docker_bridge": (IFNAME,),
    "docker_ready_timeout": (AT_LEAST_ONE,),
    # cni
    "cni_packages": (DEB_PACKAGES,),
    "cni_apt_cache_valid_time": (NON_NEGATIVE,),
    "cni_plugin_dir": (absolute_path,),
    "cni_flannel_plugin": (absolute_path,),
    "cni_config_dir": (absolute_path,),
    "cni_conflist_file": (absolute_path, suffix(".conflist")),
    "cni_network_name": (CNI_NETWORK,),
    "cni_subnet_file": (absolute_path,),
    "cni_data_dir": (absolute_path,),
    "cni_delegate": (cni_delegate,),
    "cni_docker_bridge": (IFNAME,),
    # bird
    "bird_packages": (DEB_PACKAGES,),
    "bird_apt_cache_valid_time": (NON_NEGATIVE,),
    "bird_service": (matches(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", "bird"),),
    # overlay_verify
    "overlay_verify_packages": (DEB_PACKAGES,),
    "overlay_verify_apt_cache_valid_time": (NON_NEGATIVE,),
    "overlay_verify_image": (IMAGE,),
    "overlay_verify_image_archive": (controller_file_or_empty,),
    "overlay_verify_node_archive": (absolute_path,),
    "overlay_verify_container": (CONTAINER,),
    "overlay_verify_ping_count": (AT_LEAST_ONE,),
    "overlay_verify_ping_interval": (positive,),
    "overlay_verify_ping_deadline": (AT_LEAST_ONE,),
    "overlay_verify_expected_mtu": (lambda v: None if v == 0 else in_range(68, 65535)(v),),
    "overlay_verify_cni_tool": (absolute_path,),
    "overlay_verify_cni_conflist": (absolute_path, suffix(".conflist")),
    "overlay_verify_cni_path": (each_dir_absolute,),
    "overlay_verify_cni_pod": (matches(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "overlay-verify"),),
    "overlay_verify_cni_expected_mtu": (lambda v: None if v == 0 else in_range(68, 65535)(v),),
}


# -- cross-variable rules: values is every resolved variable of the host -------------------------


def _both_or_neither(values: Mapping[str, Any], first: str, second: str) -> list[str]:
    if first in values and second in values and bool(values[first]) != bool(values[second]):
        return [f"{first}, {second}: set both (a certificate and its key) or neither"]
    return []


def _tls_files(values: Mapping[str, Any], tls_var: str, files: tuple[str, ...]) -> list[str]:
    if values.get(tls_var, False) is not True:
        return []
    empty = [name for name in files if name in values and not values[name]]
    return [
        f"{name}: must be set while {tls_var} is true (or set {tls_var}: false)" for name in empty
    ]


def _url_schemes(values: Mapping[str, Any]) -> list[str]:
    if "etcd_tls" not in values or not isinstance(values["etcd_tls"], bool):
        return []
    scheme = "https" if values["etcd_tls"] else "http"
    problems = []
    for name in ("etcd_client_scheme", "etcd_peer_scheme"):
        if name in values and values[name] != scheme:
            problems.append(
                f"{name}: {values[name]!r} with etcd_tls {values['etcd_tls']}: must be {scheme}"
            )
    for name in (
        "etcd_listen_client_urls",
        "etcd_advertise_client_urls",
        "etcd_listen_peer_urls",
        "etcd_initial_advertise_peer_urls",
    ):
        bad = [
            u
            for u in values.get(name) or []
            if isinstance(u, str) and not u.startswith(scheme + "://")
        ]
        if bad:
            problems.append(
                f"{name}: {bad} with etcd_tls {values['etcd_tls']}: must be {scheme}:// URLs"
            )
    return problems


def cross_checks(
    values: Mapping[str, Any], groups: Mapping[str, list[str]], host: str
) -> list[str]:
    problems: list[str] = []
    if values.get("etcd_client_port") is not None and values.get("etcd_client_port") == values.get(
        "etcd_peer_port"
    ):
        problems.append(
            "etcd_client_port, etcd_peer_port: must differ (both are {})".format(
                values["etcd_client_port"]
            )
        )
    for pair in (
        ("etcd_tls_cert_src", "etcd_tls_key_src"),
        ("etcd_cert_file", "etcd_key_file"),
        ("etcd_peer_cert_file", "etcd_peer_key_file"),
        ("etcd_etcdctl_cert_file", "etcd_etcdctl_key_file"),
        ("flannel_etcd_cert_src", "flannel_etcd_key_src"),
        ("flannel_etcd_certfile", "flannel_etcd_keyfile"),
        ("flannel_tools_etcd_certfile", "flannel_tools_etcd_keyfile"),
        ("flannel_network_etcd_client_cert", "flannel_network_etcd_client_key"),
        ("flannel_etcd_username", "flannel_etcd_password"),
        ("flannel_network_etcd_username", "flannel_network_etcd_password"),
    ):
        problems += _both_or_neither(values, *pair)
    problems += _tls_files(
        values, "etcd_tls", ("etcd_cert_file", "etcd_key_file", "etcd_trusted_ca_file")
    )
    problems += _tls_files(
        values, "flannel_etcd_tls", ("flannel_etcd_cafile", "flannel_etcd_certfile")
    )
    problems += _tls_files(values, "flannel_network_etcd_tls", ("flannel_network_etcd_ca_cert",))
    if values.get("etcd_client_cert_auth") is True and values.get("etcd_trusted_ca_file") == "":
        problems.append(
            "etcd_client_cert_auth: true needs etcd_trusted_ca_file (the CA of the clients)"
        )
    problems += _url_schemes(values)
    if (
        values.get("etcd_pki_ca_create") is False
        and values.get("etcd_pki_ca_cert")
        and (
            values.get("etcd_pki_enabled", True) is True
            and not Path(values["etcd_pki_ca_cert"]).is_file()
        )
    ):
        problems.append(
            f"etcd_pki_ca_cert: {values['etcd_pki_ca_cert']} does not exist on the controller and "
            "etcd_pki_ca_create is false: point it at the CA, or allow a new one"
        )
    for name in (
        "etcd_group_name",
        "etcd_pki_etcd_group",
        "etcd_pki_flannel_group",
        "overlay_verify_group",
    ):
        if name in values and values[name] not in groups:
            problems.append(
                f"{name}: {values[name]!r} is not a group of the inventory "
                f"(groups: {', '.join(sorted(groups))})"
            )
    group = values.get("etcd_group_name", "etcd")
    members = groups.get(group, [])
    if host in members and len(members) % 2 == 0:
        problems.append(
            f"etcd_group_name: group {group!r} has {len(members)} hosts ({', '.join(members)}): "
            "an etcd cluster needs an odd number (1, 3, 5...) to keep a quorum; add or remove one"
        )
    if values.get("flannel_network_etcd_endpoints") == [] and not members:
        problems.append(
            f"flannel_network_etcd_endpoints: empty, and group {group!r} has no hosts: list the "
            "client URLs of an external etcd (https://host:2379) or put etcd hosts in the group"
        )
    problems += _wheelhouse(values)
    peers = values.get("overlay_verify_peers")
    if isinstance(peers, list):
        unknown = [p for p in peers if p not in groups.get("all", [])]
        if unknown:
            problems.append(f"overlay_verify_peers: {unknown} are not hosts of the inventory")
    return problems


def _wheelhouse(values: Mapping[str, Any]) -> list[str]:
    """Without a package index, the wheelhouse must hold the agent's wheel of flannel_version."""
    needed = {"flannel_wheelhouse_dir", "flannel_version"}
    if values.get("flannel_package_index") or not needed <= values.keys():
        return []
    wheelhouse = Path(values["flannel_wheelhouse_dir"])
    wheel = f"pyflannel-{values['flannel_version']}-py3-none-any.whl"
    if (wheelhouse / wheel).is_file():
        return []
    return [
        f"flannel_wheelhouse_dir: {wheelhouse} has no {wheel}: build the wheelhouse with `make "
        "dist` in the pyflannel checkout (dist/wheelhouse) and point flannel_wheelhouse_dir at "
        "it, or set flannel_package_index"
    ]


ROLL_BATCH = re.compile(r"^([1-9][0-9]*)%?$")


def _roll_batch(task_vars: Mapping[str, Any]) -> list[str]:
    """site.yml's flannel_roll_batch: a play's batch size, set by -e or a playbook's vars.

    Ansible sizes a play's batches before it reads inventory variables: one set there would be
    ignored without a word.
    """
    if "flannel_roll_batch" not in task_vars:
        return []
    value = task_vars["flannel_roll_batch"]
    inventory_and_extra = task_vars["hostvars"].raw_get(task_vars["inventory_hostname"])
    if "flannel_roll_batch" in inventory_and_extra and "flannel_roll_batch" not in load_extra_vars(
        DataLoader()
    ):
        return [
            f"flannel_roll_batch: {value!r} is set in the inventory, where Ansible does not read "
            "a play's batch size: give it on the command line (-e flannel_roll_batch=2)"
        ]
    match = ROLL_BATCH.match(str(value).strip())
    if match is None or (str(value).strip().endswith("%") and int(match.group(1)) > 100):
        return [
            f"flannel_roll_batch: {value!r} must be a number of nodes (1, 2, ...) or a "
            "percentage of them (1%..100%)"
        ]
    return []


# -- the flannel_network_config filter -------------------------------------------------------------

NETWORK_ARGS = (
    "flannel_network_cidr",
    "flannel_network_subnet_len",
    "flannel_network_subnet_min",
    "flannel_network_subnet_max",
    "flannel_network_backend",
    "flannel_network_backend_options",
)


@functools.cache
def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        return yaml.safe_load(stream) or {}


class ActionModule(ActionBase):
    """Check one host's values for the roles it runs; fail listing each problem on one line."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        if PYFLANNEL_MISSING is not None:
            raise AnsibleError(PYFLANNEL_MISSING)
        roles = list(self._task.args.get("roles", []))
        specs = {
            r: _load(ROLES_DIR / r / "meta" / "argument_specs.yml")["argument_specs"]["main"][
                "options"
            ]
            for r in roles
        }
        defaults: dict[str, Any] = {}
        for role in roles:
            # Trusted templates, as Ansible loads role defaults (its cached copy is keyed by the
            # path it found the role at, which need not be this one).
            path = str(ROLES_DIR / role / "defaults" / "main.yml")
            defaults.update(self._loader.load_from_file(path, trusted_as_template=True) or {})
        # Role vars (higher precedence than the inventory) for the rules that read them.
        role_vars: dict[str, Any] = {}
        for role in roles:
            path = ROLES_DIR / role / "vars" / "main.yml"
            if path.is_file():
                role_vars.update(
                    self._loader.load_from_file(str(path), trusted_as_template=True) or {}
                )
        context = {**defaults, **task_vars, **role_vars}
        templar = Templar(loader=self._loader, variables=context)

        resolved: dict[str, Any] = {}
        deferred: list[str] = []
        problems: list[str] = []
        for options in specs.values():
            for name in options:
                if name not in context or name in resolved:
                    continue
                try:
                    resolved[name] = templar.template(context[name])
                except AnsibleUndefinedVariable:
                    if name in task_vars:  # the inventory's value (a default is trusted)
                        deferred.append(name)
                except AnsibleError as exc:
                    problems.append(f"{name}: cannot be evaluated: {str(exc).splitlines()[0]}")

        values: dict[str, Any] = {}
        for options in specs.values():
            for name, option in options.items():
                if name not in resolved or name in values:
                    continue
                # One variable at a time: each message is attributed to its variable.
                outcome = ArgumentSpecValidator({name: option}).validate(
                    {name: resolved[name]}, validate_role_argument_spec=True
                )
                kind = option.get("type", "str")
                if outcome.error_messages:
                    problems += [self._named(m, name, option) for m in outcome.error_messages]
                elif kind in ("str", "path") and isinstance(resolved[name], dict | list):
                    # Ansible's role validation turns anything into text silently.
                    problems.append(
                        f"{name}: is of type {type(resolved[name]).__name__}; must be a string"
                    )
                elif (
                    kind == "list"
                    and option.get("elements") == "str"
                    and any(isinstance(item, dict | list) for item in resolved[name])
                ):
                    problems.append(f"{name}: must be a list of strings, got {resolved[name]!r}")
                else:
                    values[name] = outcome.validated_parameters[name]

        secret = {n for options in specs.values() for n, o in options.items() if o.get("no_log")}
        rules = dict(RULES)
        if "docker" in roles:
            rules["docker_extra_args"] = (
                docker_args(list(templar.template(context["docker_role_owned_flags"]))),
            )
        for name, checks in rules.items():
            if name not in values:
                continue
            for check in checks:
                problem = check(values[name])
                if problem:
                    shown = "(value hidden: no_log)" if name in secret else repr(values[name])
                    problems.append(f"{name}: {shown} {problem}")
                    break
        problems += cross_checks(
            values, task_vars.get("groups", {}), task_vars.get("inventory_hostname", "")
        )
        if "flannel" in roles:
            problems += _roll_batch(task_vars)
        if "etcd" in roles and "etcd_name" in values:
            problems += self._shared_member_name(values, task_vars, defaults)
        if "flannel_network" in roles and all(n in values for n in NETWORK_ARGS):
            try:
                flannel_network_config(*(values[n] for n in NETWORK_ARGS))
            except AnsibleError as exc:
                problems.append(str(exc).splitlines()[0])

        iface = values.get("flannel_iface") if "flannel" in roles else None
        result["iface_names"] = [
            i for i in iface or [] if isinstance(i, str) and ip_address(i) is not None
        ]
        result["etcd_data_dir"] = values.get("etcd_data_dir", "") if "etcd" in roles else ""
        result["deferred"] = sorted(set(deferred))
        result["problems"] = problems
        result["changed"] = False
        if problems:
            result["failed"] = True
            result["msg"] = "; ".join(problems)
        else:
            result["msg"] = f"{len(values)} values valid for {', '.join(roles)}"
        return result

    def _shared_member_name(
        self, values: Mapping[str, Any], task_vars: Mapping[str, Any], defaults: Mapping[str, Any]
    ) -> list[str]:
        """etcd refuses a cluster whose members share a name: name the other holders."""
        host = task_vars.get("inventory_hostname", "")
        group = values.get("etcd_group_name", "etcd")
        members = task_vars.get("groups", {}).get(group, [])
        if host not in members:
            return []
        name = values["etcd_name"]
        holders = []
        for other in members:
            if other == host:
                continue
            # The other host's own variables, untemplated (its templates resolve against them).
            other_vars = dict(task_vars["hostvars"].raw_get(other))
            raw = other_vars.get("etcd_name", defaults["etcd_name"])
            try:
                other_name = Templar(loader=self._loader, variables=other_vars).template(raw)
            except AnsibleError:
                continue  # that host's own check names what is wrong with it
            if other_name == name:
                holders.append(other)
        if not holders:
            return []
        return [
            f"etcd_name: {name!r} is also the name of {', '.join(holders)}: every member of "
            f"group {group!r} needs its own name (etcd refuses duplicates); set etcd_name per host"
        ]

    @staticmethod
    def _named(message: str, name: str, option: Mapping[str, Any]) -> str:
        """ArgumentSpecValidator's message, led by the variable it is about."""
        choices = option.get("choices")
        hint = (
            f" (valid: {', '.join(map(str, choices))})"
            if choices and "one of" not in message
            else ""
        )
        return f"{name}: {message}{hint}"
