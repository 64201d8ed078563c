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


def test_every_metric_has_help_and_type() -> None:
    state = AgentState()
    state.inc("pyflannel_lease_renewals_total")
    state.set_total("pyflannel_fast_path_rx_total", 3)
    state.set("pyflannel_peers", 2)
    lines = state.metrics_text().splitlines()
    for name in (
        "pyflannel_lease_renewals_total",
        "pyflannel_fast_path_rx_total",
        "pyflannel_peers",
    ):
        index = lines.index(f"# TYPE {name} {'gauge' if name == 'pyflannel_peers' else 'counter'}")
        assert lines[index - 1].startswith(f"# HELP {name} "), lines[index - 1]
    family_help = "Packets and bytes the eBPF fast path carried."
    assert f"# HELP pyflannel_fast_path_rx_total {family_help}" in lines


def test_metric_names_in_the_code_all_have_help() -> None:
    """Every metric name the agent sets (literal or an f-string family) has a HELP entry."""
    import re
    from pathlib import Path

    source = "\n".join(p.read_text() for p in Path(health.__file__).parent.rglob("*.py"))
    names = set(re.findall(r'"(pyflannel_[a-z_]+)"', source))
    families = {f"{m}*" for m in re.findall(r'f"(pyflannel_[a-z_]+_)\{', source)}
    names -= {n for n in names if n.endswith("_")} | {"pyflannel_test"}
    missing = sorted(n for n in names | families if n not in health.HELP)
    assert missing == [], f"metrics without # HELP text in health.HELP: {missing}"


def test_durations_are_histograms() -> None:
    state = AgentState()
    for seconds in (0.002, 0.02, 3.0):
        state.observe("pyflannel_apply_duration_seconds", seconds)
    lines = state.metrics_text().splitlines()
    assert "# TYPE pyflannel_apply_duration_seconds histogram" in lines
    assert 'pyflannel_apply_duration_seconds_bucket{le="0.001"} 0' in lines
    assert 'pyflannel_apply_duration_seconds_bucket{le="0.005"} 1' in lines
    assert 'pyflannel_apply_duration_seconds_bucket{le="0.025"} 2' in lines
    assert 'pyflannel_apply_duration_seconds_bucket{le="5"} 3' in lines
    assert 'pyflannel_apply_duration_seconds_bucket{le="+Inf"} 3' in lines
    assert "pyflannel_apply_duration_seconds_count 3" in lines
    assert "pyflannel_apply_duration_seconds_sum 3.022" in lines
