"""Shared fixtures; the etcd machinery itself lives in tests/etcd_harness.py."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Make `tests.etcd_harness` and `pyflannel` importable however pytest was started.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.etcd_harness import (  # noqa: E402
    EtcdCluster,
    EtcdServer,
    Target,
    TlsEtcd,
    TlsLab,
    make_store,
    make_tls,
    start_cluster,
    start_server,
)

if TYPE_CHECKING:
    from pyflannel.store import Store

_ETCD_FIXTURES = frozenset({"etcd_server", "etcd_cluster", "etcd_tls", "store_for", "tls_lab"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _ETCD_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.etcd)


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A fresh single-node etcd (plain http) for one test."""
    server = start_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A 3-member cluster shared by a module; tests that stop or freeze members call heal()."""
    cluster = start_cluster(3)
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def etcd_tls(tmp_path: Path) -> Iterator[TlsEtcd]:
    """A single node serving https with client-cert auth, and its TLS files."""
    tls = make_tls(tmp_path / "tls")
    server = start_server(tls=tls)
    try:
        yield TlsEtcd(server, tls)
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    """Real etcd servers that refuse in every TLS way a tool must explain (tests/etcd_harness)."""
    lab = TlsLab.start(tmp_path_factory.mktemp("tls-lab"))
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture
def store_for() -> Iterator[Callable[..., Store]]:
    """Factory: store_for(server | cluster | urls, **EtcdOptions fields) -> Store, closed after.

    TLS files default to the server's, the timeout to 2 s.
    """
    stores: list[Store] = []

    def build(target: Target, **opts: Any) -> Store:
        store = make_store(target, **opts)
        stores.append(store)
        return store

    yield build
    for store in stores:
        store.close()
