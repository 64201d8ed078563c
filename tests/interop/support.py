"""Helpers of the interop tier: mixed clusters of flanneld and pyflannel in a namespace lab."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import secrets
import subprocess
import sys
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from pyflannel_lab import Lab
from pyflannel_lab.agents import AgentCluster
from pyflannel_lab.peers import REPO_ROOT, Peers

# Every lab of this tier is named pfi<4 hex digits>: never another tier's namespaces.
LAB_PREFIX = "pfi"
# mk-docker-opts.sh starts the combined variable from an exported one of the same name.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@contextlib.contextmanager
def mixed_cluster(
    peers: Peers,
    backend: str,
    flanneld_hosts: Collection[int],
    *,
    hosts: int = 3,
    options: dict[str, Any] | None = None,
    start: bool = True,
    **kwargs: Any,
) -> Iterator[AgentCluster]:
    """A lab with etcd and the config; flanneld on `flanneld_hosts`, pyflannel elsewhere.

    With start=True every agent runs (started one by one: flanneld v0.20.2 misses leases claimed
    while it starts, see AgentCluster.start_all), every host has its container on its leased
    subnet and all pairs ping. The lab is taken down afterwards, also on failure.
    """
    # wire_like: flanneld's udp proxy reads datagrams in userspace, so the underlay must deliver
    # what a wire does (see Lab), or TCP from a pyflannel fast path never arrives.
    lab = Lab(name_prefix=f"{LAB_PREFIX}{secrets.token_hex(2)}", hosts=hosts, wire_like=True)
    try:
        lab.up()
        lab.start_etcd()
        cluster = AgentCluster(
            lab,
            backend,
            backend_options=options,
            flanneld_hosts=flanneld_hosts,
            flanneld=peers.flanneld,
            **kwargs,
        )
        cluster.put_config()
        if start:
            cluster.start_all(one_by_one=True)
        yield cluster
    finally:
        lab.down()


def routes(cluster: AgentCluster, host: int) -> list[dict[str, Any]]:
    out = cluster.lab.run(host, "ip", "-j", "-4", "route", "show").stdout
    return list(json.loads(out or "[]"))


def route_to(cluster: AgentCluster, host: int, dst: ipaddress.IPv4Network) -> dict[str, Any]:
    """The route for exactly `dst` on a host; an AssertionError naming the table if none."""
    table = routes(cluster, host)
    found = [r for r in table if r.get("dst") == str(dst)]
    assert len(found) == 1, f"h{host} ({cluster.kind(host)}): no single route to {dst}: {table}"
    return found[0]


def lease_raw(cluster: AgentCluster, host: int) -> str:
    """The lease value of a host exactly as stored in etcd."""
    key = cluster.lease_key(host)
    return cluster.lab.etcdctl("get", "--print-value-only", key).stdout.strip()


def lease_template(cluster: AgentCluster, host: int) -> str:
    """The lease value with what differs per node (public IP, VTEP MAC) replaced by names."""
    value = lease_raw(cluster, host).replace(f'"{cluster.lab.host_ip(host)}"', '"<ip>"')
    data = (json.loads(value).get("BackendData") or {}) if value else {}
    mac = data.get("VtepMAC")
    return value.replace(f'"{mac}"', '"<mac>"') if mac else value


def link_details(cluster: AgentCluster, host: int, device: str) -> dict[str, Any]:
    out = cluster.lab.run(host, "ip", "-d", "-j", "link", "show", device).stdout
    return dict(json.loads(out)[0])


def flannelctl(cluster: AgentCluster, *args: str, check: bool = True) -> str:
    """Run our flannelctl against the lab's etcd (from the switch namespace); its stdout."""
    result = cluster.lab.run(
        "sw",
        sys.executable,
        "-m",
        "pyflannel.ctl",
        f"--etcd-endpoints={cluster.lab.etcd_endpoint}",
        f"--etcd-prefix={cluster.prefix}",
        *args,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"flannelctl {' '.join(args)}: {result.stderr}"
    return result.stdout


def etcd_lease_id(cluster: AgentCluster, host: int) -> int:
    """The etcd lease attached to a host's subnet key (0: none, a reservation)."""
    out = cluster.lab.etcdctl("get", "-w", "json", cluster.lease_key(host)).stdout
    kvs = json.loads(out).get("kvs") or []
    assert len(kvs) == 1, f"h{host}: no key {cluster.lease_key(host)}"
    return int(kvs[0].get("lease", 0))


def leases_of(cluster: AgentCluster, host: int) -> list[str]:
    """Keys of every lease naming the host's public IP."""
    out = cluster.lab.etcdctl("get", "--prefix", f"{cluster.prefix}/subnets/", "-w", "json")
    kvs = json.loads(out.stdout).get("kvs") or []
    ip = cluster.lab.host_ip(host)
    return [
        base64.b64decode(kv["key"]).decode()
        for kv in kvs
        if json.loads(base64.b64decode(kv["value"]))["PublicIP"] == ip
    ]


def full_mtu_ping(cluster: AgentCluster, src: int, dst: int) -> None:
    """A ping of exactly the container MTU with DF set, src's container -> dst's."""
    size = cluster.mtu(src) - 28
    result = cluster.lab.ping_result(
        f"h{src}c1", cluster.container_ip(dst), count=2, size=size, df=True, timeout=2
    )
    assert result.returncode == 0, (
        f"h{src} ({cluster.kind(src)}) -> h{dst} ({cluster.kind(dst)}), {size} bytes DF: "
        f"{result.stdout}"
    )


def run_both_mk_docker_opts(
    peers: Peers, tmp_path: Path, subnet_env: str, switches: list[str]
) -> None:
    """Run flannel's script and ours on the same subnet.env; the files they write must match."""
    source = tmp_path / "subnet.env"
    source.write_text(subnet_env)
    theirs, ours = tmp_path / "theirs.env", tmp_path / "ours.env"
    args = ["-f", str(source)]
    script = subprocess.run(
        ["sh", str(peers.mk_docker_opts), *args, "-d", str(theirs), *switches],
        env=CLEAN_ENV,
        capture_output=True,
        timeout=10,
        check=False,
    )
    tool = subprocess.run(
        [sys.executable, "-m", "pyflannel.dockeropts", *args, "-d", str(ours), *switches],
        env={**CLEAN_ENV, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (tool.returncode, script.returncode) == (0, 0), (script.stderr, tool.stderr)
    assert ours.read_bytes() == theirs.read_bytes()
