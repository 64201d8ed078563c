"""CNI on lab hosts: the `flannel` plugin called as a runtime calls it, and podman using it.

Each host gets its own plugin directory (`flannel` -> the installed pyflannel-cni script, then
Debian's standard plugins), network config and state directories: the lab's hosts share one
file system, and host-local's or the plugin's state must not be shared between them.
Pods are network namespaces named <lab prefix>-p<host>-<name>, removed by `remove_pods`.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import netns

from pyflannel.errors import UsageError
from pyflannel_lab.lab import Lab

STANDARD_PLUGINS = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
NETWORK_NAME = "cbr0"  # the reference walk-through's
SCRIPT = "pyflannel-cni"
CONFLIST = "10-flannel.conflist"  # the name the provisioner's cni role writes


def plugin_script() -> Path:
    """The console script pip installed for this Python (not a shell shim: pyenv's dispatch on
    argv[0], which is `flannel` when a runtime runs it)."""
    script = Path(sysconfig.get_path("scripts")) / SCRIPT
    if not script.exists():
        raise UsageError(f"{script} is missing; install pyflannel (pip install -e .) first")
    return script


@dataclass(frozen=True)
class CniCall:
    returncode: int
    stdout: str
    stderr: str

    def result(self) -> dict[str, Any]:
        """stdout as JSON (a result, or the spec's error object)."""
        value = json.loads(self.stdout)
        assert isinstance(value, dict), self.stdout
        return value


class CniHost:
    """One lab host's CNI setup."""

    def __init__(self, lab: Lab, host: int, subnet_file: Path, workdir: Path) -> None:
        self.lab = lab
        self.host = host
        self.subnet_file = subnet_file
        self.root = workdir / f"cni-h{host}"
        self.bin_dir = self.root / "bin"
        self.config_dir = self.root / "net.d"
        self.data_dir = self.root / "flannel"
        self.ipam_dir = self.root / "ipam"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(exist_ok=True)
        link = self.bin_dir / "flannel"
        if not link.is_symlink():
            link.symlink_to(plugin_script())
        self.pods: list[str] = []

    @property
    def path(self) -> str:
        return os.pathsep.join([str(self.bin_dir), str(STANDARD_PLUGINS)])

    def plugin_conf(self, **delegate: Any) -> dict[str, Any]:
        """flannel's plugin section as in the walk-through's cni-conf.json, on this host's files."""
        return {
            "type": "flannel",
            "subnetFile": str(self.subnet_file),
            "dataDir": str(self.data_dir),
            "ipam": {"dataDir": str(self.ipam_dir)},
            "delegate": {"hairpinMode": True, "isDefaultGateway": True, **delegate},
        }

    def netconf(self, cni_version: str = "1.0.0", **delegate: Any) -> dict[str, Any]:
        """The single config a runtime hands the plugin (name and version from the list)."""
        return {"cniVersion": cni_version, "name": NETWORK_NAME, **self.plugin_conf(**delegate)}

    def write_conflist(self, cni_version: str = "1.0.0") -> Path:
        """The walk-through's conflist (flannel, then portmap) in this host's config dir."""
        conflist = {
            "cniVersion": cni_version,
            "name": NETWORK_NAME,
            "plugins": [
                self.plugin_conf(),
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        path = self.config_dir / CONFLIST
        path.write_text(json.dumps(conflist, indent=2) + "\n")
        return path

    # -- the plugin as a runtime calls it --------------------------------------------------------

    def call(
        self,
        command: str,
        container_id: str,
        netns_path: str = "",
        *,
        netconf: dict[str, Any] | None = None,
        ifname: str = "eth0",
    ) -> CniCall:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_PATH": self.path,
        }
        done = self.lab.run(
            self.host,
            str(self.bin_dir / "flannel"),
            check=False,
            env=env,
            stdin=json.dumps(netconf if netconf is not None else self.netconf()),
        )
        return CniCall(done.returncode, done.stdout, done.stderr)

    def nsenter(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run in the host's network namespace only: `ip netns exec` would also give it a mount
        namespace of its own, hiding the namespaces it creates (`ip netns add`) from the rest."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.lab.host_ns(self.host)}", *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    def pod_tool(self, action: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """`pyflannel-cni pod ACTION NAME` with this host's config list and plugin path."""
        conflist = str(self.config_dir / CONFLIST)
        return self.nsenter(
            str(self.bin_dir / "flannel"),
            "pod",
            action,
            name,
            "--conflist",
            conflist,
            "--cni-path",
            self.path,
            *extra,
        )

    def pod_ns(self, name: str) -> str:
        return f"{self.lab.prefix}-p{self.host}-{name}"

    def add_pod(self, name: str) -> tuple[str, dict[str, Any]]:
        """A new pod namespace, networked by ADD; (namespace, ADD's result)."""
        ns = self.pod_ns(name)
        netns.create(ns)
        self.pods.append(ns)
        call = self.call("ADD", ns, f"/run/netns/{ns}")
        if call.returncode != 0:
            raise AssertionError(f"ADD for {ns} failed: {call.stdout} {call.stderr}")
        return ns, call.result()

    def remove_pods(self) -> None:
        for ns in self.pods:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.call("DEL", ns, f"/run/netns/{ns}")
            with contextlib.suppress(FileNotFoundError, OSError):
                netns.remove(ns)
        self.pods.clear()


class Podman:
    """podman (CNI network backend) on one lab host, with that host's CNI directories."""

    def __init__(self, cni: CniHost) -> None:
        self.cni = cni
        self.conf = cni.root / "containers.conf"
        # runc may only lower limits here (no CAP_SYS_RESOURCE in these machines' sandboxes):
        # podman's defaults (nofile 1048576) are refused, and so is nproc above pid_max.
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], pid_max)
        self.conf.write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={min(1024, nofile)}:{nofile}", '
            f'"nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            # runc, not crun (podman's first choice where both are installed): crun refuses
            # these machines' hybrid cgroup layout ("cgroups in hybrid mode not supported").
            'runtime = "runc"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f"cni_plugin_dirs = [{json.dumps(str(cni.bin_dir))}, "
            f"{json.dumps(str(STANDARD_PLUGINS))}]\n"
            f"network_config_dir = {json.dumps(str(cni.config_dir))}\n"
        )
        self.containers: list[str] = []

    def podman(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        # nsenter, not `ip netns exec`: that remounts /sys, and runc then finds no cgroups.
        done = self.cni.nsenter(
            "podman",
            f"--network-config-dir={self.cni.config_dir}",
            *args,
            env={"CONTAINERS_CONF": str(self.conf)},
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def run(self, name: str, image: str, *command: str) -> str:
        """A detached container on the flannel network; its ID."""
        self.containers.append(name)
        return self.podman(
            "run", "--detach", "--name", name, "--network", NETWORK_NAME, image, *command
        ).strip()

    def exec(self, name: str, *command: str, check: bool = True) -> str:
        return self.podman("exec", name, *command, check=check)

    def remove_all(self) -> None:
        for name in self.containers:
            with contextlib.suppress(subprocess.SubprocessError, AssertionError):
                self.podman("rm", "--force", "--time=0", name, check=False)
        self.containers.clear()
