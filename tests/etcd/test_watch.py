"""LeaseWatcher against a real etcd: snapshot, events, etcd restarts, compaction, latency."""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from pyflannel.store import Store
from pyflannel.subnet.lease import LeaseAttrs
from pyflannel.subnet.manager import SubnetManager
from pyflannel.subnet.watch import LeaseEvent, LeaseWatcher
from tests.etcd_harness import EtcdServer

StoreFor = Callable[..., Store]

PREFIX = "/coreos.com/network"
OWN = IPv4Network("10.5.1.0/24")
QUIET = 0.5  # how long "no event" is waited for; events arrive in milliseconds


def net(n: int) -> IPv4Network:
    return IPv4Network(f"10.5.{n}.0/24")


def key(subnet: IPv4Network) -> str:
    return f"{PREFIX}/subnets/{subnet.network_address}-{subnet.prefixlen}"


def mac(n: int) -> str:
    return f"0e:00:00:00:00:{n:02x}"


def value(n: int, mac_n: int | None = None) -> str:
    """Peer n's lease value: public IP 198.51.100.n, VtepMAC mac_n (default n)."""
    attrs = LeaseAttrs(
        IPv4Address(f"198.51.100.{n}"),
        "vxlan",
        {"VNI": 1, "VtepMAC": mac(n if mac_n is None else mac_n)},
    )
    return attrs.to_json()


def put_peer(store: Store, n: int, mac_n: int | None = None) -> int:
    return store.put(key(net(n)), value(n, mac_n))


Summary = tuple[str, IPv4Network, str | None]


def summary(event: LeaseEvent) -> Summary:
    data = event.lease.attrs.backend_data or {}
    return event.kind, event.lease.subnet, data.get("VtepMAC")


class RunningWatcher:
    """A LeaseWatcher running in a thread; events land in a queue with their arrival time."""

    def __init__(self, store: Store, **options: Any) -> None:
        self.events: queue.Queue[tuple[float, LeaseEvent]] = queue.Queue()
        self.own_removed = threading.Event()
        self.watcher = LeaseWatcher(
            SubnetManager(store, PREFIX),
            store,
            emit=lambda event: self.events.put((time.perf_counter(), event)),
            own_subnet=lambda: OWN,
            on_own_removed=self.own_removed.set,
            **options,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self.thread.start()
        assert self.watcher.synced.wait(5), "watcher did not finish its first snapshot"

    def stop(self) -> None:
        self.watcher.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "watcher did not stop"
        assert self.error is None, f"watcher died: {self.error!r}"

    def timed(self, timeout: float = 5.0) -> tuple[float, LeaseEvent]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no lease event within {timeout} s (error: {self.error!r})")

    def take(self, count: int, timeout: float = 5.0) -> list[Summary]:
        return [summary(self.timed(timeout)[1]) for _ in range(count)]

    def assert_quiet(self, seconds: float = QUIET) -> None:
        time.sleep(seconds)
        leftover = []
        while not self.events.empty():
            leftover.append(summary(self.events.get_nowait()[1]))
        assert leftover == [], f"unexpected events: {leftover}"


@pytest.fixture
def watching(
    etcd_server: EtcdServer, store_for: StoreFor
) -> Iterator[Callable[..., RunningWatcher]]:
    """Factory: start a watcher on its own Store (options passed to LeaseWatcher)."""
    running: list[RunningWatcher] = []

    def start(**options: Any) -> RunningWatcher:
        watcher = RunningWatcher(store_for(etcd_server), **options)
        running.append(watcher)
        watcher.start()
        return watcher

    yield start
    for watcher in running:
        watcher.stop()


# -- events ---------------------------------------------------------------------------------


def test_snapshot_adds_existing_peers_but_not_our_own_subnet(
    etcd_server: EtcdServer, store_for: StoreFor, watching: Callable[..., RunningWatcher]
) -> None:
    writer = store_for(etcd_server)
    writer.put(key(OWN), value(1))
    put_peer(writer, 2)
    put_peer(writer, 3)

    watcher = watching()

    assert sorted(watcher.take(2)) == [("added", net(2), mac(2)), ("added", net(3), mac(3))]
    watcher.assert_quiet()
    assert set(watcher.watcher.known) == {net(2), net(3)}
    assert not watcher.own_removed.is_set()


def test_peer_events_added_changed_unchanged_removed(
    etcd_server: EtcdServer, store_for: StoreFor, watching: Callable[..., RunningWatcher]
) -> None:
    writer = store_for(etcd_server)
    watcher = watching()

    put_peer(writer, 2)
    assert watcher.take(1) == [("added", net(2), mac(2))]

    put_peer(writer, 2, mac_n=99)  # the peer rebooted: new VtepMAC
    assert watcher.take(1) == [("changed", net(2), mac(99))]

    put_peer(writer, 2, mac_n=99)  # identical value re-put: nothing changed
    put_peer(writer, 3)  # a marker: the next event must be this one
    assert watcher.take(1) == [("added", net(3), mac(3))]

    writer.delete(key(net(2)))
    assert watcher.take(1) == [("removed", net(2), mac(99))]
    watcher.assert_quiet()
    assert set(watcher.watcher.known) == {net(3)}


def test_own_subnet_puts_are_ignored_and_its_deletion_is_reported(
    etcd_server: EtcdServer, store_for: StoreFor, watching: Callable[..., RunningWatcher]
) -> None:
    writer = store_for(etcd_server)
    writer.put(key(OWN), value(1))
    watcher = watching()

    writer.put(key(OWN), value(1, mac_n=7))
    writer.put(f"{PREFIX}/subnets/not-a-lease", "junk")
    writer.put(key(net(4)), "not json")
    put_peer(writer, 3)
    assert watcher.take(1) == [("added", net(3), mac(3))]
    assert not watcher.own_removed.is_set()

    writer.delete(key(OWN))
    assert watcher.own_removed.wait(5), "on_own_removed was not called"
    watcher.assert_quiet()


def test_lease_expiry_is_a_removal(
    etcd_server: EtcdServer, store_for: StoreFor, watching: Callable[..., RunningWatcher]
) -> None:
    writer = store_for(etcd_server)
    watcher = watching()
    lease_id = writer.grant(2)
    writer.put(key(net(5)), value(5), lease=lease_id)
    assert watcher.take(1) == [("added", net(5), mac(5))]
    assert watcher.take(1, timeout=6) == [("removed", net(5), mac(5))]


# -- etcd restarts and compaction ------------------------------------------------------------


@pytest.mark.parametrize("min_backoff", [0.1, 2.0], ids=["racing-reconnect", "in-backoff"])
def test_nothing_is_lost_across_an_etcd_restart(
    etcd_server: EtcdServer,
    store_for: StoreFor,
    watching: Callable[..., RunningWatcher],
    min_backoff: float,
) -> None:
    writer = store_for(etcd_server)
    put_peer(writer, 2)
    put_peer(writer, 3)
    watcher = watching(min_backoff=min_backoff, max_backoff=max(min_backoff, 1.0))
    assert sorted(watcher.take(2)) == [("added", net(2), mac(2)), ("added", net(3), mac(3))]

    etcd_server.restart()  # same ports and data dir; the watch stream breaks
    writer = store_for(etcd_server)  # a fresh connection for the test's own writes
    put_peer(writer, 4)
    put_peer(writer, 2, mac_n=42)
    writer.delete(key(net(3)))
    put_peer(writer, 5)
    put_peer(writer, 4, mac_n=44)
    if min_backoff >= 2.0:
        # Written while the watcher waits out its backoff: nothing delivered yet.
        assert watcher.events.empty()

    assert watcher.take(5, timeout=10) == [
        ("added", net(4), mac(4)),
        ("changed", net(2), mac(42)),
        ("removed", net(3), mac(3)),
        ("added", net(5), mac(5)),
        ("changed", net(4), mac(44)),
    ]
    put_peer(writer, 6)  # and it keeps watching after the reconnect
    assert watcher.take(1) == [("added", net(6), mac(6))]
    watcher.assert_quiet()
    assert watcher.watcher.stats.reconnects >= 1
    assert watcher.watcher.stats.resyncs == 1  # resumed from its revision, no re-list


def test_compacted_resume_resyncs_and_emits_the_diff(
    etcd_server: EtcdServer, store_for: StoreFor, watching: Callable[..., RunningWatcher]
) -> None:
    writer = store_for(etcd_server)
    for n in (2, 3, 4):
        put_peer(writer, n)
    # A long backoff keeps the watcher disconnected while the history it needs is compacted.
    watcher = watching(min_backoff=2.0, max_backoff=2.0)
    assert len(watcher.take(3)) == 3
    seen = watcher.watcher.stats.revision

    etcd_server.restart()
    writer = store_for(etcd_server)
    writer.delete(key(net(2)))
    put_peer(writer, 3, mac_n=33)
    put_peer(writer, 5)
    put_peer(writer, 6)
    writer.delete(key(net(6)))
    revision = writer.put(f"{PREFIX}/other", "x")  # a put reports the current revision
    assert revision > seen + 1
    writer.compact(revision)
    assert watcher.events.empty(), "the watcher reconnected before the compaction"

    got = watcher.take(3, timeout=10)
    assert got[0] == ("removed", net(2), mac(2))  # the sweep comes first
    assert sorted(got[1:]) == sorted([("changed", net(3), mac(33)), ("added", net(5), mac(5))])
    watcher.assert_quiet()  # 6 came and went while disconnected: no event for it
    assert watcher.watcher.stats.resyncs == 2  # the first snapshot plus the compaction resync
    assert set(watcher.watcher.known) == {net(3), net(4), net(5)}

    put_peer(writer, 7)  # and it watches on from the new snapshot
    assert watcher.take(1) == [("added", net(7), mac(7))]


# -- latency ---------------------------------------------------------------------------------


def test_put_to_event_latency(
    etcd_server: EtcdServer, store_for: StoreFor, watching: Callable[..., RunningWatcher]
) -> None:
    writer = store_for(etcd_server)
    watcher = watching()
    latencies = []
    for n in range(10, 30):
        start = time.perf_counter()
        put_peer(writer, n)
        arrived, event = watcher.timed()
        assert summary(event) == ("added", net(n), mac(n))
        latencies.append(arrived - start)
    median = statistics.median(latencies)
    print(
        f"\nlease put -> watcher event: median {median * 1000:.1f} ms, "
        f"min {min(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms (n=20)"
    )
    assert median < 0.5
