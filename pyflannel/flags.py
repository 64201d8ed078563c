"""flanneld's command line: Go `flag` syntax plus FLANNELD_* environment variables.

Parsed with a small table-driven scanner rather than argparse because Go's syntax does not map
onto argparse cleanly: a single dash introduces long names (`-etcd-prefix=...`), a boolean flag
never consumes the next argument but still accepts `=false`, and `_`/`-` must be interchangeable
(klog's `--log_dir`). argparse would need per-flag aliases for every spelling and cannot express
"optional value only after =".
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyflannel.errors import SettingError, UsageError
from pyflannel.etcd_options import (
    DEFAULT_ENDPOINTS,
    DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
    ETCD_OPTIONS,
    EXAMPLE_URL,
    flag_names,
    split_endpoint,
)

ENV_PREFIX = "FLANNELD_"
KUBE_SUBNET_MGR_MESSAGE = (
    "--kube-subnet-mgr: the Kubernetes subnet manager is not supported; pyflannel uses etcd"
)


@dataclass(frozen=True)
class DaemonOptions:
    """Everything flanneld's flags can set; defaults are flanneld's."""

    # The etcd_<key> fields are pyflannel.etcd_options' settings (etcd_settings() hands them on).
    etcd_endpoints: tuple[str, ...] = tuple(DEFAULT_ENDPOINTS.split(","))
    etcd_prefix: str = DEFAULT_PREFIX
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_username: str | None = None
    etcd_password: str | None = None
    etcd_timeout: float = float(DEFAULT_TIMEOUT)
    iface: tuple[str, ...] = ()
    iface_regex: tuple[str, ...] = ()
    iface_can_reach: str | None = None
    public_ip: str | None = None
    ip_masq: bool = False
    subnet_file: str = "/run/flannel/subnet.env"
    subnet_lease_renew_margin: int = 60
    subnet_lease_ttl: int = 86400
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    iptables_resync: int = 5
    iptables_forward_rules: bool = True
    # pyflannel extensions (flanneld has no such flags):
    reconcile_interval: float = 10.0
    vxlan_disable_tx_checksum: bool = False
    userspace_fast_path: bool = True
    bgp_bird_config: str = "/etc/bird/bird.conf"  # what Debian's bird.service reads
    bgp_bird_socket: str = "/run/bird/bird.ctl"
    verbosity: int = 0
    logtostderr: bool = True
    log_dir: str | None = None
    version: bool = False
    help: bool = False


# --- value converters: each raises ValueError whose text is the rule the value broke ---

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _bool(value: str) -> bool:
    # The spellings Go's strconv.ParseBool accepts, so flanneld unit files keep working.
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("must be true or false")


def _text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def convert_optional_text(value: str) -> str | None:
    # flanneld treats an empty string as "not set" (e.g. --etcd-cafile= in a unit file).
    return value or None


def convert_endpoints(value: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in value.split(",") if part.strip())
    if not urls:
        raise ValueError(f"must be comma-separated http:// or https:// URLs, e.g. {EXAMPLE_URL}")
    for url in urls:
        split_endpoint(url)  # its ValueError names the bad URL
    return urls


def convert_prefix(value: str) -> str:
    trimmed = value.rstrip("/")
    if not value.startswith("/") or not trimmed:
        raise ValueError("must be an absolute etcd key path such as /coreos.com/network")
    return trimmed


def convert_ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError("must be an IPv4 address such as 192.0.2.10") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IP address such as 0.0.0.0") from None


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"must be a valid regular expression ({exc})") from None
    return value


def _int_in(low: int, high: int | None) -> Callable[[str], int]:
    rule = f"must be an integer in {low}..{high}" if high is not None else f"must be >= {low}"

    def convert(value: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]+", value):
            raise ValueError(rule)
        number = int(value)
        if number < low or (high is not None and number > high):
            raise ValueError(rule)
        return number

    return convert


def convert_positive_seconds(value: str) -> float:
    rule = "must be a positive number of seconds"
    try:
        number = float(value)
    except ValueError:
        raise ValueError(rule) from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(rule)
    return number


def _kube_subnet_mgr(value: str) -> bool:
    if _bool(value):
        raise UsageError(KUBE_SUBNET_MGR_MESSAGE)
    return False


@dataclass(frozen=True)
class _Flag:
    name: str  # spelled as flanneld/klog spell it
    field: str | None  # DaemonOptions field; None: accepted for compatibility and ignored
    convert: Callable[[str], object]
    help: str
    metavar: str = ""  # empty for booleans
    repeated: bool = False  # each occurrence adds one value
    env_split: bool = False  # FLANNELD_<NAME> holds a comma-separated list

    @property
    def is_bool(self) -> bool:
        return not self.metavar

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")


# How flanneld and flannelctl convert each kind of etcd setting (pyflannel.etcd_options).
ETCD_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "urls": convert_endpoints,
    "prefix": convert_prefix,
    "text": convert_optional_text,
    "seconds": convert_positive_seconds,
}

_FLAGS: tuple[_Flag, ...] = (
    *(
        _Flag(
            option.flag,
            "etcd_" + option.key,
            ETCD_CONVERTERS[option.kind],
            option.help,
            option.metavar,
        )
        for option in ETCD_OPTIONS
    ),
    _Flag(
        "iface",
        "iface",
        _text,
        "interface name or IP for the underlay; repeatable",
        "name|ip",
        repeated=True,
        env_split=True,
    ),
    # FLANNELD_IFACE_REGEX stays one regex: commas are regex syntax ({1,3}).
    _Flag("iface-regex", "iface_regex", _regex, "regex matched against names and IPs", "re", True),
    _Flag(
        "iface-can-reach", "iface_can_reach", convert_ipv4, "pick the interface reaching IP", "ip"
    ),
    _Flag("public-ip", "public_ip", convert_ipv4, "IP other nodes use to reach this one", "ip"),
    _Flag("ip-masq", "ip_masq", _bool, "masquerade traffic leaving the overlay"),
    _Flag("subnet-file", "subnet_file", _text, "where to write the subnet env", "file"),
    _Flag(
        "subnet-lease-renew-margin",
        "subnet_lease_renew_margin",
        _int_in(1, 1439),
        "renew the lease this long before expiry (min)",
        "minutes",
    ),
    _Flag("subnet-lease-ttl", "subnet_lease_ttl", _int_in(10, None), "lease TTL (s)", "seconds"),
    _Flag("healthz-ip", "healthz_ip", _ip, "address of the health endpoint", "ip"),
    _Flag("healthz-port", "healthz_port", _int_in(0, 65535), "health port, 0 = off", "port"),
    _Flag("iptables-resync", "iptables_resync", _int_in(1, None), "rule resync (s)", "seconds"),
    _Flag("iptables-forward-rules", "iptables_forward_rules", _bool, "add FORWARD accept rules"),
    _Flag(
        "reconcile-interval",
        "reconcile_interval",
        convert_positive_seconds,
        "kernel state repair interval (s)",
        "seconds",
    ),
    _Flag(
        "vxlan-disable-tx-checksum",
        "vxlan_disable_tx_checksum",
        _bool,
        "turn off tx checksum offload on flannel.N (the usual vxlan checksum bug workaround)",
    ),
    _Flag(
        "userspace-fast-path",
        "userspace_fast_path",
        _bool,
        "udp and userspace ipip: forward known peers' packets in the kernel (eBPF), the pump "
        "for the rest; =false: the pump for everything",
    ),
    _Flag(
        "bgp-bird-config",
        "bgp_bird_config",
        _text,
        "bgp: the BIRD 2 configuration the agent writes (from the leases and the network config)",
        "file",
    ),
    _Flag(
        "bgp-bird-socket",
        "bgp_bird_socket",
        _text,
        "bgp: BIRD's control socket, to reload it (`birdc configure`) after each change",
        "path",
    ),
    _Flag("v", "verbosity", _int_in(0, None), "log verbosity", "level"),
    _Flag("logtostderr", "logtostderr", _bool, "log to stderr instead of files"),
    _Flag("log_dir", "log_dir", convert_optional_text, "write log files here", "dir"),
    _Flag("version", "version", _bool, "print the version and exit"),
    _Flag("help", "help", _bool, "print this message"),
    _Flag("alsologtostderr", None, _bool, "accepted and ignored"),
    _Flag("stderrthreshold", None, str, "accepted and ignored", "level"),
    _Flag("log_file", None, str, "accepted and ignored", "file"),
    _Flag("vmodule", None, str, "accepted and ignored", "pattern"),
    _Flag("kube-subnet-mgr", None, _kube_subnet_mgr, "only false is accepted (etcd only)"),
)

_BY_KEY: dict[str, _Flag] = {spec.name.replace("_", "-"): spec for spec in _FLAGS}
_BY_KEY["h"] = _BY_KEY["help"]


def _lookup(name: str) -> _Flag:
    spec = _BY_KEY.get(name.replace("_", "-"))
    if spec is None:
        raise UsageError(f"unknown flag --{name}; run flanneld --help for the list")
    return spec


def _scan_argv(argv: Sequence[str]) -> dict[str, list[str]]:
    """Raw values per flag name, in command-line order."""
    found: dict[str, list[str]] = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            if index < len(argv):
                _reject_positional(argv[index])
            break
        if len(arg) < 2 or not arg.startswith("-"):
            _reject_positional(arg)
        name, has_value, value = arg.removeprefix("-").removeprefix("-").partition("=")
        if not name or name.startswith("-"):
            raise UsageError(f"bad flag syntax {arg!r}; write -name=value or --name value")
        spec = _lookup(name)
        if spec.is_bool and not has_value:
            value = "true"
        elif not has_value:
            if index >= len(argv):
                raise UsageError(f"flag --{spec.name} needs a value ({spec.metavar})")
            value = argv[index]
            index += 1
        found.setdefault(spec.name, []).append(value)
    return found


def _reject_positional(arg: str) -> None:
    # Go's flag package silently stops at the first non-flag; that hides typos in unit files.
    raise UsageError(f"unexpected argument {arg!r}; flanneld takes only flags (-name=value)")


def _convert(spec: _Flag, source: str, raw: list[str]) -> object:
    values: list[object] = []
    for item in raw if spec.repeated else raw[-1:]:  # a repeated plain flag: the last one wins
        try:
            values.append(spec.convert(item))
        except UsageError:
            raise
        except ValueError as exc:
            raise UsageError(f"invalid {source} value {item!r}: {exc}") from None
    return tuple(values) if spec.repeated else values[0]


def _env_values(spec: _Flag, value: str) -> list[str]:
    if spec.env_split:
        return [part.strip() for part in value.split(",") if part.strip()]
    return [value]


def parse_flags(argv: Sequence[str], environ: Mapping[str, str]) -> DaemonOptions:
    """Options from `argv` (without the program name) over FLANNELD_* variables in `environ`.

    Raises UsageError with a one-line message for unknown flags and invalid values.
    """
    cli = _scan_argv(argv)
    if "help" in cli and _convert(_BY_KEY["help"], "--help", cli["help"]):
        return DaemonOptions(help=True)
    settings: dict[str, Any] = {}  # the table pairs each field with a converter of its type
    for spec in _FLAGS:
        if spec.name in cli:
            value = _convert(spec, f"--{spec.name}", cli[spec.name])
        elif environ.get(spec.env_name):  # empty variables count as unset, as in flanneld
            raw = _env_values(spec, environ[spec.env_name])
            value = _convert(spec, spec.env_name, raw)
        else:
            continue
        if spec.field is not None:
            settings[spec.field] = value
    return dataclasses.replace(DaemonOptions(), **settings)


def etcd_settings(opts: DaemonOptions) -> dict[str, Any]:
    """The connection settings by etcd_options key, for pyflannel.store.EtcdOptions(**...)."""
    return {
        option.key: getattr(opts, "etcd_" + option.key)
        for option in ETCD_OPTIONS
        if option.key != "prefix"
    }


def usage_message(exc: UsageError) -> str:
    """The error as the agent and flannelctl print it: settings named by their flags."""
    return exc.named(flag_names()) if isinstance(exc, SettingError) else str(exc)


def _show_default(value: object) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def usage() -> str:
    """Help text for --help: one line per flag with its default."""
    defaults = DaemonOptions()
    lines = [
        "Usage: flanneld [flags]",
        "Flags take Go syntax (-name=value, --name value); each can also be set in the "
        "environment as FLANNELD_<NAME>, e.g. FLANNELD_ETCD_ENDPOINTS.",
    ]
    for spec in _FLAGS:
        left = f"--{spec.name}" + (f"=<{spec.metavar}>" if spec.metavar else "")
        default = (
            ""
            if spec.field is None
            else f" (default {_show_default(getattr(defaults, spec.field))})"
        )
        lines.append(f"  {left:<38} {spec.help}{default}")
    return "\n".join(lines) + "\n"
