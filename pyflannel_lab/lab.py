"""A multi-host lab made of network namespaces, for data-plane tests.

Layout for prefix ``p`` and N hosts (nothing is added to the root namespace but the
namespaces themselves)::

    p-sw      switch: bridge br0 (192.0.2.1/24, the lab's etcd listens here), ports h1..hN
    p-hI      host I: eth0 = 192.0.2.(10+I)/24 on the switch, ip_forward=1, no default route,
              bridge cbr0 = first address of the host's overlay subnet (Docker's --bip)
    p-hIcJ    container J of host I: eth0 on cbr0 = subnet .(1+J), default route via cbr0

Namespaces are addressed by short names: ``"sw"``, ``"h1"``, ``"h1c2"`` (or an int for a host).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network, ip_network
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pyroute2 import IPRoute, netns

from pyflannel.errors import FlannelError, StoreUnavailableError, UsageError

STATE_DIR = Path("/run/pyflannel-lab")
ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"
ETCD_PORT = 2379
SWITCH_BRIDGE = "br0"
CONTAINER_BRIDGE = "cbr0"
UPLINK = "eth0"
# Test traffic must stay on documentation ranges (see docs/ENVIRONMENT.md).
UNDERLAY_RANGES = tuple(
    IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
MAX_HOSTS = 200

Node = int | str


def _lab_ns_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-(sw|h\d+(c\d+)?)$")


def lab_namespaces(prefix: str) -> list[str]:
    """Names of the existing namespaces that belong to the lab with this prefix."""
    pattern = _lab_ns_re(prefix)
    return sorted(n for n in netns.listnetns() if pattern.match(n))


def _is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 here may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_pid(pid: int, grace: float = 3.0) -> None:
    """SIGTERM one process, SIGKILL it if still there after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while _is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _stop_popen(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def _namespace_pids(ns: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10, check=False
    )
    return [int(p) for p in out.stdout.split()]


def state_path(prefix: str) -> Path:
    return STATE_DIR / f"{prefix}.json"


@dataclass
class _HostState:
    subnet: str | None = None
    container_mtu: int | None = None
    containers: list[str] = field(default_factory=list)


# Run inside a namespace: tx checksumming off on a device (TSO and tunnel segmentation depend on
# it, so the kernel segments and checksums in software before the device). ethtool's
# `-K dev tx off`; ethtool itself is not on every machine, pyroute2 is.
_TX_CHECKSUM_OFF = """
import sys
from pyroute2.ethtool import Ethtool
ethtool = Ethtool()
features = ethtool.get_features(sys.argv[1])
features.features["tx-checksum-ip-generic"].enable = False
ethtool.set_features(sys.argv[1], features)
"""


class Lab:
    """Hosts, containers and an etcd as network namespaces on one machine."""

    def __init__(
        self,
        name_prefix: str = "pft",
        hosts: int = 3,
        underlay: str = "192.0.2.0/24",
        overlay_subnets: list[str] | None = None,
        containers_per_host: int = 1,
        *,
        wire_like: bool = False,
    ) -> None:
        """wire_like: the hosts' underlay veths checksum and segment in software, as a NIC
        puts packets on a wire (by default a veth hands offloaded packets on unsegmented, with
        unfinished checksums, which only kernel receivers take; flanneld's udp proxy does not)."""
        if not PREFIX_RE.match(name_prefix):
            raise UsageError(
                f"lab prefix {name_prefix!r} is invalid; use 1-12 lowercase letters/digits "
                "starting with a letter"
            )
        if not 1 <= hosts <= MAX_HOSTS:
            raise UsageError(f"lab hosts={hosts} is out of range; use 1..{MAX_HOSTS}")
        if not 0 <= containers_per_host <= 50:
            raise UsageError(
                f"containers_per_host={containers_per_host} is out of range; use 0..50"
            )
        self.prefix = name_prefix
        self.hosts = hosts
        self.containers_per_host = containers_per_host
        self.wire_like = wire_like
        self.underlay = self._check_underlay(underlay, hosts)
        subnets = overlay_subnets
        if subnets is not None and len(subnets) != hosts:
            raise UsageError(
                f"{len(subnets)} overlay subnets given for {hosts} hosts; give one per host"
            )
        self._initial_subnets = [self._check_subnet(s) for s in subnets] if subnets else None
        self._hosts: dict[int, _HostState] = {i: _HostState() for i in self.host_indexes()}
        self._procs: list[subprocess.Popen[Any]] = []
        self._logs: list[IO[bytes]] = []
        self._etcd: subprocess.Popen[Any] | None = None
        self._etcd_pid: int | None = None
        self.tmpdir: Path | None = None

    # ---- validation ---------------------------------------------------------------------

    @staticmethod
    def _check_underlay(underlay: str, hosts: int) -> IPv4Network:
        try:
            net = ip_network(underlay)
        except ValueError as exc:
            raise UsageError(f"lab underlay {underlay!r} is not a CIDR: {exc}") from exc
        if not isinstance(net, IPv4Network) or not any(net.subnet_of(r) for r in UNDERLAY_RANGES):
            raise UsageError(
                f"lab underlay {underlay} is outside the documentation ranges; "
                "use a part of 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24"
            )
        if net.num_addresses < hosts + 12:
            raise UsageError(f"lab underlay {underlay} is too small for {hosts} hosts")
        return net

    def _check_subnet(self, subnet: str) -> IPv4Network:
        try:
            net = ip_network(subnet)
        except ValueError as exc:
            raise UsageError(f"overlay subnet {subnet!r} is not a CIDR: {exc}") from exc
        if not isinstance(net, IPv4Network) or net.num_addresses < self.containers_per_host + 4:
            raise UsageError(
                f"overlay subnet {subnet} is too small for "
                f"{self.containers_per_host} containers; use an IPv4 /29 or larger"
            )
        return net

    # ---- names and addresses ----------------------------------------------------------

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    def host_indexes(self) -> range:
        return range(1, self.hosts + 1)

    def host_ns(self, i: int) -> str:
        self._check_host(i)
        return f"{self.prefix}-h{i}"

    def container_ns(self, i: int, j: int) -> str:
        return f"{self.host_ns(i)}c{j}"

    def host_names(self) -> list[str]:
        return [f"h{i}" for i in self.host_indexes()]

    def container_names(self) -> list[str]:
        """Short names of the containers that exist (hosts without a bridge have none)."""
        return [c for i in self.host_indexes() for c in self._hosts[i].containers]

    def ns(self, node: Node) -> str:
        """Full namespace name of a short name ("sw", "h2", "h2c1"), a host index or a full name."""
        if isinstance(node, int):
            return self.host_ns(node)
        name = node.removeprefix(f"{self.prefix}-")
        if name == "sw":
            return self.switch_ns
        m = re.fullmatch(r"h(\d+)(?:c(\d+))?", name)
        if not m:
            raise UsageError(f"lab node {node!r} is unknown; use 'sw', 'h<i>' or 'h<i>c<j>'")
        host = int(m.group(1))
        self._check_host(host)
        return f"{self.prefix}-{name}"

    def _check_host(self, i: int) -> None:
        if not 1 <= i <= self.hosts:
            raise UsageError(f"lab host {i} does not exist; hosts are 1..{self.hosts}")

    @property
    def switch_ip(self) -> str:
        return str(self.underlay.network_address + 1)

    def host_ip(self, i: int) -> str:
        self._check_host(i)
        return str(self.underlay.network_address + 10 + i)

    def subnet(self, i: int) -> str | None:
        self._check_host(i)
        return self._hosts[i].subnet

    def gateway_ip(self, i: int) -> str:
        return str(self._subnet_of(i).network_address + 1)

    def container_ip(self, i: int, j: int) -> str:
        if not 1 <= j <= self.containers_per_host:
            raise UsageError(f"lab container {j} does not exist; use 1..{self.containers_per_host}")
        return str(self._subnet_of(i).network_address + 1 + j)

    def _subnet_of(self, i: int) -> IPv4Network:
        subnet = self.subnet(i)
        if subnet is None:
            raise UsageError(f"lab host h{i} has no container bridge; call add_container_bridge")
        return IPv4Network(subnet)

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.switch_ip}:{ETCD_PORT}"

    # ---- life cycle ---------------------------------------------------------------------

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
                _stop_popen(proc)
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
        for pid in {p for ns in names for p in _namespace_pids(ns)}:
            _stop_pid(pid)
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

    # ---- building ----------------------------------------------------------------------

    @contextlib.contextmanager
    def iproute(self, node: Node) -> Iterator[IPRoute]:
        """A pyroute2 IPRoute bound to a lab namespace (never creates one by accident)."""
        ipr = IPRoute(netns=self.ns(node), flags=0)
        try:
            yield ipr
        finally:
            ipr.close()

    @staticmethod
    def _index(ipr: IPRoute, ifname: str) -> int:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise FlannelError(f"lab interface {ifname} is missing")
        return int(found[0])

    def _create_ns(self, name: str) -> None:
        netns.create(name)
        with self.iproute(name) as ipr:
            ipr.link("set", index=self._index(ipr, "lo"), state="up")

    def _make_switch(self) -> None:
        self._create_ns(self.switch_ns)
        with self.iproute("sw") as ipr:
            ipr.link("add", ifname=SWITCH_BRIDGE, kind="bridge")
            br = self._index(ipr, SWITCH_BRIDGE)
            ipr.addr("add", index=br, address=self.switch_ip, prefixlen=self.underlay.prefixlen)
            ipr.link("set", index=br, state="up")

    def _make_host(self, i: int) -> None:
        ns = self.host_ns(i)
        self._create_ns(ns)
        port = f"h{i}"
        with self.iproute("sw") as sw:
            sw.link("add", ifname=port, kind="veth", peer={"ifname": UPLINK, "net_ns_fd": ns})
            idx = self._index(sw, port)
            sw.link("set", index=idx, master=self._index(sw, SWITCH_BRIDGE), state="up")
        with self.iproute(i) as ipr:
            eth = self._index(ipr, UPLINK)
            ipr.addr("add", index=eth, address=self.host_ip(i), prefixlen=self.underlay.prefixlen)
            ipr.link("set", index=eth, state="up")
        self.sysctl(i, "net.ipv4.ip_forward", "1")
        if self.wire_like:
            self.run(i, sys.executable, "-c", _TX_CHECKSUM_OFF, UPLINK)

    def sysctl(self, node: Node, key: str, value: str) -> None:
        self.run(node, "sysctl", "-qw", f"{key}={value}")

    def add_container_bridge(self, host: int, subnet: str) -> None:
        """Give a host its cbr0 (gateway = first address of subnet) and its containers."""
        net = self._check_subnet(subnet)
        self._check_host(host)
        state = self._hosts[host]
        if state.subnet is not None:
            raise UsageError(f"lab host h{host} already has a container bridge ({state.subnet})")
        gateway = IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")
        with self.iproute(host) as ipr:
            ipr.link("add", ifname=CONTAINER_BRIDGE, kind="bridge")
            br = self._index(ipr, CONTAINER_BRIDGE)
            ipr.addr("add", index=br, address=str(gateway.ip), prefixlen=net.prefixlen)
            ipr.link("set", index=br, state="up")
        state.subnet = str(net)
        for j in range(1, self.containers_per_host + 1):
            self._make_container(host, j, net)
        self.save_state()

    def _make_container(self, host: int, j: int, net: IPv4Network) -> None:
        ns = self.container_ns(host, j)
        self._create_ns(ns)
        port = f"veth-c{j}"
        with self.iproute(host) as ipr:
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": UPLINK, "net_ns_fd": ns})
            ipr.link(
                "set",
                index=self._index(ipr, port),
                master=self._index(ipr, CONTAINER_BRIDGE),
                state="up",
            )
        with self.iproute(ns) as ipr:
            eth = self._index(ipr, UPLINK)
            address = str(net.network_address + 1 + j)
            ipr.addr("add", index=eth, address=address, prefixlen=net.prefixlen)
            ipr.link("set", index=eth, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=str(net.network_address + 1))
        self._hosts[host].containers.append(f"h{host}c{j}")

    def set_container_mtu(self, host: int, mtu: int) -> None:
        """Set the MTU of cbr0 and every container link on a host (Docker's --mtu)."""
        self._check_host(host)
        if self._hosts[host].subnet is None:
            raise UsageError(f"lab host h{host} has no container bridge; call add_container_bridge")
        for j in range(1, self.containers_per_host + 1):
            with self.iproute(self.container_ns(host, j)) as ipr:
                ipr.link("set", index=self._index(ipr, UPLINK), mtu=mtu)
        with self.iproute(host) as ipr:
            for j in range(1, self.containers_per_host + 1):
                ipr.link("set", index=self._index(ipr, f"veth-c{j}"), mtu=mtu)
            ipr.link("set", index=self._index(ipr, CONTAINER_BRIDGE), mtu=mtu)
        self._hosts[host].container_mtu = mtu
        self.save_state()

    def set_underlay_mtu(self, mtu: int) -> None:
        """Set the MTU of every underlay link: host eth0s, switch ports and the switch bridge."""
        for i in self.host_indexes():
            with self.iproute(i) as ipr:
                ipr.link("set", index=self._index(ipr, UPLINK), mtu=mtu)
        with self.iproute("sw") as sw:
            for i in self.host_indexes():
                sw.link("set", index=self._index(sw, f"h{i}"), mtu=mtu)
            sw.link("set", index=self._index(sw, SWITCH_BRIDGE), mtu=mtu)

    # ---- etcd ----------------------------------------------------------------------------

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

    # ---- processes -----------------------------------------------------------------------

    def _exec_cmd(self, node: Node, cmd: tuple[str, ...]) -> list[str]:
        if not cmd:
            raise UsageError("no command given to run in the lab")
        return ["ip", "netns", "exec", self.ns(node), *cmd]

    def run(
        self, node: Node, *cmd: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a lab namespace and wait for it (bounded by timeout)."""
        return subprocess.run(
            self._exec_cmd(node, cmd),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env={**os.environ, "ETCDCTL_API": "3"},
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
        _stop_popen(proc, grace)
        return int(proc.returncode)

    # ---- probes --------------------------------------------------------------------------

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

    def container_ip_of(self, name: str) -> str:
        """The address of a container given by name (h<host>c<n>)."""
        m = re.fullmatch(r"h(\d+)c(\d+)", name)
        assert m is not None
        return self.container_ip(int(m.group(1)), int(m.group(2)))

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
            _stop_popen(proc)
            for t in readers:
                t.join(timeout=2)
        return lines

    # ---- state (for the command line) ----------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "hosts": self.hosts,
            "underlay": str(self.underlay),
            "containers_per_host": self.containers_per_host,
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
    def from_state(cls, prefix: str) -> Lab:
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
        etcd_up = self._etcd_pid is not None and _is_running(self._etcd_pid)
        return {
            "prefix": self.prefix,
            "namespaces": sorted(existing),
            "switch": {"namespace": self.switch_ns, "ip": self.switch_ip},
            "etcd": {"endpoint": self.etcd_endpoint, "pid": self._etcd_pid, "running": etcd_up},
            "hosts": hosts,
        }
