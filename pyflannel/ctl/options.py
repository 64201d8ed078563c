"""flannelctl's etcd connection options: flanneld's flags, FLANNELD_* variables and defaults."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pyflannel.errors import UsageError
from pyflannel.etcd_options import ETCD_OPTIONS
from pyflannel.flags import ENV_PREFIX, ETCD_CONVERTERS
from pyflannel.store import EtcdOptions

# flannelctl's older spelling of --etcd-timeout, kept working.
_ALIASES = {"timeout": ("--timeout",)}


@dataclass(frozen=True)
class _Common:
    """A connection option: its flag, FLANNELD_* variable, default and converter."""

    key: str
    flag: str
    convert: Callable[[str], Any]
    help: str
    metavar: str
    default: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        # The argparse destination, named like DaemonOptions' field.
        return "etcd_" + self.key

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.flag.removeprefix("--").upper().replace("-", "_")


_COMMON: tuple[_Common, ...] = tuple(
    _Common(
        option.key,
        option.long_flag,
        ETCD_CONVERTERS[option.kind],
        option.help,
        option.metavar.upper(),
        option.default,
        _ALIASES.get(option.key, ()),
    )
    for option in ETCD_OPTIONS
)


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """Connection and output options; accepted before and after the subcommand.

    Leaf parsers default to SUPPRESS so that an option given before the subcommand is not
    overwritten by the leaf's default when argparse merges the namespaces.
    """
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group(
        "etcd connection", "each option can also be set as FLANNELD_<NAME>, as for flanneld"
    )
    for spec in _COMMON:
        shown = f"default {spec.default}; " if spec.default else ""
        suffix = f" ({shown}env {spec.env_name})"
        group.add_argument(
            spec.flag,
            *spec.aliases,
            dest=spec.dest,
            metavar=spec.metavar,
            default=default,
            help=spec.help + suffix,
        )
    output = parser.add_argument_group("output")
    output.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default=default,
        help="text for people (default), json for scripts",
    )
    output.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="log debug messages and print a traceback on unexpected errors",
    )


def _resolve(spec: _Common, given: str | None, environ: Mapping[str, str]) -> Any:
    """Flag over FLANNELD_* variable over default; converted with flanneld's rules."""
    if given is not None:
        source, raw = spec.flag, given
    elif environ.get(spec.env_name):  # empty variables count as unset, as in flanneld
        source, raw = spec.env_name, environ[spec.env_name]
    else:
        if spec.default is None:
            return None
        source, raw = spec.flag, spec.default
    try:
        return spec.convert(raw)
    except ValueError as exc:
        raise UsageError(f"invalid {source} value {raw!r}: {exc}") from None


def connection(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[EtcdOptions, str]:
    """EtcdOptions and the key prefix from parsed arguments and the environment."""
    values = {spec.key: _resolve(spec, getattr(args, spec.dest), environ) for spec in _COMMON}
    prefix = values.pop("prefix")
    return EtcdOptions(**values), prefix
