"""ansible-runner's events, read: each task's result, and a json-callback-like report.

The tests drive ansible-playbook through ansible-runner (tests/ansible, the molecule scenarios'
verify tests); these turn its event stream into what they assert on.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TASK_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


def task_results(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each task's result on localhost, from ansible-runner's events, in order."""
    return [
        _result(event["event"], event["event_data"])
        for event in events
        if event.get("event") in _TASK_EVENTS
    ]


def runner_report(events: list[dict[str, Any]]) -> dict[str, Any]:
    """ansible-runner's events as a json-callback-like report: plays, their tasks, each host's
    result ("role : task" names as Ansible prints them), and per-host stats."""
    report: dict[str, Any] = {"plays": [], "stats": {}}
    tasks: dict[str, dict[str, Any]] = {}
    for event in events:
        kind, data = event.get("event", ""), event.get("event_data", {})
        if kind == "playbook_on_play_start":
            report["plays"].append({"play": {"name": data.get("play", "")}, "tasks": []})
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            name = data.get("task", "")
            if data.get("role"):
                name = f"{data['role']} : {name}"
            tasks[data["task_uuid"]] = {"task": {"name": name}, "hosts": {}}
            report["plays"][-1]["tasks"].append(tasks[data["task_uuid"]])
        elif kind in _TASK_EVENTS and data.get("task_uuid") in tasks:
            tasks[data["task_uuid"]]["hosts"][data["host"]] = _result(kind, data)
        elif kind == "playbook_on_stats":
            report["stats"] = {
                host: {what: data.get(what, {}).get(host, 0) for what in ("changed", "failures")}
                for host in data.get("processed", {})
            }
    return report


def report_failures(report: dict[str, Any]) -> list[str]:
    """The failed or unreachable tasks of a runner_report: "play / task on host: message"."""
    return [
        f"{play['play']['name']} / {task['task']['name']} on {host}: {result.get('msg', '')}"
        for play in report["plays"]
        for task in play["tasks"]
        for host, result in task["hosts"].items()
        if result.get("failed") or result.get("unreachable")
    ]


def _result(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    res = dict(data.get("res") or {})
    if kind == "runner_on_failed":
        res.setdefault("failed", True)
    elif kind == "runner_on_skipped":
        res.setdefault("skipped", True)
    elif kind == "runner_on_unreachable":
        res.setdefault("unreachable", True)
    return res


@dataclass(frozen=True)
class AnsibleRun:
    """One ansible command run through ansible-runner: exit code, output and its events."""

    rc: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]


def run_ansible(
    executable: str,
    args: list[str],
    private_data_dir: Path,
    *,
    envvars: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: int = 600,
) -> AnsibleRun:
    """`executable args` (ansible-playbook, ...) through ansible-runner, events in order.

    runner_mode "subprocess": the pexpect mode forks a Python child, which in a process that
    holds live gRPC channels (the tests' etcd clients) was sometimes killed by a signal before
    it ran (ansible-runner then reports rc None).
    """
    import ansible_runner

    private_data_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr, rc = ansible_runner.run_command(
        executable_cmd=executable,
        cmdline_args=args,
        private_data_dir=str(private_data_dir),
        envvars=envvars or {},
        host_cwd=str(cwd) if cwd else None,
        timeout=timeout,
        runner_mode="subprocess",
        quiet=True,
    )
    return AnsibleRun(rc, stdout, stderr, read_events(private_data_dir))


def read_events(private_data_dir: Path) -> list[dict[str, Any]]:
    """The events ansible-runner has written so far under private_data_dir, in order.

    Its callback writes each event's file as it happens, so this also reads a run in progress
    (a file being written is passed over until it is whole)."""
    events: list[dict[str, Any]] = []
    for job_events in sorted(private_data_dir.glob("artifacts/*/job_events")):
        for path in job_events.glob("*.json"):
            with contextlib.suppress(ValueError, FileNotFoundError):
                events.append(json.loads(path.read_text()))
    events.sort(key=lambda event: int(event.get("counter", 0)))
    return events
