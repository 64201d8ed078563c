"""make lab's report (pyflannel_lab.lab_site) from ansible-runner events, without Ansible."""

from __future__ import annotations

from typing import Any

from pyflannel_lab.lab_site import progress_line, report_lines
from pyflannel_lab.runner_events import runner_report


def _event(kind: str, counter: int, **data: Any) -> dict[str, Any]:
    return {"event": kind, "counter": counter, "uuid": str(counter), "event_data": data}


EVENTS = [
    _event("playbook_on_play_start", 1, play="Flannel"),
    _event("playbook_on_task_start", 2, task="Start flanneld", role="flannel", task_uuid="t1"),
    _event("runner_on_ok", 3, task_uuid="t1", host="n1", res={"changed": True}),
    _event(
        "runner_on_failed",
        4,
        task="Start flanneld",
        task_uuid="t1",
        host="n2",
        res={"msg": "unit failed"},
    ),
    _event(
        "playbook_on_stats",
        5,
        processed={"n1": 1, "n2": 1},
        changed={"n1": 1},
        failures={"n2": 1},
    ),
]


def test_progress_tells_plays_and_failures_only() -> None:
    lines = [line for line in map(progress_line, EVENTS) if line]
    assert lines == ["play: Flannel", "  failed: Start flanneld on n2: unit failed"]


def test_report_has_a_line_per_node_then_the_failures() -> None:
    assert report_lines(runner_report(EVENTS)) == [
        "n1                changed 1   failed 0",
        "n2                changed 0   failed 1",
        "failed: Flannel / flannel : Start flanneld on n2: unit failed",
    ]
