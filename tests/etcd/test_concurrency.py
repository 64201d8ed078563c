"""Many nodes claiming subnets at the same moment: distinct subnets, no lost claims."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

import pytest

from pyflannel.errors import OutOfSubnetsError
from pyflannel.store import Store
from pyflannel.subnet.lease import LeaseAttrs
from pyflannel.subnet.manager import LeaseSettings, SubnetManager
from tests.etcd_harness import EtcdServer, etcdctl

StoreFor = Callable[..., Store]

PREFIX = "/coreos.com/network"
BIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'  # 255 subnets
EXACTLY_50 = (
    '{"Network":"10.20.0.0/16","SubnetMin":"10.20.1.0","SubnetMax":"10.20.50.0",'
    '"Backend":{"Type":"vxlan"}}'
)


def public_ip(index: int) -> IPv4Address:
    """Distinct documentation addresses: 198.51.100.1.. then 203.0.113.1.."""
    if index < 200:
        return IPv4Address(f"198.51.100.{index + 1}")
    return IPv4Address(f"203.0.113.{index - 199}")


def attrs(index: int) -> LeaseAttrs:
    return LeaseAttrs(
        public_ip(index), "vxlan", {"VNI": 1, "VtepMAC": f"0e:00:00:00:01:{index:02x}"}
    )


def race(
    etcd_server: EtcdServer, store_for: StoreFor, config_text: str, claimers: int
) -> tuple[dict[int, IPv4Network], dict[int, BaseException]]:
    """`claimers` threads, each with its own Store, acquire at once; results and errors by index."""
    setup = store_for(etcd_server)
    setup.put(f"{PREFIX}/config", config_text)
    config = SubnetManager(setup, PREFIX).get_config()
    managers = []
    for _ in range(claimers):
        store = store_for(etcd_server)
        store.get(f"{PREFIX}/config")  # connect before the start line
        managers.append(SubnetManager(store, PREFIX, LeaseSettings(ttl=300)))
    barrier = threading.Barrier(claimers)
    got: dict[int, IPv4Network] = {}
    errors: dict[int, BaseException] = {}

    def claim(index: int) -> None:
        try:
            barrier.wait(10)
            got[index] = managers[index].acquire(config, attrs(index)).subnet
        except BaseException as exc:
            errors[index] = exc

    threads = [threading.Thread(target=claim, args=(i,), daemon=True) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a claimer hung"
    return got, errors


def etcd_leases(etcd_server: EtcdServer) -> dict[str, str]:
    """subnet key -> value, as etcdctl lists them."""
    lines = etcdctl(etcd_server, "get", f"{PREFIX}/subnets/", "--prefix").splitlines()
    return dict(zip(lines[0::2], lines[1::2], strict=True))


def check_consistent(etcd_server: EtcdServer, got: dict[int, IPv4Network]) -> None:
    """etcd holds exactly the claimed subnets, each naming the claimer that got it."""
    stored = etcd_leases(etcd_server)
    expected = {
        f"{PREFIX}/subnets/{subnet.network_address}-{subnet.prefixlen}": attrs(index).to_json()
        for index, subnet in got.items()
    }
    assert stored == expected


def test_50_claimers_get_50_distinct_subnets(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    got, errors = race(etcd_server, store_for, BIG, 50)
    assert errors == {}
    assert len(got) == 50
    assert len(set(got.values())) == 50
    check_consistent(etcd_server, got)


def test_50_claimers_share_a_pool_of_exactly_50(
    etcd_server: EtcdServer, store_for: StoreFor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyflannel.subnet.manager")
    got, errors = race(etcd_server, store_for, EXACTLY_50, 50)
    assert errors == {}
    lost = sum("lost a race" in record.getMessage() for record in caplog.records)
    print(f"\n50 claimers for 50 subnets: {lost} lost races retried")
    assert lost > 0, "the claimers did not actually race"
    assert set(got.values()) == {IPv4Network(f"10.20.{n}.0/24") for n in range(1, 51)}
    check_consistent(etcd_server, got)


def test_55_claimers_for_50_subnets_leave_exactly_5_out(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    got, errors = race(etcd_server, store_for, EXACTLY_50, 55)
    unexpected = {i: e for i, e in errors.items() if not isinstance(e, OutOfSubnetsError)}
    assert unexpected == {}
    assert len(errors) == 5
    assert len(got) == 50
    assert set(got.values()) == {IPv4Network(f"10.20.{n}.0/24") for n in range(1, 51)}
    check_consistent(etcd_server, got)
    # Lost races revoke their etcd leases: only the 50 holders keep one.
    out = etcdctl(etcd_server, "lease", "list").splitlines()
    assert out[0] == "found 50 leases"


def test_time_to_acquire_a_lease(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    store = store_for(etcd_server)
    store.put(f"{PREFIX}/config", BIG)
    manager = SubnetManager(store, PREFIX)
    config = manager.get_config()
    durations = []
    got: dict[int, IPv4Network] = {}
    for index in range(20):
        start = time.perf_counter()
        lease = manager.acquire(config, attrs(index))
        durations.append(time.perf_counter() - start)
        assert config.contains_subnet(lease.subnet)
        got[index] = lease.subnet
    median = statistics.median(durations)
    print(
        f"\nacquire (single claimer, fresh etcd): median {median * 1000:.1f} ms, "
        f"min {min(durations) * 1000:.1f} ms, max {max(durations) * 1000:.1f} ms (n=20)"
    )
    assert median < 0.5
    check_consistent(etcd_server, got)
