"""The only module that talks to etcd (v3 API over gRPC).

Built on `pyetcd` (etcd-sdk-python, see docs/etcd-client.md for why that client). What this module
adds on top, because no client does it for us:
- failover: one client per endpoint, every call retried on the next endpoint when the current
  one is unreachable or times out; `StoreUnavailableError` only when all of them failed;
- a timeout on every unary call (`EtcdOptions.timeout`), fast gRPC reconnect backoff and
  keepalive pings so that a dead or frozen member is noticed;
- re-authentication when an auth token expires;
- a watch that resumes from a given revision and reports compaction as `CompactedError`
  (pyetcd's watcher thread hides both), written on the library's generated gRPC stubs;
- TLS failures in one line that says which side refused what (`StoreTlsError`, see
  pyflannel.tlscheck), because gRPC reports every refusal as the same "handshake" error.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

# gRPC's C core prints TLS and connection chatter to stderr unless told otherwise (even at
# ERROR, three "Corruption detected" lines per refused handshake); our own one-line errors
# say what matters. Must be set before grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc

# pyetcd registers the etcd protos at import; import it only here (see docs/etcd-client.md).
import pyetcd
from pyetcd import etcdrpc
from pyetcd import exceptions as etcd_exc
from pyetcd import utils as etcd_utils

from pyflannel import tlscheck
from pyflannel.errors import (
    CompactedError,
    SettingError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from pyflannel.etcd_options import flag_names, split_endpoint
from pyflannel.kvstore import KeyValue  # the store's records; the interface is kvstore's

log = logging.getLogger(__name__)

T = TypeVar("T")

# gRPC channel options: reconnect quickly after a member restarts (default backoff grows to
# 120 s) and ping idle connections so that a frozen member fails the call instead of hanging.
# gRPC core takes min_reconnect_backoff_ms as the least time one connection attempt (TCP, TLS
# handshake, HTTP/2 settings) may take, not as a backoff: at 100 ms every TLS handshake that
# took longer failed ("Handshake timed out", then "Handshake write failed"), e.g. on a slow
# host or a link of 100 ms round trip. Its default, 20 s; calls keep their own timeout, so a
# frozen member still fails over after `timeout`.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 20000),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.http2.max_pings_without_data", 0),
]

_UNREACHABLE = (
    etcd_exc.ConnectionFailedError,
    etcd_exc.ConnectionTimeoutError,
    etcd_exc.NoServerAvailableError,
    etcd_exc.InternalServerError,
)
_UNREACHABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)
# What gRPC says when a connection failed in or right after the TLS handshake, or the peer did
# not speak what we expected; only then is a TLS probe worth its time (not for a refused
# connection or a timeout: a frozen member must fail over without delay).
_TLS_HINTS = (
    "handshake",
    "tsi_",
    "ssl",
    "certificate",
    "verification",
    "socket closed",
    "connection reset",
)


class StoreTlsError(StoreUnavailableError):
    """TLS with etcd failed (a certificate refused by either side, http/https mixed up).

    A subclass of StoreUnavailableError, so everything that retries an unreachable etcd also
    retries this (a renewed certificate is read again at the next connection); the agent makes
    it fatal only at startup.
    """


class StoreTlsFileError(StoreTlsError, UsageError):
    """One of our TLS files (cafile/certfile/keyfile) is unreadable or wrong.

    A usage error (flannelctl and a starting agent exit 2), and still retried by a running
    agent: during a certificate rotation the files may briefly not match.
    """


FLAG_TLS_NAMES = tlscheck.OptionNames.of(flag_names())


@dataclass(frozen=True)
class EtcdOptions:
    """How to reach etcd: the settings of pyflannel.etcd_options (fields named by their keys)."""

    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 5.0
    # How the entry point names the TLS settings in diagnoses (flags, or the modules' options).
    option_names: tlscheck.OptionNames = FLAG_TLS_NAMES

    @property
    def tls_files(self) -> tlscheck.TlsFiles:
        return tlscheck.TlsFiles(self.cafile, self.certfile, self.keyfile)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of a key: kind is 'put' or 'delete'."""

    kind: str
    kv: KeyValue


@dataclass(frozen=True)
class WatchBatch:
    """The events of one watch response and the revision they bring the watcher to."""

    events: tuple[WatchEvent, ...]
    revision: int


def parse_endpoint(url: str) -> tuple[str, int, bool]:
    """'https://10.0.0.1:2379' -> ('10.0.0.1', 2379, True); SettingError when malformed."""
    try:
        return split_endpoint(url)
    except ValueError as exc:
        raise SettingError("endpoints", str(exc)) from None


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=raw.key.decode("utf-8", "replace"),
        value=bytes(raw.value),
        mod_revision=raw.mod_revision,
        create_revision=raw.create_revision,
        version=raw.version,
        lease=raw.lease,
    )


class _Endpoint:
    """One etcd member: a pyetcd client created lazily (auth happens at creation)."""

    def __init__(self, url: str, options: EtcdOptions) -> None:
        self.url = url
        self.host, self.port, self.secure = parse_endpoint(url)
        self._options = options
        self._client: pyetcd.MultiEndpointEtcd3Client | None = None
        self._lock = threading.Lock()

    def client(self) -> pyetcd.MultiEndpointEtcd3Client:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> pyetcd.MultiEndpointEtcd3Client:
        creds = None
        if self.secure:
            creds = _tls_credentials(self._options)
        endpoint = pyetcd.Endpoint(
            self.host,
            self.port,
            secure=self.secure,
            creds=creds,
            # pyetcd locks a failed endpoint out for time_retry seconds; failover is ours.
            time_retry=0.0,
            opts=_CHANNEL_OPTIONS,
        )
        try:
            client = pyetcd.MultiEndpointEtcd3Client(
                endpoints=[endpoint],
                timeout=self._options.timeout,
                user=self._options.username,
                password=self._options.password,
            )
            if not self.secure:
                # gRPC refuses call credentials on plain channels (UNAUTHENTICATED); the
                # token also travels as call metadata, which is all etcd needs.
                client.call_credentials = None
            return client
        except grpc.RpcError as exc:
            endpoint.close()
            if exc.code() in _UNREACHABLE_CODES:
                raise etcd_exc.ConnectionFailedError() from None
            raise StoreError(f"etcd {self.url}: authentication failed: {exc.details()}") from None

    def tls_problem(self, reason: str) -> str | None:
        """One line on what is wrong with TLS to this endpoint, when gRPC's `reason` hints at it."""
        if not any(hint in reason.lower() for hint in _TLS_HINTS):
            return None
        options = self._options
        return tlscheck.diagnose(self.url, options.tls_files, options.option_names, options.timeout)

    def reset(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # closing a broken channel must not mask the real error
                    log.debug("closing etcd client for %s failed", self.url, exc_info=True)
                self._client = None


def _tls_credentials(options: EtcdOptions) -> grpc.ChannelCredentials:
    # gRPC only says "Failed to create security handshaker" for a bad file; check them first.
    files = options.tls_files
    try:
        tlscheck.check_files(files, options.option_names)
    except tlscheck.TlsFileError as exc:
        raise StoreTlsFileError(str(exc)) from None

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as handle:
            return handle.read()

    try:
        return grpc.ssl_channel_credentials(
            root_certificates=read(files.cafile),
            private_key=read(files.keyfile),
            certificate_chain=read(files.certfile),
        )
    except OSError as exc:  # removed since the check
        raise StoreTlsFileError(f"cannot read {exc.filename}: {exc.strerror}") from None


class Store:
    """etcd access for the agent, the CLI and the Ansible modules."""

    def __init__(self, options: EtcdOptions) -> None:
        if not options.endpoints:
            raise SettingError("endpoints", "at least one endpoint is needed")
        self.options = options
        self._endpoints = [_Endpoint(url, options) for url in options.endpoints]
        self._current = 0
        self._lock = threading.Lock()

    # -- failover -------------------------------------------------------------------------

    @property
    def current_endpoint(self) -> str:
        return self._endpoints[self._current].url

    def _rotate(self, failed: _Endpoint) -> None:
        with self._lock:
            if self._endpoints[self._current] is failed:
                self._current = (self._current + 1) % len(self._endpoints)

    def _call(self, what: str, fn: Callable[[pyetcd.MultiEndpointEtcd3Client], T]) -> T:
        """Run `fn` on the current endpoint, failing over through all endpoints once."""
        failures = _Failures(what, self.options.option_names)
        reauthenticated = False
        attempts = len(self._endpoints)
        attempt = 0
        while attempt < attempts:
            endpoint = self._endpoints[self._current]
            try:
                return fn(endpoint.client())
            except _UNREACHABLE as exc:
                failures.add(endpoint, _reason(exc))
                endpoint.reset()
                self._rotate(endpoint)
                attempt += 1
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAUTHENTICATED and not reauthenticated:
                    # Simple auth tokens expire; log in again once and retry.
                    endpoint.reset()
                    reauthenticated = True
                    continue
                if code in _UNREACHABLE_CODES:
                    failures.add(endpoint, _reason(exc))
                    endpoint.reset()
                    self._rotate(endpoint)
                    attempt += 1
                    continue
                raise StoreError(f"etcd {what} failed: {code.name}: {exc.details()}") from None
        raise failures.error()

    # -- keys -----------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        response = self._call("get", lambda c: c.get_response(key))
        return _kv(response.kvs[0]) if response.kvs else None

    def list_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys under `prefix` and the store revision of that snapshot."""
        response = self._call("list", lambda c: c.get_prefix_response(prefix))
        return [_kv(raw) for raw in response.kvs], response.header.revision

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        """Unconditional put; returns the new revision."""
        response = self._call(
            "put",
            lambda c: c.kvstub.Put(
                etcdrpc.PutRequest(key=etcd_utils.to_bytes(key), value=_bytes(value), lease=lease),
                c.timeout,
                credentials=c.call_credentials,
                metadata=c.metadata,
            ),
        )
        return int(response.header.revision)

    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        """Put only if the key does not exist; False when someone else has it."""
        return self._txn(key, value, lease, lambda t: t.version(key) == 0)

    def replace(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        """Put only if the key is unchanged since `mod_revision`."""
        return self._txn(key, value, lease, lambda t: t.mod(key) == mod_revision)

    def _txn(self, key: str, value: str | bytes, lease: int, compare: Callable[[Any], Any]) -> bool:
        def run(client: pyetcd.MultiEndpointEtcd3Client) -> bool:
            succeeded, _ = client.transaction(
                compare=[compare(client.transactions)],
                success=[client.transactions.put(key, _bytes(value), lease=lease or None)],
                failure=[],
            )
            return bool(succeeded)

        return self._call("transaction", run)

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete a key (only if unchanged since `mod_revision` when given)."""

        def run(client: pyetcd.MultiEndpointEtcd3Client) -> bool:
            if mod_revision is None:
                return bool(client.delete(key))
            succeeded, _ = client.transaction(
                compare=[client.transactions.mod(key) == mod_revision],
                success=[client.transactions.delete(key)],
                failure=[],
            )
            return bool(succeeded)

        return self._call("delete", run)

    # -- leases ---------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        return int(self._call("lease grant", lambda c: c.lease(ttl).id))

    def keepalive_once(self, lease_id: int) -> int:
        """Refresh a lease; returns its new TTL, 0 when the lease no longer exists."""

        def run(client: pyetcd.MultiEndpointEtcd3Client) -> int:
            responses = list(client.refresh_lease(lease_id))
            return int(responses[-1].TTL) if responses else 0

        return max(0, self._call("lease keepalive", run))

    def time_to_live(self, lease_id: int) -> int:
        """Remaining TTL in seconds; -1 when the lease does not exist."""
        response = self._call("lease ttl", lambda c: c.get_lease_info(lease_id))
        return int(response.TTL)

    def revoke(self, lease_id: int) -> None:
        try:
            self._call("lease revoke", lambda c: c.revoke_lease(lease_id))
        except StoreError as exc:
            if "not found" not in str(exc):
                raise

    # -- cluster --------------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        self._call("compact", lambda c: c.compact(revision, physical=True))

    # -- watch ----------------------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int) -> Watch:
        """Open a watch on `prefix` from `start_revision` (inclusive) on the current endpoint.

        Raises StoreUnavailableError when no endpoint accepts the watch.
        """
        errors: list[str] = []
        kind: type[StoreUnavailableError] = StoreUnavailableError
        for _ in range(len(self._endpoints)):
            endpoint = self._endpoints[self._current]
            try:
                return Watch(endpoint, prefix, start_revision, self.options.timeout)
            except StoreTlsError as exc:
                errors.append(str(exc))
                kind = StoreTlsError
                endpoint.reset()
                self._rotate(endpoint)
            except (StoreUnavailableError, *_UNREACHABLE) as exc:
                errors.append(f"{endpoint.url}: {exc}")
                endpoint.reset()
                self._rotate(endpoint)
        raise kind(f"etcd watch: no endpoint reachable ({'; '.join(errors)})")

    def mark_failed(self, watch: Watch) -> None:
        """After a watch broke: drop that endpoint's connection and move to the next one."""
        watch.endpoint.reset()
        self._rotate(watch.endpoint)

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.reset()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Failures:
    """Why each endpoint failed during one call, and the one-line error when all of them did."""

    def __init__(self, what: str, names: tlscheck.OptionNames) -> None:
        self.what = what
        self.names = names
        self.reasons: list[str] = []
        self.tls: list[str] = []

    def add(self, endpoint: _Endpoint, reason: str) -> None:
        tls_problem = endpoint.tls_problem(reason)
        if tls_problem is not None:
            self.tls.append(tls_problem)
        self.reasons.append(tls_problem or f"{endpoint.url}: {reason}")

    def error(self) -> StoreUnavailableError:
        if self.tls and len(self.tls) == len(self.reasons):
            return StoreTlsError(f"etcd {self.what} failed: {'; '.join(self.tls)}")
        kind = StoreTlsError if self.tls else StoreUnavailableError
        return kind(
            f"etcd {self.what}: no endpoint reachable ({'; '.join(self.reasons)}); check "
            f"{self.names.endpoints} and that etcd is running"
        )


class Watch:
    """A gRPC watch stream on one endpoint; iterate for `WatchBatch`es, `cancel()` to stop.

    Iteration raises `CompactedError` when the start revision is compacted and
    `StoreUnavailableError` when the stream breaks; the caller resumes from the last revision.
    """

    def __init__(self, endpoint: _Endpoint, prefix: str, start_revision: int, timeout: float):
        self.endpoint = endpoint
        client = endpoint.client()
        key = etcd_utils.to_bytes(prefix)
        request = etcdrpc.WatchRequest(
            create_request=etcdrpc.WatchCreateRequest(
                key=key,
                range_end=etcd_utils.prefix_range_end(key),
                start_revision=start_revision,
                progress_notify=True,
            )
        )
        self._done = threading.Event()

        def requests() -> Iterator[Any]:
            yield request
            self._done.wait()  # keep the request stream open until cancelled

        stub = etcdrpc.WatchStub(client.channel)
        self._call = stub.Watch(
            requests(), credentials=client.call_credentials, metadata=client.metadata
        )
        self._responses = iter(self._call)
        # Wait for the "created" response so that a dead endpoint fails here, not later.
        timer = threading.Timer(timeout, self._call.cancel)
        timer.start()
        try:
            first = self._next()
        finally:
            timer.cancel()
        if first is None:
            raise StoreUnavailableError(f"etcd {endpoint.url}: watch was not created in time")
        if first.compact_revision:
            self.cancel()
            raise CompactedError(first.compact_revision)
        self._pending = first if first.events else None

    def _next(self) -> Any:
        try:
            return next(self._responses)
        except StopIteration:
            return None
        except grpc.RpcError as exc:
            if self._done.is_set():
                return None
            self._done.set()  # ends the request generator; its gRPC thread would wait forever
            tls_problem = self.endpoint.tls_problem(_reason(exc))
            if tls_problem is not None:
                raise StoreTlsError(f"etcd watch broken: {tls_problem}") from None
            raise StoreUnavailableError(
                f"etcd {self.endpoint.url}: watch broken: {exc.code().name}"
            ) from None

    def __iter__(self) -> Iterator[WatchBatch]:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            yield _batch(pending)
        while not self._done.is_set():
            response = self._next()
            if response is None:
                if self._done.is_set():
                    return
                self._done.set()
                raise StoreUnavailableError(f"etcd {self.endpoint.url}: watch stream ended")
            if response.compact_revision:
                self.cancel()
                raise CompactedError(response.compact_revision)
            if response.canceled:
                self.cancel()
                raise StoreUnavailableError(
                    f"etcd {self.endpoint.url}: watch cancelled by server: "
                    f"{response.cancel_reason or 'no reason given'}"
                )
            yield _batch(response)

    def cancel(self) -> None:
        self._done.set()
        self._call.cancel()


def _batch(response: Any) -> WatchBatch:
    events = tuple(
        WatchEvent(kind="delete" if event.type == 1 else "put", kv=_kv(event.kv))
        for event in response.events
    )
    return WatchBatch(events=events, revision=int(response.header.revision))


def _reason(exc: BaseException) -> str:
    """gRPC's reason (e.g. a failed TLS handshake); pyetcd drops it, it is in the context."""
    cause = exc if isinstance(exc, grpc.RpcError) else exc.__context__
    if isinstance(cause, grpc.RpcError) and isinstance(cause, grpc.Call):
        return " ".join(f"{cause.code().name}: {cause.details()}".split())
    return str(exc) or type(exc).__name__


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
