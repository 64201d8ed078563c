"""The bgp backend across an L3 boundary: two segments joined by a router that runs BIRD.

h1 and h2 share the first segment, h3 sits behind the router on the second (host-gw cannot
reach it: its public IP is not on-link). Every node's BIRD meshes with the others (iBGP,
multihop through the router) and peers with the router (eBGP, Backend.Peers, multihop for h3
whose router address is on the other segment). Checked as the Calico walk-through shows it:
`proto bird` routes between the hosts, the own subnet as a blackhole, every session Established
(`flannelctl bgp status`), and the router has learned every subnet, so containers on both
segments reach each other without encapsulation or NAT.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pyflannel.bgp.birdconf import BgpPeer, BirdSettings, render
from pyflannel.bgp.birdctl import BirdControl
from pyflannel_lab import Lab
from pyflannel_lab.agents import NETWORK, AgentCluster, wait_for
from pyflannel_lab.birds import bird_paths, start_bird

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

NODE_ASN = 64512
ROUTER_ASN = 64513


def router_config(lab: Lab) -> str:
    """The external router: eBGP with every node, learns their subnets, announces nothing."""
    return render(
        BirdSettings(
            router_id=ipaddress.IPv4Address(lab.router_ips[0]),
            network=ipaddress.IPv4Network(NETWORK),
            own_subnet=None,
            asn=ROUTER_ASN,
            peers=tuple(
                BgpPeer(ipaddress.IPv4Address(lab.host_ip(i)), NODE_ASN, "external", f"h{i}")
                for i in lab.host_indexes()
            ),
        )
    )


@pytest.fixture(scope="module")
def routed() -> Iterator[tuple[AgentCluster, BirdControl]]:
    import secrets

    lab = Lab(name_prefix=f"pfb{secrets.token_hex(2)}", hosts=3, routed_hosts=1)
    try:
        lab.up()
        lab.start_etcd()
        peers = [{"Address": lab.router_ips[0], "ASN": ROUTER_ASN, "Name": "rt"}]
        c = AgentCluster(lab, "bgp", backend_options={"Peers": peers})
        c.start_birds()
        router = start_bird(lab, "rt", router_config(lab))
        c.put_config()
        c.start_all(timeout=60)  # every pair of containers pings
        yield c, router
    finally:
        lab.down()


def bird_routes(lab: Lab, node: str) -> dict[str, dict[str, Any]]:
    out = lab.run(node, "ip", "-j", "route", "show", "proto", "bird").stdout
    return {r["dst"]: r for r in json.loads(out)}


def established(control: BirdControl) -> dict[str, str]:
    return {p.name: p.info for p in control.protocols() if p.proto == "BGP"}


def test_the_router_learns_every_subnet_and_the_hosts_route_through_it(
    routed: tuple[AgentCluster, BirdControl],
) -> None:
    c, router = routed
    lab = c.lab
    wait_for(
        lambda: set(established(router).values()) == {"Established"}, 60, 0.5, "router sessions"
    )
    learned = bird_routes(lab, "rt")
    assert {dst: r["gateway"] for dst, r in learned.items()} == {
        str(c.subnet(i)): lab.host_ip(i) for i in c.agents
    }
    # Pings pass before the mesh is up (peers on our segment are routed directly meanwhile):
    # wait for BIRD's route to every subnet on every host.
    every = {str(c.subnet(i)) for i in c.agents}
    for i in c.agents:
        node = f"h{i}"
        wait_for(lambda n=node: set(bird_routes(lab, n)) == every, 30, 0.2, f"{node} BIRD routes")
    for i in c.agents:
        routes = bird_routes(lab, f"h{i}")
        own = routes.pop(str(c.subnet(i)))
        assert own["type"] == "blackhole", own  # behind cbr0's own route, which wins
        side = lab.router_ips[1] if lab.is_routed(i) else lab.router_ips[0]
        for j in c.agents:
            if j == i:
                continue
            gateway = lab.host_ip(j) if lab.is_routed(i) == lab.is_routed(j) else side
            route = routes[str(c.subnet(j))]
            assert (route["gateway"], route["dev"]) == (gateway, "eth0"), (i, j, route)
    # No encapsulation: the inner packet crosses the router as it is.
    ping = lab.ping_result("h1c1", c.container_ip(3), count=2, timeout=2)
    assert ping.returncode == 0, ping.stdout


def test_every_session_is_established_as_bgp_status_shows(
    routed: tuple[AgentCluster, BirdControl],
) -> None:
    c, _ = routed
    _, sock = bird_paths(c.lab, 3)
    ctl = [sys.executable, "-m", "pyflannel.ctl"]
    wait_for(
        lambda: set(established(c.birds[3]).values()) == {"Established"}, 60, 0.5, "h3 sessions"
    )
    text = subprocess.run(
        [*ctl, "bgp", "status", "--bird-socket", str(sock)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(text)  # the report in the log, beside calicoctl node status
    rows = {
        cells[0]: cells
        for line in text.splitlines()
        if line.startswith("| ") and "PEER ADDRESS" not in line
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {c.lab.host_ip(1), c.lab.host_ip(2), c.lab.router_ips[0]}, text
    assert rows[c.lab.host_ip(1)][1:3] == ["node-to-node mesh", "up"], text
    assert rows[c.lab.router_ips[0]][1] == "external", text
    assert {row[4] for row in rows.values()} == {"Established"}, text


def test_a_node_leaving_is_dropped_by_a_reload_that_keeps_the_other_sessions(
    routed: tuple[AgentCluster, BirdControl],
) -> None:
    c, _ = routed
    leaver = 2
    protocols = {p.name: p for p in c.birds[1].protocols()}
    stay = "mesh_" + c.lab.host_ip(3).replace(".", "_")
    gone = "mesh_" + c.lab.host_ip(leaver).replace(".", "_")
    assert protocols[stay].info == protocols[gone].info == "Established"
    c.stop(leaver)
    c.lab.etcdctl("del", c.lease_key(leaver))
    conf, _ = bird_paths(c.lab, 1)
    wait_for(lambda: gone not in conf.read_text(), 20, 0.2, "h2 out of h1's BIRD file")
    wait_for(lambda: gone not in {p.name for p in c.birds[1].protocols()}, 20, 0.2, "h1 reloaded")
    after = {p.name: p for p in c.birds[1].protocols()}
    assert after[stay].since == protocols[stay].since, "the reload restarted a session"
    ping = c.lab.ping_result("h1c1", c.container_ip(3), count=2, timeout=2)
    assert ping.returncode == 0, ping.stdout
