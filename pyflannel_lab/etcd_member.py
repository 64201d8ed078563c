"""The lab's etcd: one member on the switch namespace, and etcdctl against it."""

from __future__ import annotations

import subprocess
import time

from pyflannel.errors import StoreUnavailableError, UsageError
from pyflannel_lab.layout import Node
from pyflannel_lab.processes import LabProcesses
from pyflannel_lab.state_file import LabStateFile

ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"


class LabEtcd(LabProcesses, LabStateFile):
    """Starts the lab's single-member etcd (its PID goes into the state file)."""

    def start_etcd(self, timeout: float = 15.0) -> str:
        """Run a single-member etcd on the switch (reachable from hosts); return its endpoint."""
        if self.tmpdir is None:
            raise UsageError("the lab is not up; call up() before start_etcd()")
        if self._etcd is not None and self._etcd.poll() is None:
            return self.etcd_endpoint
        peer = "http://127.0.0.1:2380"
        log_path = self.tmpdir / "etcd.log"
        self._etcd = self.popen(
            "sw",
            ETCD_BIN,
            "--name=lab",
            f"--data-dir={self.tmpdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_endpoint}",
            f"--advertise-client-urls={self.etcd_endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=lab={peer}",
            "--log-level=warn",
            log_path=log_path,
        )
        self._etcd_pid = self._etcd.pid
        self.save_state()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._etcd.poll() is not None:
                break
            if self.etcdctl("endpoint", "health", check=False, timeout=5).returncode == 0:
                return self.etcd_endpoint
            time.sleep(0.1)
        raise StoreUnavailableError(
            f"lab etcd on {self.etcd_endpoint} did not become healthy within {timeout:.0f} s; "
            f"see {log_path}"
        )

    @property
    def etcd_pid(self) -> int | None:
        return self._etcd_pid

    def etcdctl(
        self, *args: str, node: Node = "sw", check: bool = True, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run etcdctl (v3 API) against the lab's etcd from a lab namespace."""
        return self.run(
            node,
            ETCDCTL_BIN,
            f"--endpoints={self.etcd_endpoint}",
            "--dial-timeout=2s",
            "--command-timeout=3s",
            *args,
            check=check,
            timeout=timeout,
        )
