"""`flannelctl`: inspect and administer a flannel network in etcd (config, leases, reservations).

Talks to etcd only through `Store` and `SubnetManager`, so what it reads and writes is exactly
what the agents read and write. Connection options and their FLANNELD_* environment variables
are flanneld's, so an operator can source flanneld's env file and run `flannelctl leases list`.
argparse is fine here (no Go flag syntax to stay compatible with); its error path is redirected
so that every failure is one line on stderr prefixed "flannelctl: ".
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pyflannel import __version__
from pyflannel.config import NetworkConfig, config_to_json, parse_config
from pyflannel.errors import ConfigError, FlannelError, UsageError
from pyflannel.flags import (
    ENV_PREFIX,
    convert_endpoints,
    convert_ipv4,
    convert_optional_text,
    convert_positive_seconds,
    convert_prefix,
)
from pyflannel.store import EtcdOptions, KeyValue, Store
from pyflannel.subnet.lease import (
    DEFAULT_PREFIX,
    Lease,
    config_key,
    parse_key_name,
    subnets_prefix,
)
from pyflannel.subnet.manager import SubnetManager

PROG = "flannelctl"
DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_TIMEOUT = "5"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DEBUG_HINT = "(run with --debug for a traceback)"
EXAMPLE_CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'

log = logging.getLogger("pyflannel")


# -- connection options -------------------------------------------------------------------


@dataclass(frozen=True)
class _Common:
    """A connection option: its flag, FLANNELD_* variable, default and converter."""

    flag: str
    dest: str
    convert: Callable[[str], Any]
    help: str
    metavar: str
    default: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.flag.removeprefix("--").upper().replace("-", "_")


_COMMON: tuple[_Common, ...] = (
    _Common(
        "--etcd-endpoints",
        "etcd_endpoints",
        convert_endpoints,
        "etcd URLs, comma-separated",
        "URLS",
        DEFAULT_ENDPOINTS,
    ),
    _Common(
        "--etcd-prefix",
        "etcd_prefix",
        convert_prefix,
        "etcd key prefix of the network",
        "PATH",
        DEFAULT_PREFIX,
    ),
    _Common(
        "--etcd-cafile", "etcd_cafile", convert_optional_text, "CA bundle for etcd TLS", "FILE"
    ),
    _Common(
        "--etcd-certfile", "etcd_certfile", convert_optional_text, "client certificate", "FILE"
    ),
    _Common(
        "--etcd-keyfile", "etcd_keyfile", convert_optional_text, "client certificate key", "FILE"
    ),
    _Common("--etcd-username", "etcd_username", convert_optional_text, "etcd user name", "NAME"),
    _Common(
        "--etcd-password",
        "etcd_password",
        convert_optional_text,
        "etcd password (prefer the environment variable: argv is visible to all users)",
        "PASSWORD",
    ),
    _Common(
        "--etcd-timeout",
        "etcd_timeout",
        convert_positive_seconds,
        "seconds to wait for etcd before giving up",
        "SECONDS",
        DEFAULT_TIMEOUT,
        aliases=("--timeout",),
    ),
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
    values = {spec.dest: _resolve(spec, getattr(args, spec.dest), environ) for spec in _COMMON}
    options = EtcdOptions(
        endpoints=values["etcd_endpoints"],
        cafile=values["etcd_cafile"],
        certfile=values["etcd_certfile"],
        keyfile=values["etcd_keyfile"],
        username=values["etcd_username"],
        password=values["etcd_password"],
        timeout=values["etcd_timeout"],
    )
    return options, values["etcd_prefix"]


# -- context shared by the commands ------------------------------------------------------


@dataclass
class Context:
    """What a command needs: output mode and a store opened on first use."""

    options: EtcdOptions
    prefix: str
    json_output: bool
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.options)
        return self._store

    @property
    def manager(self) -> SubnetManager:
        return SubnetManager(self.store, self.prefix)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


# -- config ------------------------------------------------------------------------------


def _read_config_input(args: argparse.Namespace) -> str:
    """The config text from the positional argument, -f FILE or -f - (stdin)."""
    if args.json is not None and args.file is not None:
        raise UsageError("give the config either as an argument or with -f, not both")
    if args.json is not None:
        return str(args.json)
    if args.file is None:
        raise UsageError(f"no config given; pass it as an argument ('{EXAMPLE_CONFIG}') or -f FILE")
    if args.file == "-":
        try:
            return sys.stdin.read()
        except UnicodeDecodeError:
            raise UsageError("-f -: standard input is not UTF-8 text") from None
    try:
        with open(args.file, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"-f: cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"-f: {args.file} is not UTF-8 text") from None


def _validate(text: str, action: str) -> NetworkConfig:
    try:
        return parse_config(text)
    except ConfigError as exc:
        raise ConfigError(f"invalid network config{action}: {exc}") from None


def _canonical(value: str | bytes) -> str | None:
    """Key order and spacing do not matter; true vs 1 does (json.loads(...) == would say equal)."""
    try:
        return json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError):
        return None


def _stored_config(ctx: Context) -> KeyValue:
    key = config_key(ctx.prefix)
    kv = ctx.store.get(key)
    if kv is None:
        raise ConfigError(
            f"network config key {key} not found in etcd; write it with `{PROG} config set "
            f"'{EXAMPLE_CONFIG}'` or check --etcd-prefix"
        )
    return kv


def cmd_config_show(ctx: Context, args: argparse.Namespace) -> int:
    kv = _stored_config(ctx)
    if args.effective:
        config = _validate(kv.value.decode("utf-8", "replace"), " in etcd")
        for warning in config.warnings:
            _warn(warning)
        print(config_to_json(config))
        return EXIT_OK
    text = kv.value.decode("utf-8", "replace")
    if ctx.json_output:
        try:
            _emit_json(json.loads(text))
        except ValueError:
            raise ConfigError(
                f"{kv.key} does not hold JSON; show it as stored with `{PROG} config show`"
            ) from None
        return EXIT_OK
    print(text.rstrip("\n"))
    try:  # the raw value is shown as is; whether agents would accept it goes to stderr
        for warning in parse_config(kv.value).warnings:
            _warn(warning)
    except ConfigError as exc:
        _warn(f"the stored config is invalid, agents will refuse it: {exc}")
    return EXIT_OK


def cmd_config_validate(ctx: Context, args: argparse.Namespace) -> int:
    config = _validate(_read_config_input(args), "")
    for warning in config.warnings:
        _warn(warning)
    if ctx.json_output:
        _emit_json(
            {
                "valid": True,
                "warnings": list(config.warnings),
                "effective": json.loads(config_to_json(config)),
            }
        )
    else:
        print("config is valid; effective config:")
        print(config_to_json(config))
    return EXIT_OK


def cmd_config_set(ctx: Context, args: argparse.Namespace) -> int:
    text = _read_config_input(args).strip()
    config = _validate(text, "; nothing written")
    for warning in config.warnings:
        _warn(warning)
    key = config_key(ctx.prefix)
    current = ctx.store.get(key)
    unchanged = current is not None and _canonical(current.value) == _canonical(text)
    revision: int | None = None
    if unchanged:
        message = f"unchanged: {key} already holds this config"
    elif args.dry_run:
        message = f"dry run: config is valid; would write {key}"
    else:
        revision = _write_config(ctx.store, key, text, current)
        message = f"wrote {key} (revision {revision})"
        if current is not None:
            message += "; running agents read the config at start: restart them to apply it"
    if ctx.json_output:
        _emit_json(
            {
                "key": key,
                "changed": revision is not None,
                "unchanged": unchanged,
                "dry_run": bool(args.dry_run),
                "revision": revision,
                "warnings": list(config.warnings),
            }
        )
    else:
        print(message)
    return EXIT_OK


def _write_config(store: Store, key: str, text: str, current: KeyValue | None) -> int:
    """Compare-and-swap, so that a concurrent edit is not silently overwritten."""
    if current is None:
        written = store.create(key, text)
    else:
        written = store.replace(key, text, current.mod_revision)
    if not written:
        raise FlannelError(f"{key} was changed by someone else meanwhile; nothing written, retry")
    kv = store.get(key)
    return kv.mod_revision if kv is not None else 0


# -- leases ------------------------------------------------------------------------------


def format_ttl(seconds: int) -> str:
    """86340 -> '23h59m', 125 -> '2m5s', 7 -> '7s' (minutes are enough once hours show)."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _expires(lease: Lease) -> str:
    if lease.is_reservation:
        return "reserved"
    if lease.expires_in is None:
        return "expired"  # the etcd lease is gone; its key goes with it in a moment
    return format_ttl(lease.expires_in)


def _vtep_mac(lease: Lease) -> str:
    data = lease.attrs.backend_data or {}
    mac = data.get("VtepMAC") if lease.attrs.backend_type == "vxlan" else None
    return str(mac) if mac else "-"


def _lease_json(lease: Lease) -> dict[str, Any]:
    data = lease.attrs.backend_data
    return {
        "subnet": str(lease.subnet),
        "public_ip": str(lease.attrs.public_ip),
        "backend": lease.attrs.backend_type,
        "expires_in": None if lease.is_reservation else lease.expires_in,
        "reserved": lease.is_reservation,
        "backend_data": dict(data) if data is not None else None,
    }


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def cmd_leases_list(ctx: Context, args: argparse.Namespace) -> int:
    manager = ctx.manager
    leases, _ = manager.list_leases()
    leases = sorted((manager.with_expiry(lease) for lease in leases), key=lambda x: x.subnet)
    if ctx.json_output:
        _emit_json([_lease_json(lease) for lease in leases])
        return EXIT_OK
    if not leases:
        print(f"no subnet leases under {subnets_prefix(ctx.prefix)}")
        return EXIT_OK
    rows = [
        [
            str(lease.subnet),
            str(lease.attrs.public_ip),
            lease.attrs.backend_type or "-",
            _expires(lease),
            _vtep_mac(lease),
        ]
        for lease in leases
    ]
    print(format_table(("SUBNET", "PUBLIC-IP", "BACKEND", "EXPIRES", "VTEP-MAC"), rows))
    return EXIT_OK


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """'10.5.3.0/24' or flannel's key name '10.5.3.0-24'; UsageError otherwise."""
    subnet = parse_key_name(text) if "-" in text else None
    if subnet is not None:
        return subnet
    if "/" not in text:
        raise UsageError(f"SUBNET: {text!r} has no prefix length; write it as e.g. 10.5.3.0/24")
    try:
        return ipaddress.IPv4Network(text)
    except ipaddress.NetmaskValueError:
        raise UsageError(f"SUBNET: {text!r} has an invalid prefix length") from None
    except ValueError:
        try:
            masked = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            raise UsageError(f"SUBNET: {text!r} is not an IPv4 subnet like 10.5.3.0/24") from None
        raise UsageError(f"SUBNET: {text!r} has host bits set; did you mean {masked}?") from None


def parse_public_ip(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(convert_ipv4(text))
    except ValueError as exc:
        raise UsageError(f"{what}: {text!r} {exc}") from None


def cmd_leases_reserve(ctx: Context, args: argparse.Namespace) -> int:
    subnet = parse_subnet(args.subnet)
    public_ip = parse_public_ip(args.public_ip, "PUBLIC_IP")
    manager = ctx.manager
    config = manager.get_config()
    before = manager.get_lease(subnet)
    lease, changed = manager.reserve(config, subnet, public_ip)
    if not changed:
        message = f"unchanged: {subnet} is already reserved for {public_ip}"
    elif before is not None:
        message = f"reserved {subnet} for {public_ip} (its lease became a reservation)"
    else:
        message = f"reserved {subnet} for {public_ip}"
    if ctx.json_output:
        _emit_json({**_lease_json(lease), "changed": changed})
    else:
        print(message)
    return EXIT_OK


def cmd_leases_release(ctx: Context, args: argparse.Namespace) -> int:
    subnet = parse_subnet(args.subnet)
    public_ip = parse_public_ip(args.public_ip, "--public-ip") if args.public_ip else None
    manager = ctx.manager
    existing = manager.get_lease(subnet)
    if existing is None:
        if not args.ignore_missing:
            raise FlannelError(
                f"no lease or reservation for {subnet} under {subnets_prefix(ctx.prefix)}; "
                f"see `{PROG} leases list` (or pass --ignore-missing)"
            )
        released = False
        message = f"unchanged: no lease or reservation for {subnet}"
    else:
        if not manager.release(subnet, public_ip):
            raise FlannelError(f"{subnet} changed while releasing it; nothing deleted, retry")
        released = True
        kind = "reservation" if existing.is_reservation else "lease"
        message = f"released {subnet} ({kind} of {existing.attrs.public_ip})"
        if not existing.is_reservation:
            message += "; if its flanneld still runs it will claim a subnet again"
    if ctx.json_output:
        _emit_json(
            {
                "subnet": str(subnet),
                "released": released,
                "public_ip": str(existing.attrs.public_ip) if existing else None,
                "reserved": existing.is_reservation if existing else None,
            }
        )
    else:
        print(message)
    return EXIT_OK


# -- version -----------------------------------------------------------------------------


def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.json_output:
        _emit_json({"version": __version__})
    else:
        print(f"{PROG} (pyflannel) {__version__}")
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps prose to the terminal but keeps multi-line text (the examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _leaf(
    group: Any,
    name: str,
    handler: Callable[[Context, argparse.Namespace], int],
    summary: str,
    *,
    description: str,
    epilog: str = "",
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _config_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "json", nargs="?", metavar="JSON", help=f"the config text, e.g. '{EXAMPLE_CONFIG}'"
    )
    parser.add_argument(
        "-f", "--file", metavar="FILE", help="read the config from FILE ('-' for stdin)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Inspect and administer a flannel network stored in etcd v3: the network config "
            "and the subnet leases and reservations of the nodes. Uses the same etcd options "
            "and FLANNELD_* environment variables as flanneld."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG} config set '{EXAMPLE_CONFIG}'\n"
            f"  {PROG} leases list\n"
            f"  {PROG} leases reserve 10.5.3.0/24 192.0.2.10\n"
            f"  set -a; . /etc/flannel/options.env; {PROG} -o json leases list"
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} (pyflannel) {__version__}")
    _add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    config = commands.add_parser(
        "config",
        help="show, validate or write the network config",
        formatter_class=_HelpFormatter,
        description=f"The network config: the JSON in <prefix>/config ({DEFAULT_PREFIX}/config).",
    )
    config_cmds = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = _leaf(
        config_cmds,
        "show",
        cmd_config_show,
        "print the config",
        description=(
            "Print the config as stored in etcd. A stored config the agents would refuse is still "
            "printed, with the reason on stderr."
        ),
    )
    show.add_argument(
        "--effective",
        action="store_true",
        help="print the validated config with every default filled in (what agents use)",
    )
    setter = _leaf(
        config_cmds,
        "set",
        cmd_config_set,
        "validate and write the config",
        description=(
            "Validate the config and write it to etcd. An invalid config is refused with the "
            "field at fault and nothing is written; unknown keys are written but warned about. "
            "A config semantically equal to the stored one is not written again. Agents read the "
            "config when they start: restart them after changing it."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG} config set '{EXAMPLE_CONFIG}'\n"
            f"  {PROG} config set -f network.json --dry-run\n"
            f"  generate-config | {PROG} config set -f -"
        ),
    )
    _config_source(setter)
    setter.add_argument(
        "--dry-run", action="store_true", help="validate and compare only; write nothing"
    )
    validate = _leaf(
        config_cmds,
        "validate",
        cmd_config_validate,
        "validate a config without touching etcd",
        description=(
            "Validate a config as the agents would and print it with defaults filled in. "
            "Does not contact etcd."
        ),
    )
    _config_source(validate)

    leases = commands.add_parser(
        "leases",
        help="list, reserve or release subnet leases",
        formatter_class=_HelpFormatter,
        description=(
            "Subnet leases under <prefix>/subnets/. A lease carries an etcd lease and expires "
            "unless its agent renews it; a reservation has none and stays until released."
        ),
    )
    lease_cmds = leases.add_subparsers(dest="leases_command", metavar="ACTION", required=True)
    listing = _leaf(
        lease_cmds,
        "list",
        cmd_leases_list,
        "list leases and reservations",
        description=(
            "List every lease and reservation, sorted by subnet. EXPIRES is the time left on the "
            "etcd lease, or 'reserved'; VTEP-MAC is the vxlan device address of the node."
        ),
    )
    reserve = _leaf(
        lease_cmds,
        "reserve",
        cmd_leases_reserve,
        "reserve a subnet for a node",
        description=(
            "Reserve SUBNET for the node with PUBLIC_IP: the key gets no expiry, and the node's "
            "agent takes this subnet whenever it starts. A lease the node already holds on SUBNET "
            "becomes a reservation; a subnet held by another node is refused."
        ),
        epilog=f"example:\n  {PROG} leases reserve 10.5.3.0/24 192.0.2.10",
    )
    reserve.add_argument("subnet", metavar="SUBNET", help="e.g. 10.5.3.0/24 (or 10.5.3.0-24)")
    reserve.add_argument("public_ip", metavar="PUBLIC_IP", help="the node's public IP")
    release = _leaf(
        lease_cmds,
        "release",
        cmd_leases_release,
        "delete a lease or reservation",
        description=(
            "Delete the lease or reservation of SUBNET. A node whose agent still runs loses its "
            "subnet and claims one again."
        ),
        epilog=f"example:\n  {PROG} leases release 10.5.3.0/24 --public-ip 192.0.2.10",
    )
    release.add_argument("subnet", metavar="SUBNET", help="e.g. 10.5.3.0/24 (or 10.5.3.0-24)")
    release.add_argument(
        "--public-ip", metavar="IP", help="release only if the subnet is held by this node"
    )
    release.add_argument(
        "--ignore-missing", action="store_true", help="exit 0 when there is nothing to release"
    )

    version = _leaf(
        commands, "version", cmd_version, "print the version", description="Print the version."
    )

    for leaf in (show, setter, validate, listing, reserve, release, version):
        _add_common(leaf, top=False)
    return parser


# -- main --------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """Writes to the sys.stderr of the moment (tests swap it), prefixed like our errors."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{PROG}: {record.levelname.lower()}: {self.format(record)}", file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logging_to_stderr(debug: bool) -> Iterator[None]:
    """Route pyflannel's log records (e.g. 'ignoring key ...') to stderr while a command runs.

    Undone afterwards, so that main() can run inside another program (the tests) without
    changing its logging.
    """
    handler = _StderrHandler()
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 error, 2 usage)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    with _logging_to_stderr(bool(args.debug)):
        return _run(args, os.environ if environ is None else environ)


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    ctx: Context | None = None
    try:
        options, prefix = connection(args, environ)
        ctx = Context(options, prefix, json_output=args.output == "json")
        return int(args.handler(ctx, args))
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except FlannelError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (`| head`); point stdout at /dev/null so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return _fail(f"unexpected error: {type(exc).__name__}: {detail} {DEBUG_HINT}", EXIT_ERROR)
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    raise SystemExit(main())
