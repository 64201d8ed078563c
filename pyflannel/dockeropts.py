"""mk-docker-opts: Docker daemon options from flannel's subnet file, like mk-docker-opts.sh.

The output is the script's byte for byte: DOCKER_OPT_* lines sorted by name, then the combined
variable with every option appended after a space (hence its leading space).
"""

from __future__ import annotations

import getopt
import ipaddress
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pyflannel.errors import UsageError
from pyflannel.subnetenv import (
    atomic_write_text,
    cidr_parser,
    parse_ipmasq,
    parse_mtu,
    read_subnet_env,
)

T = TypeVar("T")

PROG = "mk-docker-opts"
USAGE = f"""\
Usage: {PROG} [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]

Generate Docker daemon options from flannel's subnet file.
  -f  flannel env file to read (default /run/flannel/subnet.env)
  -d  docker env file to write (default /run/docker_opts.env)
  -i  write the individual DOCKER_OPT_* variables only
  -c  write the combined variable only
  -k  name of the combined variable (default DOCKER_OPTS)
  -m  leave out the --ip-masq option
  -h  show this help
Without -i and -c both kinds are written.
"""


@dataclass(frozen=True)
class Switches:
    flannel_env: str = "/run/flannel/subnet.env"
    docker_env: str = "/run/docker_opts.env"
    individual: bool = True
    combined: bool = True
    combined_key: str = "DOCKER_OPTS"
    ipmasq: bool = True
    help: bool = False


def parse_switches(argv: Sequence[str]) -> Switches:
    """The script's getopts switches; raises UsageError for anything else."""
    # getopt matches the script's getopts: clustered switches (-ci) and attached values (-fFILE).
    try:
        pairs, rest = getopt.getopt(list(argv), "f:d:cik:mh")
    except getopt.GetoptError as exc:
        raise UsageError(f"{exc.msg}; run {PROG} -h for the switches") from None
    if rest:
        raise UsageError(f"unexpected argument {rest[0]!r}; run {PROG} -h for the switches")
    seen = {name for name, _ in pairs}
    values = dict(pairs)  # a repeated switch: the last one wins, as with getopts
    key = values.get("-k", "DOCKER_OPTS")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise UsageError(f"-k {key!r}: the combined key must be a shell variable name")
    only_individual, only_combined = "-i" in seen, "-c" in seen
    neither = not only_individual and not only_combined
    return Switches(
        flannel_env=values.get("-f", Switches.flannel_env),
        docker_env=values.get("-d", Switches.docker_env),
        individual=only_individual or neither,
        combined=only_combined or neither,
        combined_key=key,
        ipmasq="-m" not in seen,
        help="-h" in seen,
    )


def docker_ip_masq(flannel_ipmasq: bool) -> bool:
    """dockerd's --ip-masq for a lease: flannel masquerades itself when FLANNEL_IPMASQ=true, so
    Docker must not do it again (and must when flannel does not)."""
    return not flannel_ipmasq


@dataclass(frozen=True)
class DockerdSettings:
    """dockerd's --bip, --mtu and --ip-masq for a lease."""

    bip: str
    mtu: int
    ip_masq: bool


SUBNET_ENV_KEYS = ("FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ")


def dockerd_settings(
    values: Mapping[str, str], keys: tuple[str, str, str] = SUBNET_ENV_KEYS
) -> DockerdSettings:
    """From a lease's gateway, MTU and ip-masq flag as text (by default subnet.env's keys);
    raises ValueError naming the key that is missing or bad."""
    subnet_key, mtu_key, ipmasq_key = keys
    bip = _parsed(values, subnet_key, cidr_parser(ipaddress.IPv4Interface))
    return DockerdSettings(
        bip=str(bip),
        mtu=_parsed(values, mtu_key, parse_mtu),
        ip_masq=docker_ip_masq(_parsed(values, ipmasq_key, parse_ipmasq)),
    )


def _parsed(values: Mapping[str, str], key: str, parse: Callable[[str], T]) -> T:
    if key not in values:
        raise ValueError(f"{key} is missing")
    try:
        return parse(values[key])
    except ValueError as exc:
        raise ValueError(f"{key}={values[key]!r} is invalid: {exc}") from None


def docker_options(flannel: Mapping[str, str], ipmasq: bool = True) -> dict[str, str]:
    """DOCKER_OPT_* name -> value for the keys present in the flannel env.

    Values are checked before they land in a file that systemd expands into dockerd's command
    line; raises ValueError naming the key.
    """
    options: dict[str, str] = {}
    if subnet := flannel.get("FLANNEL_SUBNET"):
        _parsed(flannel, "FLANNEL_SUBNET", cidr_parser(ipaddress.IPv4Interface))
        options["DOCKER_OPT_BIP"] = f"--bip={subnet}"
    if mtu := flannel.get("FLANNEL_MTU"):
        _parsed(flannel, "FLANNEL_MTU", parse_mtu)
        options["DOCKER_OPT_MTU"] = f"--mtu={mtu}"
    # FLANNEL_IPV6_SUBNET gives no option: flannel's script (v0.20.2) has none for it.
    if flannel.get("FLANNEL_IPMASQ"):
        docker_masq = docker_ip_masq(_parsed(flannel, "FLANNEL_IPMASQ", parse_ipmasq))
        if ipmasq:
            options["DOCKER_OPT_IPMASQ"] = f"--ip-masq={'true' if docker_masq else 'false'}"
    return options


def render(options: Mapping[str, str], switches: Switches) -> str:
    """The docker env file's text, as mk-docker-opts.sh writes it."""
    names = sorted(options)
    lines = [f'{name}="{options[name]}"' for name in names] if switches.individual else []
    if switches.combined:
        combined = "".join(f" {options[name]}" for name in names)
        lines.append(f'{switches.combined_key}="{combined}"')
    return "".join(line + "\n" for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; returns the exit status."""
    try:
        switches = parse_switches(sys.argv[1:] if argv is None else argv)
        if switches.help:
            sys.stdout.write(USAGE)
            return 0
        content = render(docker_options(_read(switches.flannel_env), switches.ipmasq), switches)
        _write(switches.docker_env, content)
    except (UsageError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


def _read(path: str) -> dict[str, str]:
    try:
        return read_subnet_env(path)
    except OSError as exc:
        raise UsageError(
            f"cannot read the flannel env {path}: {exc.strerror or exc}; "
            "is flanneld running? (-f names another file)"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"the flannel env {path} is not text; -f must name subnet.env") from None


def _write(path: str, content: str) -> None:
    try:
        atomic_write_text(path, content)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    raise SystemExit(main())
