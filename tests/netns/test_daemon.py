"""Daemon-level control-plane tests: the real `flanneld` process in lab namespaces.

Each test starts agents inside lab hosts (they program routes, iptables and ip_forward of
their namespace only) against the lab's etcd at 192.0.2.1:2379, and always passes a temporary
--subnet-file because /run is shared with the root namespace.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from pyroute2 import IPRoute, netns

from pyflannel_lab import Lab

pytestmark = pytest.mark.netns

T = TypeVar("T")
LabFactory = Callable[..., Lab]

_SCRIPT = Path(sys.executable).parent / "flanneld"  # the console script, without pyenv's shim
FLANNELD = str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("flanneld") or "flanneld")
ENDPOINT = "http://192.0.2.1:2379"
PREFIX = "/docker-subnet/network"
DEFAULT_PREFIX = "/coreos.com/network"
HOSTGW = '{"Network":"10.100.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}'
HEALTHZ_PORT = 8471  # inside the host's namespace: cannot collide with the machine
SUBNET_ENV_RE = re.compile(
    r"FLANNEL_NETWORK=10\.100\.0\.0/16\n"
    r"FLANNEL_SUBNET=10\.100\.(\d{1,3})\.1/24\n"
    r"FLANNEL_MTU=1500\n"
    r"FLANNEL_IPMASQ=false\n"
)
MEASUREMENTS = Path("/tmp/pyflannel-test-daemon-measurements.json")


# ---- small helpers ---------------------------------------------------------------------------


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(every)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def lease_value(public_ip: str) -> str:
    """A host-gw lease value exactly as flanneld writes it."""
    return f'{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"host-gw"}}'


def rename_uplink(lab: Lab, host: int, new: str = "ens33") -> None:
    """The walk-through's hosts call their NIC ens33; the lab's is eth0."""
    with lab.iproute(host) as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=index, state="down")
        ipr.link("set", index=index, ifname=new)
        ipr.link("set", index=index, state="up")


@dataclass
class Kv:
    value: str
    lease: int


def etcd_kvs(lab: Lab, prefix: str) -> dict[str, Kv]:
    out = lab.etcdctl("get", "--prefix", prefix, "--write-out=json").stdout
    kvs = json.loads(out).get("kvs", [])
    return {
        base64.b64decode(kv["key"]).decode(): Kv(
            base64.b64decode(kv.get("value", "")).decode(), int(kv.get("lease", 0))
        )
        for kv in kvs
    }


def subnet_leases(lab: Lab, prefix: str = PREFIX) -> dict[str, Kv]:
    return etcd_kvs(lab, f"{prefix}/subnets/")


def lease_ttl(lab: Lab, lease_id: int) -> int:
    out = lab.etcdctl("lease", "timetolive", format(lease_id, "x"), "--write-out=json").stdout
    return int(json.loads(out)["ttl"])


def route_gateway(ipr: IPRoute, subnet: str) -> str | None:
    """Gateway of the main-table route for exactly `subnet`, None when there is none."""
    address, prefixlen = subnet.split("/")
    for route in ipr.get_routes(family=socket.AF_INET, table=254):
        if route.get("dst") == address and route["dst_len"] == int(prefixlen):
            return str(route.get("gateway"))
    return None


def http_get(lab: Lab, host: int, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{HEALTHZ_PORT}{path}"
    out = lab.run(
        host, "curl", "-s", "--max-time", "2", "-w", "\n%{http_code}", url, check=False
    ).stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def record(name: str, values: list[float]) -> None:
    """Keep measured timings for the report (pytest -q hides prints)."""
    data = json.loads(MEASUREMENTS.read_text()) if MEASUREMENTS.exists() else {}
    data[name] = {"median": statistics.median(values), "all": values}
    MEASUREMENTS.write_text(json.dumps(data, indent=2) + "\n")


class Flanneld:
    """One flanneld process in a lab host, with its own log and subnet file."""

    def __init__(
        self,
        lab: Lab,
        host: int,
        *flags: str,
        name: str = "agent",
        env: dict[str, str] | None = None,
        subnet_file: Path | None = None,
    ) -> None:
        assert lab.tmpdir is not None
        self.lab = lab
        self.host = host
        self.subnet_file = subnet_file or lab.tmpdir / f"{name}-subnet.env"
        self.log_path = lab.tmpdir / f"{name}.log"
        self.flags = (*flags, f"--subnet-file={self.subnet_file}")
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Flanneld:
        # `env` execs flanneld, so the PID stays the agent's (ip netns exec execs too).
        prefix = ["env", *(f"{k}={v}" for k, v in self.env.items())] if self.env else []
        self.proc = self.lab.popen(
            self.host, *prefix, FLANNELD, *self.flags, log_path=self.log_path
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        """The first log line containing `text`."""

        def find() -> str | None:
            return next((line for line in self.log().splitlines() if text in line), None)

        return wait_for(find, timeout, f"log line {text!r} of {self.log_path}:\n{self.log()}")

    def subnet_env(self) -> str | None:
        try:
            return self.subnet_file.read_text()
        except FileNotFoundError:
            return None

    def wait_subnet_env(self, timeout: float = 10.0) -> str:
        return wait_for(self.subnet_env, timeout, f"{self.subnet_file}; log:\n{self.log()}")

    def subnet(self, timeout: float = 10.0) -> str:
        """The leased subnet (10.100.X.0/24) read back from the subnet file."""
        match = SUBNET_ENV_RE.fullmatch(self.wait_subnet_env(timeout))
        assert match, f"unexpected subnet file:\n{self.subnet_env()}"
        return f"10.100.{match.group(1)}.0/24"

    def terminate(self, timeout: float = 2.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit). Fails if slower than `timeout`."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.lab.stop(self.proc)
            raise AssertionError(
                f"flanneld ignored SIGTERM for {timeout} s; log:\n{self.log()}"
            ) from None
        return code, time.monotonic() - started


def key_of(subnet: str, prefix: str = PREFIX) -> str:
    return f"{prefix}/subnets/{subnet.replace('/', '-')}"


@pytest.fixture
def walk_lab(lab_factory: LabFactory) -> Lab:
    """One host named like the walk-through's node (ens33) and the lab etcd."""
    lab = lab_factory(hosts=1, etcd=True)
    rename_uplink(lab, 1)
    return lab


# ---- the reference walk-through's command lines ---------------------------------------------


def test_walkthrough_command_line_gets_lease_and_writes_subnet_env(walk_lab: Lab) -> None:
    lab = walk_lab
    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    agent = Flanneld(
        lab, 1, f"--etcd-endpoints={ENDPOINT}", "--iface=ens33", f"-etcd-prefix={PREFIX}"
    ).start()

    subnet = agent.subnet()
    leases = subnet_leases(lab)
    assert list(leases) == [key_of(subnet)]
    kv = leases[key_of(subnet)]
    assert kv.value == lease_value("192.0.2.11")
    assert kv.lease != 0 and lease_ttl(lab, kv.lease) > 0  # a lease, not a reservation
    assert agent.subnet_env() == (
        "FLANNEL_NETWORK=10.100.0.0/16\n"
        f"FLANNEL_SUBNET={subnet.replace('.0/24', '.1/24')}\n"
        "FLANNEL_MTU=1500\n"
        "FLANNEL_IPMASQ=false\n"
    )
    assert agent.alive()


def test_walkthrough_log_dir_line_writes_its_log_there(walk_lab: Lab) -> None:
    lab = walk_lab
    assert lab.tmpdir is not None
    log_dir = lab.tmpdir / "var-log"
    lab.etcdctl("put", f"{DEFAULT_PREFIX}/config", HOSTGW)  # this line has no -etcd-prefix
    agent = Flanneld(
        lab,
        1,
        "--logtostderr=false",
        f"--log_dir={log_dir}/",
        f"--etcd-endpoints={ENDPOINT}",
        "--iface=ens33",
    ).start()

    subnet = agent.subnet()
    assert key_of(subnet, DEFAULT_PREFIX) in subnet_leases(lab, DEFAULT_PREFIX)
    files = wait_for(lambda: sorted(log_dir.glob("*")), 5, f"a log file in {log_dir}")
    text = "".join(path.read_text() for path in files)
    assert f"ready: subnet {subnet}" in text
    assert "using interface ens33" in text
    assert agent.log() == ""  # --logtostderr=false: nothing on stderr/stdout


def test_environment_variables_replace_flags(walk_lab: Lab) -> None:
    lab = walk_lab
    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    # Without these variables the agent would dial 127.0.0.1 and look for a default route.
    env = {"FLANNELD_ETCD_ENDPOINTS": ENDPOINT, "FLANNELD_IFACE": "ens33"}
    agent = Flanneld(lab, 1, f"-etcd-prefix={PREFIX}", env=env).start()

    subnet = agent.subnet()
    assert subnet_leases(lab)[key_of(subnet)].value == lease_value("192.0.2.11")
    assert "using interface ens33" in agent.log()


# ---- config that is missing or invalid --------------------------------------------------------


def test_config_appearing_late_is_waited_for(lab_factory: LabFactory) -> None:
    lab = lab_factory(hosts=1, etcd=True)
    agent = Flanneld(
        lab, 1, f"--etcd-endpoints={ENDPOINT}", "--iface=eth0", f"-etcd-prefix={PREFIX}"
    )
    agent.start()

    line = agent.wait_log("not found")
    assert f"{PREFIX}/config" in line and "--etcd-prefix" in line
    time.sleep(2.0)  # two more polls: still waiting, still one message
    assert agent.alive()
    assert agent.subnet_env() is None
    assert sum("not found" in entry for entry in agent.log().splitlines()) == 1
    assert subnet_leases(lab) == {}

    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    written = time.monotonic()
    agent.wait_subnet_env(timeout=5.0)
    assert time.monotonic() - written < 5.0
    assert subnet_leases(lab)[key_of(agent.subnet())].value == lease_value("192.0.2.11")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ('{"Network":"10.100.0.0/16","SubnetLen":31,"Backend":{"Type":"host-gw"}}', "SubnetLen"),
        ('{"Network":"10.100.0.0/16","SubnetLen":24,"Backend":{"Type":"foo"}}', "Backend.Type"),
    ],
    ids=["subnetlen-31", "backend-foo"],
)
def test_invalid_config_is_reported_and_waited_out(
    lab_factory: LabFactory, config: str, field: str
) -> None:
    lab = lab_factory(hosts=1, etcd=True)
    lab.etcdctl("put", f"{PREFIX}/config", config)
    agent = Flanneld(
        lab, 1, f"--etcd-endpoints={ENDPOINT}", "--iface=eth0", f"-etcd-prefix={PREFIX}"
    )
    agent.start()

    line = agent.wait_log(f"{field}:")
    assert " E " in line  # logged as an error
    errors = [entry for entry in agent.log().splitlines() if f"{field}:" in entry]
    assert errors == [line]
    assert agent.alive() and agent.subnet_env() is None and subnet_leases(lab) == {}

    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    agent.subnet(timeout=5.0)
    assert agent.alive()


# ---- bad command lines ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flag_lab() -> Iterator[Lab]:
    """One lab shared by the bad-flag cases: none of them may leave anything behind."""
    lab = Lab(name_prefix=f"pfd{secrets.token_hex(2)}", hosts=1)
    try:
        lab.up()
        lab.start_etcd()
        lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
        yield lab
    finally:
        lab.down()


def run_flanneld(lab: Lab, *flags: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    assert lab.tmpdir is not None
    subnet_file = lab.tmpdir / f"bad-{secrets.token_hex(3)}.env"
    args = (f"--etcd-endpoints={ENDPOINT}", f"-etcd-prefix={PREFIX}", *flags)
    result = lab.run(1, FLANNELD, *args, f"--subnet-file={subnet_file}", check=False, timeout=20)
    return result, subnet_file


def assert_nothing_written(lab: Lab, subnet_file: Path) -> None:
    assert not subnet_file.exists()
    assert subnet_leases(lab) == {}
    rules = lab.run(1, "iptables-save").stdout
    assert "FLANNEL" not in rules


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--iface=eth0", "--subnet-lease-renew-margin=0"), "--subnet-lease-renew-margin"),
        (("--iface-can-reach=notanip",), "--iface-can-reach"),
        (("--iface=eth0", "--foo"), "--foo"),
        # A margin (minutes) not shorter than the TTL (seconds) is caught after parsing.
        (("--iface=eth0", "--subnet-lease-ttl=60", "--subnet-lease-renew-margin=1"), "margin"),
    ],
    ids=["margin-0", "can-reach-notanip", "unknown-flag", "margin-not-below-ttl"],
)
def test_bad_flags_exit_2_with_one_line(
    flag_lab: Lab, flags: tuple[str, ...], message: str
) -> None:
    result, subnet_file = run_flanneld(flag_lab, *flags)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert result.stdout == ""
    assert_nothing_written(flag_lab, subnet_file)


def test_missing_interface_exits_1_with_one_line(flag_lab: Lab) -> None:
    result, subnet_file = run_flanneld(flag_lab, "--iface=nosuch")
    assert result.returncode == 1, result
    errors = [line for line in result.stderr.splitlines() if " E " in line]
    assert len(errors) == 1 and "--iface=nosuch: no such interface" in errors[0], result.stderr
    assert errors[0] == result.stderr.splitlines()[-1]  # the cause is the last word
    # No lease was taken, so nothing may claim one was "left in place".
    assert "lease" not in result.stderr, result.stderr
    assert_nothing_written(flag_lab, subnet_file)


# ---- health endpoints and systemd ------------------------------------------------------------


def metrics(lab: Lab, host: int) -> dict[str, float]:
    code, body = http_get(lab, host, "/metrics")
    assert code == 200
    values: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values


def test_healthz_readyz_and_metrics(lab_factory: LabFactory) -> None:
    lab = lab_factory(hosts=1, etcd=True)
    agent = Flanneld(
        lab,
        1,
        f"--etcd-endpoints={ENDPOINT}",
        "--iface=eth0",
        f"-etcd-prefix={PREFIX}",
        f"--healthz-port={HEALTHZ_PORT}",
    ).start()
    agent.wait_log("not found")  # waiting for the config: no lease yet
    assert http_get(lab, 1, "/readyz")[0] == 503
    assert http_get(lab, 1, "/healthz")[0] == 200
    assert metrics(lab, 1)["pyflannel_ready"] == 0

    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)

    def ready() -> bool:
        code = http_get(lab, 1, "/readyz")[0]
        assert code == 503 or agent.subnet_env() is not None, "ready before subnet.env"
        return code == 200

    wait_for(ready, 5.0, "/readyz 200", every=0.01)
    assert agent.subnet_env() is not None
    assert http_get(lab, 1, "/healthz")[0] == 200
    values = metrics(lab, 1)
    assert values["pyflannel_ready"] == 1
    assert values["pyflannel_lease_acquired_total"] == 1
    assert values["pyflannel_lease_expires_in_seconds"] > 0


def test_healthz_stays_ok_while_waiting_long_for_the_config(lab_factory: LabFactory) -> None:
    """Waiting for the operator is healthy: a liveness probe must not restart the agent.

    Lasts past health.HEARTBEAT_STALE_AFTER (30 s).
    """
    from pyflannel.health import HEARTBEAT_STALE_AFTER

    lab = lab_factory(hosts=1, etcd=True)
    agent = Flanneld(
        lab,
        1,
        f"--etcd-endpoints={ENDPOINT}",
        "--iface=eth0",
        f"-etcd-prefix={PREFIX}",
        f"--healthz-port={HEALTHZ_PORT}",
    ).start()
    agent.wait_log("not found")
    time.sleep(HEARTBEAT_STALE_AFTER + 1.0)
    assert agent.alive()
    assert http_get(lab, 1, "/readyz")[0] == 503
    assert http_get(lab, 1, "/healthz")[0] == 200


def notify_socket(lab: Lab, host: int) -> tuple[socket.socket, str]:
    """An abstract unix datagram socket inside the host's namespace (abstract names are per
    network namespace), as systemd's NOTIFY_SOCKET."""
    sock = netns.create_socket(lab.ns(host), socket.AF_UNIX, socket.SOCK_DGRAM, flags=0)
    name = f"{lab.prefix}-notify-{secrets.token_hex(3)}"
    sock.bind("\0" + name)
    return sock, "@" + name


def test_systemd_notify_ready_after_subnet_env_and_stopping(lab_factory: LabFactory) -> None:
    lab = lab_factory(hosts=1, etcd=True)
    sock, address = notify_socket(lab, 1)
    try:
        agent = Flanneld(
            lab,
            1,
            f"--etcd-endpoints={ENDPOINT}",
            "--iface=eth0",
            f"-etcd-prefix={PREFIX}",
            env={"NOTIFY_SOCKET": address},
        ).start()
        agent.wait_log("not found")
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(256)  # nothing while there is no lease
        lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
        sock.settimeout(5.0)
        assert sock.recv(256) == b"READY=1"
        assert agent.subnet_env() is not None  # written before READY=1 was sent
        agent.subnet()

        code, _ = agent.terminate()
        assert code == 0
        sock.settimeout(1.0)
        assert sock.recv(256) == b"STOPPING=1"
    finally:
        sock.close()


def test_unreachable_notify_socket_does_not_stop_the_agent(lab_factory: LabFactory) -> None:
    """systemd gone or NOTIFY_SOCKET stale: sd_notify errors are ignored, as flanneld does."""
    lab = lab_factory(hosts=1, etcd=True)
    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    agent = Flanneld(
        lab,
        1,
        f"--etcd-endpoints={ENDPOINT}",
        "--iface=eth0",
        f"-etcd-prefix={PREFIX}",
        env={"NOTIFY_SOCKET": f"@{lab.prefix}-nobody-listens"},
    ).start()
    agent.subnet()
    time.sleep(1.0)
    assert agent.alive(), agent.log()


# ---- stopping, restarting, losing the lease ------------------------------------------------


def hostgw_pair(lab: Lab, prefix: str = PREFIX) -> tuple[Flanneld, Flanneld, str, str]:
    """Agents on h1 and h2 with their subnets, once each has the route to the other."""
    lab.etcdctl("put", f"{prefix}/config", HOSTGW)
    agents = [
        Flanneld(
            lab,
            i,
            f"--etcd-endpoints={ENDPOINT}",
            "--iface=eth0",
            f"-etcd-prefix={prefix}",
            name=f"h{i}",
        ).start()
        for i in (1, 2)
    ]
    s1, s2 = (agent.subnet() for agent in agents)
    with lab.iproute(1) as r1, lab.iproute(2) as r2:
        wait_for(lambda: route_gateway(r1, s2) == "192.0.2.12", 5, f"h1 route to {s2}")
        wait_for(lambda: route_gateway(r2, s1) == "192.0.2.11", 5, f"h2 route to {s1}")
    return agents[0], agents[1], s1, s2


def test_sigterm_exits_quickly_and_leaves_lease_and_routes(lab_factory: LabFactory) -> None:
    lab = lab_factory(hosts=2, etcd=True)
    a1, _a2, s1, s2 = hostgw_pair(lab)
    before = subnet_leases(lab)[key_of(s1)]

    code, seconds = a1.terminate(timeout=2.0)
    assert code == 0 and seconds < 2.0
    assert "stopped; lease, devices and routes left in place" in a1.log()
    after = subnet_leases(lab)[key_of(s1)]
    assert after == before and lease_ttl(lab, after.lease) > 0
    with lab.iproute(1) as r1, lab.iproute(2) as r2:
        assert route_gateway(r1, s2) == "192.0.2.12"
        time.sleep(0.5)  # h2 would drop its route if it saw h1's lease go
        assert route_gateway(r2, s1) == "192.0.2.11"


def test_restart_reuses_lease_and_reclaims_subnet_of_old_subnet_file(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(hosts=1, etcd=True)
    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    flags = (f"--etcd-endpoints={ENDPOINT}", "--iface=eth0", f"-etcd-prefix={PREFIX}")
    first = Flanneld(lab, 1, *flags, name="first").start()
    subnet = first.subnet()
    original = subnet_leases(lab)[key_of(subnet)]
    assert first.terminate()[0] == 0

    # Restart with the lease alive: the same key and the same etcd lease.
    second = Flanneld(lab, 1, *flags, name="second", subnet_file=first.subnet_file).start()
    second.wait_log("ready:")
    assert second.subnet() == subnet
    assert "reusing own lease" in second.log()
    assert subnet_leases(lab) == {key_of(subnet): original}
    assert second.terminate()[0] == 0

    # The key deleted while stopped: the old subnet file's subnet is claimed again.
    lab.etcdctl("del", key_of(subnet))
    third = Flanneld(lab, 1, *flags, name="third", subnet_file=first.subnet_file).start()
    third.wait_log("ready:")
    assert third.subnet() == subnet
    assert "claimed previous subnet" in third.log()
    reclaimed = subnet_leases(lab)
    assert list(reclaimed) == [key_of(subnet)]
    assert reclaimed[key_of(subnet)].value == lease_value("192.0.2.11")
    assert reclaimed[key_of(subnet)].lease not in (0, original.lease)


def test_revoked_lease_is_taken_back(lab_factory: LabFactory) -> None:
    lab = lab_factory(hosts=1, etcd=True)
    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    agent = Flanneld(
        lab, 1, f"--etcd-endpoints={ENDPOINT}", "--iface=eth0", f"-etcd-prefix={PREFIX}"
    )
    agent.start()
    subnet = agent.subnet()
    env_before = agent.subnet_env()
    mtime_before = agent.subnet_file.stat().st_mtime_ns
    old = subnet_leases(lab)[key_of(subnet)]

    lab.etcdctl("lease", "revoke", format(old.lease, "x"))
    revoked = time.monotonic()

    def back() -> Kv | None:
        kv = subnet_leases(lab).get(key_of(subnet))
        return kv if kv is not None and kv.lease != old.lease else None

    new = wait_for(back, 2.0, f"{key_of(subnet)} to come back", every=0.05)
    agent.wait_log(
        f"took back subnet {subnet}", timeout=max(0.1, 2.0 - (time.monotonic() - revoked))
    )
    assert new.value == old.value
    assert lease_ttl(lab, new.lease) > 0
    assert agent.subnet_env() == env_before
    assert agent.subnet_file.stat().st_mtime_ns == mtime_before  # not even rewritten
    assert agent.alive()


# ---- etcd going away ----------------------------------------------------------------------


def test_agent_survives_etcd_restart_and_sees_new_peers(lab_factory: LabFactory) -> None:
    lab = lab_factory(hosts=2, etcd=True)
    a1, a2, s1, s2 = hostgw_pair(lab)
    own = subnet_leases(lab)
    etcd_pid = lab.etcd_pid
    assert etcd_pid is not None

    cpu_before = [cpu_seconds(a.pid) for a in (a1, a2)]
    os.kill(etcd_pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(etcd_pid), 5, "etcd to stop")
    outage = 3.0
    time.sleep(outage)
    cpu_used = [cpu_seconds(a.pid) - before for a, before in zip((a1, a2), cpu_before, strict=True)]
    assert a1.alive() and a2.alive()
    record("agent_cpu_during_3s_etcd_outage_s", cpu_used)
    assert max(cpu_used) < 0.3 * outage, f"agents spun while etcd was down: {cpu_used}"

    lab.start_etcd()
    assert subnet_leases(lab) == own  # etcd kept the leases (same data dir)
    peer = "10.100.250.0/24"
    lab.etcdctl("put", key_of(peer), lease_value("192.0.2.99"))
    with lab.iproute(1) as r1, lab.iproute(2) as r2:
        wait_for(lambda: route_gateway(r1, peer) == "192.0.2.99", 10, f"h1 route to {peer}")
        wait_for(lambda: route_gateway(r2, peer) == "192.0.2.99", 10, f"h2 route to {peer}")
        assert route_gateway(r1, s2) == "192.0.2.12" and route_gateway(r2, s1) == "192.0.2.11"
    assert a1.alive() and a2.alive()


# ---- timings --------------------------------------------------------------------------------


def test_timings_start_to_subnet_env_and_lease_to_route(lab_factory: LabFactory) -> None:
    """Measured, recorded in MEASUREMENTS, and bounded generously."""
    lab = lab_factory(hosts=2, etcd=True)
    lab.etcdctl("put", f"{PREFIX}/config", HOSTGW)
    flags = (f"--etcd-endpoints={ENDPOINT}", "--iface=eth0", f"-etcd-prefix={PREFIX}")

    start_times: list[float] = []
    for run in range(5):
        agent = Flanneld(lab, 1, *flags, name=f"start{run}")  # fresh subnet file each run
        started = time.monotonic()
        agent.start()
        wait_for(agent.subnet_env, 10, "subnet.env", every=0.002)
        start_times.append(time.monotonic() - started)
        assert agent.terminate()[0] == 0
        lab.etcdctl("del", "--prefix", f"{PREFIX}/subnets/")  # a fresh claim every time
    record("start_to_subnet_env_s", start_times)

    watcher = Flanneld(lab, 1, *flags, name="watcher").start()
    watcher.subnet()
    watcher.wait_log("ready:")
    route_times: list[float] = []
    put_times: list[float] = []
    with lab.iproute(1) as ipr:
        for n in range(10):
            peer = f"10.100.{200 + n}.0/24"
            seen: list[float] = []

            def poll(subnet: str = peer, out: list[float] = seen) -> None:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and route_gateway(ipr, subnet) is None:
                    time.sleep(0.002)
                out.append(time.monotonic())

            thread = threading.Thread(target=poll, daemon=True)
            thread.start()
            put = time.monotonic()
            lab.etcdctl("put", key_of(peer), lease_value(f"192.0.2.{100 + n}"))
            put_times.append(time.monotonic() - put)
            thread.join(timeout=15)
            assert route_gateway(ipr, peer) == f"192.0.2.{100 + n}"
            route_times.append(seen[0] - put)
    record("lease_put_to_route_s", route_times)
    record("etcdctl_put_runtime_s", put_times)
    assert statistics.median(start_times) < 5.0
    assert statistics.median(route_times) < 2.0
