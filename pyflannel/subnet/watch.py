"""The lease watch: snapshot + watch + resync as one unit.

List `<prefix>/subnets/` with its revision, then watch from revision + 1. A broken stream is
reopened from the last revision seen + 1 (backoff 100 ms .. 5 s, so nothing is lost across an
etcd restart); a compacted revision triggers a fresh list diffed against what we know. The
consumer gets `added` / `removed` / `changed` events for the other nodes' leases; our own subnet
is left out, except that its deletion is reported through `on_own_removed`.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pyflannel.errors import CompactedError, StoreError, StoreUnavailableError
from pyflannel.store import Store, Watch, WatchEvent
from pyflannel.subnet.lease import Lease, parse_key_name, subnets_prefix
from pyflannel.subnet.manager import SubnetManager

log = logging.getLogger(__name__)

EventKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    kind: EventKind
    lease: Lease


@dataclass
class WatchStats:
    resyncs: int = 0
    reconnects: int = 0
    events: int = 0
    revision: int = 0


class LeaseWatcher:
    def __init__(
        self,
        manager: SubnetManager,
        store: Store,
        *,
        emit: Callable[[LeaseEvent], None],
        own_subnet: Callable[[], ipaddress.IPv4Network | None] = lambda: None,
        on_own_removed: Callable[[], None] | None = None,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self.manager = manager
        # The leases' store, for its watch: the leasing rules need none (kvstore.KeyValueStore).
        self.store = store
        self._emit = emit
        self._own_subnet = own_subnet
        self._on_own_removed = on_own_removed
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._known: dict[ipaddress.IPv4Network, Lease] = {}
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._lock = threading.Lock()
        self.stats = WatchStats()
        self.synced = threading.Event()

    @property
    def known(self) -> dict[ipaddress.IPv4Network, Lease]:
        return dict(self._known)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._watch is not None:
                self._watch.cancel()

    def run(self) -> None:
        """Blocking loop; returns after `stop()`."""
        backoff = self._min_backoff
        revision: int | None = None
        while not self._stop.is_set():
            try:
                if revision is None:
                    revision = self._resync()
                    self.synced.set()
                revision = self._follow(revision)
                backoff = self._min_backoff
            except CompactedError as exc:
                log.warning("watch revision %s compacted (%s); listing again", revision, exc)
                revision = None
            except (StoreUnavailableError, StoreError) as exc:
                if self._stop.is_set():
                    break
                self.stats.reconnects += 1
                log.warning("lease watch interrupted: %s; retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(self._max_backoff, backoff * 2)

    def _follow(self, revision: int) -> int:
        watch = self.store.watch_prefix(subnets_prefix(self.manager.prefix), revision + 1)
        with self._lock:
            if self._stop.is_set():
                watch.cancel()
                return revision
            self._watch = watch
        try:
            for batch in watch:
                for event in batch.events:
                    self._apply(event)
                    revision = max(revision, event.kv.mod_revision)
                if not batch.events:
                    # A progress notification: everything up to its revision was delivered.
                    revision = max(revision, batch.revision)
                self.stats.revision = revision
        except StoreUnavailableError:
            self.store.mark_failed(watch)
            raise
        finally:
            with self._lock:
                self._watch = None
        return revision

    def _resync(self) -> int:
        leases, revision = self.manager.list_leases()
        self.stats.resyncs += 1
        own = self._own_subnet()
        current = {lease.subnet: lease for lease in leases}
        for subnet in list(self._known):
            if subnet not in current:
                self._removed(subnet)
        for subnet, lease in current.items():
            if subnet == own:
                continue
            self._put(lease)
        if own is not None and own not in current and self._on_own_removed:
            self._on_own_removed()
        self.stats.revision = revision
        log.debug("lease snapshot at revision %d: %d leases", revision, len(current))
        return revision

    def _apply(self, event: WatchEvent) -> None:
        prefix = subnets_prefix(self.manager.prefix)
        subnet = parse_key_name(event.kv.key[len(prefix) :])
        if subnet is None:
            return
        own = self._own_subnet()
        if event.kind == "delete":
            if subnet == own:
                if self._on_own_removed:
                    self._on_own_removed()
                return
            self._removed(subnet)
            return
        lease = self.manager.lease_from_kv(event.kv)
        if lease is None or subnet == own:
            return
        self._put(lease)

    def _put(self, lease: Lease) -> None:
        old = self._known.get(lease.subnet)
        self._known[lease.subnet] = lease
        if old is None:
            self._send(LeaseEvent("added", lease))
        elif old.attrs != lease.attrs:
            self._send(LeaseEvent("changed", lease))

    def _removed(self, subnet: ipaddress.IPv4Network) -> None:
        old = self._known.pop(subnet, None)
        if old is not None:
            self._send(LeaseEvent("removed", old))

    def _send(self, event: LeaseEvent) -> None:
        self.stats.events += 1
        try:
            self._emit(event)
        except Exception:
            # A consumer bug must not kill the watch; the next resync repairs state.
            log.exception("lease event consumer failed on %s %s", event.kind, event.lease.subnet)

    def forget_own(self, subnet: ipaddress.IPv4Network) -> None:
        """Our subnet changed: drop it from the peer map without emitting."""
        self._known.pop(subnet, None)
