"""Data-plane benchmark: ping RTT and iperf3 TCP throughput per backend, in one run.

Container to container across two lab hosts (namespaces) for host-gw, vxlan, udp and ipip, and
host to host on the bare underlay for reference. Needs root, etcd, iperf3. Absolute numbers
vary between runs and machines; compare the ratios of one run.

    python bench/dataplane.py [--seconds 3] [--pings 20] [--backends host-gw,vxlan,udp,ipip]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pyflannel_lab import Lab  # noqa: E402
from pyflannel_lab.agents import BACKENDS, AgentCluster  # noqa: E402

RTT_RE = re.compile(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/")


@dataclass(frozen=True)
class Result:
    name: str
    mtu: int
    rtt_ms: float
    gbit_s: float


def ping_avg(lab: Lab, src: str, dst: str, count: int) -> float:
    cmd = ["ping", "-n", "-q", "-i", "0.05", "-W", "1", "-c", str(count), dst]
    out = lab.run(src, *cmd, timeout=count + 10).stdout
    match = RTT_RE.search(out)
    if match is None:
        raise RuntimeError(f"ping {src} -> {dst} gave no RTT: {out.strip()}")
    return float(match.group(1))


def iperf_gbit(lab: Lab, client: str, server: str, server_ip: str, seconds: int) -> float:
    """One TCP run of `seconds`; the server (-1) exits after it."""
    assert lab.tmpdir is not None
    log = lab.tmpdir / f"iperf3-{server}.log"
    proc = lab.popen(server, "iperf3", "-s", "-1", "-B", server_ip, log_path=log)
    try:
        cmd = ["iperf3", "-c", server_ip, "-t", str(seconds), "-J"]
        deadline = time.monotonic() + 10
        while True:
            out = lab.run(client, *cmd, check=False, timeout=seconds + 20).stdout
            # iperf3 -J exits 0 even when it could not connect; the JSON says so.
            report: dict[str, Any] = json.loads(out) if out.strip() else {"error": "no output"}
            if "error" not in report or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # server not listening yet
        if "error" in report:
            raise RuntimeError(f"iperf3 {client} -> {server_ip} failed: {report['error']}")
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        lab.stop(proc)


def bench_underlay(seconds: int, pings: int) -> Result:
    lab = Lab(name_prefix=f"pfb{secrets.token_hex(2)}", hosts=2, containers_per_host=0)
    try:
        lab.up()
        dst = lab.host_ip(2)
        rtt = ping_avg(lab, "h1", dst, pings)
        return Result("underlay", 1500, rtt, iperf_gbit(lab, "h1", "h2", dst, seconds))
    finally:
        lab.down()


def bench_backend(backend: str, seconds: int, pings: int) -> Result:
    with AgentCluster.running(backend, hosts=2, prefix="pfb") as cluster:
        lab, dst = cluster.lab, cluster.container_ip(2)
        rtt = ping_avg(lab, "h1c1", dst, pings)
        gbit = iperf_gbit(lab, "h1c1", "h2c1", dst, seconds)
        return Result(backend, cluster.mtu(1), rtt, gbit)


def table(results: list[Result]) -> str:
    base = results[0]
    rows = [
        f"{'path':<10} {'MTU':>5} {'RTT avg ms':>11} {'TCP Gbit/s':>11} {'vs underlay':>12}",
    ]
    for r in results:
        ratio = r.gbit_s / base.gbit_s if base.gbit_s else 0.0
        rows.append(f"{r.name:<10} {r.mtu:>5} {r.rtt_ms:>11.3f} {r.gbit_s:>11.2f} {ratio:>11.0%}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=3, help="iperf3 run length (s)")
    parser.add_argument("--pings", type=int, default=20, help="pings averaged for the RTT")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated list")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not 1 <= args.seconds <= 60 or not 1 <= args.pings <= 1000:
        parser.error(
            f"use backends from {', '.join(BACKENDS)} (unknown: {unknown}), "
            "--seconds 1..60, --pings 1..1000"
        )
    results = [bench_underlay(args.seconds, args.pings)]
    for backend in backends:
        results.append(bench_backend(backend, args.seconds, args.pings))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
