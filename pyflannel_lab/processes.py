"""Processes of a lab: commands run in its namespaces, and stopping them by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyflannel.errors import UsageError
from pyflannel_lab.layout import LabLayout, Node


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, grace: float = 3.0) -> None:
    """SIGTERM one process, SIGKILL it if still there after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_popen(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def namespace_pids(ns: str) -> list[int]:
    """PIDs of the processes living in a namespace."""
    out = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10, check=False
    )
    return [int(p) for p in out.stdout.split()]


class LabProcesses(LabLayout):
    """Run commands inside the lab's namespaces; long-running ones are kept for down()."""

    def _exec_cmd(self, node: Node, cmd: tuple[str, ...]) -> list[str]:
        if not cmd:
            raise UsageError("no command given to run in the lab")
        return ["ip", "netns", "exec", self.ns(node), *cmd]

    def run(
        self,
        node: Node,
        *cmd: str,
        check: bool = True,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a lab namespace and wait for it (bounded by timeout).

        env: variables added to this process's environment; stdin: the command's input.
        """
        return subprocess.run(
            self._exec_cmd(node, cmd),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env={**os.environ, "ETCDCTL_API": "3", **(env or {})},
            input=stdin,
        )

    def popen(self, node: Node, *cmd: str, log_path: str | Path) -> subprocess.Popen[bytes]:
        """Start a long-running process in a namespace; down() stops it by PID."""
        log = open(log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self._logs.append(log)
        # `ip netns exec` execs the command, so the PID is the command's own.
        proc = subprocess.Popen(
            self._exec_cmd(node, cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 3.0) -> int:
        """Stop one process started by popen() (SIGTERM, then SIGKILL); return its exit code."""
        stop_popen(proc, grace)
        return int(proc.returncode)

    def sysctl(self, node: Node, key: str, value: str) -> None:
        self.run(node, "sysctl", "-qw", f"{key}={value}")
