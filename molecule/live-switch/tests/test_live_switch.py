"""Day-2 steps under live workloads (side_effect.yml ran them; this reads the results).

Per switch (host-gw -> vxlan, vxlan -> bgp, bgp -> udp): the longest run of lost replies of the 10/s
pingers between the workload containers of every pair of nodes (the connectivity gap), and
8 MiB TCP transfers both ways between old and new containers. The agent upgrade and the SIGKILL
of every flanneld (both on kernel vxlan): no reply lost, every agent restarted on its subnet,
the upgrade on the tree's version. Afterwards: no `proto bird` route left (BIRD's file retired
by the agents after bgp -> udp), no workload container
restarted, and site.yml run once more changes nothing; last, with the workloads removed,
site.yml rebuilds the bridge and new containers get the lease's MTU. The figures go to
build/live-switch-report.txt (and the log).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
RESULTS = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "live-switch"
REPORT = REPO / "build" / "live-switch-report.txt"
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("flannel")

SWITCHES = {"1-vxlan": "host-gw -> vxlan", "4-bgp": "vxlan -> bgp", "5-udp": "bgp -> udp"}
# Steps that restart every agent on the kernel vxlan path: not one reply may be lost.
RESTARTS = {"2-upgrade": "agent upgrade (rolling site.yml)", "3-kill": "flanneld SIGKILL"}
PING_INTERVAL = 0.1
GAP_LIMIT = 1.0  # seconds of lost replies per pair during a rolling switch (measured 0.1-0.3)
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
REPLY = re.compile(r"bytes from [0-9.]+: seq=(\d+) ")
SENT = re.compile(r"(\d+) packets transmitted")


def _before() -> dict[str, dict[str, Any]]:
    return dict(json.loads((RESULTS / "before.json").read_text()))


def pinger_results(log: str) -> dict[str, tuple[int, set[int]]]:
    """Peer ip -> (requests sent, sequence numbers answered), from pingers-stop.yml's output."""
    results = {}
    for section in log.split("== ")[1:]:
        ip, _, body = section.partition("\n")
        sent = SENT.search(body)
        assert sent, f"pinger to {ip} died before it was stopped:\n{body[-500:]}"
        results[ip.strip()] = (int(sent.group(1)), {int(seq) for seq in REPLY.findall(body)})
    return results


def ping_runs(log: str) -> dict[str, tuple[int, int, int]]:
    """Peer ip -> (sent, longest run of lost replies, lost replies at the end)."""
    runs = {}
    for ip, (count, received) in pinger_results(log).items():
        longest = run = 0
        for seq in range(count):
            run = 0 if seq in received else run + 1
            longest = max(longest, run)
        runs[ip] = (count, longest, run)
    return runs


def lost_replies(log: str) -> dict[str, tuple[int, int]]:
    """Peer ip -> (sent, replies lost), not counting the last request (in flight at the stop)."""
    return {
        ip: (count, sum(1 for seq in range(count - 1) if seq not in received))
        for ip, (count, received) in pinger_results(log).items()
    }


@pytest.fixture(scope="module")
def report() -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


def _name_by_ip() -> dict[str, str]:
    return {info["ip"]: node for node, info in _before().items()}


@pytest.mark.parametrize("switch", SWITCHES)
def test_connectivity_gap(switch: str, report: list[str]) -> None:
    names = _name_by_ip()
    seconds = (RESULTS / switch / "seconds").read_text().strip()
    worst = 0.0
    pairs = []
    for node in testinfra_hosts:
        log = (RESULTS / switch / f"ping-{node}.log").read_text()
        runs = ping_runs(log)
        assert sorted(runs) == sorted(ip for ip, n in names.items() if n != node)
        for ip, (sent, longest, trailing) in sorted(runs.items()):
            assert trailing <= 2, (
                f"{switch}: {node} -> {names[ip]} still lost replies when site.yml ended "
                f"({trailing} at the end of {sent})"
            )
            worst = max(worst, longest * PING_INTERVAL)
            pairs.append(f"{node[-1]}->{names[ip][-1]} {longest * PING_INTERVAL:.1f}s")
    report.append(
        f"switch {SWITCHES[switch]}: site.yml {seconds}s, longest gap {worst:.1f}s "
        f"(per pair: {', '.join(pairs)})"
    )
    # site.yml rolls node by node and agents route peers on the other backend directly.
    assert worst <= GAP_LIMIT, f"{switch}: a pair lost {worst:.1f} s of replies ({pairs})"


def _agents(step: str, when: str) -> dict[str, dict[str, Any]]:
    return {
        node: json.loads((RESULTS / step / f"agent-{when}-{node}.json").read_text())
        for node in testinfra_hosts
    }


@pytest.mark.parametrize("step", RESTARTS)
def test_agent_restart_loses_no_reply(step: str, report: list[str]) -> None:
    names = _name_by_ip()
    lost_pairs = []
    for node in testinfra_hosts:
        lost = lost_replies((RESULTS / step / f"ping-{node}.log").read_text())
        assert sorted(lost) == sorted(ip for ip, n in names.items() if n != node)
        for ip, (sent, missing) in lost.items():
            assert sent > 20, f"{step}: {node} -> {names[ip]} sent only {sent} requests"
            if missing:
                lost_pairs.append(f"{node} -> {names[ip]}: {missing} of {sent}")
    seconds = (RESULTS / step / "seconds").read_text().strip()
    report.append(
        f"{RESTARTS[step]}: {seconds}s with pingers, lost replies: {lost_pairs or 'none'}"
    )
    assert not lost_pairs, f"{step} on kernel vxlan lost replies: {lost_pairs}"


@pytest.mark.parametrize("step", RESTARTS)
def test_every_agent_restarted_on_its_subnet(step: str, report: list[str]) -> None:
    before, after = _agents(step, "before"), _agents(step, "after")
    for node in testinfra_hosts:
        old, new = before[node], after[node]
        assert new["state"] == "active", f"{step}: flanneld on {node} is {new['state']}"
        assert new["pid"] not in (0, old["pid"]), f"{step}: flanneld on {node} not restarted"
        assert new["subnet"] == old["subnet"], f"{step}: {node} changed subnet {old} -> {new}"
    if step == "3-kill":
        # Restarted by systemd (Restart=on-failure), not by the play.
        for node in testinfra_hosts:
            assert after[node]["restarts"] == before[node]["restarts"] + 1, (before, after)
    if step == "2-upgrade":
        tree = re.search(r'(?m)^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text())
        assert tree
        for node in testinfra_hosts:
            assert before[node]["version"] == f"{tree.group(1)}.dev0", before[node]
            assert after[node]["version"] == tree.group(1), after[node]
    first = testinfra_hosts[0]
    report.append(
        f"{RESTARTS[step]}: every flanneld restarted on its subnet "
        f"(pyflannel {before[first]['version']} -> {after[first]['version']})"
    )


def test_failed_roll_stops_at_the_failing_node(report: list[str]) -> None:
    """Node 2 failed its health gate: the roll stopped there, naming it; node 3 was not touched."""
    step = RESULTS / "5-failed-roll"
    log = (step / "site.log").read_text()
    first, failing, last = testinfra_hosts
    assert (step / "rc").read_text().strip() != "0", "site.yml passed with node 2's vxlan blocked"
    assert f"health gate: {failing} " in log and "does not reach" in log, log[-3000:]
    recap = {
        m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        for m in re.finditer(r"(?m)^(\S+)\s+: (ok=.*)$", log.split("PLAY RECAP", 1)[-1])
    }
    assert recap[failing]["failed"] == 1 and recap[first]["failed"] == 0, recap
    records = {
        node: (
            json.loads((step / f"record-{node}-before.json").read_text()),
            json.loads((step / f"record-{node}-after.json").read_text()),
        )
        for node in testinfra_hosts
    }
    backends = {n: [r["network"]["Backend"]["Type"] for r in rs] for n, rs in records.items()}
    # Nodes 1 and 2 rolled to vxlan; node 3, after the failure, kept its udp record.
    assert backends == {first: ["udp", "vxlan"], failing: ["udp", "vxlan"], last: ["udp", "udp"]}
    assert records[last][0] == records[last][1]
    report.append(
        f"failed roll (vxlan blocked on {failing}): stopped at {failing} with its health gate; "
        f"{last} left on udp, untouched; site.yml with udp afterwards brought all back"
    )


@pytest.mark.parametrize("switch", SWITCHES)
def test_bulk_tcp_both_ways(switch: str, report: list[str]) -> None:
    """Every container got every peer's 8 MiB intact (old<->old, old<->new, new<-old)."""
    bulk = {
        node: json.loads((RESULTS / switch / f"bulk-{node}.json").read_text())
        for node in testinfra_hosts
    }
    md5 = {info["ip"]: info["md5"] for info in _before().values()}
    md5.update({b["new"]["ip"]: b["new"]["md5"] for b in bulk.values()})
    slowest = 0
    for node, result in bulk.items():
        lines = result["fetched_by_old"] + result["fetched_by_new"]
        assert len(lines) == 3 * (len(testinfra_hosts) - 1)
        for line in lines:
            ip, got, took = line.split()
            assert got != EMPTY_MD5, f"{switch}: {node} got nothing from {ip}"
            assert got == md5[ip], f"{switch}: {node} got corrupt data from {ip}"
            slowest = max(slowest, int(took))
        # New containers get what Docker says it gives (the docker role's docker_bridge_mtu).
        assert result["new"]["mtu"] == result["docker_bridge_mtu"]
    first = bulk[testinfra_hosts[0]]
    # What this test is for: old containers whose MTU is above the new backend's (PMTU discovery);
    # bgp, unencapsulated, has the old containers' own (host-gw's) MTU.
    if switch == "4-bgp":
        assert first["old_mtu"] == first["lease_mtu"], f"{switch}: {first}"
    else:
        assert first["old_mtu"] > first["lease_mtu"], f"{switch}: old containers got the new MTU"
    report.append(
        f"switch {SWITCHES[switch]}: lease MTU {first['lease_mtu']}, old containers' MTU "
        f"{first['old_mtu']}, new containers' MTU {first['new']['mtu']}; "
        f"{len(bulk) * 3 * (len(bulk) - 1)} transfers of 8 MiB intact, slowest {slowest}s"
    )


def test_bgp_left_no_route_behind(host: Any) -> None:
    """After bgp -> udp: every agent retired its BIRD file (no subnet, no session), so BIRD,
    still running, has withdrawn every route it had installed."""
    assert host.service("bird").is_running
    assert host.check_output("ip -4 route show proto bird") == ""
    conf = host.file("/etc/bird/bird.conf").content_string
    assert conf.startswith("# Written by pyflannel"), conf[:200]
    assert "protocol bgp" not in conf and "protocol static" not in conf, conf


def test_no_workload_container_restarted(host: Any, report: list[str]) -> None:
    before = _before()[host.backend.hostname]
    fmt = "{{.Id}} {{.State.Running}} {{.State.StartedAt}} {{.RestartCount}}"
    now = host.check_output(f"docker inspect --format '{fmt}' live-old").split()
    assert now == [before["id"], "true", before["started"], "0"], (
        f"live-old on {host.backend.hostname} was restarted: before {before}, now {now}"
    )
    report.append(f"{host.backend.hostname}: live-old {before['id'][:12]} not restarted")


def test_old_containers_reach_their_peers(host: Any) -> None:
    peers = [i["ip"] for n, i in _before().items() if n != host.backend.hostname]
    for ip in peers:
        host.check_output(f"docker exec live-old ping -c 3 -w 5 {ip}")


def _site_yml_udp() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            INVENTORY,
            str(REPO / "site.yml"),
            "-e",
            "flannel_network_backend=udp",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_site_yml_again_changes_nothing(report: list[str]) -> None:
    """With the workloads still on the old bridge (live restore), a re-run changes nothing."""
    result = _site_yml_udp()
    recap = result.stdout.split("PLAY RECAP", 1)[-1]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    changed = [int(n) for n in re.findall(r"changed=(\d+)", recap)]
    assert changed and not any(changed), recap
    report.append("site.yml again after the switches: changed=0 on every node")


def test_new_containers_get_the_new_mtu_once_the_old_ones_are_gone(report: list[str]) -> None:
    """Last (it removes the workloads): with no container running, site.yml rebuilds the bridge."""
    nodes = [testinfra.get_host(f"docker://{name}") for name in testinfra_hosts]
    for node in nodes:
        node.check_output("docker rm --force live-old live-new")
    result = _site_yml_udp()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    found = []
    for node in nodes:
        env = node.check_output("cat /run/flannel/subnet.env")
        mtu = re.search(r"FLANNEL_MTU=(\d+)", env)
        subnet = re.search(r"FLANNEL_SUBNET=([0-9.]+)/", env)
        assert mtu and subnet
        eth0 = node.check_output("docker run --rm busybox:local cat /sys/class/net/eth0/mtu")
        assert eth0 == mtu.group(1), f"{node.backend.hostname}: new container MTU {eth0}"
        assert f"inet {subnet.group(1)}/" in node.check_output("ip -4 -o addr show dev docker0")
        found.append(eth0)
    report.append(
        f"workloads removed, site.yml again: bridge rebuilt, new containers' MTU {found[0]}"
    )
