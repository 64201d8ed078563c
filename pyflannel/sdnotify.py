"""systemd's notify protocol (Type=notify): one datagram to $NOTIFY_SOCKET.

Eight lines of socket code; a dependency (e.g. the `sdnotify` package) would add nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send e.g. "READY=1"; False when not run under systemd (no NOTIFY_SOCKET)."""
    path = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        # systemd gone or a stale NOTIFY_SOCKET: the network must not go down for that.
        log.warning("could not notify systemd (%s) at %s: %s", state, path, exc.strerror or exc)
        return False
    return True
