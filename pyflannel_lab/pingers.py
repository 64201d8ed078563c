"""Pings at a fixed rate between every ordered pair of lab containers, to measure gaps.

A change on a running cluster (a backend switch rolling through the nodes, an agent restart)
is judged by what the workloads see: the longest run of lost echo replies of each pair. Every
pinger is bounded by itself (`ping -c`; not -w, with which ping quits at the first ICMP error
such as "Destination Net Unreachable"), so a test that dies leaves nothing running for long;
Lab.down() stops them too (they are started with Lab.popen).
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyflannel_lab.lab import Lab

REPLY = re.compile(r"bytes from [0-9.]+: icmp_seq=(\d+) ")
SENT = re.compile(r"(\d+) packets transmitted")


@dataclass(frozen=True)
class Gap:
    """What one pinger saw: requests sent, longest run of lost replies, lost at the end."""

    sent: int
    longest: int
    trailing: int
    interval: float

    @property
    def seconds(self) -> float:
        return self.longest * self.interval


def gap_of(output: str, interval: float) -> Gap:
    """The gap in one `ping -n` output (iputils: icmp_seq counts from 1)."""
    sent = SENT.search(output)
    if sent is None:
        raise AssertionError(f"pinger died before it was stopped:\n{output[-500:]}")
    count = int(sent.group(1))
    received = {int(seq) for seq in REPLY.findall(output)}
    longest = run = 0
    for seq in range(1, count + 1):
        run = 0 if seq in received else run + 1
        longest = max(longest, run)
    return Gap(count, longest, run, interval)


class Pingers:
    """`ping -i interval` from every container to every other one, until stop()."""

    def __init__(
        self, lab: Lab, workdir: Path, *, interval: float = 0.1, max_seconds: int = 180
    ) -> None:
        self.lab = lab
        self.workdir = workdir
        self.interval = interval
        self.max_seconds = max_seconds
        self._running: dict[tuple[str, str], tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for src, dst in itertools.permutations(self.lab.container_names(), 2):
            log = self.workdir / f"ping-{src}-{dst}.log"
            log.unlink(missing_ok=True)
            proc = self.lab.popen(
                src,
                "ping", "-n", "-i", f"{self.interval:g}", "-W", "1",
                "-c", str(int(self.max_seconds / self.interval)), self.lab.container_ip_of(dst),
                log_path=log,
            )  # fmt: skip
            self._running[(src, dst)] = (proc, log)

    def stop(self) -> dict[tuple[str, str], Gap]:
        """SIGINT every pinger (ping prints its summary) and read the gaps."""
        for proc, _ in self._running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        gaps = {}
        for pair, (proc, log) in self._running.items():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.lab.stop(proc)
            gaps[pair] = gap_of(log.read_text(errors="replace"), self.interval)
        self._running.clear()
        return gaps
