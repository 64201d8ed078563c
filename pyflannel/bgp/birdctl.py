"""A client of BIRD's control socket (what `birdc` speaks), standard library only.

The reply to a command is a run of lines "CODE-text" (more follow) or "CODE text" (the last of
that code), lines starting with a space continuing the previous code; 0000 ends a successful
reply, 8xxx and 9xxx are errors. `show protocols` rows are code 1002.
"""

from __future__ import annotations

import io
import re
import socket
from dataclasses import dataclass

SOCKET_TIMEOUT = 5.0
_LAST_LINE = re.compile(rb"^\d{4} ")
# name proto table state since (date time, from `timeformat protocol iso long`) info
_PROTOCOL_ROW = re.compile(
    r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
    r"(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?|\S+)\s*(?P<info>.*)$"
)


class BirdError(Exception):
    """BIRD is not reachable or refused a command; one line for the operator."""


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    proto: str  # BGP, Static, Kernel, Device, ...
    table: str
    state: str  # up, start, down
    since: str
    info: str  # for BGP: Established, Active, Connect, ...


class BirdControl:
    def __init__(self, socket_path: str, timeout: float = SOCKET_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, text: str) -> list[tuple[int, str]]:
        """(code, text) per reply line; BirdError for a failure or an error reply."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                stream = sock.makefile("rwb")
                self._read_reply(stream)  # the greeting: 0001 BIRD <version> ready.
                stream.write(text.encode() + b"\n")
                stream.flush()
                return self._read_reply(stream)
        except OSError as exc:
            raise BirdError(
                f"BIRD's control socket {self.socket_path}: {exc.strerror or exc}; is bird "
                "running (systemctl status bird)?"
            ) from None

    def _read_reply(self, stream: io.BufferedRWPair) -> list[tuple[int, str]]:
        lines: list[tuple[int, str]] = []
        code = 0
        while True:
            raw = stream.readline()
            if not raw:
                raise BirdError(f"BIRD closed {self.socket_path} in the middle of a reply")
            if raw[:1] == b" ":  # continues the previous code
                lines.append((code, raw[1:].decode(errors="replace").rstrip("\n")))
                continue
            code = int(raw[:4])
            lines.append((code, raw[5:].decode(errors="replace").rstrip("\n")))
            if code >= 8000:
                raise BirdError(f"BIRD refused the command: {lines[-1][1].strip()}")
            if code < 1000 and _LAST_LINE.match(raw):  # 0xxx: the reply's final status
                return lines

    def protocols(self) -> list[Protocol]:
        rows = []
        for code, text in self.command("show protocols"):
            if code != 1002:
                continue
            match = _PROTOCOL_ROW.match(text.strip())
            if match:
                rows.append(Protocol(**{k: v.strip() for k, v in match.groupdict().items()}))
        return rows

    def neighbors(self) -> dict[str, str]:
        """BGP protocol name -> its neighbor address (from `show protocols all`)."""
        found: dict[str, str] = {}
        current = ""
        for code, text in self.command("show protocols all"):
            if code == 1002:
                current = text.split()[0] if text.split() else ""
            elif code == 1006 and "Neighbor address:" in text and current:
                found[current] = text.split("Neighbor address:", 1)[1].strip()
        return found

    def configure(self) -> None:
        """Reload the configuration file (sessions whose settings did not change stay up)."""
        reply = self.command("configure")
        if not any(code in (3, 4, 18, 19, 20) for code, _ in reply):
            raise BirdError(f"bird did not reconfigure: {reply[-1][1] if reply else 'no reply'}")
