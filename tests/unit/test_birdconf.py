"""BIRD's configuration as the BGP mode writes it (bird parses it in tests/netns/test_bird.py)."""

from __future__ import annotations

import ipaddress

from pyflannel.bgp.birdconf import BgpPeer, BirdSettings, mesh_peers, render

A = ipaddress.IPv4Address


def settings(**changes: object) -> BirdSettings:
    base = {
        "router_id": A("192.0.2.11"),
        "network": ipaddress.IPv4Network("10.5.0.0/16"),
        "own_subnet": ipaddress.IPv4Network("10.5.1.0/24"),
        "peers": mesh_peers([A("192.0.2.13"), A("192.0.2.12"), A("192.0.2.12")], 64512),
    }
    return BirdSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_mesh_peers_are_sorted_once_each_and_named_by_address() -> None:
    text = render(settings())
    assert "router id 192.0.2.11;" in text
    mesh = [line for line in text.splitlines() if line.startswith("protocol bgp")]
    assert mesh == [
        "protocol bgp mesh_192_0_2_12 from flannel_mesh { neighbor 192.0.2.12 as 64512; }",
        "protocol bgp mesh_192_0_2_13 from flannel_mesh { neighbor 192.0.2.13 as 64512; }",
    ]


def test_only_the_network_crosses_bgp_and_the_own_subnet_is_announced() -> None:
    text = render(settings())
    assert text.count("import where net ~ [ 10.5.0.0/16+ ];") == 2  # both templates
    assert text.count('export where proto = "flannel_own";') == 2
    assert "route 10.5.1.0/24 blackhole;" in text


def test_external_peer_gets_its_own_template_and_name() -> None:
    tor = BgpPeer(A("192.0.2.1"), 65000, "external", "tor")
    text = render(settings(peers=(tor,)))
    assert "protocol bgp ext_tor from flannel_external { neighbor 192.0.2.1 as 65000; }" in text
    assert tor.protocol == "ext_tor"
    assert BgpPeer(A("192.0.2.1"), 65000, "external").protocol == "ext_192_0_2_1"


def test_no_lease_yet_announces_nothing() -> None:
    text = render(settings(own_subnet=None, peers=()))
    assert "flannel_own {" not in text and "protocol bgp" not in text
