"""Probes of a lab's data path: ping, the container ping matrix, tcpdump captures."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pyflannel.errors import FlannelError
from pyflannel_lab.layout import Node
from pyflannel_lab.processes import LabProcesses, stop_popen


class LabProbes(LabProcesses):
    """What tests ask of the lab's network: does this reach that, what goes over a link."""

    def ping_result(
        self,
        src: Node,
        dst_ip: str,
        *,
        count: int = 1,
        size: int | None = None,
        df: bool = False,
        timeout: float = 1.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ping and return its result (for tests that read ping's messages)."""
        cmd = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", f"{timeout:g}"]
        if size is not None:
            cmd += ["-s", str(size)]
        if df:
            cmd += ["-M", "do"]
        return self.run(src, *cmd, dst_ip, check=False, timeout=count * (timeout + 0.5) + 5)

    def ping(
        self,
        src: Node,
        dst_ip: str,
        *,
        count: int = 1,
        size: int | None = None,
        df: bool = False,
        timeout: float = 1.0,
    ) -> bool:
        """True when every echo request was answered. size is the ICMP payload (MTU - 28)."""
        result = self.ping_result(src, dst_ip, count=count, size=size, df=df, timeout=timeout)
        return result.returncode == 0

    def ping_matrix(self, timeout: float = 1.0) -> dict[tuple[str, str], bool]:
        """Ping between every ordered pair of distinct containers, in parallel."""
        names = self.container_names()
        pairs = list(itertools.permutations(names, 2))
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = pool.map(
                lambda p: self.ping(p[0], self.container_ip_of(p[1]), timeout=timeout), pairs
            )
            return dict(zip(pairs, results, strict=True))

    def capture(
        self,
        node: Node,
        iface: str,
        bpf_filter: str = "",
        *,
        count: int = 1,
        timeout: float = 5.0,
        during: Callable[[], object] | None = None,
    ) -> list[str]:
        """tcpdump -n -l on an interface until `count` packets or `timeout`; return its lines.

        `during` runs once tcpdump is listening, to make the traffic to be seen.
        """
        cmd = ["tcpdump", "-n", "-l", "--immediate-mode", "-i", iface, "-c", str(count)]
        if bpf_filter:
            cmd.append(bpf_filter)
        proc = subprocess.Popen(
            self._exec_cmd(node, tuple(cmd)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []
        errors: list[str] = []
        listening = threading.Event()

        def read_out() -> None:
            assert proc.stdout is not None
            lines.extend(line.rstrip("\n") for line in proc.stdout if line.strip())

        def read_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                errors.append(line.rstrip("\n"))
                if "listening on" in line:
                    listening.set()
            listening.set()  # tcpdump exited: stop waiting

        readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
        for t in readers:
            t.start()
        deadline = time.monotonic() + timeout
        try:
            listening.wait(timeout)
            if not any("listening on" in e for e in errors) and proc.wait(timeout=1) != 0:
                raise FlannelError(f"tcpdump on {node}/{iface} failed: {'; '.join(errors)}")
            if during is not None:
                during()
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_popen(proc)
            for t in readers:
                t.join(timeout=2)
        return lines
