"""flannelctl bgp status: the node's BGP sessions as `calicoctl node status` shows them.

Read from BIRD's control socket (the BGP mode's bird), not from etcd.
"""

from __future__ import annotations

import argparse
import ipaddress

from pyflannel.bgp.birdconf import PeerKind, peer_kind
from pyflannel.bgp.birdctl import BirdControl, BirdError
from pyflannel.ctl.context import EXIT_OK, Context, _emit_json
from pyflannel.errors import FlannelError

DEFAULT_BIRD_SOCKET = "/run/bird/bird.ctl"
PEER_TYPES: dict[PeerKind, str] = {"mesh": "node-to-node mesh", "external": "external"}
HEADER = ("PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO")


def bgp_sessions(control: BirdControl) -> list[dict[str, str]]:
    """One row per BGP protocol of ours (mesh_*, ext_*), sorted by peer address."""
    neighbors = control.neighbors()
    rows = []
    for protocol in control.protocols():
        kind = peer_kind(protocol.name)
        if protocol.proto != "BGP" or kind is None:
            continue
        rows.append(
            {
                "peer_address": neighbors.get(protocol.name, "?"),
                "peer_type": PEER_TYPES[kind],
                "state": protocol.state,
                "since": protocol.since,
                "info": protocol.info,
                "protocol": protocol.name,
            }
        )
    return sorted(rows, key=_address_order)


def _address_order(row: dict[str, str]) -> tuple[int, int]:
    """By address; a protocol whose neighbor BIRD did not list goes last."""
    try:
        return (0, int(ipaddress.IPv4Address(row["peer_address"])))
    except ValueError:
        return (1, 0)


def boxed(rows: list[tuple[str, ...]]) -> str:
    """calicoctl's table: +---+ rules, | cells |, centred header."""
    table = [HEADER, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def line(cells: tuple[str, ...], centre: bool = False) -> str:
        padded = [
            (cell.center(width) if centre else cell.ljust(width))
            for cell, width in zip(cells, widths, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    return "\n".join([rule, line(HEADER, centre=True), rule, *map(line, rows), rule])


def cmd_bgp_status(ctx: Context, args: argparse.Namespace) -> int:
    control = BirdControl(args.bird_socket)
    try:
        sessions = bgp_sessions(control)
    except BirdError as exc:
        raise FlannelError(str(exc)) from None
    if ctx.json_output:
        _emit_json(sessions)
        return EXIT_OK
    print("BIRD is running.\n\nIPv4 BGP status")
    if sessions:
        print(
            boxed(
                [
                    tuple(
                        row[key] for key in ("peer_address", "peer_type", "state", "since", "info")
                    )
                    for row in sessions
                ]
            )
        )
    else:
        print("No IPv4 peers found.")
    return EXIT_OK
