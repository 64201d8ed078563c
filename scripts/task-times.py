#!/usr/bin/env python3
"""Where a playbook run spent its time, from the output of ansible.posix.profile_tasks.

    scripts/task-times.py LOG [--top N]

profile_tasks prints its summary only when the playbook ends; a run stopped by a timeout has
none. This reads the per-task lines instead: each task header is followed by a line like
``Wednesday 02 December 2026  03:57:10 +0000 (0:00:00.971)       0:00:02.493``, whose first
duration is the previous task's. Prints the time per play, the slowest tasks, and the task that
was running when the log ends (the one a timeout interrupted).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A long name wraps (molecule folds its output): the header line may lack the closing bracket.
HEADER = re.compile(r"\b(TASK|RUNNING HANDLER) \[(?P<name>[^\]]*)\]?")
PLAY = re.compile(r"\bPLAY \[(?P<name>.*)\]")
STAMP = re.compile(r"\((?P<h>\d+):(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)\)\s+\d+:\d+:\d+(?:\.\d+)?\s*$")


@dataclass
class Task:
    play: str
    name: str
    seconds: float = 0.0


def read_tasks(lines: list[str]) -> tuple[list[Task], Task | None]:
    """The finished tasks with their durations, and the task still running at the end."""
    done: list[Task] = []
    play = "-"
    running: Task | None = None
    header_seen = False
    for raw in lines:
        line = ANSI.sub("", raw)
        if match := PLAY.search(line):
            play = match["name"]
            continue
        if match := HEADER.search(line):
            header_seen = True
            next_task = Task(play, match["name"].strip())
            continue
        if header_seen and (match := STAMP.search(line)):
            header_seen = False
            if running is not None:
                running.seconds = int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])
                done.append(running)
            running = next_task
    return done, running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="output of a playbook run with profile_tasks enabled")
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest tasks")
    args = parser.parse_args(argv)
    try:
        with open(args.log, errors="replace") as stream:
            lines = stream.readlines()
    except OSError as exc:
        print(f"task-times: cannot read {args.log}: {exc.strerror}", file=sys.stderr)
        return 1
    done, running = read_tasks(lines)
    if not done:
        print(f"task-times: no profile_tasks lines in {args.log}")
        return 0
    per_play: dict[str, float] = defaultdict(float)
    for task in done:
        per_play[task.play] += task.seconds
    print(f"task-times: {len(done)} tasks, {sum(t.seconds for t in done):.0f} s; per play:")
    for play, seconds in per_play.items():
        print(f"  {seconds:7.1f} s  {play}")
    print(f"task-times: the {args.top} slowest tasks:")
    for task in sorted(done, key=lambda t: -t.seconds)[: args.top]:
        print(f"  {task.seconds:7.1f} s  {task.name}  ({task.play})")
    if running is not None:
        print(f"task-times: the log ends in: {running.name} ({running.play})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
