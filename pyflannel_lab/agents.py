"""AgentCluster: a namespace lab with one real pyflannel agent per host, for data-plane tests.

Each host gets its own subnet file and log; once the agents have leased their subnets, every
host gets a container bridge with the leased subnet and the backend's MTU, as Docker would
(`--bip=$FLANNEL_SUBNET --mtu=$FLANNEL_MTU`). Agents can be stopped, restarted and inspected
(log of the current run, /metrics, lease in etcd). Hosts named in `flanneld_hosts` run the real
flanneld (`flanneld=` its binary, see peers.py) instead, with the same flags, for mixed clusters;
`set_kind` swaps what a stopped host runs (migration). Also a pcap capture that returns raw
frames, for tests that look at bytes rather than tcpdump's text.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflannel.bgp.birdctl import BirdControl
from pyflannel.errors import FlannelError
from pyflannel_lab import Lab
from pyflannel_lab.birds import bird_paths, start_bird, stub_config
from pyflannel_lab.layout import Node

BACKENDS = ("host-gw", "vxlan", "udp", "ipip", "bgp")
PREFIX = "/docker-subnet/network"  # as in the reference walk-throughs
NETWORK = "10.100.0.0/16"
HEALTHZ_PORT = 8471
READY_MARK = "ready: subnet"
PYFLANNEL = "pyflannel"
FLANNELD = "flanneld"
# What a run logs once its subnet file is written and its backend runs.
READY_MARKS = {PYFLANNEL: READY_MARK, FLANNELD: "Running backend."}
# flanneld logs "Running backend." just before it starts watching: time for the watch to start.
FLANNELD_WATCH_SETTLE = 0.5

_METRICS_SCRIPT = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
)


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(interval)


@dataclass
class AgentRun:
    """One host's agent: its files and the process of its current run (None when stopped)."""

    host: int
    subnet_file: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # where the current run's output starts in the log file
    kind: str = PYFLANNEL  # PYFLANNEL or FLANNELD: what the host runs


class AgentCluster:
    """A lab, its etcd, the network config and one agent per host."""

    def __init__(
        self,
        lab: Lab,
        backend: str,
        *,
        network: str = NETWORK,
        prefix: str = PREFIX,
        backend_options: dict[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        flanneld_hosts: Collection[int] = (),
        flanneld: Path | None = None,
        flanneld_args: Sequence[str] = (),
    ) -> None:
        if backend not in BACKENDS:
            raise FlannelError(f"backend {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
        if lab.tmpdir is None:
            raise FlannelError("the lab is not up; call lab.up() before building a cluster")
        self.lab = lab
        self.backend = backend
        self.network = ipaddress.IPv4Network(network)
        self.prefix = prefix
        self.backend_options = backend_options or {}
        self.extra_args = list(extra_args)
        self.agents = {
            i: AgentRun(i, lab.tmpdir / f"h{i}-subnet.env", lab.tmpdir / f"h{i}-flanneld.log")
            for i in lab.host_indexes()
        }
        self.birds: dict[int, BirdControl] = {}
        self.flanneld = flanneld
        self.flanneld_args = list(flanneld_args)
        for i in flanneld_hosts:
            self.set_kind(i, FLANNELD)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        backend: str,
        *,
        hosts: int = 3,
        prefix: str = "pfd",
        wire_like: bool = False,
        containers: bool = True,
        routed_hosts: int = 0,
        birds: bool = False,
        **kwargs: Any,
    ) -> Iterator[AgentCluster]:
        """A fresh lab with etcd and converged agents; everything is taken down afterwards.

        containers False: no lab bridge and containers (a CNI plugin makes the pods' bridge).
        birds: a BIRD on every host also when starting on another backend (a switch to bgp).
        """
        lab = Lab(
            name_prefix=f"{prefix}{secrets.token_hex(2)}",
            hosts=hosts,
            wire_like=wire_like,
            routed_hosts=routed_hosts,
        )
        try:
            lab.up()
            lab.start_etcd()
            cluster = cls(lab, backend, **kwargs)
            if birds or backend == "bgp":
                cluster.start_birds()
            cluster.put_config()
            cluster.start_all(one_by_one=bool(cluster.flanneld_hosts()), containers=containers)
            yield cluster
        finally:
            lab.down()

    # -- setup ---------------------------------------------------------------------------------

    def put_config(self) -> None:
        backend = {"Type": self.backend, **self.backend_options}
        config = {"Network": str(self.network), "SubnetLen": 24, "Backend": backend}
        self.lab.etcdctl("put", f"{self.prefix}/config", json.dumps(config))

    def flanneld_hosts(self) -> list[int]:
        return [i for i in self.agents if self.kind(i) == FLANNELD]

    def kind(self, host: int) -> str:
        return self.agents[host].kind

    def set_kind(self, host: int, kind: str) -> None:
        """Choose what a (stopped) host runs next: PYFLANNEL or FLANNELD."""
        if kind not in READY_MARKS:
            raise FlannelError(f"agent kind {kind!r} is unknown; use {PYFLANNEL} or {FLANNELD}")
        if kind == FLANNELD and self.flanneld is None:
            raise FlannelError("no flanneld binary given; pass flanneld= (see pyflannel_lab.peers)")
        if self.is_running(host):
            raise FlannelError(f"the agent on h{host} is running; stop it before swapping it")
        self.agents[host].kind = kind

    def agent_args(self, host: int) -> list[str]:
        # The same flags for both programs: the ones flanneld documents, in its own syntax.
        common = [
            f"--etcd-endpoints={self.lab.etcd_endpoint}",
            "--iface=eth0",
            f"-etcd-prefix={self.prefix}",
            f"--subnet-file={self.agents[host].subnet_file}",
            f"--healthz-port={HEALTHZ_PORT}",
        ]
        if self.kind(host) == FLANNELD:
            return [str(self.flanneld), *common, *self.flanneld_args]
        conf, sock = bird_paths(self.lab, host)
        bgp = [f"--bgp-bird-config={conf}", f"--bgp-bird-socket={sock}"]
        return [sys.executable, "-m", "pyflannel", *common, *bgp, *self.extra_args]

    def start_birds(self) -> dict[int, BirdControl]:
        """A BIRD on every host (the bgp backend's), on a stub the agent will replace."""
        self.birds = {
            i: start_bird(self.lab, i, stub_config(self.lab.host_ip(i))) for i in self.agents
        }
        return self.birds

    def start_all(
        self,
        timeout: float = 30.0,
        *,
        one_by_one: bool = False,
        order: Sequence[int] | None = None,
        containers: bool = True,
    ) -> None:
        """Start every agent, give each host its containers, wait until all pairs ping.

        containers False: only start the agents and wait until each is ready.

        one_by_one: each agent is ready (a flanneld one also watching) before the next
        starts. flanneld v0.20.2 reads only the first event of each etcd watch response and
        then watches again from the current revision: it misses a lease written in the few
        milliseconds between its start-up list and its watch, or right after another event
        (a node that deletes a lease and claims another), and never lists again.
        order: the hosts in the order to start them (default h1, h2, ...).
        """
        hosts = list(order) if order is not None else list(self.agents)
        if sorted(hosts) != sorted(self.agents):
            raise FlannelError(f"order {hosts} must name every host once: {list(self.agents)}")
        for i in hosts:
            self.start(i, wait=one_by_one, timeout=timeout)
            if one_by_one and self.kind(i) == FLANNELD:
                time.sleep(FLANNELD_WATCH_SETTLE)
        for i in self.agents:
            self.wait_ready(i, timeout)
        if not containers:
            return
        for i in self.agents:
            self.lab.add_container_bridge(i, str(self.subnet(i)))
            self.lab.set_container_mtu(i, self.mtu(i))
        self.wait_converged(timeout)

    # -- agent processes -------------------------------------------------------------------

    def start(self, host: int, *, wait: bool = True, timeout: float = 20.0) -> None:
        agent = self.agents[host]
        if self.is_running(host):
            raise FlannelError(f"the agent on h{host} is already running")
        agent.log_offset = agent.log_path.stat().st_size if agent.log_path.exists() else 0
        agent.proc = self.lab.popen(host, *self.agent_args(host), log_path=agent.log_path)
        if wait:
            self.wait_ready(host, timeout)

    def stop(self, host: int) -> int:
        """SIGTERM the agent (SIGKILL after a grace period); return its exit code."""
        agent = self.agents[host]
        if agent.proc is None:
            raise FlannelError(f"the agent on h{host} is not running")
        code = self.lab.stop(agent.proc)
        agent.proc = None
        return code

    def restart(self, host: int, timeout: float = 20.0) -> int:
        code = self.stop(host)
        self.start(host, timeout=timeout)
        return code

    def is_running(self, host: int) -> bool:
        proc = self.agents[host].proc
        return proc is not None and proc.poll() is None

    def wait_ready(self, host: int, timeout: float = 20.0) -> None:
        """Wait for the current run's "ready" log line; fail early when the agent exits."""

        def ready() -> bool:
            if not self.is_running(host):
                raise AssertionError(f"agent on h{host} exited:\n{self.log(host)[-3000:]}")
            return READY_MARKS[self.kind(host)] in self.log(host)

        wait_for(ready, timeout, 0.05, f"{self.kind(host)} on h{host} ready")

    def heal(self, timeout: float = 30.0) -> None:
        """Restart agents that a previous test left stopped, then wait for convergence."""
        stopped = [i for i in self.agents if not self.is_running(i)]
        for i in stopped:
            self.agents[i].proc = None
            self.start(i, timeout=timeout)
        if stopped:
            self.wait_converged(timeout)

    # -- what the agents produced ----------------------------------------------------------

    def log(self, host: int, *, all_runs: bool = False) -> str:
        agent = self.agents[host]
        if not agent.log_path.exists():
            return ""
        with agent.log_path.open("rb") as f:
            f.seek(0 if all_runs else agent.log_offset)
            return f.read().decode(errors="replace")

    def env_text(self, host: int) -> str:
        return self.agents[host].subnet_file.read_text()

    def env(self, host: int) -> dict[str, str]:
        lines = self.env_text(host).splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def subnet(self, host: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(self.env(host)["FLANNEL_SUBNET"]).network

    def mtu(self, host: int) -> int:
        return int(self.env(host)["FLANNEL_MTU"])

    def lease_key(self, host: int) -> str:
        subnet = self.subnet(host)
        return f"{self.prefix}/subnets/{subnet.network_address}-{subnet.prefixlen}"

    def lease(self, host: int) -> dict[str, Any] | None:
        """The lease value in etcd (None when the key does not exist)."""
        out = self.lab.etcdctl("get", "--print-value-only", self.lease_key(host)).stdout.strip()
        return json.loads(out) if out else None

    def metrics(self, host: int) -> dict[str, float]:
        """The agent's /metrics, read from inside its host namespace (labelled series dropped)."""
        url = f"http://127.0.0.1:{HEALTHZ_PORT}/metrics"
        text = self.lab.run(host, sys.executable, "-c", _METRICS_SCRIPT, url, timeout=10).stdout
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                values[name] = float(value)
        return values

    # -- data plane ------------------------------------------------------------------------

    def container_ip(self, host: int, j: int = 1) -> str:
        return self.lab.container_ip(host, j)

    def wait_converged(self, timeout: float = 30.0) -> None:
        """Wait until every container pings every other one."""

        failing: list[str] = []

        def all_ping() -> bool:
            matrix = self.lab.ping_matrix(timeout=1)
            failing[:] = [f"{a}->{b}" for (a, b), ok in matrix.items() if not ok]
            return not failing

        try:
            wait_for(all_ping, timeout, 0.2, f"all-pairs ping ({self.backend})")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; failing: {', '.join(failing)}") from None


# -- raw packet capture ---------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    linktype: int  # 1 = Ethernet
    frames: list[bytes]


def parse_pcap(data: bytes) -> Capture:
    """Frames of a classic pcap stream (tcpdump -w), either byte order."""
    if len(data) < 24:
        return Capture(0, [])
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise FlannelError(f"not a pcap stream (magic {magic.hex()})")
    linktype = struct.unpack(f"{endian}I", data[20:24])[0]
    frames, pos = [], 24
    while pos + 16 <= len(data):
        incl = struct.unpack(f"{endian}I", data[pos + 8 : pos + 12])[0]
        frames.append(data[pos + 16 : pos + 16 + incl])
        pos += 16 + incl
    return Capture(linktype, frames)


def capture_frames(
    lab: Lab,
    node: Node,
    iface: str,
    bpf_filter: str,
    *,
    count: int,
    timeout: float = 5.0,
    during: Callable[[], object] | None = None,
) -> Capture:
    """Like Lab.capture, but returns the raw frames (tcpdump -w - to a pipe, parsed here)."""
    cmd = ["tcpdump", "-n", "-U", "--immediate-mode", "-s", "0", "-i", iface]
    cmd += ["-c", str(count), "-w", "-", bpf_filter]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns(node), *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    chunks: list[bytes] = []
    errors: list[str] = []
    listening = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        chunks.append(proc.stdout.read())  # until tcpdump exits

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            errors.append(line.decode(errors="replace").rstrip())
            if b"listening on" in line:
                listening.set()
        listening.set()

    readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for t in readers:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        if not listening.wait(timeout) or not any("listening on" in e for e in errors):
            raise FlannelError(f"tcpdump on {node}/{iface} did not start: {'; '.join(errors)}")
        if during is not None:
            during()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        for t in readers:
            t.join(timeout=3)
    return parse_pcap(b"".join(chunks))
