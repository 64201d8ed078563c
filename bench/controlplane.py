"""Control-plane benchmark: an agent joining a big vxlan network, and what it costs at rest.

In a one-host namespace lab with the lab's etcd, N peer leases are written first (vxlan,
Network 10.128.0.0/9, /24 subnets; the peers' public IPs cycle through 198.51.100.0/24 and
203.0.113.0/24: kernel state only, nothing is ever sent to them). Then, per N:
- join: from the agent's start to all N routes in the kernel (s), the agent's peak RSS (MB);
- lease -> route: a new lease put in etcd until its route shows in the kernel (`ip monitor`),
  p50 / p99 over a number of leases written one by one (ms);
- idle CPU: the agent's CPU time over a quiet window, as % of one core;
- etcd requests per lease renewal: gRPC requests etcd served in 10 s around the agent's first
  renewal (--subnet-lease-ttl 130, renew margin 1 minute: 70 s after the start), minus the
  quiet rate (not in --short).

    python bench/controlplane.py [--short] [--leases 1000,5000] [--json FILE]

Needs root and etcd. Bounded: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from report import save_json  # noqa: E402  (bench/ is the script's directory)

from pyflannel_lab import Lab  # noqa: E402
from pyflannel_lab.agents import HEALTHZ_PORT  # noqa: E402
from pyflannel_lab.leases import CONFIG, FILL, PUBLIC, fill, subnet  # noqa: E402

PREFIX = "/coreos.com/network"
# Runs in a lab host: one lease per line read on stdin (n), answered with "n <monotonic time
# right after the put>" (CLOCK_MONOTONIC is one clock for every process on the machine).
FILL_ONE = (
    FILL.split("for n in range", maxsplit=1)[0]
    + r"""
import time
for line in sys.stdin:
    n = int(line)
    key = f"/coreos.com/network/subnets/10.{128 + n // 256}.{n % 256}.0-24"
    mac = "0e:00:%02x:%02x:%02x:01" % (n >> 16, (n >> 8) & 255, n & 255)
    value = {"PublicIP": public[n % len(public)], "PublicIPv6": None, "BackendType": "vxlan",
             "BackendData": {"VNI": 1, "VtepMAC": mac}}
    store.put(key, json.dumps(value, separators=(",", ":")), lease)
    print(n, time.monotonic(), flush=True)
"""
)
ROUTE_RE = re.compile(r"^(10\.\d+\.\d+\.0/24) via ")


def agent_args(lab: Lab, tmp: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pyflannel",
        f"--etcd-endpoints={lab.etcd_endpoint}",
        "--iface=eth0",
        f"--subnet-file={tmp / 'subnet.env'}",
        f"--healthz-port={HEALTHZ_PORT}",
        "--subnet-lease-ttl=130",  # with the 1-minute margin: the first renewal at 70 s
        "--subnet-lease-renew-margin=1",
    ]


def routes_in_kernel(lab: Lab) -> int:
    out = lab.run("h1", "ip", "-4", "route", "show", "dev", "flannel.1", check=False).stdout
    return sum(1 for line in out.splitlines() if " via " in line)


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount, _unit = line.split()
            values[name.rstrip(":")] = int(amount)  # kB
    return values


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, USER_HZ


def etcd_requests(lab: Lab) -> float:
    """gRPC requests etcd has handled so far (its /metrics)."""
    out = lab.run("sw", "curl", "-s", f"{lab.etcd_endpoint}/metrics", timeout=10).stdout
    total = 0.0
    for line in out.splitlines():
        if line.startswith("grpc_server_handled_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def lease_to_route(lab: Lab, first: int, count: int, own: str) -> list[float]:
    """Put `count` new leases one by one (never on `own`, the agent's subnet); seconds from
    each put to its route in the kernel."""
    monitor = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("h1"), "ip", "-o", "monitor", "route"],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    seen: dict[str, float] = {}
    event = threading.Condition()

    def read() -> None:
        assert monitor.stdout is not None
        for line in monitor.stdout:
            match = ROUTE_RE.match(line)
            if match:
                with event:
                    seen.setdefault(match.group(1), time.monotonic())
                    event.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    writer = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("h1"), sys.executable, "-c", FILL_ONE,
         lab.etcd_endpoint, "0", "0", json.dumps(PUBLIC)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )  # fmt: skip
    assert writer.stdin is not None and writer.stdout is not None
    try:
        time.sleep(0.5)
        latencies = []
        numbers = [n for n in range(first, first + count + 1) if subnet(n) != own][:count]
        for n in numbers:
            wanted = subnet(n)
            writer.stdin.write(f"{n}\n")
            writer.stdin.flush()
            put_done = float(writer.stdout.readline().split()[1])
            with event:
                event.wait_for(lambda s=wanted: s in seen, timeout=10)
            if wanted not in seen:
                raise RuntimeError(f"no route for {wanted} within 10 s")
            latencies.append(seen[wanted] - put_done)
            time.sleep(0.02)
        return latencies
    finally:
        for proc in (writer, monitor):
            proc.terminate()
            proc.wait(5)


def own_subnet(tmp: Path) -> str:
    for line in (tmp / "subnet.env").read_text().splitlines():
        if line.startswith("FLANNEL_SUBNET="):
            address = line.split("=", 1)[1]
            return str(ipaddress.IPv4Interface(address).network)
    raise RuntimeError("no FLANNEL_SUBNET in the agent's subnet.env")


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(leases: int, new_leases: int, quiet: float, renewal: bool) -> dict[str, Any]:
    lab = Lab(name_prefix=f"pfc{secrets.token_hex(2)}", hosts=1, containers_per_host=0)
    try:
        lab.up()
        lab.start_etcd()
        lab.etcdctl("put", f"{PREFIX}/config", CONFIG)
        fill(lab, 0, leases)
        assert lab.tmpdir is not None
        log = lab.tmpdir / "agent.log"
        started = time.perf_counter()
        agent = lab.popen("h1", *agent_args(lab, lab.tmpdir), log_path=log)
        deadline = started + 120
        while routes_in_kernel(lab) < leases:
            if time.perf_counter() > deadline or agent.poll() is not None:
                raise RuntimeError(f"join not done: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        join = time.perf_counter() - started
        rss = proc_status(agent.pid)
        # Quiet: after the first reconcile pass (8-12 s after the start: the first is a full
        # one), before the first renewal (70 s); no event.
        time.sleep(max(0.0, started + max(join + 3, 13) - time.perf_counter()))
        cpu_before, t0, before = cpu_seconds(agent.pid), time.perf_counter(), etcd_requests(lab)
        time.sleep(quiet)
        elapsed = time.perf_counter() - t0
        idle = (cpu_seconds(agent.pid) - cpu_before) / elapsed
        quiet_rate = (etcd_requests(lab) - before) / elapsed
        per_renewal = None
        if renewal:  # a 10 s window around the renewal, minus the quiet rate
            time.sleep(max(0.0, started + 65 - time.perf_counter()))
            before, t0 = etcd_requests(lab), time.perf_counter()
            time.sleep(10)
            window = etcd_requests(lab) - before
            per_renewal = round(window - quiet_rate * (time.perf_counter() - t0), 1)
        try:
            latency = lease_to_route(lab, leases, new_leases, own_subnet(lab.tmpdir))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; the agent's log ends: {log.read_text()[-1500:]}") from None
        lab.stop(agent)
        renewed = "renewed" in log.read_text()
        return {
            "leases": leases,
            "join_s": round(join, 3),
            "rss_mb": round(rss["VmRSS"] / 1024, 1),
            "peak_rss_mb": round(rss["VmHWM"] / 1024, 1),
            "lease_to_route_p50_ms": round(pct(latency, 0.5) * 1000, 2),
            "lease_to_route_p99_ms": round(pct(latency, 0.99) * 1000, 2),
            "idle_cpu_percent": round(idle * 100, 3),
            "etcd_requests_per_renewal": per_renewal,
            "etcd_requests_per_s_idle": round(quiet_rate, 2),
            "renewal_logged": renewed,
        }
    finally:
        lab.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leases", default="1000,5000", help="comma-separated peer counts")
    parser.add_argument("--new-leases", type=int, default=100, help="for lease -> route")
    parser.add_argument("--quiet", type=float, default=20.0, help="idle window (s)")
    parser.add_argument("--short", action="store_true", help="CI variant: 1000 leases")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.short:
        args.leases, args.new_leases, args.quiet = "1000", 30, 10.0  # about 30 s
    counts = [int(n) for n in args.leases.split(",") if n]
    if not counts or not all(1 <= n <= 30000 for n in counts) or not 1 <= args.new_leases <= 500:
        parser.error("use --leases 1..30000 (comma-separated), --new-leases 1..500")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = []
    for n in counts:
        print(f"[controlplane] {n} leases", file=sys.stderr, flush=True)
        results.append(measure(n, args.new_leases, args.quiet, renewal=not args.short))
        print(json.dumps(results[-1]))
    report = {"kind": "controlplane", "started": started, "runs": results}
    save_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
