"""State of the converged nodes, checked from outside Ansible (testinfra over the inventory's
connection: `docker exec` on the Docker nodes, SSH on the Vagrant VMs).

Shared by every scenario (the backend comes from the scenario's inventory): etcd healthy with
every node a member, flanneld active, subnet.env agreeing with the lease in etcd, docker0 on the
leased subnet with the backend's MTU, and the cross-node ping matrix (playbooks/verify.yml).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
# The checkout's test helpers (pyflannel_lab is not installed, only the agent is).
sys.path.insert(0, str(REPO))

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("flannel")

from pyflannel.mtu import OVERHEAD  # noqa: E402  (container MTU = underlay MTU - this)

PREFIX = "/coreos.com/network"
# The BackendType a lease carries: none for udp, as flanneld writes it.
LEASE_TYPE = {"udp": None}


def _backend() -> str:
    return str(RUNNER.get_variables(testinfra_hosts[0])["flannel_network_backend"])


def _networking() -> str:
    """flannel_container_networking: docker (the role default), cni or both."""
    return str(
        RUNNER.get_variables(testinfra_hosts[0]).get("flannel_container_networking", "docker")
    )


def _etcdctl(host: Any, *args: str) -> str:
    # The member's etcdctl settings (endpoints, and with TLS the CA and admin certificate).
    cmd = host.run("set -a; . /etc/etcd/etcdctl.env; set +a; etcdctl " + " ".join(args))
    assert cmd.rc == 0, f"etcdctl {' '.join(args)} failed on {host.backend.hostname}: {cmd.stderr}"
    return str(cmd.stdout)


def _subnet_env(host: Any) -> dict[str, str]:
    text = host.file("/run/flannel/subnet.env").content_string
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _first_host() -> Any:
    return RUNNER.get_host(testinfra_hosts[0])


def _underlay(host: Any) -> tuple[str, int]:
    """The node's underlay address and MTU (the interface flanneld is given: eth0 on the Docker
    nodes, eth1 on the VMs, whose eth0 is Vagrant's management network)."""
    iface = RUNNER.get_variables(host.backend.get_hostname())["flannel_iface"][0]
    info = json.loads(host.check_output(f"ip -4 -j addr show dev {iface}"))[0]
    return info["addr_info"][0]["local"], int(info["mtu"])


@pytest.fixture(scope="module")
def leases() -> dict[str, dict[str, Any]]:
    """Every lease in etcd, by subnet ("10.5.7.0/24"), read through the first node."""
    host = _first_host()
    raw = _etcdctl(host, "get", "--prefix", f"{PREFIX}/subnets/", "--write-out=json")
    found = {}
    for kv in json.loads(raw).get("kvs", []):
        key = base64.b64decode(kv["key"]).decode()
        subnet = key.rsplit("/", 1)[1].replace("-", "/")
        found[subnet] = json.loads(base64.b64decode(kv["value"]))
    return found


# The etcd members: every node on the Docker scenarios, the first one only on the VMs.
ETCD_HOSTS = RUNNER.get_hosts("etcd")


@pytest.mark.parametrize("member", ETCD_HOSTS)
def test_etcd_member_healthy(member: str) -> None:
    host = RUNNER.get_host(member)
    _etcdctl(host, "endpoint", "health")
    assert host.service("etcd").is_running
    assert host.service("etcd").is_enabled


@pytest.mark.parametrize("member", ETCD_HOSTS)
def test_etcd_cluster_has_every_member(member: str) -> None:
    host = RUNNER.get_host(member)
    members = json.loads(_etcdctl(host, "member", "list", "--write-out=json"))["members"]
    assert sorted(m["name"] for m in members) == sorted(ETCD_HOSTS)
    assert all(m.get("clientURLs") for m in members), f"a member has not started: {members}"


def test_network_config_has_the_backend() -> None:
    host = _first_host()
    config = json.loads(_etcdctl(host, "get", "--print-value-only", f"{PREFIX}/config"))
    assert config["Backend"]["Type"] == _backend()
    assert config["Network"] == "10.5.0.0/16"


def test_flanneld_active(host: Any) -> None:
    flanneld = host.service("flanneld")
    assert flanneld.is_running
    assert flanneld.is_enabled
    assert host.check_output("systemctl show -p Type --value flanneld") == "notify"


def test_subnet_env_matches_lease(host: Any, leases: dict[str, dict[str, Any]]) -> None:
    env = _subnet_env(host)
    gateway = ipaddress.IPv4Interface(env["FLANNEL_SUBNET"])
    lease = leases.get(str(gateway.network))
    assert lease is not None, f"no lease {gateway.network} in etcd (leases: {sorted(leases)})"
    public_ip, underlay_mtu = _underlay(host)
    assert lease["PublicIP"] == public_ip
    assert lease.get("BackendType") == LEASE_TYPE.get(_backend(), _backend())
    assert int(gateway.ip) == int(gateway.network.network_address) + 1
    assert env["FLANNEL_NETWORK"] == "10.5.0.0/16"
    assert int(env["FLANNEL_MTU"]) == underlay_mtu - OVERHEAD[_backend()]


def test_every_node_has_its_own_lease(leases: dict[str, dict[str, Any]]) -> None:
    owners = [lease["PublicIP"] for lease in leases.values()]
    assert len(owners) == len(set(owners)) == len(testinfra_hosts)


def test_docker0_on_the_lease(host: Any) -> None:
    env = _subnet_env(host)
    docker0 = json.loads(host.check_output("ip -4 -j addr show dev docker0"))[0]["addr_info"]
    assert [f"{a['local']}/{a['prefixlen']}" for a in docker0] == [env["FLANNEL_SUBNET"]]
    option = '{{index .Options "com.docker.network.driver.mtu"}}'
    mtu = host.check_output(f"docker network inspect bridge --format '{option}'")
    assert mtu == env["FLANNEL_MTU"]
    # docker0's own MTU follows its ports on this Docker version: a container shows the real one.
    eth0_mtu = host.check_output("docker run --rm busybox:local cat /sys/class/net/eth0/mtu")
    assert eth0_mtu == env["FLANNEL_MTU"]


def test_dockerd_flags_from_the_lease(host: Any) -> None:
    env = _subnet_env(host)
    masq = "false" if env["FLANNEL_IPMASQ"] == "true" else "true"
    cmdline = host.check_output("systemctl show -p ExecStart --value docker")
    for flag in (
        f"--bip={env['FLANNEL_SUBNET']}",
        f"--mtu={env['FLANNEL_MTU']}",
        f"--ip-masq={masq}",
    ):
        assert flag in cmdline
    # Shared with CNI pods: Docker allocates from the lower half of the lease only.
    lower = next(ipaddress.IPv4Interface(env["FLANNEL_SUBNET"]).network.subnets(prefixlen_diff=1))
    assert (f"--fixed-cidr={lower}" in cmdline) == (_networking() == "both"), cmdline


def test_bird_routes_every_peer_on_bgp_and_nothing_otherwise(
    host: Any, leases: dict[str, dict[str, Any]]
) -> None:
    """bgp: BIRD running, a `proto bird` route to every other lease via its node and our own
    subnet as a blackhole (the Calico walk-through's `ip route`), every session Established in
    `flannelctl bgp status`. Any other backend: no `proto bird` route at all."""
    routes = json.loads(host.check_output("ip -4 -j route show proto bird"))
    if _backend() != "bgp":
        assert routes == [], routes
        return
    assert host.service("bird").is_running
    own = str(ipaddress.IPv4Interface(_subnet_env(host)["FLANNEL_SUBNET"]).network)
    want = {
        subnet: ("blackhole" if subnet == own else lease["PublicIP"])
        for subnet, lease in leases.items()
    }
    got = {r["dst"]: r.get("gateway", r.get("type")) for r in routes}
    assert got == want, routes
    status = json.loads(host.check_output("flannelctl -o json bgp status"))
    assert sorted(row["state"] for row in status) == ["up"] * (len(leases) - 1), status
    assert {row["info"] for row in status} == {"Established"}, status


def test_cni_plugin_and_config_list(host: Any) -> None:
    """The cni role's work where CNI is on: the plugin link, the walk-through's list."""
    if _networking() == "docker":
        assert not host.file("/etc/cni/net.d/10-flannel.conflist").exists
        return
    link = host.file("/usr/lib/cni/flannel")
    assert link.is_symlink and link.linked_to == "/opt/pyflannel/bin/pyflannel-cni"
    assert host.file("/usr/lib/cni/bridge").exists  # Debian's standard plugins
    conflist = json.loads(host.file("/etc/cni/net.d/10-flannel.conflist").content_string)
    assert conflist["name"] == "cbr0" and conflist["cniVersion"] == "1.0.0"
    flannel, portmap = conflist["plugins"]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    assert flannel["type"] == "flannel"
    assert flannel["subnetFile"] == "/run/flannel/subnet.env"
    shared = _networking() == "both"
    assert flannel["delegate"] == {
        "hairpinMode": True,
        "isDefaultGateway": True,
        "bridge": "docker0" if shared else "cni0",
    }
    if shared:
        upper = list(
            ipaddress.IPv4Interface(_subnet_env(host)["FLANNEL_SUBNET"]).network.subnets(1)
        )[1]
        assert flannel["ipam"] == {
            "rangeStart": str(upper.network_address),
            "rangeEnd": str(upper.broadcast_address - 1),
        }


def test_overlay_ping_matrix(tmp_path: Path) -> None:
    """playbooks/verify.yml through ansible-runner: the role's own check of every pair passed,
    and the matrix it printed has no FAIL (both read from the runner's events)."""
    from pyflannel_lab.runner_events import run_ansible

    run = run_ansible(
        "ansible-playbook",
        ["-i", INVENTORY, str(REPO / "playbooks" / "verify.yml")],
        tmp_path / "runner",
        timeout=300,
    )
    results = {
        event["event_data"].get("task"): (event["event"], event["event_data"].get("res", {}))
        for event in run.events
        if event.get("event", "").startswith("runner_on_")
    }
    print(
        "\n".join(
            str(row) for row in results.get("Print the ping matrix", ("", {}))[1].get("msg", [])
        )
    )
    assert run.rc == 0, run.stdout[-4000:]
    # One pass per kind of test endpoint: Docker's containers, CNI pods, or both.
    checks = [
        (event["event"], event["event_data"].get("res", {}).get("msg"))
        for event in run.events
        if event.get("event") in ("runner_on_ok", "runner_on_failed")
        and event["event_data"].get("task") == "Check every pair"
    ]
    pairs = len(testinfra_hosts) * (len(testinfra_hosts) - 1)
    expected = {
        "docker": [f"all {pairs} pairs ping"],
        "cni": [f"all {pairs} pairs ping (CNI pods)"],
        "both": [f"all {pairs} pairs ping", f"all {pairs} pairs ping (CNI pods)"],
    }[_networking()]
    assert checks == [("runner_on_ok", msg) for msg in expected], checks
    matrices = [
        event["event_data"]["res"]["msg"]
        for event in run.events
        if event.get("event") == "runner_on_ok"
        and event["event_data"].get("task") == "Print the ping matrix"
    ]
    assert len(matrices) == len(expected), matrices
    for matrix in matrices:
        assert matrix and not any("FAIL" in str(row) for row in matrix), matrix
