"""site.yml on the Docker lab's nodes (make lab) through ansible-runner, and its report.

    python -m pyflannel_lab.lab_site BACKEND     (from the checkout; scripts/lab.sh runs it)

While the playbook runs, one line per play and per failed task is printed from the runner's
events; then one line per node with its changed and failed counts (a re-run of the same
backend shows changed 0) and every failure with its message. The exit code is the playbook's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyflannel_lab.runner_events import read_events, report_failures, run_ansible, runner_report

REPO = Path(__file__).resolve().parents[1]
INVENTORY = REPO / "inventory" / "lab"
RUN_TIMEOUT = 1800
POLL_SECONDS = 2.0
_FAILED = ("runner_on_failed", "runner_on_unreachable")


def site_args(backend: str) -> list[str]:
    return [
        "-i",
        str(INVENTORY),
        str(REPO / "site.yml"),
        "-e",
        f"flannel_network_backend={backend}",
    ]


def progress_line(event: dict[str, Any]) -> str | None:
    """What a person watching the lab come up is told of one event (plays and failures)."""
    kind, data = event.get("event", ""), event.get("event_data", {})
    if kind == "playbook_on_play_start":
        return f"play: {data.get('play', '')}"
    if kind in _FAILED:
        msg = (data.get("res") or {}).get("msg", "")
        return f"  failed: {data.get('task', '')} on {data.get('host', '')}: {msg}"
    return None


def follow(private: Path, say: Callable[[str], None], done: threading.Event) -> None:
    """Tell the progress lines of the events written so far, until the run is done."""
    seen: set[str] = set()

    def tell_new() -> None:
        for event in read_events(private):
            uuid = str(event.get("uuid", ""))
            if uuid in seen:
                continue
            seen.add(uuid)
            line = progress_line(event)
            if line:
                say(line)

    while not done.wait(POLL_SECONDS):
        tell_new()
    tell_new()


def report_lines(report: dict[str, Any]) -> list[str]:
    """One line per node (changed and failed tasks), then the failures."""
    lines = [
        f"{host:<17} changed {stats['changed']:<3} failed {stats['failures']}"
        for host, stats in sorted(report["stats"].items())
    ]
    return lines + [f"failed: {line}" for line in report_failures(report)]


def run_site(backend: str, say: Callable[[str], None] = print) -> int:
    """Run site.yml on the lab with this backend; say its progress and report; return its rc."""
    with tempfile.TemporaryDirectory(prefix="pyflannel-lab-site-") as tmp:
        private = Path(tmp)
        done = threading.Event()
        watcher = threading.Thread(target=follow, args=(private, say, done), daemon=True)
        watcher.start()
        try:
            run = run_ansible(
                "ansible-playbook",
                site_args(backend),
                private,
                envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
                cwd=REPO,
                timeout=RUN_TIMEOUT,
            )
        finally:
            done.set()
            watcher.join()
    report = runner_report(run.events)
    for line in report_lines(report):
        say(line)
    if run.rc != 0 and not report["stats"]:
        # No play ran (a syntax or inventory error): Ansible's own words say why.
        say((run.stdout + run.stderr).strip()[-4000:])
    return int(run.rc if run.rc is not None else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyflannel_lab.lab_site", description=__doc__)
    parser.add_argument("backend")
    args = parser.parse_args(argv)
    return run_site(args.backend)


if __name__ == "__main__":
    sys.exit(main())
