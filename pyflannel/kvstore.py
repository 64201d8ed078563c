"""What the leasing code needs from etcd, as an interface (like flannel's subnet Registry).

`pyflannel.store.Store` (gRPC, the real etcd) implements it; `MemoryStore` keeps the same
semantics in memory for fast tests of the leasing rules, and `DryRunStore` wraps any store so
that writes only answer what they would do (flannel_lease's check mode). tests/etcd runs one
contract against the real etcd and `MemoryStore`, so the two cannot drift apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pyflannel.errors import StoreUnavailableError


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int


class KeyValueStore(Protocol):
    """The etcd operations SubnetManager uses; failures raise StoreUnavailableError."""

    def get(self, key: str) -> KeyValue | None: ...

    def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """The keys under `prefix` and the store's revision they were read at."""
        ...

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        """Write unconditionally; returns the new revision."""
        ...

    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        """Write only if the key does not exist; False when it does."""
        ...

    def replace(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        """Write only if the key is still at `mod_revision`; False when it changed."""
        ...

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete (only at `mod_revision` when given); False when absent or changed."""
        ...

    def grant(self, ttl: int) -> int:
        """A new etcd lease of `ttl` seconds; its ID."""
        ...

    def keepalive_once(self, lease_id: int) -> int:
        """Refresh a lease; its TTL, or 0 or less when it is gone."""
        ...

    def time_to_live(self, lease_id: int) -> int:
        """Seconds left; -1 when the lease does not exist (expired or revoked)."""
        ...

    def revoke(self, lease_id: int) -> None:
        """End a lease and delete the keys attached to it."""
        ...


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


@dataclass
class _Grant:
    ttl: int
    expires: float


class MemoryStore:
    """KeyValueStore in memory with etcd's rules: one revision counter for every write, a
    key's create/mod revision and version, leases that expire and take their keys with them.
    `clock` (seconds, monotonic) can be replaced to let leases expire in a test."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, KeyValue] = {}
        self._grants: dict[int, _Grant] = {}
        self._revision = 1
        self._next_lease = 1000

    def _expire(self) -> None:
        now = self._clock()
        for lease_id in [i for i, grant in self._grants.items() if grant.expires <= now]:
            self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: int) -> None:
        del self._grants[lease_id]
        attached = [k for k, kv in self._keys.items() if kv.lease == lease_id]
        if attached:
            self._revision += 1
            for key in attached:
                del self._keys[key]

    def _write(self, key: str, value: str | bytes, lease: int) -> int:
        if lease and lease not in self._grants:
            raise StoreUnavailableError(f"etcd put {key}: requested lease not found")
        self._revision += 1
        old = self._keys.get(key)
        self._keys[key] = KeyValue(
            key=key,
            value=_bytes(value),
            mod_revision=self._revision,
            create_revision=old.create_revision if old else self._revision,
            version=old.version + 1 if old else 1,
            lease=lease,
        )
        return self._revision

    def get(self, key: str) -> KeyValue | None:
        with self._lock:
            self._expire()
            return self._keys.get(key)

    def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        with self._lock:
            self._expire()
            found = [kv for key, kv in sorted(self._keys.items()) if key.startswith(prefix)]
            return found, self._revision

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        with self._lock:
            self._expire()
            return self._write(key, value, lease)

    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        with self._lock:
            self._expire()
            if key in self._keys:
                return False
            self._write(key, value, lease)
            return True

    def replace(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        with self._lock:
            self._expire()
            current = self._keys.get(key)
            if (current.mod_revision if current else 0) != mod_revision:
                return False
            self._write(key, value, lease)
            return True

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        with self._lock:
            self._expire()
            current = self._keys.get(key)
            if current is None or mod_revision not in (None, current.mod_revision):
                return False
            self._revision += 1
            del self._keys[key]
            return True

    def grant(self, ttl: int) -> int:
        with self._lock:
            self._next_lease += 1
            self._grants[self._next_lease] = _Grant(ttl, self._clock() + ttl)
            return self._next_lease

    def keepalive_once(self, lease_id: int) -> int:
        with self._lock:
            self._expire()
            grant = self._grants.get(lease_id)
            if grant is None:
                return 0
            grant.expires = self._clock() + grant.ttl
            return grant.ttl

    def time_to_live(self, lease_id: int) -> int:
        with self._lock:
            self._expire()
            grant = self._grants.get(lease_id)
            return -1 if grant is None else int(grant.expires - self._clock())

    def revoke(self, lease_id: int) -> None:
        with self._lock:
            if lease_id in self._grants:
                self._drop_lease(lease_id)


class DryRunStore:
    """Reads from `inner`; writes change nothing and answer what they would do (check mode).
    The leasing code runs unchanged on top of it, so check mode takes the same decisions."""

    def __init__(self, inner: KeyValueStore) -> None:
        self.inner = inner

    def get(self, key: str) -> KeyValue | None:
        return self.inner.get(key)

    def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return self.inner.list_prefix(prefix)

    def time_to_live(self, lease_id: int) -> int:
        return self.inner.time_to_live(lease_id)

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        return 0

    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        return self.get(key) is None

    def replace(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        current = self.get(key)
        return (current.mod_revision if current else 0) == mod_revision

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        current = self.get(key)
        return current is not None and mod_revision in (None, current.mod_revision)

    def grant(self, ttl: int) -> int:
        return 0

    def keepalive_once(self, lease_id: int) -> int:
        return max(0, self.time_to_live(lease_id))

    def revoke(self, lease_id: int) -> None:
        return None
