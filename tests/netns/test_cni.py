"""The `flannel` CNI plugin on two namespace hosts running agents, for every backend.

First as a runtime calls it (CNI_* environment, config on stdin, the standard bridge and
host-local plugins from Debian's containernetworking-plugins), then under podman (4.3, CNI
network backend) with the walk-through's conflist. Expected kernel state is the reference
walk-through's (pod-networking-veth-bridge-ipip.txt): cni0 holds the subnet's first address
with the lease's MTU, pods get the next ones, routes `default via .1` and `<Network> via .1`.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyflannel_lab.agents import AgentCluster
from pyflannel_lab.cni import STANDARD_PLUGINS, CniHost, Podman

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

BACKENDS = ["vxlan", "host-gw", "udp", "ipip"]
IMAGE = "localhost/busybox:local"


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request: pytest.FixtureRequest) -> Iterator[AgentCluster]:
    """Two hosts with agents (--ip-masq), no lab bridge: the plugin makes cni0."""
    assert (STANDARD_PLUGINS / "bridge").exists(), "apt-get install containernetworking-plugins"
    with AgentCluster.running(
        request.param, hosts=2, prefix="pcni", containers=False, extra_args=["--ip-masq"]
    ) as built:
        yield built


@pytest.fixture
def hosts(cluster: AgentCluster) -> Iterator[dict[int, CniHost]]:
    lab = cluster.lab
    assert lab.tmpdir is not None
    made = {i: CniHost(lab, i, cluster.agents[i].subnet_file, lab.tmpdir) for i in (1, 2)}
    try:
        yield made
    finally:
        for host in made.values():
            host.remove_pods()


def ns_json(ns: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ip", "-j", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return list(json.loads(out.stdout))


def pod_ping(ns: str, ip: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", ip],
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )


def test_add_gives_the_walkthrough_kernel_state_and_pods_reach_across_hosts(
    cluster: AgentCluster, hosts: dict[int, CniHost]
) -> None:
    pods = {}
    for i, host in hosts.items():
        subnet = cluster.subnet(i)
        gateway = str(subnet.network_address + 1)
        ns, result = host.add_pod("a")
        pods[i] = ns
        # The result names the pod's address on the lease, gateway .1.
        (ip,) = result["ips"]
        assert ip["address"] == f"{subnet.network_address + 2}/{subnet.prefixlen}", result
        assert ip["gateway"] == gateway
        # cni0: the subnet's first address, the lease's MTU (FLANNEL_MTU).
        (bridge,) = ns_json(cluster.lab.host_ns(i), "addr", "show", "dev", "cni0")
        assert bridge["mtu"] == cluster.mtu(i)
        addrs = [
            f"{a['local']}/{a['prefixlen']}" for a in bridge["addr_info"] if a["family"] == "inet"
        ]
        assert addrs == [f"{gateway}/{subnet.prefixlen}"]
        # The pod: eth0 on the lease with its MTU; default and the Network via the bridge.
        (eth0,) = ns_json(ns, "addr", "show", "dev", "eth0")
        assert eth0["mtu"] == cluster.mtu(i)
        routes = {(r["dst"], r.get("gateway")) for r in ns_json(ns, "route")}
        assert ("default", gateway) in routes
        assert (str(cluster.network), gateway) in routes
    for i, j in ((1, 2), (2, 1)):
        peer = str(cluster.subnet(j).network_address + 2)
        done = pod_ping(pods[i], peer)
        assert done.returncode == 0, f"pod on h{i} -> {peer} ({cluster.backend}): {done.stdout}"


def test_check_passes_then_fails_once_the_pod_lost_its_address(
    hosts: dict[int, CniHost],
) -> None:
    host = hosts[1]
    ns, result = host.add_pod("c")
    netconf = {**host.netconf(), "prevResult": result}
    ok = host.call("CHECK", ns, f"/run/netns/{ns}", netconf=netconf)
    assert ok.returncode == 0, ok.stdout
    subprocess.run(["ip", "netns", "exec", ns, "ip", "addr", "flush", "dev", "eth0"], check=True)
    broken = host.call("CHECK", ns, f"/run/netns/{ns}", netconf=netconf)
    assert broken.returncode != 0
    error = broken.result()
    assert error["code"] and error["msg"].startswith("bridge: "), error


def test_check_fails_once_the_lease_moved_away_from_the_pod(
    cluster: AgentCluster, hosts: dict[int, CniHost], tmp_path: Path
) -> None:
    """The subnet file now says another subnet (h2's, so surely not h1's): CHECK names it."""
    host = hosts[1]
    ns, result = host.add_pod("m")
    moved = cluster.env_text(1).replace(
        cluster.env(1)["FLANNEL_SUBNET"], cluster.env(2)["FLANNEL_SUBNET"]
    )
    (tmp_path / "subnet.env").write_text(moved)
    netconf = {**host.netconf(), "prevResult": result, "subnetFile": str(tmp_path / "subnet.env")}
    done = host.call("CHECK", ns, f"/run/netns/{ns}", netconf=netconf)
    assert done.returncode == 1
    error = done.result()
    assert error["code"] == 3, error
    assert error["msg"] == (
        f"container {ns} is on {cluster.subnet(1)}, the node's lease is {cluster.subnet(2)} "
        "now: recreate the container"
    )


def test_del_removes_the_pod_link_and_its_address_and_is_idempotent(
    cluster: AgentCluster, hosts: dict[int, CniHost]
) -> None:
    host = hosts[2]
    ns, result = host.add_pod("d")
    address = result["ips"][0]["address"].split("/")[0]
    reserved = host.ipam_dir / "cbr0" / address
    saved = host.data_dir / ns
    assert reserved.exists() and saved.exists()
    host_links = {link["ifname"] for link in ns_json(cluster.lab.host_ns(2), "link")}
    assert any(name.startswith("veth") for name in host_links)
    for _ in range(2):  # a second DEL (runtimes retry) finds nothing and succeeds
        done = host.call("DEL", ns, f"/run/netns/{ns}")
        assert done.returncode == 0 and done.stdout == "", done.stdout
    assert not reserved.exists() and not saved.exists()
    assert [link["ifname"] for link in ns_json(ns, "link")] == ["lo"]  # eth0 went with its veth
    host_links = {link["ifname"] for link in ns_json(cluster.lab.host_ns(2), "link")}
    assert not any(name.startswith("veth") for name in host_links), host_links


def test_add_before_the_agent_wrote_its_subnet_file_says_try_again(
    hosts: dict[int, CniHost], tmp_path: Path
) -> None:
    host = hosts[1]
    netconf = {**host.netconf(), "subnetFile": str(tmp_path / "subnet.env")}
    done = host.call("ADD", "early", "/run/netns/none", netconf=netconf)
    assert done.returncode == 1
    error = done.result()
    assert error["code"] == 11 and "is flanneld (pyflannel) running" in error["msg"], error
    assert not (host.data_dir / "early").exists()


@pytest.fixture
def podmen(hosts: dict[int, CniHost]) -> Iterator[dict[int, Podman]]:
    assert shutil.which("podman"), "apt-get install podman"
    made = {}
    for i, host in hosts.items():
        host.write_conflist()
        made[i] = Podman(host)
    try:
        loaded = made[1].podman("images", "--format", "{{.Repository}}:{{.Tag}}")
        if IMAGE not in loaded.split():
            archive = Path(__file__).resolve().parents[2] / "build" / "images"
            made[1].podman("load", "--input", str(archive / "busybox-local.tar"))
        yield made
    finally:
        for podman in made.values():
            podman.remove_all()


def test_podman_containers_on_cni0_ping_across_hosts(
    cluster: AgentCluster, podmen: dict[int, Podman]
) -> None:
    prefix = cluster.lab.prefix
    ips = {}
    for i, podman in podmen.items():
        name = f"{prefix}-h{i}-web"
        podman.run(name, IMAGE, "sleep", "300")
        inspect = json.loads(podman.podman("inspect", name))[0]
        ip = inspect["NetworkSettings"]["Networks"]["cbr0"]["IPAddress"]
        assert ipaddress.IPv4Address(ip) in cluster.subnet(i), (ip, cluster.subnet(i))
        mtu = podman.exec(name, "cat", "/sys/class/net/eth0/mtu").strip()
        assert mtu == str(cluster.mtu(i))
        ips[i] = (name, ip)
    for i, j in ((1, 2), (2, 1)):
        name, _ = ips[i]
        out = podmen[i].exec(name, "ping", "-c", "3", "-W", "2", ips[j][1], check=False)
        assert " 0% packet loss" in out, f"{name} -> {ips[j][1]} ({cluster.backend}): {out}"


def test_pod_command_networks_a_test_pod_from_the_config_list_and_removes_it(
    cluster: AgentCluster, hosts: dict[int, CniHost]
) -> None:
    """`pyflannel-cni pod add|del NAME`: what the provisioner's overlay check runs on nodes."""
    pods = {}
    for i, host in hosts.items():
        host.write_conflist()
        name = host.pod_ns("tool")
        done = host.pod_tool("add", name)
        assert done.returncode == 0, done.stderr
        pod = json.loads(done.stdout)
        assert ipaddress.IPv4Address(pod["ip"]) in cluster.subnet(i)
        assert pod["mtu"] == cluster.mtu(i)
        pods[i] = (name, pod["ip"])
    try:
        done = pod_ping(pods[1][0], pods[2][1])
        assert done.returncode == 0, done.stdout
    finally:
        for i, (name, _) in pods.items():
            for removed in (True, False):  # a second del finds nothing, and says so
                done = hosts[i].pod_tool("del", name)
                assert done.returncode == 0, done.stderr
                assert json.loads(done.stdout) == {"name": name, "removed": removed}
            assert not Path(f"/run/netns/{name}").exists()
    broken = hosts[1].pod_tool("add", "x", "--conflist", "/nonexistent")
    assert broken.returncode == 1
    assert broken.stderr.strip() == (
        "pyflannel-cni: cannot read /nonexistent: No such file or directory"
    )
