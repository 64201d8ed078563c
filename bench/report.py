"""Turn the JSON of one `make bench` run into docs/benchmarks.md and a PNG chart.

    python bench/report.py --dataplane build/bench/dataplane.json \
        [--controlplane build/bench/controlplane.json] [--out docs]

The Markdown names the machine, the date and the command; the chart shows each path's TCP
throughput (1 and 4 streams) as a ratio of the direct path of the same underlay mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

CHART = "benchmarks-dataplane.png"


def save_json(path: Path | None, report: dict[str, Any]) -> None:
    """One benchmark run's results, as this module reads them back (nothing when no path)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} x {cpu}, {memory:.0f} GiB, Linux {platform.release()}"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["paths"])
    one = [report["ratios"][label].get("tcp1_gbit_vs_direct", 0.0) for label in labels]
    four = [report["ratios"][label].get("tcp4_gbit_vs_direct", 0.0) for label in labels]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.5))
    rows = range(len(labels))
    ax.barh([r - 0.2 for r in rows], one, height=0.4, label="1 TCP stream")
    ax.barh([r + 0.2 for r in rows], four, height=0.4, label="4 TCP streams")
    ax.set_yticks(list(rows), labels)
    ax.invert_yaxis()
    ax.set_xlabel("throughput / direct path of the same underlay")
    ax.set_title(f"pyflannel data paths, container to container ({report['started']})")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def dataplane_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Data plane",
        "",
        f"{report['rounds']} interleaved rounds, iperf3 {report['seconds_per_run']} s per run, "
        f"{report['pings']} pings per round; medians (min-max over rounds). "
        f"Whole run {report['seconds_total']:.0f} s.",
        "",
        "| path | MTU | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | RTT p50 / p99 ms | "
        "64-byte kpps | CPU s per GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, entry in report["paths"].items():
        f = entry["figures"]

        def cell(metric: str, f: dict[str, Any] = f) -> str:
            m = f[metric]
            return f"{m['median']:.2f} ({m['min']:.2f}-{m['max']:.2f})"

        lines.append(
            f"| {label} | {entry['mtu']} | {cell('tcp1_gbit')} | {cell('tcp4_gbit')} | "
            f"{f['rtt_p50_ms']['median']:.3f} / {f['rtt_p99_ms']['median']:.3f} | "
            f"{f['small_kpps']['median']:.0f} | {f['cpu_s_per_gb']['median']:.2f} |"
        )
    lines += [
        "",
        "Ratios (medians, same underlay mode):",
        "",
        "| path | 1 stream vs direct | vs kernel vxlan | vs flanneld | "
        "4 streams vs direct | vs kernel vxlan | vs flanneld |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in report["ratios"].items():

        def ratio(key: str, row: dict[str, float] = row) -> str:
            return f"{row[key]:.2f}" if key in row else "-"

        lines.append(
            f"| {label} | {ratio('tcp1_gbit_vs_direct')} | {ratio('tcp1_gbit_vs_vxlan')} | "
            f"{ratio('tcp1_gbit_vs_flanneld')} | {ratio('tcp4_gbit_vs_direct')} | "
            f"{ratio('tcp4_gbit_vs_vxlan')} | {ratio('tcp4_gbit_vs_flanneld')} |"
        )
    if report.get("skipped"):
        lines += ["", f"Skipped (no flanneld): {', '.join(report['skipped'])}."]
    lines += ["", f"![data-plane ratios]({CHART})", ""]
    return lines


CONTROL_ROWS = [
    ("join_s", "join: agent start to every route in the kernel (s)", "<= 2 s at 5000"),
    ("rss_mb", "agent RSS after the join (MB)", "<= 60 MB at 5000"),
    ("lease_to_route_p50_ms", "new lease -> route, p50 (ms)", ""),
    ("lease_to_route_p99_ms", "new lease -> route, p99 (ms)", "<= 20 ms"),
    ("idle_cpu_percent", "idle CPU (% of one core)", "<= 0.5 %"),
    ("etcd_requests_per_renewal", "etcd requests per lease renewal", ""),
    ("etcd_requests_per_s_idle", "etcd requests per second, idle", ""),
]


def controlplane_section(report: dict[str, Any]) -> list[str]:
    runs = report["runs"]
    lines = [
        "## Control plane",
        "",
        "An agent joining a vxlan network of N peer leases in a one-host lab "
        "(`bench/controlplane.py`).",
        "",
        "| measure | " + " | ".join(f"{r['leases']} leases" for r in runs) + " | target |",
        "|---|" + "---|" * len(runs) + "---|",
    ]
    for key, name, target in CONTROL_ROWS:
        cells = " | ".join("-" if r.get(key) is None else str(r[key]) for r in runs)
        lines.append(f"| {name} | {cells} | {target} |")
    return [*lines, ""]


def provision_section(report: dict[str, Any]) -> list[str]:
    rerun = report["rerun"]
    lines = [
        "## Provisioning",
        "",
        f"The 3-node Docker lab, backend {report['backend']} (`bench/provision.py`): cold "
        f"`make lab` {report['cold_make_lab_s']:.0f} s; idempotent re-run of site.yml "
        f"{rerun['total_s']:.1f} s ({rerun['changed_tasks']} changed, target <= 20 s).",
        "",
        "| play | s |",
        "|---|---|",
        *[f"| {name} | {seconds} |" for name, seconds in rerun["per_play_s"].items()],
        "",
        "Slowest tasks of the re-run (slowest host):",
        "",
        "| task | s |",
        "|---|---|",
        *[f"| {name} | {seconds} |" for name, seconds in rerun["slowest_tasks_s"].items()],
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataplane", type=Path, required=True)
    parser.add_argument("--controlplane", type=Path)
    parser.add_argument("--provision", type=Path)
    parser.add_argument("--command", default="make bench")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    try:
        dataplane = json.loads(args.dataplane.read_text())
        control = json.loads(args.controlplane.read_text()) if args.controlplane else None
        provision = json.loads(args.provision.read_text()) if args.provision else None
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read the results: {exc}; run the benchmarks first (make bench)")
    args.out.mkdir(parents=True, exist_ok=True)
    chart(dataplane, args.out / CHART)
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/report.py` from one run; rerun with `make bench` (about 25 minutes) "
        "or `make bench-short` (under two minutes, what CI runs).",
        "",
        f"- Machine: {machine()}",
        f"- Date: {dataplane['started']}",
        f"- Command: `{args.command}`",
        "",
        *dataplane_section(dataplane),
    ]
    if control is not None:
        lines += controlplane_section(control)
    if provision is not None:
        lines += provision_section(provision)
    (args.out / "benchmarks.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'benchmarks.md'} and {args.out / CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
