"""A lab's state file: another process (the command line's down and status) finds the lab
brought up by an earlier one there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

from pyflannel.errors import UsageError
from pyflannel_lab.layout import LabLayout, lab_namespaces
from pyflannel_lab.processes import is_running

STATE_DIR = Path("/run/pyflannel-lab")


def state_path(prefix: str) -> Path:
    return STATE_DIR / f"{prefix}.json"


class LabStateFile(LabLayout):
    """Saving, loading and reporting a lab's state (STATE_DIR/<prefix>.json)."""

    def state(self) -> dict[str, Any]:
        """What another process needs to rebuild this Lab (from_state)."""
        return {
            "prefix": self.prefix,
            "hosts": self.hosts,
            "underlay": str(self.underlay),
            "containers_per_host": self.containers_per_host,
            "routed_hosts": self.routed_hosts,
            "tmpdir": str(self.tmpdir) if self.tmpdir else None,
            "etcd_pid": self._etcd_pid,
            "host_state": {
                str(i): {"subnet": s.subnet, "container_mtu": s.container_mtu}
                for i, s in self._hosts.items()
            },
        }

    def save_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = state_path(self.prefix).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        tmp.replace(state_path(self.prefix))

    @classmethod
    def from_state(cls, prefix: str) -> Self:
        """Rebuild the Lab object of a lab brought up by another process."""
        path = state_path(prefix)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(
                f"no lab with prefix {prefix!r} is up ({path} is missing); "
                "start one with `python -m pyflannel_lab up`"
            ) from None
        lab = cls(
            data["prefix"],
            hosts=data["hosts"],
            underlay=data["underlay"],
            containers_per_host=data["containers_per_host"],
            routed_hosts=data.get("routed_hosts", 0),
        )
        lab.tmpdir = Path(data["tmpdir"]) if data.get("tmpdir") else None
        lab._etcd_pid = data.get("etcd_pid")
        for key, host in data["host_state"].items():
            state = lab._hosts[int(key)]
            state.subnet = host["subnet"]
            state.container_mtu = host["container_mtu"]
            if state.subnet is not None:
                n = lab.containers_per_host
                state.containers = [f"h{key}c{j}" for j in range(1, n + 1)]
        return lab

    def status(self) -> dict[str, Any]:
        """What exists right now: namespaces, addresses, and whether etcd runs."""
        hosts: dict[str, Any] = {}
        existing = set(lab_namespaces(self.prefix))
        for i in self.host_indexes():
            hosts[f"h{i}"] = {
                "namespace": self.host_ns(i),
                "up": self.host_ns(i) in existing,
                "underlay_ip": self.host_ip(i),
                "subnet": self._hosts[i].subnet,
                "containers": {c: self.container_ip_of(c) for c in self._hosts[i].containers},
            }
        etcd_up = self._etcd_pid is not None and is_running(self._etcd_pid)
        return {
            "prefix": self.prefix,
            "namespaces": sorted(existing),
            "switch": {"namespace": self.switch_ns, "ip": self.switch_ip},
            "etcd": {"endpoint": self.etcd_endpoint, "pid": self._etcd_pid, "running": etcd_up},
            "hosts": hosts,
        }
