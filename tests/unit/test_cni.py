"""The CNI plugin's config handling and its protocol edge (no delegate runs here: the netns
tier runs the real bridge and host-local plugins and podman)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyflannel.cni.netconf import delegate_config, parse_netconf
from pyflannel.cni.protocol import SUPPORTED_VERSIONS, CniError, Invocation
from pyflannel.pools import shared_pools
from pyflannel.subnetenv import SubnetEnv

LEASE = SubnetEnv(
    network=ipaddress.IPv4Network("10.244.0.0/16"),
    subnet=ipaddress.IPv4Interface("10.244.1.1/24"),
    mtu=1480,
    ipmasq=True,
)
WALKTHROUGH = {
    "name": "cbr0",
    "cniVersion": "0.3.1",
    "type": "flannel",
    "delegate": {"hairpinMode": True, "isDefaultGateway": True},
}


def netconf(**changes: Any) -> bytes:
    return json.dumps({**WALKTHROUGH, **changes}).encode()


def test_walkthrough_config_becomes_a_bridge_on_the_lease() -> None:
    delegate = delegate_config(parse_netconf(netconf()), LEASE)
    assert delegate == {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "type": "bridge",
        "hairpinMode": True,
        "isDefaultGateway": True,
        "isGateway": True,
        # The agent masquerades (FLANNEL_IPMASQ=true): the bridge must not do it again.
        "ipMasq": False,
        "mtu": 1480,
        "ipam": {
            "type": "host-local",
            # The network address: host-local refuses a subnet with host bits set.
            "ranges": [[{"subnet": "10.244.1.0/24"}]],
            "routes": [{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}],
        },
    }


def test_the_operators_delegate_keys_win_and_ipmasq_follows_the_lease() -> None:
    lease = SubnetEnv(LEASE.network, LEASE.subnet, LEASE.mtu, ipmasq=False)
    delegate = delegate_config(
        parse_netconf(netconf(delegate={"bridge": "pods0", "mtu": 1400})), lease
    )
    assert (delegate["bridge"], delegate["mtu"], delegate["ipMasq"]) == ("pods0", 1400, True)
    other = delegate_config(parse_netconf(netconf(delegate={"type": "ptp"})), LEASE)
    assert "isGateway" not in other  # a bridge's option only


def test_ipam_keeps_the_operators_keys_and_adds_the_networks_route() -> None:
    config = netconf(ipam={"dataDir": "/srv/ipam", "routes": [{"dst": "192.0.2.0/24"}]})
    ipam = delegate_config(parse_netconf(config), LEASE)["ipam"]
    assert ipam["dataDir"] == "/srv/ipam"
    assert ipam["routes"] == [
        {"dst": "192.0.2.0/24"},
        {"dst": "10.244.0.0/16", "gw": "10.244.1.1"},
    ]


def test_a_pool_inside_the_lease_bounds_the_range() -> None:
    config = netconf(ipam={"rangeStart": "10.244.1.129", "rangeEnd": "10.244.1.254"})
    ipam = delegate_config(parse_netconf(config), LEASE)["ipam"]
    assert ipam["ranges"] == [
        [{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.129", "rangeEnd": "10.244.1.254"}]
    ]
    assert "rangeStart" not in ipam


@pytest.mark.parametrize(
    ("pool", "words"),
    [
        (
            {"rangeStart": "10.244.2.129"},
            "ipam.rangeStart 10.244.2.129 is outside the node's lease",
        ),
        ({"rangeEnd": "10.244.1.255"}, "outside the node's lease 10.244.1.0/24"),
        ({"rangeStart": "ten"}, "is not an IPv4 address"),
        ({"rangeStart": "10.244.1.200", "rangeEnd": "10.244.1.100"}, "is after rangeEnd"),
    ],
)
def test_a_pool_outside_the_lease_is_refused(pool: dict[str, str], words: str) -> None:
    with pytest.raises(CniError) as caught:
        delegate_config(parse_netconf(netconf(ipam=pool)), LEASE)
    assert caught.value.code == 7 and words in caught.value.msg, caught.value.msg


def test_ipv6_lease_adds_a_second_range_and_route() -> None:
    lease = SubnetEnv(
        LEASE.network,
        LEASE.subnet,
        LEASE.mtu,
        LEASE.ipmasq,
        ipaddress.IPv6Network("fd00:10::/56"),
        ipaddress.IPv6Interface("fd00:10:0:1::1/64"),
    )
    ipam = delegate_config(parse_netconf(netconf()), lease)["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:0:1::/64"}]]
    assert {"dst": "fd00:10::/56", "gw": "fd00:10:0:1::1"} in ipam["routes"]


def test_runtime_keys_reach_the_delegate() -> None:
    runtime = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    delegate = delegate_config(parse_netconf(netconf(runtimeConfig=runtime)), LEASE)
    assert delegate["runtimeConfig"] == runtime


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"{not json", 6, "not JSON"),
        (b"[1]", 6, "JSON object"),
        (netconf(name=""), 7, "name must be a non-empty string"),
        (json.dumps({"name": "x"}).encode(), 7, "cniVersion is missing"),
        (netconf(delegate="bridge"), 7, "delegate must be an object"),
        (netconf(subnetFile="run/subnet.env"), 7, "must be an absolute path"),
        (netconf(ipam={"subnet": "10.0.0.0/24"}), 2, "ipam.subnet is set from the node's lease"),
        (netconf(ipam={"ranges": []}), 2, "ipam.ranges"),
    ],
)
def test_bad_config_is_named(data: bytes, code: int, words: str) -> None:
    with pytest.raises(CniError) as caught:
        parse_netconf(data)
    assert caught.value.code == code and words in caught.value.msg, caught.value.msg


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({}, "CNI_COMMAND='' is not one of ADD, DEL, CHECK, VERSION"),
        ({"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0", "CNI_PATH": "/x"}, "CNI_CONTAINERID"),
        (
            {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "e", "CNI_PATH": "/x"},
            "CNI_NETNS",
        ),
        ({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"}, "CNI_PATH"),
        (
            {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "../x", "CNI_IFNAME": "e", "CNI_PATH": "/x"},
            "not a valid ID",
        ),
    ],
)
def test_bad_environment_is_named(environ: dict[str, str], words: str) -> None:
    with pytest.raises(CniError) as caught:
        Invocation.from_environment(environ)
    assert caught.value.code == 4 and words in caught.value.msg, caught.value.msg


def test_del_needs_no_namespace() -> None:
    environ = {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "c1",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/a:/b",
    }
    assert Invocation.from_environment(environ).path == ("/a", "/b")


def run_plugin(environ: dict[str, str], stdin: bytes) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "pyflannel.cni.plugin"],
        input=stdin,
        capture_output=True,
        env={"PATH": os.environ["PATH"], **environ},
        timeout=30,
        check=False,
    )
    assert done.stderr == b"", done.stderr
    return done.returncode, json.loads(done.stdout)


def call_env(command: str, plugin_dir: Path) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/c1",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(plugin_dir),
    }


def test_version_lists_what_it_speaks() -> None:
    rc, out = run_plugin({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert rc == 0
    assert out == {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def test_errors_are_the_specs_json_on_stdout_with_status_1(tmp_path: Path) -> None:
    environ = call_env("ADD", tmp_path)
    rc, out = run_plugin(environ, netconf(cniVersion="0.2.0"))
    assert rc == 1
    assert out["code"] == 1 and "cniVersion '0.2.0' is not supported" in out["msg"]
    rc, out = run_plugin(environ, b"garbage")
    assert (rc, out["code"], out["cniVersion"]) == (1, 6, "1.0.0")
    # The delegate is not installed: named, with what to install.
    env_file = tmp_path / "subnet.env"
    env_file.write_text(LEASE.render())
    config = netconf(subnetFile=str(env_file), dataDir=str(tmp_path / "data"), cniVersion="1.0.0")
    rc, out = run_plugin(environ, config)
    assert rc == 1 and out["code"] == 7, out
    assert "delegate plugin 'bridge' not found in CNI_PATH" in out["msg"]
    assert "containernetworking-plugins" in out["msg"]
    assert not (tmp_path / "data").exists()


def test_check_is_refused_before_040(tmp_path: Path) -> None:
    environ = call_env("CHECK", tmp_path)
    rc, out = run_plugin(environ, netconf(dataDir=str(tmp_path)))
    assert rc == 1 and out["code"] == 1 and "CHECK needs cniVersion 0.4.0" in out["msg"]


@pytest.mark.parametrize(
    ("gateway", "docker", "start", "end"),
    [
        ("10.5.3.1/24", "10.5.3.0/25", "10.5.3.128", "10.5.3.254"),
        ("10.5.0.1/20", "10.5.0.0/21", "10.5.8.0", "10.5.15.254"),
        ("10.5.3.1/29", "10.5.3.0/30", "10.5.3.4", "10.5.3.6"),
    ],
)
def test_shared_pools_split_the_lease_in_halves(
    gateway: str, docker: str, start: str, end: str
) -> None:
    pools = shared_pools(ipaddress.IPv4Interface(gateway))
    assert str(pools.docker_fixed_cidr) == docker
    assert (str(pools.cni_range_start), str(pools.cni_range_end)) == (start, end)
    # The CNI pool is valid for the plugin: inside the lease, not its broadcast address.
    config = netconf(ipam={"rangeStart": start, "rangeEnd": end})
    lease = SubnetEnv(
        ipaddress.IPv4Network("10.5.0.0/16"), ipaddress.IPv4Interface(gateway), 1450, True
    )
    pool = delegate_config(parse_netconf(config), lease)["ipam"]["ranges"][0][0]
    assert (pool["rangeStart"], pool["rangeEnd"]) == (start, end)


def test_a_lease_too_small_to_share_is_named() -> None:
    with pytest.raises(ValueError, match=r"lease 10.5.3.0/30 is too small to share"):
        shared_pools(ipaddress.IPv4Interface("10.5.3.1/30"))
