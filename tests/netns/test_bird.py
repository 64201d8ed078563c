"""BIRD 2 with the configuration pyflannel writes, on two namespace hosts of one segment.

The first brick of the BGP routed mode (issue 12): each host's bird announces its subnet to the
other over iBGP; the session is Established (read through the control socket, as the status
command will), the peer's subnet is in the kernel as `proto bird` via the peer's address, and
the own subnet as a blackhole behind the metric a bridge's route beats. Nothing of the agent
runs here yet.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyflannel.bgp.birdconf import KERNEL_METRIC, BirdSettings, mesh_peers, render
from pyflannel.bgp.birdctl import BirdControl, BirdError
from pyflannel_lab import Lab
from pyflannel_lab.agents import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

NETWORK = ipaddress.IPv4Network("10.5.0.0/16")
SUBNETS = {1: ipaddress.IPv4Network("10.5.1.0/24"), 2: ipaddress.IPv4Network("10.5.2.0/24")}


@pytest.fixture
def birds(lab_factory: object) -> Iterator[tuple[Lab, dict[int, BirdControl]]]:
    assert shutil.which("bird"), "apt-get install bird2"
    lab: Lab = lab_factory(hosts=2)  # type: ignore[operator]
    assert lab.tmpdir is not None
    controls = {}
    for i in (1, 2):
        peer = 3 - i
        settings = BirdSettings(
            router_id=ipaddress.IPv4Address(lab.host_ip(i)),
            network=NETWORK,
            own_subnet=SUBNETS[i],
            peers=mesh_peers([ipaddress.IPv4Address(lab.host_ip(peer))], 64512),
        )
        conf = lab.tmpdir / f"bird-h{i}.conf"
        conf.write_text(render(settings))
        sock = lab.tmpdir / f"bird-h{i}.ctl"
        # -f: in the foreground, so that the lab stops it by PID with the namespace.
        lab.popen(
            i,
            "bird",
            "-f",
            "-c",
            str(conf),
            "-s",
            str(sock),
            log_path=lab.tmpdir / f"bird-h{i}.log",
        )
        controls[i] = BirdControl(str(sock))
    yield lab, controls


def test_bird_parses_what_we_write(tmp_path: Path) -> None:
    """Every feature at once: mesh and external peers, the own subnet."""
    from pyflannel.bgp.birdconf import BgpPeer

    settings = BirdSettings(
        router_id=ipaddress.IPv4Address("192.0.2.11"),
        network=NETWORK,
        own_subnet=SUBNETS[1],
        peers=(
            *mesh_peers([ipaddress.IPv4Address("192.0.2.12")], 64512),
            BgpPeer(ipaddress.IPv4Address("192.0.2.1"), 65000, "external", "tor"),
        ),
    )
    conf = tmp_path / "bird.conf"
    conf.write_text(render(settings))
    done = subprocess.run(
        ["bird", "-p", "-c", str(conf)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def established(control: BirdControl, protocol: str) -> bool:
    try:
        rows = {row.name: row for row in control.protocols()}
    except BirdError:
        return False  # not listening yet
    return protocol in rows and rows[protocol].info == "Established"


def test_peers_exchange_subnets_and_the_kernel_gets_proto_bird_routes(
    birds: tuple[Lab, dict[int, BirdControl]],
) -> None:
    lab, controls = birds
    for i, control in controls.items():
        protocol = "mesh_" + lab.host_ip(3 - i).replace(".", "_")
        wait_for(lambda c=control, p=protocol: established(c, p), 60, 0.5, f"h{i} {protocol}")
        row = {r.name: r for r in control.protocols()}[protocol]
        assert (row.proto, row.state) == ("BGP", "up")
        assert row.since[:4].isdigit(), row  # iso long: "2026-12-02 16:29:09"

    def routes(i: int) -> list[dict[str, object]]:
        out = lab.run(i, "ip", "-j", "route", "show", "proto", "bird").stdout
        return list(json.loads(out))

    for i in (1, 2):
        peer = 3 - i
        wait_for(lambda i=i: len(routes(i)) == 2, 30, 0.5, f"h{i} proto bird routes")
        by_dst = {r["dst"]: r for r in routes(i)}
        learned = by_dst[str(SUBNETS[peer])]
        assert learned["gateway"] == lab.host_ip(peer) and learned["dev"] == "eth0", learned
        own = by_dst[str(SUBNETS[i])]
        assert own["type"] == "blackhole" and own["metric"] == KERNEL_METRIC, own


def test_reconfigure_keeps_the_session_and_a_bad_command_is_one_line(
    birds: tuple[Lab, dict[int, BirdControl]],
) -> None:
    lab, controls = birds
    protocol = "mesh_" + lab.host_ip(2).replace(".", "_")
    wait_for(lambda: established(controls[1], protocol), 60, 0.5, "session")
    since = {r.name: r for r in controls[1].protocols()}[protocol].since
    controls[1].configure()  # the same file: nothing to change, the session stays
    assert {r.name: r for r in controls[1].protocols()}[protocol].since == since
    with pytest.raises(BirdError, match=r"^BIRD refused the command: .*syntax error"):
        controls[1].command("show nonsense")
    gone = BirdControl(str(Path(lab.tmpdir or "/nonexistent") / "nobird.ctl"))
    with pytest.raises(BirdError, match=r"nobird.ctl: No such file or directory; is bird running"):
        gone.protocols()


def test_flannelctl_bgp_status_shows_each_peer_like_calicoctl_node_status(
    birds: tuple[Lab, dict[int, BirdControl]],
) -> None:
    lab, controls = birds
    peer = lab.host_ip(2)
    wait_for(lambda: established(controls[1], "mesh_" + peer.replace(".", "_")), 60, 0.5, "up")
    ctl = [sys.executable, "-m", "pyflannel.ctl"]
    sock = ["--bird-socket", controls[1].socket_path]
    text = subprocess.run(
        [*ctl, "bgp", "status", *sock], capture_output=True, text=True, check=True
    ).stdout
    print(text)  # the report in the log
    lines = text.splitlines()
    assert lines[:3] == ["BIRD is running.", "", "IPv4 BGP status"], text
    assert lines[3].startswith("+--") and lines[4].split("|")[1].strip() == "PEER ADDRESS"
    (row,) = [line for line in lines if line.startswith(f"| {peer} ")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == [peer, "node-to-node mesh", "up"] and cells[4] == "Established", cells
    sessions = json.loads(
        subprocess.run(
            [*ctl, "-o", "json", "bgp", "status", *sock], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [(s["peer_address"], s["info"]) for s in sessions] == [(peer, "Established")]
