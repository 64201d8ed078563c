"""Control-plane figures on a real etcd (loopback): lease acquisition and watch latency.

    python bench/leasing.py [--rounds 20]

Prints medians and 90th percentiles in milliseconds. Absolute numbers vary with the machine;
compare runs made on the same machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import queue
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyflannel.config import parse_config
from pyflannel.subnet.lease import LeaseAttrs
from pyflannel.subnet.manager import SubnetManager
from pyflannel.subnet.watch import LeaseEvent, LeaseWatcher
from tests.etcd_harness import make_store, start_server

PREFIX = "/coreos.com/network"
CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name:<40} median {statistics.median(ms):7.2f} ms   p90 {percentile(ms, 0.9):7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    server = start_server()
    try:
        store = make_store(server)
        store.put(f"{PREFIX}/config", CONFIG)
        manager = SubnetManager(store, PREFIX)
        config = parse_config(CONFIG)

        def timed_acquire() -> list[float]:
            seconds = []
            for i in range(args.rounds):
                attrs = LeaseAttrs(ipaddress.IPv4Address(f"198.51.100.{i + 1}"), "vxlan")
                started = time.perf_counter()
                manager.acquire(config, attrs)
                seconds.append(time.perf_counter() - started)
            return seconds

        report("acquire a new lease", timed_acquire())
        # Same public IPs again: each finds and adopts its own lease, as after an agent restart.
        report("reacquire own lease (agent restart)", timed_acquire())

        events: queue.Queue[tuple[float, LeaseEvent]] = queue.Queue()
        watcher = LeaseWatcher(
            SubnetManager(make_store(server), PREFIX),
            emit=lambda event: events.put((time.perf_counter(), event)),
        )
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        watcher.synced.wait(5)
        while not events.empty():
            events.get()
        latency = []
        for i in range(args.rounds):
            attrs = LeaseAttrs(ipaddress.IPv4Address(f"203.0.113.{i + 1}"), "vxlan")
            started = time.perf_counter()
            lease = manager.acquire(config, attrs)
            seen, event = events.get(timeout=5)
            assert event.lease.subnet == lease.subnet
            latency.append(seen - started)
        report("peer lease claimed -> watch event", latency)
        watcher.stop()
        thread.join(5)
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
