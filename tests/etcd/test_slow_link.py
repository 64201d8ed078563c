"""The store over a slow link: a TLS handshake that takes longer than 100 ms still connects.

A real etcd serving https with client certificates, reached through a relay on loopback that
holds every chunk for DELAY seconds in each direction (netem is not in this kernel), so a
handshake takes several hundred milliseconds, as on an emulated VM or a link across regions.
gRPC core uses `grpc.min_reconnect_backoff_ms` as the shortest time a connection attempt may
take: at 100 ms the first call always failed with "Handshake write failed".
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.etcd_harness import TlsEtcd, make_store

pytestmark = pytest.mark.etcd

DELAY = 0.15


class DelayedLink:
    """TCP relay 127.0.0.1:port -> upstream that delays each chunk by `delay` seconds."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self._upstream = upstream
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                held: queue.Queue[tuple[float, bytes]] = queue.Queue()
                threading.Thread(target=self._read, args=(source, held), daemon=True).start()
                threading.Thread(target=self._write, args=(held, sink), daemon=True).start()

    def _read(self, source: socket.socket, held: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            held.put((time.monotonic() + self._delay, data))
            if not data:
                return

    def _write(self, held: queue.Queue[tuple[float, bytes]], sink: socket.socket) -> None:
        while True:
            due, data = held.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._closed.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def slow_link(etcd_tls: TlsEtcd) -> Iterator[DelayedLink]:
    host, port = etcd_tls.client_url.removeprefix("https://").rsplit(":", 1)
    link = DelayedLink((host, int(port)), DELAY)
    try:
        yield link
    finally:
        link.close()


def test_tls_handshake_slower_than_100ms_connects(
    etcd_tls: TlsEtcd, slow_link: DelayedLink
) -> None:
    store = make_store(etcd_tls, endpoints=(f"https://127.0.0.1:{slow_link.port}",), timeout=10.0)
    try:
        started = time.monotonic()
        store.put("/slow-link/key", "value")
        elapsed = time.monotonic() - started
        kv = store.get("/slow-link/key")
    finally:
        store.close()
    assert kv is not None and kv.value == b"value"
    # The relay did hold the handshake back: TLS 1.3 and HTTP/2 need several round trips.
    assert elapsed > 4 * DELAY
