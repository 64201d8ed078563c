"""pyflannel.store against real etcd 3.4 servers and a real 3-member cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyflannel.errors import (
    CompactedError,
    SettingError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from pyflannel.flags import usage_message
from pyflannel.store import Store, StoreTlsError, Watch, WatchBatch, WatchEvent
from tests.etcd_harness import (
    EtcdCluster,
    EtcdServer,
    TlsEtcd,
    etcdctl,
    make_store,
    start_server,
)

pytestmark = pytest.mark.etcd

StoreFor = Callable[..., Store]
UNREACHABLE = "http://127.0.0.1:9"


def one_line(exc: BaseException) -> None:
    """The error is a single operator-readable line with no chained traceback."""
    text = str(exc)
    assert text and "\n" not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


def collect(watch: Watch, count: int, timeout: float = 5.0) -> list[WatchEvent]:
    """The first `count` events of a watch, iterated in a thread so a hang fails the test."""
    events: list[WatchEvent] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for batch in watch:
                events.extend(batch.events)
                if len(events) >= count:
                    return
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        watch.cancel()
        pytest.fail(f"watch gave {len(events)} of {count} events in {timeout} s")
    if errors:
        raise errors[0]
    return events


class WatchThread:
    """Iterates a watch in the background and records batches and the error that ended it."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.batches: list[WatchBatch] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for batch in self.watch:
                self.batches.append(batch)
        except BaseException as exc:
            self.error = exc

    def events(self) -> list[WatchEvent]:
        return [event for batch in self.batches for event in batch.events]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events()) < count:
            assert time.monotonic() < deadline, f"only {self.events()} after {timeout} s"
            assert self.error is None, f"watch failed: {self.error}"
            time.sleep(0.01)


def wait_threads(expected: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while threading.active_count() > expected:
        names = [thread.name for thread in threading.enumerate()]
        assert time.monotonic() < deadline, f"threads left running: {names}"
        time.sleep(0.02)


@pytest.fixture
def healed(etcd_cluster: EtcdCluster) -> Iterator[EtcdCluster]:
    """The shared cluster, thawed and restarted after the test whatever it did."""
    try:
        yield etcd_cluster
    finally:
        etcd_cluster.heal()


# -- keys -------------------------------------------------------------------------------------


def test_put_then_get_returns_value_and_revisions(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    revision = store.put("/coreos.com/network/config", '{"Network": "10.5.0.0/16"}')
    kv = store.get("/coreos.com/network/config")
    assert kv is not None
    assert kv.value == b'{"Network": "10.5.0.0/16"}'
    assert kv.mod_revision == kv.create_revision == revision
    assert kv.version == 1 and kv.lease == 0
    assert store.put("/coreos.com/network/config", b"\x00binary") == revision + 1
    assert store.get("/coreos.com/network/config").value == b"\x00binary"  # type: ignore[union-attr]
    assert store.get("/missing") is None
    # etcdctl (and so flannel) sees what pyflannel wrote.
    store.put("/x/y", "written by pyflannel")
    assert etcdctl(etcd_server, "get", "/x/y", "--print-value-only").strip() == (
        "written by pyflannel"
    )


def test_list_prefix_returns_only_prefix_keys_and_snapshot_revision(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    store.put("/net/subnets/10.5.1.0-24", "a")
    store.put("/net/subnetsX", "outside")
    store.put("/net/subnets/10.5.2.0-24", "b")
    last = store.put("/other", "c")
    kvs, revision = store.list_prefix("/net/subnets/")
    assert [kv.key for kv in kvs] == ["/net/subnets/10.5.1.0-24", "/net/subnets/10.5.2.0-24"]
    assert [kv.value for kv in kvs] == [b"a", b"b"]
    assert revision == last
    assert store.list_prefix("/nothing/") == ([], last)


def test_create_succeeds_only_when_key_is_absent(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    assert store.create("/lease/a", "first") is True
    assert store.create("/lease/a", "second") is False
    assert store.get("/lease/a").value == b"first"  # type: ignore[union-attr]


def test_replace_needs_the_current_mod_revision(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    first = store.put("/k", "v1")
    second = store.put("/k", "v2")
    assert store.replace("/k", "stale", mod_revision=first) is False
    assert store.get("/k").value == b"v2"  # type: ignore[union-attr]
    assert store.replace("/k", "v3", mod_revision=second) is True
    assert store.get("/k").value == b"v3"  # type: ignore[union-attr]
    assert store.replace("/absent", "v", mod_revision=second) is False
    assert store.get("/absent") is None


def test_delete_with_mod_revision_is_conditional(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    first = store.put("/k", "v1")
    second = store.put("/k", "v2")
    assert store.delete("/k", mod_revision=first) is False
    assert store.get("/k") is not None
    assert store.delete("/k", mod_revision=second) is True
    assert store.get("/k") is None
    store.put("/k2", "v")
    assert store.delete("/k2") is True
    assert store.delete("/k2") is False


# -- leases -----------------------------------------------------------------------------------


def test_lease_grant_keepalive_ttl_revoke(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    store = store_for(etcd_server)
    lease = store.grant(30)
    assert lease > 0
    assert store.create("/subnets/a", "x", lease=lease) is True
    assert store.get("/subnets/a").lease == lease  # type: ignore[union-attr]
    assert 0 < store.time_to_live(lease) <= 30
    assert store.keepalive_once(lease) == 30
    assert f"lease {lease:016x} granted with TTL(30s)" in etcdctl(
        etcd_server, "lease", "timetolive", f"{lease:x}"
    )
    store.revoke(lease)
    assert store.get("/subnets/a") is None  # keys go with their lease
    assert store.keepalive_once(lease) == 0
    assert store.time_to_live(lease) == -1
    store.revoke(lease)  # revoking twice is harmless


def test_lease_expiry_deletes_its_keys(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    store = store_for(etcd_server)
    lease = store.grant(1)
    store.put("/subnets/short", "x", lease=lease)
    deadline = time.monotonic() + 5
    while store.get("/subnets/short") is not None:
        assert time.monotonic() < deadline, "leased key still there 5 s after a 1 s TTL"
        time.sleep(0.1)
    assert store.time_to_live(lease) == -1


# -- watch ------------------------------------------------------------------------------------


def test_watch_from_revision_sees_puts_and_deletes_in_order(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    store.put("/net/before", "not seen")
    start = store.put("/net/a", "1")
    store.put("/elsewhere", "not seen")
    put_b = store.put("/net/b", "2")
    store.delete("/net/a")
    _, deleted_at = store.list_prefix("/net/")
    watch = store.watch_prefix("/net/", start)
    events = collect(watch, 3)
    watch.cancel()
    assert [(e.kind, e.kv.key) for e in events] == [
        ("put", "/net/a"),
        ("put", "/net/b"),
        ("delete", "/net/a"),
    ]
    assert [e.kv.mod_revision for e in events] == [start, put_b, deleted_at]
    assert events[0].kv.value == b"1"


def test_watch_delivers_live_events_and_cancel_ends_iteration(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    _, revision = store.list_prefix("/net/")
    watcher = WatchThread(store.watch_prefix("/net/", revision + 1))
    written = store.put("/net/live", "v")
    watcher.wait_for(1)
    assert watcher.events()[0].kv.mod_revision == written
    assert watcher.batches[-1].revision >= written
    watcher.watch.cancel()
    watcher.thread.join(3)
    assert not watcher.thread.is_alive(), "iteration went on after cancel()"
    assert watcher.error is None


def test_watch_on_compacted_revision_raises_compacted_error(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server)
    first = store.put("/net/a", "1")
    for value in "234":
        last = store.put("/net/a", value)
    store.compact(last)
    with pytest.raises(CompactedError) as caught:
        collect(store.watch_prefix("/net/", first), 1)
    assert caught.value.compact_revision == last
    # From the compaction revision on, the watch works again.
    events = collect(store.watch_prefix("/net/", last), 1)
    assert events[0].kv.value == b"4"


def test_watch_broken_by_kill_then_resumed_loses_no_event(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server, timeout=1.0)
    _, revision = store.list_prefix("/net/")
    threads_before = threading.active_count()
    watcher = WatchThread(store.watch_prefix("/net/", revision + 1))
    seen = store.put("/net/a", "before kill")
    watcher.wait_for(1)
    last_seen = watcher.events()[-1].kv.mod_revision
    assert last_seen == seen

    killed_at = time.monotonic()
    etcd_server.kill()
    watcher.thread.join(5)
    assert not watcher.thread.is_alive(), "watch did not notice the killed server"
    assert isinstance(watcher.error, StoreUnavailableError), watcher.error
    assert time.monotonic() - killed_at < 3
    one_line(watcher.error)
    store.mark_failed(watcher.watch)
    wait_threads(threads_before)  # the broken stream left no gRPC thread behind

    etcd_server.start()
    missed = [store.put("/net/b", "while down"), store.put("/net/a", "again")]
    store.delete("/net/b")
    _, after = store.list_prefix("/net/")
    events = collect(store.watch_prefix("/net/", last_seen + 1), 3)
    assert [(e.kind, e.kv.key, e.kv.mod_revision) for e in events] == [
        ("put", "/net/b", missed[0]),
        ("put", "/net/a", missed[1]),
        ("delete", "/net/b", after),
    ]


# -- TLS --------------------------------------------------------------------------------------


def test_tls_with_client_cert_works(etcd_tls: TlsEtcd, store_for: StoreFor) -> None:
    assert etcd_tls.client_url.startswith("https://")
    store = store_for(etcd_tls)
    store.put("/tls/key", "secret")
    assert store.get("/tls/key").value == b"secret"  # type: ignore[union-attr]
    assert etcdctl(etcd_tls, "get", "/tls/key", "--print-value-only").strip() == "secret"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"cafile": "other_ca"}, id="wrong-ca"),
        pytest.param({"certfile": None, "keyfile": None}, id="no-client-cert"),
    ],
)
def test_tls_rejected_gives_one_line_store_error(
    etcd_tls: TlsEtcd, store_for: StoreFor, bad: dict[str, str | None]
) -> None:
    opts = {k: getattr(etcd_tls.tls, v) if v else None for k, v in bad.items()}
    store = store_for(etcd_tls, **opts)
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.get("/tls/key")
    assert time.monotonic() - started < 3
    one_line(caught.value)
    assert etcd_tls.client_url in str(caught.value)
    # The operator learns that TLS, not the network, is the problem, and which side refused.
    # (Every case, with each tool, is in test_tls_errors.py.)
    assert isinstance(caught.value, StoreTlsError)
    if "cafile" in bad:
        assert "we refused etcd" in str(caught.value)
    else:
        assert "requires a client certificate" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "flag"),
    [("certfile", "--etcd-certfile"), ("keyfile", "--etcd-keyfile"), ("cafile", "--etcd-cafile")],
)
def test_missing_tls_file_is_a_usage_error_naming_the_flag(
    etcd_tls: TlsEtcd, store_for: StoreFor, tmp_path: Path, field: str, flag: str
) -> None:
    missing = str(tmp_path / "absent.pem")
    store = store_for(etcd_tls, **{field: missing})
    with pytest.raises(UsageError) as caught:
        store.get("/k")
    assert flag in str(caught.value) and missing in str(caught.value)
    one_line(caught.value)


# -- authentication ---------------------------------------------------------------------------


def enable_auth(server: EtcdServer, password: str) -> None:
    etcdctl(server, "user", "add", f"root:{password}")
    etcdctl(server, "user", "grant-role", "root", "root")
    etcdctl(server, "auth", "enable")


def test_username_password_auth(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    enable_auth(etcd_server, "s3cret")
    store = store_for(etcd_server, username="root", password="s3cret")
    store.put("/auth/k", "v")
    assert store.get("/auth/k").value == b"v"  # type: ignore[union-attr]
    assert etcdctl(etcd_server, "get", "/auth/k", "--print-value-only", user="root:s3cret") == (
        "v\n"
    )

    wrong = store_for(etcd_server, username="root", password="wrong")
    with pytest.raises(StoreError) as caught:
        wrong.get("/auth/k")
    assert not isinstance(caught.value, StoreUnavailableError)
    assert "authentication failed" in str(caught.value)
    one_line(caught.value)

    anonymous = store_for(etcd_server)
    with pytest.raises(StoreError) as caught:
        anonymous.get("/auth/k")
    one_line(caught.value)


def test_expired_auth_token_is_renewed() -> None:
    server = start_server(extra_args=["--auth-token-ttl=1"])
    try:
        enable_auth(server, "pw")
        with make_store(server, username="root", password="pw") as store:
            store.put("/auth/k", "1")
            time.sleep(2.5)  # the simple token expires after its 1 s TTL
            store.put("/auth/k", "2")
            assert store.get("/auth/k").value == b"2"  # type: ignore[union-attr]
    finally:
        server.cleanup()


# -- endpoints and failover -------------------------------------------------------------------


def test_unreachable_endpoint_is_skipped(etcd_server: EtcdServer, store_for: StoreFor) -> None:
    store = store_for([UNREACHABLE, etcd_server.client_url])
    store.put("/k", "v")
    assert store.get("/k").value == b"v"  # type: ignore[union-attr]
    assert store.current_endpoint == etcd_server.client_url


def test_no_reachable_endpoint_is_store_unavailable(store_for: StoreFor) -> None:
    store = store_for([UNREACHABLE, "http://127.0.0.1:10"])
    with pytest.raises(StoreUnavailableError) as caught:
        store.get("/k")
    one_line(caught.value)
    assert UNREACHABLE in str(caught.value) and "127.0.0.1:10" in str(caught.value)
    with pytest.raises(StoreUnavailableError):
        store.watch_prefix("/k", 1)


def test_bad_endpoint_url_is_usage_error(store_for: StoreFor) -> None:
    # The store names the setting by its key; the agent and flannelctl print their flag.
    with pytest.raises(SettingError, match="is not an http:// or https:// URL") as caught:
        store_for(["127.0.0.1:2379"])
    assert isinstance(caught.value, UsageError)
    assert caught.value.setting == "endpoints"
    assert usage_message(caught.value).startswith("--etcd-endpoints: '127.0.0.1:2379'")


def test_cluster_failover_when_member_in_use_stops(
    healed: EtcdCluster, store_for: StoreFor
) -> None:
    store = store_for(healed)
    store.put("/failover/k", "0")
    for round_ in range(1, 3):  # stop the member in use twice, one member down at a time
        in_use = store.current_endpoint
        index = healed.client_urls.index(in_use)
        healed.stop_member(index)
        store.put("/failover/k", str(round_))
        assert store.get("/failover/k").value == str(round_).encode()  # type: ignore[union-attr]
        assert store.current_endpoint != in_use
        healed.start_member(index)
        healed.wait_healthy()


def test_cluster_watch_resumes_on_another_member(healed: EtcdCluster, store_for: StoreFor) -> None:
    store = store_for(healed)
    _, revision = store.list_prefix("/w/")
    watcher = WatchThread(store.watch_prefix("/w/", revision + 1))
    store.put("/w/a", "1")
    watcher.wait_for(1)
    last_seen = watcher.events()[-1].kv.mod_revision
    index = healed.client_urls.index(watcher.watch.endpoint.url)
    healed.members[index].kill()
    watcher.thread.join(5)
    assert isinstance(watcher.error, StoreUnavailableError), watcher.error
    store.mark_failed(watcher.watch)
    written = store.put("/w/b", "2")
    events = collect(store.watch_prefix("/w/", last_seen + 1), 1)
    assert (events[0].kv.key, events[0].kv.mod_revision) == ("/w/b", written)
    assert store.current_endpoint != healed.client_urls[index]


def test_frozen_member_delays_each_call_at_most_timeout_per_member(
    healed: EtcdCluster, store_for: StoreFor
) -> None:
    timeout = 1.5  # room for a re-election when the frozen member is the leader
    store = store_for(healed, timeout=timeout)
    store.put("/frozen/k", "0")
    frozen = healed.client_urls.index(store.current_endpoint)
    healed.members[frozen].freeze()
    bound = timeout * len(healed.members) + 1
    lease = 0
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("put", lambda: store.put("/frozen/k", "1")),
        ("get", lambda: store.get("/frozen/k")),
        ("list", lambda: store.list_prefix("/frozen/")),
        ("create", lambda: store.create("/frozen/new", "x")),
        ("replace", lambda: store.replace("/frozen/k", "2", 1)),
        ("grant", lambda: store.grant(10)),
        ("keepalive", lambda: store.keepalive_once(lease)),
        ("ttl", lambda: store.time_to_live(lease)),
        ("revoke", lambda: store.revoke(lease)),
        ("delete", lambda: store.delete("/frozen/new")),
        ("watch", lambda: store.watch_prefix("/frozen/", 1).cancel()),
    ]
    for name, call in calls:
        started = time.monotonic()
        result = call()
        took = time.monotonic() - started
        assert took < bound, f"{name} took {took:.1f} s with a frozen member (bound {bound} s)"
        if name == "grant":
            lease = result
    assert store.current_endpoint != healed.client_urls[frozen]
    assert store.get("/frozen/k").value == b"1"  # type: ignore[union-attr]


def test_frozen_single_server_fails_within_timeout(
    etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    store = store_for(etcd_server, timeout=0.5)
    store.put("/k", "v")
    etcd_server.freeze()
    for name, call in [
        ("get", lambda: store.get("/k")),
        ("put", lambda: store.put("/k", "w")),
        ("watch", lambda: store.watch_prefix("/k", 1)),
    ]:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            call()
        took = time.monotonic() - started
        assert took < 0.5 + 1, f"{name} took {took:.1f} s against a frozen server"
    etcd_server.thaw()
    # The timed-out put may still apply once the server runs again: the caller cannot know.
    assert store.get("/k").value in (b"v", b"w")  # type: ignore[union-attr]
