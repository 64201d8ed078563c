"""The flannel_lease module, run for real by ansible-playbook against a real etcd.

Leases are claimed with pyflannel's SubnetManager directly (what flanneld does), then the
module inspects, reserves and releases them. The module runs under this test's interpreter,
which has pyflannel, as the role runs it under the agent's virtualenv.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyflannel.store import Store
from pyflannel.subnet.lease import Lease, LeaseAttrs, subnet_key
from pyflannel.subnet.manager import SubnetManager
from pyflannel.subnetenv import SubnetEnv, write_subnet_env
from tests.ansible.test_etcd_key import (
    COLLECTION,
    REPO,
    SYSTEM_PYTHON,
    dead_endpoint,
    doc_options,
    importable,
    run_playbook,
    supported_parameters,
)
from tests.etcd_harness import EtcdServer, TlsEtcd

PREFIX = "/coreos.com/network"
CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'
NODE_IP = ipaddress.IPv4Address("192.0.2.11")
OTHER_IP = ipaddress.IPv4Address("192.0.2.12")
VTEP = {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}


@dataclass
class Node:
    """A node as flanneld leaves it: a lease in etcd and a matching subnet file."""

    store: Store
    manager: SubnetManager
    lease: Lease
    subnet_file: Path
    endpoints: list[str]


def claim(manager: SubnetManager, public_ip: ipaddress.IPv4Address) -> Lease:
    attrs = LeaseAttrs(public_ip=public_ip, backend_type="vxlan", backend_data=VTEP)
    return manager.acquire(manager.get_config(), attrs)


def write_env(path: Path, lease: Lease, network: str = "10.5.0.0/16", mtu: int = 1450) -> None:
    env = SubnetEnv(
        network=ipaddress.IPv4Network(network),
        subnet=lease.gateway,
        mtu=mtu,
        ipmasq=False,
    )
    write_subnet_env(str(path), env)


def lease_task(**args: Any) -> dict[str, Any]:
    # This checkout's pyflannel, not whichever checkout the shared install points at.
    return {
        "name": "flannel_lease",
        f"{COLLECTION}.flannel_lease": args,
        "environment": {"PYTHONPATH": str(REPO)},
    }


@pytest.fixture
def node(
    etcd_server: EtcdServer, store_for: Callable[..., Store], tmp_path: Path
) -> Iterator[Node]:
    store = store_for(etcd_server)
    store.put(f"{PREFIX}/config", CONFIG)
    manager = SubnetManager(store, PREFIX)
    lease = claim(manager, NODE_IP)
    subnet_file = tmp_path / "run" / "subnet.env"
    write_env(subnet_file, lease)
    yield Node(store, manager, lease, subnet_file, [etcd_server.client_url])


# -- inspect ------------------------------------------------------------------------------


def test_inspect_finds_the_lease_from_the_subnet_file(node: Node, tmp_path: Path) -> None:
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=node.endpoints, subnet_file=str(node.subnet_file))],
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = run.last
    assert result["changed"] is False
    lease = result["lease"]
    subnet = node.lease.subnet
    expires_in = lease.pop("expires_in")
    assert isinstance(expires_in, int) and 24 * 3600 - 60 < expires_in <= 24 * 3600
    assert lease == {
        "subnet": str(subnet),
        "gateway": f"{subnet.network_address + 1}/{subnet.prefixlen}",
        "network": "10.5.0.0/16",
        "mtu": 1450,
        "ipmasq": False,
        "backend": "vxlan",
        "public_ip": str(NODE_IP),
        "reserved": False,
        "backend_data": VTEP,
        "key": subnet_key(PREFIX, subnet),
    }


def test_inspect_by_public_ip_without_subnet_file(node: Node, tmp_path: Path) -> None:
    claim(node.manager, OTHER_IP)  # another node's lease must not be picked
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=node.endpoints, public_ip=str(NODE_IP), subnet_file="")],
    )
    assert run.returncode == 0, run.stdout
    lease = run.last["lease"]
    assert lease["subnet"] == str(node.lease.subnet)
    assert lease["public_ip"] == str(NODE_IP)
    assert lease["mtu"] is None and lease["ipmasq"] is None


def test_inspect_a_reservation(node: Node, tmp_path: Path) -> None:
    subnet = ipaddress.IPv4Network("10.5.200.0/24")
    node.manager.reserve(node.manager.get_config(), subnet, OTHER_IP)
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=node.endpoints, public_ip=str(OTHER_IP), subnet_file="")],
    )
    assert run.returncode == 0, run.stdout
    lease = run.last["lease"]
    assert (lease["subnet"], lease["reserved"], lease["expires_in"]) == (str(subnet), True, None)
    assert lease["backend_data"] is None


def test_inspect_fails_when_the_node_has_no_lease(node: Node, tmp_path: Path) -> None:
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=node.endpoints, public_ip="192.0.2.99", subnet_file="")],
    )
    assert run.returncode != 0
    assert run.last["msg"] == (
        "no lease for 192.0.2.99 under /coreos.com/network/subnets; is flanneld running?"
    )


def test_inspect_fails_when_the_subnet_files_lease_is_gone(node: Node, tmp_path: Path) -> None:
    node.manager.release(node.lease.subnet)
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=node.endpoints, subnet_file=str(node.subnet_file))],
    )
    assert run.returncode != 0
    message = run.last["msg"]
    assert f"no lease for {node.lease.subnet} (FLANNEL_SUBNET in {node.subnet_file})" in message
    assert "is flanneld running?" in message


def test_inspect_fails_when_subnet_file_disagrees_with_etcd(node: Node, tmp_path: Path) -> None:
    other = claim(node.manager, OTHER_IP)
    write_env(node.subnet_file, other)  # the file names a subnet that is not this node's
    run = run_playbook(
        tmp_path / "play",
        [
            lease_task(
                endpoints=node.endpoints,
                public_ip=str(NODE_IP),
                subnet_file=str(node.subnet_file),
            )
        ],
    )
    assert run.returncode != 0
    message = run.last["msg"]
    assert f"FLANNEL_SUBNET={other.gateway}" in message
    assert f"is {node.lease.subnet}" in message and "restart flanneld" in message


def test_inspect_fails_when_subnet_file_has_another_network(node: Node, tmp_path: Path) -> None:
    write_env(node.subnet_file, node.lease, network="10.0.0.0/8")
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=node.endpoints, subnet_file=str(node.subnet_file))],
    )
    assert run.returncode != 0
    assert "FLANNEL_NETWORK=10.0.0.0/8" in run.last["msg"]
    assert "Network 10.5.0.0/16" in run.last["msg"]


def test_inspect_over_tls_under_another_prefix(
    etcd_tls: TlsEtcd, store_for: Callable[..., Store], tmp_path: Path
) -> None:
    prefix = "/atomic.io/network"
    store = store_for(etcd_tls)
    store.put(f"{prefix}/config", CONFIG)
    lease = claim(SubnetManager(store, prefix), NODE_IP)
    tls = etcd_tls.tls
    run = run_playbook(
        tmp_path / "play",
        [
            lease_task(
                endpoints=[etcd_tls.client_url],
                prefix=prefix,
                public_ip=str(NODE_IP),
                subnet_file="",
                ca_cert=tls.ca,
                client_cert=tls.client_cert,
                client_key=tls.client_key,
            )
        ],
    )
    assert run.returncode == 0, run.stdout
    assert run.last["lease"]["subnet"] == str(lease.subnet)
    assert run.last["lease"]["key"] == subnet_key(prefix, lease.subnet)


def test_unreachable_etcd_fails_in_one_line(tmp_path: Path) -> None:
    dead = dead_endpoint()
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=[dead], public_ip=str(NODE_IP), subnet_file="", timeout=2)],
    )
    assert run.returncode != 0
    message = run.last["msg"]
    assert "\n" not in message and dead.split("//")[1] in message, message


# -- reserve / release ---------------------------------------------------------------------


def test_reserve_check_mode_then_reserve_then_idempotent(node: Node, tmp_path: Path) -> None:
    # A free subnet: the node's own lease is a random one and may be 10.5.7.0/24.
    subnet = next(
        net
        for net in map(ipaddress.IPv4Network, ("10.5.7.0/24", "10.5.8.0/24"))
        if net != node.lease.subnet
    )
    task = lease_task(
        endpoints=node.endpoints, state="reserved", subnet=str(subnet), public_ip=str(OTHER_IP)
    )
    checked = run_playbook(tmp_path / "check", [task], check=True)
    assert checked.returncode == 0, checked.stdout
    assert checked.last["changed"] is True
    assert checked.last["lease"]["reserved"] is True
    assert node.store.get(subnet_key(PREFIX, subnet)) is None  # check mode wrote nothing

    run = run_playbook(tmp_path / "real", [task, task])
    assert run.returncode == 0, run.stdout
    first, second = run.results
    assert first["changed"] is True and second["changed"] is False
    assert first["lease"]["subnet"] == str(subnet) and first["lease"]["network"] == "10.5.0.0/16"
    kv = node.store.get(subnet_key(PREFIX, subnet))
    assert kv is not None and kv.lease == 0  # a reservation: no etcd lease attached
    assert LeaseAttrs.from_json(kv.value).public_ip == OTHER_IP


def test_reserve_turns_the_nodes_own_lease_into_a_reservation(node: Node, tmp_path: Path) -> None:
    key = subnet_key(PREFIX, node.lease.subnet)
    task = lease_task(
        endpoints=node.endpoints,
        state="reserved",
        subnet=str(node.lease.subnet),
        public_ip=str(NODE_IP),
    )
    checked = run_playbook(tmp_path / "check", [task], check=True)
    assert checked.last["changed"] is True
    kv = node.store.get(key)
    assert kv is not None and kv.lease == node.lease.etcd_lease != 0

    run = run_playbook(tmp_path / "real", [task])
    assert run.returncode == 0, run.stdout
    assert run.last["changed"] is True and run.last["lease"]["reserved"] is True
    kv = node.store.get(key)
    assert kv is not None and kv.lease == 0
    assert LeaseAttrs.from_json(kv.value).backend_data == VTEP  # the value is kept


def test_reserve_refuses_a_subnet_held_by_another_node(node: Node, tmp_path: Path) -> None:
    run = run_playbook(
        tmp_path / "play",
        [
            lease_task(
                endpoints=node.endpoints,
                state="reserved",
                subnet=str(node.lease.subnet),
                public_ip=str(OTHER_IP),
            )
        ],
        check=True,
    )
    assert run.returncode != 0
    assert f"subnet {node.lease.subnet} is held by {NODE_IP}" in run.last["msg"]


def test_reserve_refuses_a_subnet_outside_the_network(node: Node, tmp_path: Path) -> None:
    run = run_playbook(
        tmp_path / "play",
        [
            lease_task(
                endpoints=node.endpoints,
                state="reserved",
                subnet="10.6.1.0/24",
                public_ip=str(OTHER_IP),
            )
        ],
    )
    assert run.returncode != 0
    assert "is not a /24 inside Network 10.5.0.0/16" in run.last["msg"]


def test_release_check_mode_then_release_then_idempotent(node: Node, tmp_path: Path) -> None:
    key = subnet_key(PREFIX, node.lease.subnet)
    task = lease_task(
        endpoints=node.endpoints,
        state="released",
        subnet=str(node.lease.subnet),
        public_ip=str(NODE_IP),
    )
    checked = run_playbook(tmp_path / "check", [task], check=True)
    assert checked.returncode == 0, checked.stdout
    assert checked.last["changed"] is True
    assert checked.last["lease"]["public_ip"] == str(NODE_IP)
    assert node.store.get(key) is not None  # check mode wrote nothing

    run = run_playbook(tmp_path / "real", [task, task])
    assert run.returncode == 0, run.stdout
    first, second = run.results
    assert first["changed"] is True and first["lease"]["subnet"] == str(node.lease.subnet)
    assert isinstance(first["lease"]["expires_in"], int)
    assert second["changed"] is False and second["lease"] is None
    assert node.store.get(key) is None
    assert node.store.time_to_live(node.lease.etcd_lease) == -1  # the etcd lease is revoked


def test_release_refuses_another_nodes_lease(node: Node, tmp_path: Path) -> None:
    run = run_playbook(
        tmp_path / "play",
        [
            lease_task(
                endpoints=node.endpoints,
                state="released",
                subnet=str(node.lease.subnet),
                public_ip=str(OTHER_IP),
            )
        ],
    )
    assert run.returncode != 0
    assert f"held by {NODE_IP}, not {OTHER_IP}" in run.last["msg"]
    assert node.store.get(subnet_key(PREFIX, node.lease.subnet)) is not None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"state": "reserved", "subnet": "10.5.7.0/24"}, "missing: public_ip"),
        ({"state": "released", "public_ip": "192.0.2.11"}, "missing: subnet"),
        (
            {"state": "reserved", "subnet": "10.5.7.1/24", "public_ip": "192.0.2.11"},
            "subnet: '10.5.7.1/24' is not an IPv4 subnet",
        ),
        (
            {"state": "reserved", "subnet": "10.5.7.0/24", "public_ip": "host-a"},
            "public_ip: 'host-a' is not an IPv4 address",
        ),
    ],
)
def test_bad_arguments_fail_clearly(
    args: dict[str, Any], expected: str, node: Node, tmp_path: Path
) -> None:
    run = run_playbook(tmp_path / "play", [lease_task(endpoints=node.endpoints, **args)])
    assert run.returncode != 0
    assert expected in run.last["msg"], run.last["msg"]


# -- the interpreter ------------------------------------------------------------------------


def test_without_pyflannel_the_module_says_which_python_to_use(tmp_path: Path) -> None:
    assert not importable(SYSTEM_PYTHON, "pyflannel", tmp_path), (
        f"{SYSTEM_PYTHON} imports pyflannel; this test needs a Python without it"
    )
    run = run_playbook(
        tmp_path / "play",
        [
            {
                "name": "flannel_lease",
                f"{COLLECTION}.flannel_lease": {
                    "endpoints": ["http://127.0.0.1:2379"],
                    "public_ip": str(NODE_IP),
                },
            }
        ],
        interpreter=SYSTEM_PYTHON,
    )
    assert run.returncode != 0
    message = run.last["msg"]
    assert message.startswith(f"flannel_lease needs the pyflannel agent's Python ({SYSTEM_PYTHON}")
    assert "run the flannel role first or set ansible_python_interpreter to " in message
    assert message.endswith("/opt/pyflannel/bin/python")


def test_ansible_doc_matches_the_argument_spec(tmp_path: Path) -> None:
    doc = doc_options(tmp_path, "flannel_lease")
    supported = supported_parameters(
        tmp_path, "flannel_lease", sys.executable, "endpoints=http://127.0.0.1:2379"
    )
    assert set(doc["options"]) == supported
    assert doc["options"]["state"]["choices"] == ["inspect", "reserved", "released"]
    assert doc["options"]["prefix"]["default"] == PREFIX
    assert doc["attributes"]["check_mode"]["support"] == "full"


def test_pyflannel_warnings_become_ansible_warnings(node: Node, tmp_path: Path) -> None:
    node.store.put(f"{PREFIX}/subnets/not-a-subnet", "{}")
    run = run_playbook(
        tmp_path / "play",
        [lease_task(endpoints=node.endpoints, public_ip=str(NODE_IP), subnet_file="")],
    )
    assert run.returncode == 0, run.stdout
    assert run.last["lease"]["subnet"] == str(node.lease.subnet)
    warnings = run.last.get("warnings", [])
    assert any(f"{PREFIX}/subnets/not-a-subnet" in warning for warning in warnings), run.last
