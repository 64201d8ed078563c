"""The /metrics text and the health state (the HTTP side is covered in tests/netns)."""

from __future__ import annotations

import time

from pyflannel import health
from pyflannel.health import AgentState


def test_metrics_text_types_counters_gauges_and_info() -> None:
    state = AgentState()
    state.inc("pyflannel_lease_renewals_total")
    state.inc("pyflannel_lease_renewals_total")
    state.set_total("pyflannel_pump_net_rx_total", 42)
    state.set("pyflannel_peers", 2)
    state.info["subnet"] = '10.5.1.0/24"x'
    text = state.metrics_text()
    lines = text.splitlines()
    assert "# TYPE pyflannel_lease_renewals_total counter" in lines
    assert "pyflannel_lease_renewals_total 2" in lines
    assert "# TYPE pyflannel_pump_net_rx_total counter" in lines
    assert "pyflannel_pump_net_rx_total 42" in lines
    assert "# TYPE pyflannel_peers gauge" in lines
    assert "pyflannel_ready 0" in lines
    assert 'pyflannel_info{subnet="10.5.1.0/24\\"x"} 1' in lines
    assert text.endswith("\n")


def test_ready_flag_shows_in_metrics() -> None:
    state = AgentState()
    state.ready = True
    assert "pyflannel_ready 1" in state.metrics_text().splitlines()


def test_heartbeat_goes_stale() -> None:
    state = AgentState()
    assert state.healthy()
    state.heartbeat = time.monotonic() - health.HEARTBEAT_STALE_AFTER - 1
    assert not state.healthy()
    state.beat()
    assert state.healthy()
