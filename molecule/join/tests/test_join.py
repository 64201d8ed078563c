"""A node joins with `site.yml --limit <new node>`; the next full run changes nothing.

Node 1 was converged alone (node 2 in no group). Here node 2 becomes a flannel node
(edits/joiner.yml, as an operator edits the inventory) and site.yml runs with --limit on it; then
site.yml runs on the whole inventory (every host changed=0, the ping matrix over both nodes);
then --limit is refused, before anything changes, when the edit would also make node 2 an etcd
member.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"])
REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
# The checkout's test helpers (pyflannel_lab is not installed, only the agent is).
sys.path.insert(0, str(REPO))

EDITS = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "edits"
JOINER = f"{os.environ.get('PYFLANNEL_MOLECULE_PREFIX', 'pyflannel')}-join-2"
MEMBER = f"{os.environ.get('PYFLANNEL_MOLECULE_PREFIX', 'pyflannel')}-join-1"


def site(*inventories: Path, limit: str = "") -> tuple[int, dict[str, Any], float]:
    """site.yml over molecule's inventory (and its group_vars) plus edits, through ansible-runner
    (the report is read from its events)."""
    from pyflannel_lab.runner_events import run_ansible, runner_report

    args = ["-i", str(INVENTORY)]
    for extra in inventories:
        args += ["-i", str(extra)]
    args += [str(REPO / "site.yml")] + (["--limit", limit] if limit else [])
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pyflannel-join-") as private:
        run = run_ansible("ansible-playbook", args, Path(private), cwd=REPO, timeout=900)
    return run.rc, runner_report(run.events), time.monotonic() - start


def failures(report: dict[str, Any]) -> list[str]:
    from pyflannel_lab.runner_events import report_failures

    return report_failures(report)


def plays_run_on(report: dict[str, Any], host: str) -> list[str]:
    return [
        play["play"]["name"]
        for play in report["plays"]
        if any(host in task["hosts"] for task in play["tasks"])
    ]


def pair_checks(report: dict[str, Any]) -> list[str]:
    """The messages of overlay_verify's "Check every pair" (run once per kind of endpoint;
    the kinds this inventory does not use are skipped)."""
    return [
        str(result.get("msg"))
        for play in report["plays"]
        for task in play["tasks"]
        if task["task"]["name"].endswith("Check every pair")
        for result in task["hosts"].values()
        if not result.get("skipped")
    ]


def test_join_with_limit() -> None:
    rc, report, seconds = site(EDITS / "joiner.yml", limit=JOINER)
    print(f"site.yml --limit {JOINER}: {seconds:.0f} s")
    assert rc == 0, failures(report)
    assert set(report["stats"]) == {JOINER}, report["stats"]
    assert report["stats"][JOINER]["changed"] > 0
    ran = plays_run_on(report, JOINER)
    for play in (
        "Flannel network config and agent software",
        "Flannel agents and Docker, node by node",
    ):
        assert play in ran, ran
    assert "Etcd cluster" not in ran
    # The matrix under --limit: the new node and the node outside the play, both ways.
    assert pair_checks(report) == ["all 2 pairs ping"]


def test_full_run_after_join_changes_nothing() -> None:
    rc, report, seconds = site(EDITS / "joiner.yml")
    print(f"site.yml after the join: {seconds:.0f} s")
    assert rc == 0, failures(report)
    assert {host: stats["changed"] for host, stats in report["stats"].items()} == {
        MEMBER: 0,
        JOINER: 0,
    }
    assert pair_checks(report) == ["all 2 pairs ping"]


def test_limit_refuses_a_new_etcd_member() -> None:
    rc, report, _ = site(EDITS / "joiner.yml", EDITS / "member.yml", limit=JOINER)
    assert rc != 0
    assert [play["play"]["name"] for play in report["plays"]] == ["Inventory check"]
    assert report["stats"][JOINER]["changed"] == 0
    messages = failures(report)
    assert "not an etcd member yet" in messages[0] and "--limit" in messages[0], messages
