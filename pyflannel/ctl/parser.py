"""flannelctl's argparse tree (errors raised as UsageError, not printed) and `version`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from pyflannel import __version__
from pyflannel.ctl.bgp_commands import DEFAULT_BIRD_SOCKET, cmd_bgp_status
from pyflannel.ctl.config_commands import (
    EXAMPLE_CONFIG,
    cmd_config_set,
    cmd_config_show,
    cmd_config_validate,
)
from pyflannel.ctl.context import EXIT_OK, PROG, Context, _emit_json
from pyflannel.ctl.lease_commands import cmd_leases_list, cmd_leases_release, cmd_leases_reserve
from pyflannel.ctl.options import _add_common
from pyflannel.errors import UsageError
from pyflannel.etcd_options import DEFAULT_PREFIX


def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.json_output:
        _emit_json({"version": __version__})
    else:
        print(f"{PROG} (pyflannel) {__version__}")
    return EXIT_OK


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

    bgp = commands.add_parser(
        "bgp",
        help="the node's BGP sessions (BGP mode)",
        formatter_class=_HelpFormatter,
        description="The BGP routed mode's sessions, read from BIRD's control socket.",
    )
    bgp_cmds = bgp.add_subparsers(dest="bgp_command", metavar="ACTION", required=True)
    status = _leaf(
        bgp_cmds,
        "status",
        cmd_bgp_status,
        "each peer's session state and since when",
        description=(
            "Each BGP peer of this node's bird (node-to-node mesh and external peers): the "
            "peer's address, the session's state, since when, and BIRD's info (Established "
            "once routes flow), as `calicoctl node status` shows them. Does not contact etcd."
        ),
        epilog=f"example:\n  {PROG} bgp status --bird-socket /run/bird/bird.ctl",
    )
    status.add_argument(
        "--bird-socket",
        default=DEFAULT_BIRD_SOCKET,
        metavar="PATH",
        help="BIRD's control socket (default: %(default)s)",
    )

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
