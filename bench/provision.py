"""Provisioning benchmark: the lab's cold `make lab` and an idempotent re-run of site.yml, with
seconds per play and per task from ansible-runner's events.

    python bench/provision.py [--backend vxlan] [--keep] [--json FILE]

Cold: `scripts/lab.sh down`, then `scripts/lab.sh up <backend>` (node containers, site.yml, ping
matrix), timed whole. Re-run: site.yml again through ansible-runner on the running lab; its
events give each play's and task's wall time (a task's time is its slowest host's). The lab is
taken down afterwards unless --keep. Needs what `make lab` needs (root, dockerd).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

from report import save_json  # noqa: E402  (bench/ is the script's directory)


def timed(cmd: list[str], timeout: float) -> float:
    started = time.monotonic()
    subprocess.run(cmd, cwd=REPO, check=True, timeout=timeout)
    return time.monotonic() - started


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def rerun(backend: str) -> dict[str, Any]:
    """site.yml through ansible-runner; totals per play and per task from its events."""
    import ansible_runner

    plays: dict[str, list[float]] = {}
    tasks: dict[str, float] = defaultdict(float)
    changed = 0
    order: list[str] = []

    def on_event(event: dict[str, Any]) -> bool:
        nonlocal changed
        data = event.get("event_data", {})
        kind = event.get("event", "")
        created = event.get("created")
        if kind == "playbook_on_play_start" and created:
            name = data.get("play", "?")
            plays.setdefault(name, [_stamp(created), _stamp(created)])
            order.append(name)
        if kind.startswith("runner_on_") and "duration" in data:
            key = f"{data.get('play', '?')} / {data.get('task', '?')}"
            tasks[key] = max(tasks[key], float(data["duration"]))
            if created and data.get("play") in plays:
                plays[data["play"]][1] = max(plays[data["play"]][1], _stamp(data["end"]))
            if kind == "runner_on_ok" and data.get("res", {}).get("changed"):
                changed += 1
        return True

    with tempfile.TemporaryDirectory(prefix="pyflannel-bench-") as private:
        started = time.monotonic()
        result = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(REPO),
            playbook=str(REPO / "site.yml"),
            inventory=str(REPO / "inventory" / "lab"),
            extravars={"flannel_network_backend": backend},
            envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
            event_handler=on_event,
            quiet=True,
        )
        total = time.monotonic() - started
    if result.rc != 0:
        raise RuntimeError(f"site.yml re-run failed (rc {result.rc}, status {result.status})")
    per_play = {name: round(plays[name][1] - plays[name][0], 1) for name in dict.fromkeys(order)}
    slowest = sorted(tasks.items(), key=lambda item: -item[1])[:15]
    return {
        "total_s": round(total, 1),
        "changed_tasks": changed,
        "tasks": len(tasks),
        "per_play_s": per_play,
        "slowest_tasks_s": {name: round(seconds, 2) for name, seconds in slowest},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", default="vxlan", choices=["vxlan", "udp", "host-gw", "ipip"])
    parser.add_argument("--keep", action="store_true", help="leave the lab running")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "kind": "provision",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": args.backend,
    }
    try:
        timed(["scripts/lab.sh", "down"], 300)
        report["cold_make_lab_s"] = round(timed(["scripts/lab.sh", "up", args.backend], 1800), 1)
        report["rerun"] = rerun(args.backend)
    finally:
        if not args.keep:
            subprocess.run(["scripts/lab.sh", "down"], cwd=REPO, check=False, timeout=300)
    print(json.dumps(report, indent=1))
    save_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
