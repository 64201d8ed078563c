"""Bring a lab up or down by hand: python -m pyflannel_lab up|down|status [--prefix P]."""

from __future__ import annotations

import argparse
import json
import sys

from pyflannel.errors import FlannelError, UsageError
from pyflannel_lab.lab import Lab, lab_namespaces, state_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pyflannel_lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create the namespaces (and etcd unless --no-etcd)")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--underlay", default="192.0.2.0/24")
    up.add_argument(
        "--overlay",
        default="",
        help="comma-separated per-host subnets for cbr0, e.g. 10.244.1.0/24,10.244.2.0/24",
    )
    up.add_argument("--containers", type=int, default=1, help="containers per host")
    up.add_argument("--no-etcd", action="store_true", help="do not start the lab's etcd")
    for name in ("up", "down", "status"):
        target = up if name == "up" else sub.add_parser(name)
        target.add_argument("--prefix", default="pft", help="namespace name prefix (pft)")
    return parser


def _up(args: argparse.Namespace) -> None:
    if lab_namespaces(args.prefix) or state_path(args.prefix).exists():
        raise UsageError(
            f"a lab with prefix {args.prefix!r} is already up; "
            f"run `python -m pyflannel_lab down --prefix {args.prefix}` first"
        )
    subnets = [s.strip() for s in args.overlay.split(",") if s.strip()] or None
    lab = Lab(
        args.prefix,
        hosts=args.hosts,
        underlay=args.underlay,
        overlay_subnets=subnets,
        containers_per_host=args.containers,
    )
    lab.up()
    try:
        if not args.no_etcd:
            lab.start_etcd()
    except BaseException:
        lab.down()
        raise
    print(json.dumps(lab.status(), indent=2))


def _down(args: argparse.Namespace) -> None:
    if state_path(args.prefix).exists():
        Lab.from_state(args.prefix).down()
        print(f"lab {args.prefix} is down")
        return
    removed = Lab.cleanup_stale(args.prefix)
    print(f"lab {args.prefix} had no state file; removed {len(removed)} namespaces")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            _up(args)
        elif args.command == "down":
            _down(args)
        else:
            print(json.dumps(Lab.from_state(args.prefix).status(), indent=2))
    except FlannelError as exc:
        print(f"pyflannel_lab: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
