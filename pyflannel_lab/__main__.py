"""Bring a lab up or down by hand: python -m pyflannel_lab up|down|status [--prefix P].

`up --backend vxlan` also writes the network config, runs one pyflannel agent per host, gives
every host a container bridge on its leased subnet (as Docker would) and prints the container
ping matrix plus one line per host. `--flanneld 1,3` runs the real flanneld v0.20.2 on those
hosts instead (a mixed cluster; pyflannel_lab/peers.py says where the binary comes from).
"""

from __future__ import annotations

import argparse
import json
import sys

from pyflannel.errors import FlannelError, UsageError
from pyflannel_lab.agents import BACKENDS, AgentCluster
from pyflannel_lab.lab import Lab, lab_namespaces
from pyflannel_lab.peers import locate_flanneld
from pyflannel_lab.state_file import state_path


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
    up.add_argument(
        "--backend",
        choices=BACKENDS,
        help="also run agents with this backend and print the ping matrix",
    )
    up.add_argument(
        "--flanneld",
        default="",
        metavar="HOSTS",
        help="comma-separated host numbers that run the real flanneld (needs --backend)",
    )
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
    flanneld_hosts = _host_list(args.flanneld, args.hosts)
    if flanneld_hosts and not args.backend:
        raise UsageError("--flanneld needs --backend: it names hosts of a running cluster")
    flanneld = locate_flanneld() if flanneld_hosts else None
    lab = Lab(
        args.prefix,
        hosts=args.hosts,
        underlay=args.underlay,
        overlay_subnets=subnets,
        containers_per_host=args.containers,
    )
    lab.up()
    try:
        if not args.no_etcd or args.backend:
            lab.start_etcd()
        if args.backend:
            cluster = AgentCluster(
                lab, args.backend, flanneld_hosts=flanneld_hosts, flanneld=flanneld
            )
            cluster.put_config()
            cluster.start_all(one_by_one=bool(flanneld_hosts))
            print_cluster(cluster)
            return
    except BaseException:
        lab.down()
        raise
    print(json.dumps(lab.status(), indent=2))


def _host_list(text: str, hosts: int) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--flanneld {text!r}: give host numbers, e.g. 1,3") from None
    bad = [n for n in numbers if not 1 <= n <= hosts]
    if bad:
        raise UsageError(f"--flanneld: host {bad[0]} does not exist; hosts are 1..{hosts}")
    return numbers


def print_cluster(cluster: AgentCluster) -> None:
    lab = cluster.lab
    matrix = lab.ping_matrix(timeout=2.0)
    names = lab.container_names()
    width = max(len(name) for name in names) + 2
    print("ping".ljust(width) + "".join(name.ljust(width) for name in names))
    for src in names:
        cells = ["-" if src == dst else ("ok" if matrix[(src, dst)] else "FAIL") for dst in names]
        print(src.ljust(width) + "".join(cell.ljust(width) for cell in cells))
    for i in lab.host_indexes():
        print(
            f"h{i}: subnet {cluster.subnet(i)}  MTU {cluster.mtu(i)}  backend {cluster.backend}  "
            f"underlay {lab.host_ip(i)}  agent {cluster.kind(i)}"
        )
    failed = [pair for pair, ok in matrix.items() if not ok]
    if failed:
        raise FlannelError("broken pairs: " + ", ".join(f"{a}->{b}" for a, b in failed))


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
