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

# Upper bounds (seconds) of the duration histograms: from one netlink request (ms) to an etcd
# call that waited for a failover (s).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# "# HELP" text per metric; a name ending in "*" covers a family (counters of the data path).
HELP = {
    "pyflannel_apply_failures_total": "Peer events the kernel refused (retried by reconcile).",
    "pyflannel_apply_seconds": "Seconds the last peer event (or burst) took to apply.",
    "pyflannel_apply_duration_seconds": "Seconds from a peer event to its kernel state.",
    "pyflannel_backend_repairs_total": "Kernel entries reconcile found wrong and rewrote.",
    "pyflannel_config_changed": "1 when etcd's network config differs from the running one.",
    "pyflannel_fast_path_active": "1 while the eBPF fast path carries the traffic.",
    "pyflannel_fast_path_*": "Packets and bytes the eBPF fast path carried.",
    "pyflannel_info": "The agent's version, backend and subnet (value 1).",
    "pyflannel_ip_forward_enabled_total": "Times the agent turned net.ipv4.ip_forward on.",
    "pyflannel_iptables_repairs_total": "Times the agent restored its iptables rules.",
    "pyflannel_lease_acquire_seconds": "Seconds the subnet lease took to acquire at start.",
    "pyflannel_lease_acquired_total": "Subnet leases acquired.",
    "pyflannel_lease_expires_in_seconds": "Seconds until the subnet lease expires.",
    "pyflannel_lease_reacquired_total": "Times the lease was lost and taken back.",
    "pyflannel_lease_renewal_duration_seconds": "Seconds a lease renewal took in etcd.",
    "pyflannel_lease_renewal_failures_total": "Lease renewals that failed (retried).",
    "pyflannel_lease_renewals_total": "Lease renewals that succeeded.",
    "pyflannel_mixed_backend_peers": "Peers on another backend, routed directly.",
    "pyflannel_bgp_mesh_peers": "bgp: nodes in the node-to-node mesh (BIRD sessions written).",
    "pyflannel_bgp_bridged_peers": "bgp: peers routed directly until BIRD routes them.",
    "pyflannel_bgp_reloads_total": "bgp: BIRD reloads after a configuration change.",
    "pyflannel_bgp_reload_failures_total": "bgp: BIRD reloads that failed (BIRD down?).",
    "pyflannel_bgp_reload_pending": "bgp: 1 while BIRD has not loaded the file written last.",
    "pyflannel_peer_*": "Peer lease events handled, by kind.",
    "pyflannel_peers": "Peers the agent routes to.",
    "pyflannel_pump_*": "Packets and drops of the userspace packet pump.",
    "pyflannel_ready": "1 once subnet.env is written and the data path is in place.",
    "pyflannel_reconcile_duration_seconds": "Seconds a full reconcile pass took.",
    "pyflannel_reconcile_failures_total": "Reconcile passes that failed (retried).",
    "pyflannel_reconcile_skipped_total": "Reconcile intervals with nothing to compare.",
    "pyflannel_reconcile_total": "Full reconcile passes (kernel compared with the peers).",
    "pyflannel_unreachable_peers": "Peers whose gateway is not on the shared segment.",
}


def help_text(name: str) -> str:
    if name in HELP:
        return HELP[name]
    family = max(
        (key for key in HELP if key.endswith("*") and name.startswith(key[:-1])),
        key=len,
        default="",
    )
    return HELP.get(family, name.replace("_", " "))


@dataclass
class Histogram:
    """Cumulative buckets of DURATION_BUCKETS, their sum and count (Prometheus histogram)."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(DURATION_BUCKETS):
            if value <= bound:
                self.buckets[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        rows = [
            f'{name}_bucket{{le="{bound:g}"}} {n}'
            for bound, n in zip(DURATION_BUCKETS, self.buckets, strict=True)
        ]
        return [
            *rows,
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.total:g}",
            f"{name}_count {self.count}",
        ]


@dataclass
class AgentState:
    """Shared, lock-protected state of the running agent that the endpoints report."""

    ready: bool = False
    heartbeat: float = field(default_factory=time.monotonic)
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
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

    def observe(self, name: str, seconds: float) -> None:
        with self.lock:
            self.histograms.setdefault(name, Histogram()).observe(seconds)

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
            histograms = {name: h.lines(name) for name, h in self.histograms.items()}
            info = dict(self.info)
        if extra is not None:
            gauges.update(extra())
        gauges["pyflannel_ready"] = 1.0 if self.ready else 0.0
        lines: list[str] = []
        for kind, values in (("counter", counters), ("gauge", gauges)):
            for name in sorted(values):
                lines += [*_header(name, kind), f"{name} {values[name]:g}"]
        for name in sorted(histograms):
            lines += _header(name, "histogram") + histograms[name]
        if info:
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(info.items()))
            lines += [*_header("pyflannel_info", "gauge"), f"pyflannel_info{{{labels}}} 1"]
        return "\n".join(lines) + "\n"


def _header(name: str, kind: str) -> list[str]:
    return [f"# HELP {name} {help_text(name)}", f"# TYPE {name} {kind}"]


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
