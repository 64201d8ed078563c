"""SubnetManager against a real etcd 3.4: claim, reuse, reservations, renew, config, admin.

Every etcd-side fact is cross-checked with `etcdctl`, i.e. with what flanneld would read.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from pyflannel.config import NetworkConfig
from pyflannel.errors import ConfigError, ConfigMissingError, FlannelError, OutOfSubnetsError
from pyflannel.store import Store
from pyflannel.subnet.lease import LeaseAttrs
from pyflannel.subnet.manager import LeaseLostError, LeaseSettings, SubnetManager
from tests.etcd_harness import EtcdServer, etcdctl

StoreFor = Callable[..., Store]

PREFIX = "/coreos.com/network"
SUBNETS = f"{PREFIX}/subnets/"
NETWORK = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'
# Network /26 with SubnetLen 28: subnets .0 .16 .32 .48, the first skipped -> 3 usable.
TINY = '{"Network":"10.9.0.0/26","SubnetLen":28,"Backend":{"Type":"vxlan"}}'
TINY_POOL = {IPv4Network(f"10.9.0.{n}/28") for n in (16, 32, 48)}

OUR_IP = "198.51.100.1"
OTHER_IP = "198.51.100.2"


# -- helpers ------------------------------------------------------------------------------


def vxlan(ip: str, mac: str = "c6:d2:32:6f:8f:44") -> LeaseAttrs:
    return LeaseAttrs(IPv4Address(ip), "vxlan", {"VNI": 1, "VtepMAC": mac})


def key_of(subnet: IPv4Network, prefix: str = PREFIX) -> str:
    # Written out by hand, not with pyflannel's helper: this is flannel's layout.
    return f"{prefix}/subnets/{subnet.network_address}-{subnet.prefixlen}"


def manager(
    store: Store, config: str = NETWORK, ttl: int = 60, prefix: str = PREFIX
) -> tuple[SubnetManager, NetworkConfig]:
    store.put(f"{prefix}/config", config)
    mgr = SubnetManager(store, prefix, LeaseSettings(ttl=ttl, renew_margin=1))
    return mgr, mgr.get_config()


def etcd_kv(server: EtcdServer, key: str) -> dict[str, Any] | None:
    """The key as etcdctl sees it: value (text), lease (int, 0 = none), mod_revision."""
    data = json.loads(etcdctl(server, "get", key, "-w", "json"))
    if not data.get("kvs"):
        return None
    raw = data["kvs"][0]
    return {
        "value": base64.b64decode(raw["value"]).decode(),
        "lease": int(raw.get("lease", 0)),
        "mod_revision": int(raw["mod_revision"]),
    }


def etcd_keys(server: EtcdServer, prefix: str = SUBNETS) -> list[str]:
    out = etcdctl(server, "get", prefix, "--prefix", "--keys-only")
    return [line for line in out.splitlines() if line]


def etcd_lease_info(server: EtcdServer, lease_id: int) -> tuple[int, int, list[str]] | None:
    """(granted TTL, remaining TTL, attached keys) from etcdctl; None when it does not exist."""
    out = etcdctl(server, "lease", "timetolive", "--keys", format(lease_id, "x"))
    match = re.search(r"granted with TTL\((\d+)s\), remaining\((-?\d+)s\)", out)
    if match is None:
        assert "already expired" in out, out
        return None
    keys = re.search(r"attached keys\(\[(.*)\]\)", out)
    attached = keys.group(1).split() if keys and keys.group(1) else []
    return int(match.group(1)), int(match.group(2)), attached


def etcd_lease_count(server: EtcdServer) -> int:
    out = etcdctl(server, "lease", "list")
    return len([line for line in out.splitlines()[1:] if line.strip()])


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(0.1)


# -- claiming -------------------------------------------------------------------------------


def test_claim_writes_flannels_key_and_value_with_an_etcd_lease(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server), ttl=120)
    attrs = vxlan(OUR_IP)

    lease = mgr.acquire(config, attrs)

    assert config.contains_subnet(lease.subnet)
    key = key_of(lease.subnet)
    assert etcd_keys(etcd_server) == [key]
    kv = etcd_kv(etcd_server, key)
    assert kv is not None
    assert kv["value"] == (
        '{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
    )
    assert kv["lease"] == lease.etcd_lease != 0
    assert not lease.is_reservation
    info = etcd_lease_info(etcd_server, lease.etcd_lease)
    assert info is not None
    granted, remaining, attached = info
    assert granted == 120
    assert 115 <= remaining <= 120
    assert attached == [key]
    assert lease.expires_in == 120
    assert 115 <= (mgr.with_expiry(lease).expires_in or 0) <= 120


def test_short_ttl_is_granted_as_configured(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    mgr, config = manager(store_for(etcd_server), ttl=5)
    lease = mgr.acquire(config, vxlan(OUR_IP))
    info = etcd_lease_info(etcd_server, lease.etcd_lease)
    assert info is not None and info[0] == 5


def test_restart_reuses_the_same_subnet_and_etcd_lease(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server))
    first = mgr.acquire(config, vxlan(OUR_IP))
    before = etcd_kv(etcd_server, key_of(first.subnet))

    # A new process: its own connection and manager, the same public IP and attributes.
    again, config = manager(store_for(etcd_server))
    second = again.acquire(config, vxlan(OUR_IP))

    assert second.subnet == first.subnet
    assert second.etcd_lease == first.etcd_lease
    assert etcd_kv(etcd_server, key_of(first.subnet)) == before  # not even rewritten
    assert etcd_keys(etcd_server) == [key_of(first.subnet)]
    assert etcd_lease_count(etcd_server) == 1


def test_restart_with_a_new_vtep_mac_updates_the_value_in_place(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server))
    first = mgr.acquire(config, vxlan(OUR_IP))

    new = vxlan(OUR_IP, mac="0e:00:00:00:00:01")
    again, config = manager(store_for(etcd_server))
    second = again.acquire(config, new)

    assert (second.subnet, second.etcd_lease) == (first.subnet, first.etcd_lease)
    assert second.attrs == new
    kv = etcd_kv(etcd_server, key_of(first.subnet))
    assert kv is not None
    assert kv["value"] == new.to_json()
    assert kv["lease"] == first.etcd_lease  # the rewrite kept the lease attached


def test_other_public_ips_get_other_subnets(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    mgr, config = manager(store_for(etcd_server))
    subnets = {mgr.acquire(config, vxlan(f"203.0.113.{n}")).subnet for n in range(1, 11)}
    assert len(subnets) == 10
    assert len(etcd_keys(etcd_server)) == 10


def test_previous_subnet_is_claimed_when_free(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    mgr, config = manager(store_for(etcd_server))
    previous = IPv4Network("10.5.77.0/24")
    lease = mgr.acquire(config, vxlan(OUR_IP), previous_subnet=previous)
    assert lease.subnet == previous
    kv = etcd_kv(etcd_server, key_of(previous))
    assert kv is not None and kv["lease"] == lease.etcd_lease != 0


def test_previous_subnet_is_not_claimed_when_taken(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server))
    previous = IPv4Network("10.5.77.0/24")
    other = mgr.acquire(config, vxlan(OTHER_IP), previous_subnet=previous)
    assert other.subnet == previous
    before = etcd_kv(etcd_server, key_of(previous))

    ours = mgr.acquire(config, vxlan(OUR_IP), previous_subnet=previous)

    assert ours.subnet != previous
    assert config.contains_subnet(ours.subnet)
    assert etcd_kv(etcd_server, key_of(previous)) == before


@pytest.mark.parametrize("previous", ["10.5.0.0/24", "10.6.77.0/24", "10.5.77.0/25"])
def test_previous_subnet_that_does_not_fit_the_config_is_not_claimed(
    etcd_server: EtcdServer, store_for: StoreFor, previous: str
) -> None:
    mgr, config = manager(store_for(etcd_server))
    lease = mgr.acquire(config, vxlan(OUR_IP), previous_subnet=IPv4Network(previous))
    assert lease.subnet != IPv4Network(previous)
    assert config.contains_subnet(lease.subnet)


# -- reservations -------------------------------------------------------------------------


def test_reservation_for_our_ip_is_used_and_stays_without_lease(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    mgr, config = manager(store)
    reserved = IPv4Network("10.5.200.0/24")
    store.put(key_of(reserved), LeaseAttrs(IPv4Address(OUR_IP), "vxlan").to_json())
    attrs = vxlan(OUR_IP)

    lease = mgr.acquire(config, attrs)

    assert lease.subnet == reserved
    assert lease.is_reservation and lease.etcd_lease == 0
    kv = etcd_kv(etcd_server, key_of(reserved))
    assert kv is not None
    assert kv["lease"] == 0
    assert kv["value"] == attrs.to_json()  # our VtepMAC published, still a reservation
    assert etcd_keys(etcd_server) == [key_of(reserved)]
    assert etcd_lease_count(etcd_server) == 0

    # Restart and renew keep it a reservation.
    again, config = manager(store_for(etcd_server))
    assert again.acquire(config, attrs).subnet == reserved
    assert again.renew(lease) == lease
    kv = etcd_kv(etcd_server, key_of(reserved))
    assert kv is not None and kv["lease"] == 0


def test_reservation_supersedes_our_ordinary_lease(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    mgr, config = manager(store)
    attrs = vxlan(OUR_IP)
    ordinary = mgr.acquire(config, attrs)
    reserved = IPv4Network("10.5.201.0/24")
    assert ordinary.subnet != reserved
    store.put(key_of(reserved), LeaseAttrs(IPv4Address(OUR_IP), "vxlan").to_json())

    lease = mgr.acquire(config, attrs)

    # One subnet per node: the old lease is deleted and its etcd lease revoked.
    assert lease.subnet == reserved
    assert etcd_keys(etcd_server) == [key_of(reserved)]
    assert etcd_lease_count(etcd_server) == 0


def test_reservation_outside_subnet_min_max_is_still_honoured(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    mgr, config = manager(
        store, '{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}'
    )
    reserved = IPv4Network("10.5.200.0/24")
    store.put(key_of(reserved), LeaseAttrs(IPv4Address(OUR_IP), "udp").to_json())
    assert mgr.acquire(config, vxlan(OUR_IP)).subnet == reserved


def test_reservation_for_another_ip_is_never_handed_out(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    mgr, config = manager(store, TINY)
    reserved = IPv4Network("10.9.0.32/28")
    reservation = LeaseAttrs(IPv4Address("192.0.2.99"), "vxlan").to_json()
    store.put(key_of(reserved), reservation)

    got = {mgr.acquire(config, vxlan(f"198.51.100.{n}")).subnet for n in (1, 2)}
    assert got == TINY_POOL - {reserved}
    with pytest.raises(OutOfSubnetsError):
        mgr.acquire(config, vxlan("198.51.100.3"))
    kv = etcd_kv(etcd_server, key_of(reserved))
    assert kv is not None
    assert (kv["value"], kv["lease"]) == (reservation, 0)


def test_exhausted_pool_raises_out_of_subnets_naming_min_and_max(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server), TINY)
    got = {mgr.acquire(config, vxlan(f"203.0.113.{n}")).subnet for n in (1, 2, 3)}
    assert got == TINY_POOL

    with pytest.raises(OutOfSubnetsError) as info:
        mgr.acquire(config, vxlan("203.0.113.4"))

    message = one_line(info.value)
    assert "SubnetMin 10.9.0.16" in message
    assert "SubnetMax 10.9.0.48" in message
    assert len(etcd_keys(etcd_server)) == 3
    assert etcd_lease_count(etcd_server) == 3  # the failed attempt leaked no etcd lease


@pytest.mark.parametrize(
    "new_config",
    [
        '{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}',
        '{"Network":"10.5.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan"}}',
        '{"Network":"10.5.0.0/16","SubnetMax":"10.5.100.0","Backend":{"Type":"vxlan"}}',
    ],
    ids=["network", "subnet-len", "subnet-max"],
)
def test_own_lease_that_no_longer_fits_is_deleted_and_a_new_one_claimed(
    etcd_server: EtcdServer, store_for: StoreFor, new_config: str
) -> None:
    mgr, config = manager(store_for(etcd_server))
    old = mgr.acquire(config, vxlan(OUR_IP), previous_subnet=IPv4Network("10.5.200.0/24"))
    assert old.subnet == IPv4Network("10.5.200.0/24")

    mgr, changed = manager(store_for(etcd_server), new_config)
    new = mgr.acquire(changed, vxlan(OUR_IP))

    assert changed.contains_subnet(new.subnet)
    assert new.etcd_lease != old.etcd_lease
    assert etcd_kv(etcd_server, key_of(old.subnet)) is None
    assert etcd_keys(etcd_server) == [key_of(new.subnet)]


# -- keeping the lease ------------------------------------------------------------------------


def test_lease_settings_renew_delay() -> None:
    settings = LeaseSettings(ttl=6, renew_margin=2)
    assert settings.renew_delay(6) == 4
    assert settings.renew_delay(2.5) == 1.0  # never busy-loops


def test_renew_extends_the_ttl_and_expiry_loses_the_lease(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    # TTL 6 s, sleeps of 3.5 s: 2.5 s of slack each side for a busy machine (with TTL 4 and
    # 1.5 s of slack it failed about once in six runs).
    mgr, config = manager(store_for(etcd_server), ttl=6)
    lease = mgr.acquire(config, vxlan(OUR_IP))
    key = key_of(lease.subnet)

    time.sleep(3.5)
    renewed = mgr.renew(lease)
    assert renewed.subnet == lease.subnet and renewed.etcd_lease == lease.etcd_lease
    assert renewed.expires_in is not None and 5 <= renewed.expires_in <= 6
    info = etcd_lease_info(etcd_server, lease.etcd_lease)
    assert info is not None and info[1] >= 4
    time.sleep(3.5)  # 7 s after the claim: without the renewal the key would be gone
    assert etcd_kv(etcd_server, key) is not None

    wait_until(lambda: etcd_kv(etcd_server, key) is None, 8, "expiry of the unrenewed lease")
    with pytest.raises(LeaseLostError) as info_lost:
        mgr.renew(lease)
    assert str(lease.subnet) in one_line(info_lost.value)

    back = mgr.acquire(config, vxlan(OUR_IP), previous_subnet=lease.subnet)
    assert back.subnet == lease.subnet
    assert back.etcd_lease != lease.etcd_lease


def test_revoked_lease_is_lost_and_taken_back(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    mgr, config = manager(store_for(etcd_server), ttl=60)
    lease = mgr.acquire(config, vxlan(OUR_IP))

    etcdctl(etcd_server, "lease", "revoke", format(lease.etcd_lease, "x"))
    assert etcd_kv(etcd_server, key_of(lease.subnet)) is None

    with pytest.raises(LeaseLostError):
        mgr.renew(lease)
    back = mgr.acquire(config, vxlan(OUR_IP), previous_subnet=lease.subnet)
    assert back.subnet == lease.subnet
    assert back.etcd_lease != lease.etcd_lease
    kv = etcd_kv(etcd_server, key_of(lease.subnet))
    assert kv is not None and kv["lease"] == back.etcd_lease
    info = etcd_lease_info(etcd_server, back.etcd_lease)
    assert info is not None and info[0] == 60


def test_renew_of_a_deleted_reservation_is_lost(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    mgr, config = manager(store)
    reserved = IPv4Network("10.5.9.0/24")
    store.put(key_of(reserved), vxlan(OUR_IP).to_json())
    lease = mgr.acquire(config, vxlan(OUR_IP))
    assert lease.subnet == reserved
    etcdctl(etcd_server, "del", key_of(reserved))
    with pytest.raises(LeaseLostError):
        mgr.renew(lease)


# -- the config key ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/coreos.com/network", "/atomic.io/network"])
def test_missing_config_names_the_key_prefix_flag_and_v2(
    etcd_server: EtcdServer, store_for: StoreFor, prefix: str
) -> None:
    store = store_for(etcd_server)
    store.put("/docker-subnet/network/config", NETWORK)  # under another prefix: no help
    mgr = SubnetManager(store, prefix)
    with pytest.raises(ConfigMissingError) as info:
        mgr.get_config()
    message = one_line(info.value)
    assert f"{prefix}/config" in message
    assert "--etcd-prefix" in message
    assert "v2" in message


def test_invalid_config_in_etcd_is_a_config_error(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    store.put(f"{PREFIX}/config", '{"Network":"10.5.0.0/16","SubnetLen":"24"}')
    with pytest.raises(ConfigError, match="SubnetLen") as info:
        SubnetManager(store, PREFIX).get_config()
    assert not isinstance(info.value, ConfigMissingError)


def test_wait_for_config_returns_the_config_written_later(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    writer = store_for(etcd_server)
    mgr = SubnetManager(store, PREFIX)
    timer = threading.Timer(1.5, writer.put, (f"{PREFIX}/config", NETWORK))
    start = time.monotonic()
    timer.start()
    try:
        config = mgr.wait_for_config(threading.Event(), first_delay=0.1, max_delay=0.4)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    assert config is not None
    assert config.network == IPv4Network("10.5.0.0/16")
    assert config.backend.type == "vxlan"
    assert 1.4 <= elapsed < 3.0


def test_wait_for_config_waits_out_an_invalid_config(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    store.put(f"{PREFIX}/config", '{"Network":"10.5.0.0"}')
    timer = threading.Timer(1.0, store_for(etcd_server).put, (f"{PREFIX}/config", NETWORK))
    timer.start()
    try:
        config = SubnetManager(store, PREFIX).wait_for_config(
            threading.Event(), first_delay=0.1, max_delay=0.4
        )
    finally:
        timer.cancel()
    assert config is not None and config.network == IPv4Network("10.5.0.0/16")


def test_wait_for_config_returns_none_when_stopped(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr = SubnetManager(store_for(etcd_server), PREFIX)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    start = time.monotonic()
    timer.start()
    try:
        result = mgr.wait_for_config(stop, first_delay=1.0, max_delay=30.0)
    finally:
        timer.cancel()
    assert result is None
    assert time.monotonic() - start < 1.5  # the stop interrupts the wait, not the next poll


# -- reserve / release --------------------------------------------------------------------


def test_reserve_a_free_subnet_then_again(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    mgr, config = manager(store_for(etcd_server))
    subnet = IPv4Network("10.5.30.0/24")

    lease, changed = mgr.reserve(config, subnet, IPv4Address(OUR_IP))

    assert changed and lease.is_reservation and lease.subnet == subnet
    kv = etcd_kv(etcd_server, key_of(subnet))
    assert kv is not None and kv["lease"] == 0
    assert kv["value"] == '{"PublicIP":"198.51.100.1","PublicIPv6":null,"BackendType":"vxlan"}'
    again, changed = mgr.reserve(config, subnet, IPv4Address(OUR_IP))
    assert not changed and again.subnet == subnet
    assert etcd_kv(etcd_server, key_of(subnet)) == kv


def test_reserve_turns_our_lease_into_a_reservation(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server))
    lease = mgr.acquire(config, vxlan(OUR_IP))

    reserved, changed = mgr.reserve(config, lease.subnet, IPv4Address(OUR_IP))

    assert changed and reserved.is_reservation
    kv = etcd_kv(etcd_server, key_of(lease.subnet))
    assert kv is not None
    assert kv["lease"] == 0
    assert kv["value"] == vxlan(OUR_IP).to_json()  # the node's VtepMAC is kept
    assert mgr.acquire(config, vxlan(OUR_IP)).is_reservation


def test_reserve_a_subnet_held_by_another_node_is_refused(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server))
    other = mgr.acquire(config, vxlan(OTHER_IP))
    before = etcd_kv(etcd_server, key_of(other.subnet))

    with pytest.raises(FlannelError, match=re.escape(f"held by {OTHER_IP}")) as info:
        mgr.reserve(config, other.subnet, IPv4Address(OUR_IP))

    one_line(info.value)
    assert etcd_kv(etcd_server, key_of(other.subnet)) == before


@pytest.mark.parametrize("subnet", ["10.5.30.0/25", "10.6.30.0/24"])
def test_reserve_a_subnet_outside_the_config_is_refused(
    etcd_server: EtcdServer, store_for: StoreFor, subnet: str
) -> None:
    mgr, config = manager(store_for(etcd_server))
    with pytest.raises(FlannelError, match=re.escape("10.5.0.0/16")):
        mgr.reserve(config, IPv4Network(subnet), IPv4Address(OUR_IP))
    assert etcd_keys(etcd_server) == []


def test_release_with_the_wrong_public_ip_is_refused(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server))
    subnet = IPv4Network("10.5.30.0/24")
    mgr.reserve(config, subnet, IPv4Address(OUR_IP))

    with pytest.raises(FlannelError, match=re.escape(f"held by {OUR_IP}, not {OTHER_IP}")) as info:
        mgr.release(subnet, IPv4Address(OTHER_IP))
    one_line(info.value)
    assert etcd_kv(etcd_server, key_of(subnet)) is not None

    assert mgr.release(subnet, IPv4Address(OUR_IP)) is True
    assert etcd_kv(etcd_server, key_of(subnet)) is None
    assert mgr.release(subnet, IPv4Address(OUR_IP)) is False


def test_release_of_a_lease_revokes_its_etcd_lease(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    mgr, config = manager(store_for(etcd_server))
    lease = mgr.acquire(config, vxlan(OTHER_IP))

    assert mgr.release(lease.subnet) is True

    assert etcd_kv(etcd_server, key_of(lease.subnet)) is None
    assert etcd_lease_info(etcd_server, lease.etcd_lease) is None
    with pytest.raises(LeaseLostError):
        mgr.renew(lease)
