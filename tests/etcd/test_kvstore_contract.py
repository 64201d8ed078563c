"""One contract for pyflannel.kvstore.KeyValueStore, run on the real etcd and on MemoryStore.

The leasing rules' fast unit tests (tests/unit/test_subnet_manager.py) run on MemoryStore; this
holds it to etcd 3.4 (through pyflannel.store.Store): revisions, create-if-absent,
compare-and-swap on mod_revision, prefix listing, leases that end with their keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from pyflannel.kvstore import KeyValueStore, MemoryStore
from pyflannel.store import Store
from tests.etcd_harness import EtcdServer

pytestmark = pytest.mark.etcd

StoreFor = Callable[..., Store]


@pytest.fixture(params=["etcd", "memory"])
def store(
    request: pytest.FixtureRequest, etcd_server: EtcdServer, store_for: StoreFor
) -> Iterator[KeyValueStore]:
    yield store_for(etcd_server) if request.param == "etcd" else MemoryStore()


def test_create_only_if_absent(store: KeyValueStore) -> None:
    assert store.create("/c/k", "one") is True
    assert store.create("/c/k", "two") is False
    kv = store.get("/c/k")
    assert kv is not None and kv.value == b"one" and kv.version == 1
    assert kv.create_revision == kv.mod_revision


def test_replace_only_at_the_revision_read(store: KeyValueStore) -> None:
    first = store.put("/r/k", "one")
    kv = store.get("/r/k")
    assert kv is not None and kv.mod_revision == first
    assert store.replace("/r/k", "two", kv.mod_revision) is True
    assert store.replace("/r/k", "three", kv.mod_revision) is False  # someone wrote meanwhile
    now = store.get("/r/k")
    assert now is not None and now.value == b"two" and now.version == 2
    assert now.create_revision == kv.create_revision and now.mod_revision > kv.mod_revision
    assert store.replace("/r/absent", "x", 0) is True  # revision 0: "must not exist"


def test_delete_at_a_revision(store: KeyValueStore) -> None:
    store.put("/d/k", "v")
    kv = store.get("/d/k")
    assert kv is not None
    assert store.delete("/d/k", kv.mod_revision + 100) is False
    assert store.delete("/d/k", kv.mod_revision) is True
    assert store.get("/d/k") is None
    assert store.delete("/d/k") is False


def test_list_prefix_in_key_order_with_the_revision(store: KeyValueStore) -> None:
    for key in ("/p/b", "/p/a", "/q/c"):
        store.put(key, key)
    found, revision = store.list_prefix("/p/")
    assert [kv.key for kv in found] == ["/p/a", "/p/b"]
    assert revision >= max(kv.mod_revision for kv in found)


def test_a_revoked_lease_takes_its_keys(store: KeyValueStore) -> None:
    lease = store.grant(60)
    assert 55 <= store.time_to_live(lease) <= 60
    store.put("/l/k", "v", lease)
    kv = store.get("/l/k")
    assert kv is not None and kv.lease == lease
    assert store.keepalive_once(lease) == 60
    store.revoke(lease)
    assert store.get("/l/k") is None
    assert store.time_to_live(lease) == -1
    assert store.keepalive_once(lease) <= 0


def test_an_expired_lease_takes_its_keys(store: KeyValueStore) -> None:
    lease = store.grant(2)
    store.put("/e/k", "v", lease)
    deadline = time.monotonic() + 15  # etcd expires leases on its own schedule
    while store.get("/e/k") is not None and time.monotonic() < deadline:
        time.sleep(0.25)
    assert store.get("/e/k") is None
    assert store.time_to_live(lease) == -1
