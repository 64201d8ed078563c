"""The etcd connection options: one table for the agent's flags, flannelctl and the modules.

flanneld, flannelctl and the collection's modules reach etcd with the same settings under
different names (`--etcd-cafile`, FLANNELD_ETCD_CAFILE, `ca_cert`). Each entry point builds
its own parser from this table, so a setting, its default and its help are written once.
Standard library only: the modules import it on hosts that have nothing but python3; the agent
imports the same file as `pyflannel.etcd_options` (a link).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# flanneld's --etcd-endpoints default (the legacy client port first, then the IANA one).
DEFAULT_ENDPOINTS = "http://127.0.0.1:4001,http://127.0.0.1:2379"
EXAMPLE_URL = "http://127.0.0.1:2379"
# flanneld's --etcd-prefix default: every key of a network lives under it.
DEFAULT_PREFIX = "/coreos.com/network"
DEFAULT_TIMEOUT = "5"


@dataclass(frozen=True)
class EtcdOption:
    """One setting: its canonical key and how each entry point spells and types it."""

    key: str  # the EtcdOptions field (or "prefix")
    flag: str  # flanneld's and flannelctl's spelling, without the dashes
    module_option: str  # the Ansible modules' option
    kind: str  # urls | prefix | text | seconds: which converter the CLI edges use
    help: str
    metavar: str
    default: str | None = None  # as an operator would type it
    module_spec: dict[str, Any] | None = None  # the modules' argument spec entry

    @property
    def long_flag(self) -> str:
        return "--" + self.flag


ETCD_OPTIONS: tuple[EtcdOption, ...] = (
    EtcdOption(
        "endpoints",
        "etcd-endpoints",
        "endpoints",
        "urls",
        "etcd URLs, comma-separated",
        "urls",
        DEFAULT_ENDPOINTS,
        {"type": "list", "elements": "str", "required": True},
    ),
    EtcdOption(
        "prefix",
        "etcd-prefix",
        "prefix",
        "prefix",
        "etcd key prefix of the network",
        "path",
        DEFAULT_PREFIX,
        {"type": "str", "default": DEFAULT_PREFIX},
    ),
    EtcdOption(
        "cafile",
        "etcd-cafile",
        "ca_cert",
        "text",
        "CA bundle for etcd TLS",
        "file",
        module_spec={"type": "path"},
    ),
    EtcdOption(
        "certfile",
        "etcd-certfile",
        "client_cert",
        "text",
        "client certificate",
        "file",
        module_spec={"type": "path"},
    ),
    EtcdOption(
        "keyfile",
        "etcd-keyfile",
        "client_key",
        "text",
        "client certificate key",
        "file",
        module_spec={"type": "path", "no_log": False},
    ),
    EtcdOption(
        "username",
        "etcd-username",
        "username",
        "text",
        "etcd user name",
        "name",
        module_spec={"type": "str"},
    ),
    EtcdOption(
        "password",
        "etcd-password",
        "password",
        "text",
        "etcd password (prefer the environment variable: argv is visible to all users)",
        "password",
        module_spec={"type": "str", "no_log": True},
    ),
    EtcdOption(
        "timeout",
        "etcd-timeout",
        "timeout",
        "seconds",
        "seconds to wait for etcd before giving up",
        "seconds",
        DEFAULT_TIMEOUT,
        {"type": "float", "default": float(DEFAULT_TIMEOUT)},
    ),
)

# What the modules require together (a certificate needs its key, a user a password).
MODULE_REQUIRED_TOGETHER = [("client_cert", "client_key"), ("username", "password")]


def split_endpoint(url: str) -> tuple[str, int, bool]:
    """'https://10.0.0.1:2379' -> ('10.0.0.1', 2379, True): the one rule for an etcd client URL
    (the agent's flag, the store, the modules' gateway). ValueError says what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL; write e.g. {EXAMPLE_URL}")
    try:
        port = parts.port or 2379
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port; write e.g. {EXAMPLE_URL}") from None
    return parts.hostname, port, parts.scheme == "https"


def flag_names() -> dict[str, str]:
    """key -> flag as the agent and flannelctl print it (endpoints -> --etcd-endpoints)."""
    return {option.key: option.long_flag for option in ETCD_OPTIONS}


def module_names() -> dict[str, str]:
    """key -> module option (cafile -> ca_cert)."""
    return {option.key: option.module_option for option in ETCD_OPTIONS}


def module_argument_spec(*, with_prefix: bool) -> dict[str, Any]:
    """The modules' argument spec for the connection (and the key prefix when they use one)."""
    return {
        option.module_option: dict(option.module_spec or {})
        for option in ETCD_OPTIONS
        if with_prefix or option.key != "prefix"
    }
