"""SubnetManager's leasing rules, fast, on pyflannel.kvstore.MemoryStore.

The store keeps etcd's semantics (revisions, create-if-absent, compare-and-swap, leases that
expire with their keys); tests/etcd/test_kvstore_contract.py holds it to the real etcd, and
tests/etcd/test_leasing.py runs the leasing against the real etcd with etcdctl's view.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from pyflannel.config import NetworkConfig
from pyflannel.errors import ConfigMissingError, OutOfSubnetsError
from pyflannel.etcd_options import DEFAULT_PREFIX
from pyflannel.kvstore import DryRunStore, MemoryStore
from pyflannel.subnet.lease import LeaseAttrs, subnet_key
from pyflannel.subnet.manager import LeaseLostError, LeaseSettings, SubnetManager

NETWORK = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'
# /26 in /28s: .0 is skipped, so three subnets.
TINY = '{"Network":"10.9.0.0/26","SubnetLen":28,"Backend":{"Type":"vxlan"}}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attrs(ip: str) -> LeaseAttrs:
    return LeaseAttrs(IPv4Address(ip), "vxlan", {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})


def setup(
    config: str = NETWORK, ttl: int = 60
) -> tuple[SubnetManager, NetworkConfig, MemoryStore, Clock]:
    clock = Clock()
    store = MemoryStore(clock)
    store.put(f"{DEFAULT_PREFIX}/config", config)
    manager = SubnetManager(store, DEFAULT_PREFIX, LeaseSettings(ttl=ttl), random.Random(7))
    return manager, manager.get_config(), store, clock


def test_a_claim_is_a_key_with_an_etcd_lease_in_the_network() -> None:
    manager, config, store, _ = setup()
    lease = manager.acquire(config, attrs("198.51.100.1"))
    assert config.contains_subnet(lease.subnet) and lease.etcd_lease != 0
    kv = store.get(subnet_key(DEFAULT_PREFIX, lease.subnet))
    assert kv is not None and kv.lease == lease.etcd_lease
    assert b'"PublicIP":"198.51.100.1"' in kv.value


def test_the_same_public_ip_gets_its_lease_back() -> None:
    manager, config, _, _ = setup()
    first = manager.acquire(config, attrs("198.51.100.1"))
    again = manager.acquire(config, attrs("198.51.100.1"))
    other = manager.acquire(config, attrs("198.51.100.2"))
    assert again.subnet == first.subnet != other.subnet


def test_the_previous_subnet_is_claimed_when_free() -> None:
    manager, config, _, _ = setup()
    wanted = IPv4Network("10.5.77.0/24")
    assert manager.acquire(config, attrs("198.51.100.1"), previous_subnet=wanted).subnet == wanted


def test_a_full_network_says_so() -> None:
    manager, config, _, _ = setup(TINY)
    taken = {manager.acquire(config, attrs(f"198.51.100.{n}")).subnet for n in (1, 2, 3)}
    assert taken == {IPv4Network(f"10.9.0.{n}/28") for n in (16, 32, 48)}
    with pytest.raises(OutOfSubnetsError, match="out of subnets"):
        manager.acquire(config, attrs("198.51.100.4"))


def test_an_expired_lease_frees_its_subnet_and_renewal_says_it_was_lost() -> None:
    manager, config, store, clock = setup(TINY, ttl=60)
    lease = manager.acquire(config, attrs("198.51.100.1"))
    clock.now += 30
    assert manager.renew(lease).expires_in == 60  # renewed in time: 60 s again
    clock.now += 61
    assert store.get(subnet_key(DEFAULT_PREFIX, lease.subnet)) is None
    with pytest.raises(LeaseLostError):
        manager.renew(lease)


def test_a_reservation_never_expires_and_only_its_node_gets_it() -> None:
    manager, config, _, clock = setup(TINY)
    subnet = IPv4Network("10.9.0.32/28")
    reserved, changed = manager.reserve(config, subnet, IPv4Address("198.51.100.9"))
    assert changed and reserved.is_reservation
    clock.now += 10**6
    other = manager.acquire(config, attrs("198.51.100.1"))
    assert other.subnet != subnet
    mine = manager.acquire(config, attrs("198.51.100.9"))
    assert mine.subnet == subnet and mine.is_reservation


def test_no_config_names_the_key() -> None:
    store = MemoryStore()
    with pytest.raises(ConfigMissingError, match=f"{DEFAULT_PREFIX}/config not found"):
        SubnetManager(store, DEFAULT_PREFIX).get_config()


def test_dry_run_decides_the_same_and_writes_nothing() -> None:
    manager, config, store, _ = setup()
    first = manager.acquire(config, attrs("198.51.100.1"))
    before = store.list_prefix(f"{DEFAULT_PREFIX}/subnets/")
    dry = SubnetManager(DryRunStore(store), DEFAULT_PREFIX)
    assert dry.release(first.subnet, IPv4Address("198.51.100.1")) is True
    reserved, changed = dry.reserve(
        config, IPv4Network("10.5.99.0/24"), IPv4Address("198.51.100.5")
    )
    assert changed and reserved.subnet == IPv4Network("10.5.99.0/24")
    assert store.list_prefix(f"{DEFAULT_PREFIX}/subnets/") == before
