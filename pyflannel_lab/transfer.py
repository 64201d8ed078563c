"""Bulk TCP between two lab containers, checked end to end: a fixed number of bytes of a
deterministic stream, whose SHA-256 the receiver reports (a transfer that stalls, truncates or
corrupts fails). Python on both ends: no iperf3 needed, and the digest is the check.
"""

from __future__ import annotations

import hashlib
import secrets
import sys

from pyflannel_lab.agents import AgentCluster

TRANSFER_BYTES = 24 << 20
TRANSFER_PORT = 5301

# Receiver (argv: bind ip, port, bytes): prints the SHA-256 of what arrived.
RECEIVE = r"""
import hashlib, socket, sys
ip, port, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srv = socket.create_server((ip, port))
srv.settimeout(30)
conn, _ = srv.accept()
conn.settimeout(30)
digest, got = hashlib.sha256(), 0
while got < want:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    digest.update(chunk)
    got += len(chunk)
print(got, digest.hexdigest())
"""
# Sender (argv: ip, port, bytes): a deterministic stream (block i = sha256(i) * 2048).
SEND = r"""
import hashlib, socket, sys, time
ip, port, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 10
while True:
    try:
        sock = socket.create_connection((ip, port), timeout=15)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
sent, i = 0, 0
while sent < want:
    block = hashlib.sha256(str(i).encode()).digest() * 2048
    sock.sendall(block[: want - sent])
    sent += min(len(block), want - sent)
    i += 1
sock.close()
"""


def expected_digest(size: int) -> str:
    digest, sent, i = hashlib.sha256(), 0, 0
    while sent < size:
        block = hashlib.sha256(str(i).encode()).digest() * 2048
        digest.update(block[: size - sent])
        sent += min(len(block), size - sent)
        i += 1
    return digest.hexdigest()


def transfer(c: AgentCluster, src: int, dst: int, size: int = TRANSFER_BYTES) -> None:
    """`size` bytes over TCP from container h<src>c1 to h<dst>c1, intact."""
    lab, ip = c.lab, c.container_ip(dst)
    assert lab.tmpdir is not None
    log = lab.tmpdir / f"receive-{src}-{dst}-{secrets.token_hex(3)}.log"
    receiver = lab.popen(
        f"h{dst}c1", sys.executable, "-c", RECEIVE, ip, str(TRANSFER_PORT), str(size), log_path=log
    )
    try:
        lab.run(
            f"h{src}c1", sys.executable, "-c", SEND, ip, str(TRANSFER_PORT), str(size), timeout=40
        )
        receiver.wait(timeout=30)
    finally:
        lab.stop(receiver)
    got = log.read_text().split()
    assert got == [str(size), expected_digest(size)], f"h{src}c1 -> h{dst}c1: {got}"
