"""A multi-host lab made of network namespaces, for data-plane tests.

Lab puts together its parts, one module each: layout (names, addresses; the namespace layout
is drawn there), network (building it), processes, etcd_member, probes (ping, capture) and
state_file; here are its life cycle: up, down, and cleaning up after a crashed lab.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from pyroute2 import netns

from pyflannel.errors import UsageError
from pyflannel_lab.etcd_member import LabEtcd
from pyflannel_lab.layout import PREFIX_RE, Node, lab_namespaces
from pyflannel_lab.network import LabNetwork
from pyflannel_lab.probes import LabProbes
from pyflannel_lab.processes import namespace_pids, stop_pid, stop_popen
from pyflannel_lab.state_file import state_path

__all__ = ["Lab", "Node", "lab_namespaces"]


class Lab(LabNetwork, LabEtcd, LabProbes):
    """Hosts, containers and an etcd as network namespaces on one machine."""

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> None:
        """Create every namespace; leftovers of an earlier lab with this prefix go first."""
        self.cleanup_stale(self.prefix)
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"pyflannel-lab-{self.prefix}-"))
        try:
            self._make_switch()
            for i in self.host_indexes():
                self._make_host(i)
            if self._initial_subnets:
                for i, net in zip(self.host_indexes(), self._initial_subnets, strict=True):
                    self.add_container_bridge(i, str(net))
            self.save_state()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop what the lab started (by PID), delete its namespaces, temp dir and state."""
        for proc in self._procs:
            with contextlib.suppress(Exception):
                stop_popen(proc)
        for log in self._logs:
            log.close()
        self._procs.clear()
        self._logs.clear()
        self._etcd = None
        self._etcd_pid = None
        # Catches what other processes started here, e.g. etcd of a lab loaded from state.
        self.cleanup_stale(self.prefix)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    @classmethod
    def cleanup_stale(cls, prefix: str) -> list[str]:
        """Remove a (possibly crashed) lab by prefix: its processes, namespaces, temp dir."""
        if not PREFIX_RE.match(prefix):
            raise UsageError(f"lab prefix {prefix!r} is invalid")
        names = lab_namespaces(prefix)
        # Only processes living inside the lab's own namespaces are stopped.
        for pid in {p for ns in names for p in namespace_pids(ns)}:
            stop_pid(pid)
        for ns in names:
            with contextlib.suppress(FileNotFoundError):
                netns.remove(ns)
        path = state_path(prefix)
        if path.exists():
            with contextlib.suppress(ValueError, OSError):
                tmp = json.loads(path.read_text()).get("tmpdir")
                if tmp and Path(tmp).name.startswith(f"pyflannel-lab-{prefix}-"):
                    shutil.rmtree(tmp, ignore_errors=True)
            path.unlink(missing_ok=True)
        return names
