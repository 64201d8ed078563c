"""HTTP endpoints for operators and systemd: /healthz, /readyz, /metrics.

/healthz answers 200 while the agent's main loop is alive (it updates a heartbeat);
/readyz answers 200 only once subnet.env is written and the data plane and rules are in place;
/metrics is the Prometheus text format of the agent's counters and gauges.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEARTBEAT_STALE_AFTER = 30.0  # seconds without a main-loop heartbeat -> unhealthy


@dataclass
class AgentState:
    """Shared, lock-protected state of the running agent that the endpoints report."""

    ready: bool = False
    heartbeat: float = field(default_factory=time.monotonic)
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def inc(self, name: str, amount: float = 1.0) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0.0) + amount

    def set(self, name: str, value: float) -> None:
        with self.lock:
            self.gauges[name] = value

    def set_total(self, name: str, value: float) -> None:
        """A counter kept elsewhere (e.g. the packet pump's): record its current total."""
        with self.lock:
            self.counters[name] = value

    def healthy(self) -> bool:
        return time.monotonic() - self.heartbeat < HEARTBEAT_STALE_AFTER

    def metrics_text(self, extra: Callable[[], dict[str, float]] | None = None) -> str:
        with self.lock:
            counters = dict(self.counters)
            gauges = dict(self.gauges)
            info = dict(self.info)
        if extra is not None:
            gauges.update(extra())
        gauges["pyflannel_ready"] = 1.0 if self.ready else 0.0
        lines: list[str] = []
        for name in sorted(counters):
            lines += [f"# TYPE {name} counter", f"{name} {counters[name]:g}"]
        for name in sorted(gauges):
            lines += [f"# TYPE {name} gauge", f"{name} {gauges[name]:g}"]
        if info:
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(info.items()))
            lines += ["# TYPE pyflannel_info gauge", f"pyflannel_info{{{labels}}} 1"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class HealthServer:
    def __init__(self, state: AgentState, host: str, port: int) -> None:
        self.state = state
        handler = _make_handler(state)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="healthz", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _make_handler(state: AgentState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pyflannel"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = state.healthy()
                self._reply(200 if ok else 503, "ok\n" if ok else "main loop stalled\n")
            elif path == "/readyz":
                self._reply(200 if state.ready else 503, "ok\n" if state.ready else "not ready\n")
            elif path == "/metrics":
                self._reply(200, state.metrics_text(), "text/plain; version=0.0.4")
            else:
                self._reply(404, "not found: try /healthz, /readyz or /metrics\n")

        def _reply(self, code: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds would flood the log

    return Handler
