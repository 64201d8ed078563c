"""The bgp backend's side of the agent: its network-config options, and BIRD's file written
from the leases (BIRD itself runs in tests/netns/test_bgp.py; here its socket is absent, the
real fault of a node whose bird is not running)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from pyflannel.backend.bgp import BgpBackend
from pyflannel.backend.netlink import Route
from pyflannel.backend.settings import BackendSettings
from pyflannel.bgp.birdctl import BirdControl
from pyflannel.bgp.birdfile import retire
from pyflannel.config import parse_config
from pyflannel.errors import ConfigError, FlannelError
from pyflannel.iface import ExternalInterface
from pyflannel.subnet.lease import Lease, LeaseAttrs
from tests.unit.fake_routes import FakeRoutes

OWN_IP = ipaddress.IPv4Address("198.51.100.11")
EXT = ExternalInterface("eth0", 2, OWN_IP, 24, OWN_IP, 1500)


def bgp_config(**backend: Any) -> Any:
    return parse_config(
        json.dumps({"Network": "10.5.0.0/16", "Backend": {"Type": "bgp", **backend}})
    )


def lease(subnet: str, ip: str, backend_type: str = "bgp") -> Lease:
    return Lease(ipaddress.IPv4Network(subnet), LeaseAttrs(ipaddress.IPv4Address(ip), backend_type))


def backend(tmp_path: Path, kernel: FakeRoutes | None = None, **options: Any) -> BgpBackend:
    settings = BackendSettings(
        bird_config=str(tmp_path / "bird.conf"), bird_socket=str(tmp_path / "bird.ctl")
    )
    b = BgpBackend(bgp_config(**options), EXT, settings, kernel or FakeRoutes())  # type: ignore[arg-type]
    b.check()
    return b


# -- the network config --------------------------------------------------------------------------


def test_defaults_are_a_private_asn_and_the_node_mesh() -> None:
    options = bgp_config().backend.options
    assert (options["ASN"], options["NodeMesh"], options["Peers"]) == (64512, True, ())


def test_peers_are_normalised() -> None:
    peers = bgp_config(Peers=[{"Address": "203.0.113.1", "ASN": 64513}]).backend.options["Peers"]
    assert peers == ({"Address": "203.0.113.1", "ASN": 64513, "Name": ""},)


@pytest.mark.parametrize(
    ("backend", "needles"),
    [
        ({"ASN": 0}, ("Backend.ASN: 0 is out of range 1..4294967295",)),
        ({"ASN": "64512"}, ("Backend.ASN: must be an integer",)),
        ({"Peers": {"Address": "203.0.113.1"}}, ("Backend.Peers: must be a JSON list",)),
        ({"Peers": ["203.0.113.1"]}, ("Backend.Peers[0]: must be an object like",)),
        ({"Peers": [{"Address": "203.0.113.1"}]}, ("Backend.Peers[0].ASN: missing",)),
        ({"Peers": [{"Address": "203.0.113", "ASN": 1}]}, ("Peers[0].Address: '203.0.113' is",)),
        ({"Peers": [{"Address": "203.0.113.1", "ASN": 1, "As": 2}]}, ("Peers[0].As: unknown",)),
        ({"Peers": [{"Address": "203.0.113.1", "ASN": 1, "Name": "tor-1"}]}, ("letters, digits",)),
        ({"NodeMesh": False}, ("NodeMesh: false with no Backend.Peers leaves every node alone",)),
    ],
)
def test_bad_options_are_one_line_naming_the_key(
    backend: dict[str, Any], needles: tuple[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        bgp_config(**backend)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


# -- BIRD's file from the leases -----------------------------------------------------------------


def test_the_mesh_follows_the_bgp_leases_and_bird_down_is_retried(tmp_path: Path) -> None:
    b = backend(tmp_path, Peers=[{"Address": "203.0.113.1", "ASN": 64513, "Name": "tor"}])
    b.activate(lease("10.5.1.0/24", str(OWN_IP)))
    b.apply_peers([lease("10.5.3.0/24", "198.51.100.13"), lease("10.5.2.0/24", "198.51.100.12")])
    b.commit()
    conf = tmp_path / "bird.conf"
    text = conf.read_text()
    assert "route 10.5.1.0/24 blackhole;" in text
    mesh = [line for line in text.splitlines() if line.startswith("protocol bgp mesh_")]
    assert mesh == [
        "protocol bgp mesh_198_51_100_12 from flannel_mesh { neighbor 198.51.100.12 as 64512; }",
        "protocol bgp mesh_198_51_100_13 from flannel_mesh { neighbor 198.51.100.13 as 64512; }",
    ]
    external = "protocol bgp ext_tor from flannel_external { neighbor 203.0.113.1 as 64513;"
    assert f"{external} multihop; }}" in text  # not on our segment: more than one hop
    assert oct(conf.stat().st_mode & 0o777) == "0o644"
    metrics = b.metrics()
    assert metrics["pyflannel_bgp_reload_pending"] == 1.0  # no bird here: kept for later
    assert metrics["pyflannel_bgp_reload_failures_total"] >= 1
    assert metrics["pyflannel_bgp_mesh_peers"] == 2

    inode = conf.stat().st_ino
    b.commit()  # nothing changed: the file stays as it is
    assert conf.stat().st_ino == inode
    b.remove_peer(lease("10.5.3.0/24", "198.51.100.13"))
    b.commit()
    assert "mesh_198_51_100_13" not in conf.read_text() and conf.stat().st_ino != inode
    assert not list(tmp_path.glob(".*")), "a temporary file was left"


def test_no_node_mesh_peers_only_with_the_configured_routers(tmp_path: Path) -> None:
    b = backend(tmp_path, NodeMesh=False, Peers=[{"Address": "203.0.113.1", "ASN": 64513}])
    b.activate(lease("10.5.1.0/24", str(OWN_IP)))
    b.apply_peer(lease("10.5.2.0/24", "198.51.100.12"))
    b.commit()
    sessions = [ln for ln in (tmp_path / "bird.conf").read_text().splitlines() if "neighbor" in ln]
    assert sessions == [
        "protocol bgp ext_203_0_113_1 from flannel_external "
        "{ neighbor 203.0.113.1 as 64513; multihop; }"
    ]


# -- peers BIRD has not routed yet ----------------------------------------------------------------


def bird_route(subnet: str, via: str) -> Route:
    return Route(ipaddress.IPv4Network(subnet), ipaddress.IPv4Address(via), EXT.index, False)


def test_peers_on_our_segment_are_routed_directly_until_bird_routes_them(tmp_path: Path) -> None:
    kernel = FakeRoutes()
    b = backend(tmp_path, kernel)
    b.activate(lease("10.5.1.0/24", str(OWN_IP)))
    near, far = lease("10.5.2.0/24", "198.51.100.12"), lease("10.5.3.0/24", "203.0.113.7")
    b.apply_peers([near, far])
    b.commit()
    # A switch rolling, or BIRD's session still coming up: no gap for the peer next to us;
    # the one behind a router waits for BIRD (no direct route can reach it).
    assert set(kernel.table) == {near.subnet}
    assert b.settling() and b.metrics()["pyflannel_bgp_bridged_peers"] == 1.0

    kernel.daemon_table[near.subnet] = bird_route("10.5.2.0/24", "198.51.100.12")
    b.commit()
    assert kernel.table == {} and not b.settling()

    # BIRD stopped (it takes its routes along): the next reconcile bridges the peer again.
    kernel.daemon_table.clear()
    b.reconcile({near.subnet: near, far.subnet: far})
    assert set(kernel.table) == {near.subnet}
    kernel.daemon_table[near.subnet] = bird_route("10.5.2.0/24", "198.51.100.12")
    b.reconcile({near.subnet: near, far.subnet: far})
    assert kernel.table == {}


def test_a_peer_leaving_takes_its_direct_route_along(tmp_path: Path) -> None:
    kernel = FakeRoutes()
    b = backend(tmp_path, kernel)
    b.activate(lease("10.5.1.0/24", str(OWN_IP)))
    near = lease("10.5.2.0/24", "198.51.100.12")
    b.apply_peer(near)
    b.remove_peer(near)
    assert kernel.table == {} and not b.settling()


def test_a_node_without_bird_installed_is_told_what_to_do(tmp_path: Path) -> None:
    settings = BackendSettings(bird_config=str(tmp_path / "no-bird" / "bird.conf"))
    with pytest.raises(FlannelError, match=r"no-bird does not exist; install BIRD 2"):
        BgpBackend(bgp_config(), EXT, settings).check()


# -- after a switch away from bgp ------------------------------------------------------------------


def test_retire_empties_our_file_and_leaves_an_operators_alone(tmp_path: Path) -> None:
    b = backend(tmp_path)
    b.activate(lease("10.5.1.0/24", str(OWN_IP)))
    b.apply_peer(lease("10.5.3.0/24", "198.51.100.13"))
    b.commit()
    conf, control = tmp_path / "bird.conf", BirdControl(str(tmp_path / "bird.ctl"))
    network = ipaddress.IPv4Network("10.5.0.0/16")
    # No BIRD here: the file is written all the same (BIRD reads it when it starts).
    assert not retire(conf, control, OWN_IP, network)
    text = conf.read_text()
    assert "protocol static" not in text and "protocol bgp" not in text
    assert f"router id {OWN_IP};" in text

    conf.write_text("router id 198.51.100.11;\nprotocol bgp tor { neighbor 203.0.113.1 as 1; }\n")
    assert not retire(conf, control, OWN_IP, network)
    assert "protocol bgp tor" in conf.read_text()  # not ours: untouched
