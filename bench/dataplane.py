"""Data-plane benchmark: every path container to container across two lab hosts, in one run.

Paths: the bare underlay (host to host), host-gw, vxlan, udp and ipip (eBPF fast path, and the
packet pump alone), and the real flanneld v0.20.2's udp and vxlan (`../shared/peers`, skipped
with a note when absent). Per path: TCP throughput with 1 and 4 streams (iperf3), RTT p50/p99
(ping every 10 ms), small-packet rate (UDP, 64-byte payloads, iperf3 -b 0) and CPU seconds per
GB (the whole machine's busy time during the 1-stream run over the bytes moved). All clusters
are up at once and the rounds interleave the paths; figures are medians over rounds with their
spread (min..max). Underlay modes: "veth" (offloaded packets cross unsegmented, as in any
namespace or container lab) and "wire" (the hosts' veths checksum and segment in software, as
a NIC puts packets on a wire; see Lab(wire_like=True)).

    python bench/dataplane.py [--short] [--rounds 3] [--seconds 3] [--json FILE]

Needs root, etcd, iperf3. Everything stays inside lab namespaces; every run is bounded
(iperf3 -t, ping -c, subprocess timeouts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from report import dataplane_section, save_json  # noqa: E402  (bench/ is the script's directory)

from pyflannel_lab import Lab  # noqa: E402
from pyflannel_lab.agents import AgentCluster  # noqa: E402
from pyflannel_lab.peers import PeersMissingError, locate  # noqa: E402

TIME_RE = re.compile(r"time=([\d.]+) ms")
PUMP = ["--userspace-fast-path=false"]


@dataclass(frozen=True)
class Path_:
    name: str
    backend: str | None  # None: the bare underlay
    wire_like: bool
    extra_args: tuple[str, ...] = ()
    flanneld: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} ({'wire' if self.wire_like else 'veth'})"


FULL = [
    Path_("direct", None, False),
    Path_("host-gw", "host-gw", False),
    Path_("vxlan", "vxlan", False),
    Path_("udp", "udp", False),
    Path_("udp pump", "udp", False, tuple(PUMP)),
    Path_("ipip", "ipip", False),
    Path_("ipip pump", "ipip", False, tuple(PUMP)),
    Path_("flanneld vxlan", "vxlan", False, flanneld=True),
    Path_("flanneld udp", "udp", False, flanneld=True),
    Path_("direct", None, True),
    Path_("vxlan", "vxlan", True),
    Path_("udp", "udp", True),
    Path_("ipip", "ipip", True),
    Path_("flanneld udp", "udp", True, flanneld=True),
]
SHORT = [p for p in FULL if p.name in ("direct", "vxlan", "udp", "udp pump", "flanneld udp")]


@dataclass
class Figures:
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            metric: {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "n": len(values),
            }
            for metric, values in self.samples.items()
        }


@dataclass
class Target:
    """Where a path's measurements run: client and server nodes and the server's address."""

    lab: Lab
    client: str
    server: str
    server_ip: str
    mtu: int


def busy_seconds() -> float:
    """CPU time the whole machine spent not idle, in seconds (/proc/stat, all CPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / 100.0  # USER_HZ


def iperf(t: Target, seconds: int, *extra: str) -> dict[str, Any]:
    assert t.lab.tmpdir is not None
    log = t.lab.tmpdir / f"iperf3-{t.server}-{secrets.token_hex(2)}.log"
    proc = t.lab.popen(t.server, "iperf3", "-s", "-1", "-B", t.server_ip, log_path=log)
    try:
        cmd = ["iperf3", "-c", t.server_ip, "-t", str(seconds), "-J", *extra]
        deadline = time.monotonic() + 10
        while True:
            out = t.lab.run(t.client, *cmd, check=False, timeout=seconds + 30).stdout
            report: dict[str, Any] = json.loads(out) if out.strip() else {"error": "no output"}
            if "error" not in report or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the server is not listening yet
        if "error" in report:
            raise RuntimeError(f"iperf3 {t.client} -> {t.server_ip}: {report['error']}")
        return report
    finally:
        t.lab.stop(proc)


def measure(t: Target, figures: Figures, seconds: int, pings: int) -> None:
    busy = busy_seconds()
    single = iperf(t, seconds)
    busy = busy_seconds() - busy
    received = single["end"]["sum_received"]
    figures.add("tcp1_gbit", received["bits_per_second"] / 1e9)
    figures.add("cpu_s_per_gb", busy / max(received["bytes"] / 1e9, 1e-9))
    four = iperf(t, seconds, "-P", "4")
    figures.add("tcp4_gbit", four["end"]["sum_received"]["bits_per_second"] / 1e9)
    small = iperf(t, max(1, seconds // 2), "-u", "-b", "0", "-l", "64")
    udp = small["end"]["sum"]
    figures.add("small_kpps", (udp["packets"] - udp["lost_packets"]) / udp["seconds"] / 1e3)
    out = t.lab.run(
        t.client,
        *("ping", "-n", "-i", "0.01", "-W", "1", "-c", str(pings), t.server_ip),
        check=False,
        timeout=pings * 0.05 + 10,
    ).stdout
    times = sorted(float(m) for m in TIME_RE.findall(out))
    if not times:
        raise RuntimeError(f"ping {t.client} -> {t.server_ip}: no replies")
    figures.add("rtt_p50_ms", times[len(times) // 2])
    figures.add("rtt_p99_ms", times[min(len(times) - 1, int(len(times) * 0.99))])


@contextlib.contextmanager
def bring_up(path: Path_, flanneld: Path | None) -> Iterator[Target]:
    prefix = "pfb"
    if path.backend is None:
        lab = Lab(name_prefix=f"{prefix}{secrets.token_hex(2)}", hosts=2, containers_per_host=0,
                  wire_like=path.wire_like)  # fmt: skip
        try:
            lab.up()
            yield Target(lab, "h1", "h2", lab.host_ip(2), 1500)
        finally:
            lab.down()
        return
    kwargs: dict[str, Any] = {"extra_args": list(path.extra_args)}
    if path.flanneld:
        kwargs.update(flanneld_hosts=(1, 2), flanneld=flanneld)
    with AgentCluster.running(
        path.backend, hosts=2, prefix=prefix, wire_like=path.wire_like, **kwargs
    ) as c:
        yield Target(c.lab, "h1c1", "h2c1", c.container_ip(2), c.mtu(1))


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """tcp1/tcp4 of every path over the direct path, kernel vxlan and flanneld's path of the
    same kind, within one underlay mode."""
    out: dict[str, dict[str, float]] = {}
    for label, entry in results.items():
        mode = entry["underlay"]
        name = entry["path"]

        def of(other: str, metric: str, mode: str = mode) -> float | None:
            found = results.get(f"{other} ({mode})")
            return found["figures"][metric]["median"] if found else None

        # Against flanneld: our paths of its kinds (its udp for our udp and userspace ipip).
        kinds = {"udp": "flanneld udp", "ipip": "flanneld udp", "vxlan": "flanneld vxlan"}
        theirs_kind = None if name.startswith("flanneld") else kinds.get(name.split()[0])
        bases = [("direct", "direct"), ("vxlan", "vxlan")]
        if theirs_kind is not None:
            bases.append((theirs_kind, "flanneld"))
        row: dict[str, float] = {}
        for metric in ("tcp1_gbit", "tcp4_gbit"):
            mine = entry["figures"][metric]["median"]
            for base, key in bases:
                theirs = of(base, metric)
                if theirs:
                    row[f"{metric}_vs_{key}"] = mine / theirs
        out[label] = row
    return out


def run(paths: list[Path_], rounds: int, seconds: int, pings: int,
        note: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    flanneld: Path | None = None
    skipped: list[str] = []
    try:
        flanneld = locate().flanneld
    except PeersMissingError as exc:
        skipped = [p.label for p in paths if p.flanneld]
        note(f"flanneld paths skipped: {exc}")
        paths = [p for p in paths if not p.flanneld]
    started = time.time()
    figures = {p.label: Figures() for p in paths}
    with contextlib.ExitStack() as stack:
        targets = {}
        for p in paths:
            note(f"bringing up {p.label}")
            targets[p.label] = stack.enter_context(bring_up(p, flanneld))
        for r in range(rounds):
            for p in paths:
                note(f"round {r + 1}/{rounds}: {p.label}")
                measure(targets[p.label], figures[p.label], seconds, pings)
        mtus = {label: t.mtu for label, t in targets.items()}
    results = {
        p.label: {
            "path": p.name,
            "underlay": "wire" if p.wire_like else "veth",
            "mtu": mtus[p.label],
            "figures": figures[p.label].summary(),
        }
        for p in paths
    }
    return {
        "kind": "dataplane",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds_total": round(time.time() - started, 1),
        "rounds": rounds,
        "seconds_per_run": seconds,
        "pings": pings,
        "paths": results,
        "ratios": ratios(results),
        "skipped": skipped,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="CI variant: 5 paths, 1 round, 1 s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3, help="iperf3 run length (s)")
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.short:
        args.rounds, args.seconds, args.pings = 1, 1, 50
    if not 1 <= args.rounds <= 20 or not 1 <= args.seconds <= 30 or not 10 <= args.pings <= 2000:
        parser.error("use --rounds 1..20, --seconds 1..30, --pings 10..2000")
    report = run(
        SHORT if args.short else FULL,
        args.rounds,
        args.seconds,
        args.pings,
        note=lambda line: print(f"[dataplane] {line}", file=sys.stderr, flush=True),
    )
    print("\n".join(dataplane_section(report)[:-2]))  # the Markdown tables, without the chart
    save_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
