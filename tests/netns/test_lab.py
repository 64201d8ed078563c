"""The namespace lab itself, proven with hand-made host-gw routes (no agent involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pyflannel.errors import UsageError
from pyflannel_lab import Lab, lab_namespaces
from pyflannel_lab.state_file import state_path

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
SUBNETS = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
OVERLAY = [{"overlay_subnets": SUBNETS}]


def add_host_gw_routes(lab: Lab) -> None:
    """What the host-gw backend does: each remote subnet via the remote host's underlay IP."""
    for i in lab.host_indexes():
        with lab.iproute(i) as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for peer in lab.host_indexes():
                if peer != i:
                    ipr.route("add", dst=lab.subnet(peer), gateway=lab.host_ip(peer), oif=eth0)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_inside(pid: int, ns: str) -> None:
    """`ip netns exec` enters the namespace a moment after it starts."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False, timeout=5
        )
        if str(pid) in pids.stdout.split():
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never entered namespace {ns}")


@pytest.mark.parametrize("lab", OVERLAY, indirect=True)
def test_underlay_and_local_gateway_work_but_nothing_routes_out(lab: Lab) -> None:
    assert lab.host_ip(2) == "192.0.2.12"
    assert lab.container_ip(3, 1) == "10.244.3.2"
    for src in lab.host_indexes():
        for dst in lab.host_indexes():
            assert lab.ping(src, lab.host_ip(dst)), f"h{src} -> h{dst} underlay"
    for i in lab.host_indexes():
        assert lab.ping(f"h{i}c1", lab.gateway_ip(i)), f"h{i}c1 -> its gateway"
        assert lab.run(i, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
        out = lab.run(i, "ip", "route", "get", "198.51.100.7", check=False)
        assert out.returncode != 0 and "unreachable" in out.stderr, "host must not route out"
    # Without routes from an agent, containers on different hosts cannot reach each other.
    assert not lab.ping("h1c1", lab.container_ip(2, 1))


def test_add_container_bridge_later(lab: Lab) -> None:
    assert lab.container_names() == []
    lab.add_container_bridge(2, "10.244.7.0/24")
    assert lab.container_names() == ["h2c1"]
    assert lab.run("h2", "ip", "-4", "-br", "addr", "show", "cbr0").stdout.split()[2] == (
        "10.244.7.1/24"
    )
    assert lab.ping("h2c1", "10.244.7.1")
    with pytest.raises(UsageError, match="already has a container bridge"):
        lab.add_container_bridge(2, "10.244.8.0/24")


@pytest.mark.parametrize(
    "lab", [{"overlay_subnets": SUBNETS, "containers_per_host": 2}], indirect=True
)
def test_host_gw_routes_give_full_matrix_and_a_removed_route_breaks_its_pair(lab: Lab) -> None:
    add_host_gw_routes(lab)
    matrix = lab.ping_matrix()
    assert len(matrix) == 6 * 5
    assert all(matrix.values()), [pair for pair, ok in matrix.items() if not ok]

    with lab.iproute(1) as ipr:
        ipr.route("del", dst="10.244.2.0/24", gateway=lab.host_ip(2))
    matrix = lab.ping_matrix()
    broken = {pair for pair, ok in matrix.items() if not ok}
    h1 = {"h1c1", "h1c2"}
    h2 = {"h2c1", "h2c2"}
    # h1 -> h2 has no route; h2 -> h1 requests arrive but the replies have no way back.
    expected = {(a, b) for a in h1 for b in h2} | {(b, a) for a in h1 for b in h2}
    assert broken == expected


@pytest.mark.parametrize("lab", OVERLAY, indirect=True)
def test_df_ping_at_container_mtu_passes_and_one_byte_more_fails(lab: Lab) -> None:
    add_host_gw_routes(lab)
    lab.set_container_mtu(1, 1400)
    assert lab.run("h1c1", "cat", "/sys/class/net/eth0/mtu").stdout.strip() == "1400"
    assert lab.run("h1", "cat", "/sys/class/net/cbr0/mtu").stdout.strip() == "1400"
    dst = lab.container_ip(2, 1)
    assert lab.ping("h1c1", dst, size=1400 - 28, df=True)
    too_big = lab.ping_result("h1c1", dst, size=1400 - 27, df=True)
    assert too_big.returncode != 0
    assert "message too long" in too_big.stdout + too_big.stderr

    # With a smaller underlay MTU, the sender's host (a router) answers with frag-needed.
    lab.set_underlay_mtu(1300)
    too_big = lab.ping_result("h3c1", dst, size=1400 - 28, df=True)
    assert too_big.returncode != 0
    assert f"From {lab.gateway_ip(3)} icmp_seq=1 Frag needed and DF set (mtu = 1300)" in (
        too_big.stdout
    ), too_big.stdout
    assert lab.ping("h3c1", dst, size=1300 - 28, df=True)


@pytest.mark.parametrize("lab", OVERLAY, indirect=True)
def test_capture_shows_icmp_on_underlay_of_h1(lab: Lab) -> None:
    add_host_gw_routes(lab)
    src, dst = lab.container_ip(1, 1), lab.container_ip(3, 1)
    lines = lab.capture(
        "h1", "eth0", "icmp", count=2, timeout=5, during=lambda: lab.ping("h1c1", dst)
    )
    assert any(f"{src} > {dst}: ICMP echo request" in line for line in lines), lines
    assert any(f"{dst} > {src}: ICMP echo reply" in line for line in lines), lines
    # Bounded: nothing matches, so the capture ends at its timeout with no lines.
    assert lab.capture("h1", "eth0", "udp port 9", count=1, timeout=1) == []


@pytest.mark.parametrize("lab", [{"etcd": True}], indirect=True)
def test_lab_etcd_answers_from_host_namespaces(lab: Lab) -> None:
    assert lab.etcd_endpoint == "http://192.0.2.1:2379"
    put = lab.run(
        "h1", "etcdctl", "--endpoints", "http://192.0.2.1:2379", "put", "/lab/probe", "hello"
    )
    assert put.stdout.strip() == "OK"
    got = lab.etcdctl("get", "--print-value-only", "/lab/probe", node="h3")
    assert got.stdout.strip() == "hello"


def test_down_stops_processes_and_removes_namespaces(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(overlay_subnets=SUBNETS, etcd=True)
    etcd_pid = lab.etcd_pid
    assert etcd_pid is not None and pid_alive(etcd_pid)
    agent = lab.popen("h2", "sleep", "300", log_path=Path(str(lab.tmpdir)) / "agent.log")
    tmpdir = lab.tmpdir
    assert len(lab_namespaces(lab.prefix)) == 7
    lab.down()
    assert lab_namespaces(lab.prefix) == []
    assert not pid_alive(etcd_pid)
    assert agent.poll() is not None
    assert tmpdir is not None and not tmpdir.exists()
    assert not state_path(lab.prefix).exists()
    lab.down()  # idempotent


def test_cleanup_stale_removes_a_crashed_lab(lab_factory: Callable[..., Lab]) -> None:
    crashed = lab_factory(hosts=2)
    # Started behind the Lab's back, as a crashed run would leave it.
    orphan = subprocess.Popen(["ip", "netns", "exec", crashed.ns("h1"), "sleep", "300"])
    try:
        wait_until_inside(orphan.pid, crashed.ns("h1"))
        removed = Lab.cleanup_stale(crashed.prefix)
        assert set(removed) == {f"{crashed.prefix}-{n}" for n in ("sw", "h1", "h2")}
        assert lab_namespaces(crashed.prefix) == []
        assert orphan.wait(timeout=5) is not None
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_command_line_up_status_down() -> None:
    prefix = f"pfc{os.urandom(2).hex()}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pyflannel_lab", *args, "--prefix", prefix]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)

    try:
        up = cli("up", "--hosts", "2", "--overlay", "10.244.1.0/24,10.244.2.0/24")
        assert up.returncode == 0, up.stderr
        etcd_pid = json.loads(up.stdout)["etcd"]["pid"]
        again = cli("up", "--hosts", "2")
        assert again.returncode == 2 and "already up" in again.stderr
        status = json.loads(cli("status").stdout)
        assert status["etcd"]["running"] is True
        assert status["hosts"]["h2"]["containers"] == {"h2c1": "10.244.2.2"}
        assert len(status["namespaces"]) == 5
        assert cli("down").returncode == 0
        assert lab_namespaces(prefix) == []
        assert not pid_alive(etcd_pid)
        missing = cli("status")
        assert missing.returncode == 2 and "no lab with prefix" in missing.stderr
    finally:
        Lab.cleanup_stale(prefix)


def test_bad_input_is_refused_with_a_hint() -> None:
    with pytest.raises(UsageError, match="documentation ranges"):
        Lab(underlay="10.0.0.0/24")
    with pytest.raises(UsageError, match="lowercase"):
        Lab(name_prefix="Bad-Prefix")
    with pytest.raises(UsageError, match="one per host"):
        Lab(hosts=3, overlay_subnets=["10.244.1.0/24"])
    with pytest.raises(UsageError, match=r"hosts are 1\.\.3"):
        Lab().host_ip(4)
