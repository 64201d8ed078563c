"""The interface selection rules on hand-made interface records (no kernel involved)."""

from __future__ import annotations

import logging
import re
from ipaddress import IPv4Address as IP
from pathlib import Path

import pytest

from pyflannel.errors import InterfaceError
from pyflannel.iface import (
    Choice,
    Link,
    Route,
    compile_regex,
    default_route_oif,
    ensure_ip_forward,
    match_iface_entry,
    match_regex,
    no_match_message,
    parse_ipv4,
    preferred_addr,
    usable_names,
)

LO = Link("lo", 1, up=True, loopback=True, mtu=65536, addrs=((IP("127.0.0.1"), 8),))
ETH0 = Link("eth0", 2, up=True, loopback=False, mtu=1500, addrs=((IP("192.0.2.10"), 24),))
ETH1 = Link(
    "eth1",
    3,
    up=True,
    loopback=False,
    mtu=9000,
    addrs=((IP("198.51.100.10"), 24), (IP("198.51.100.11"), 25)),
)
BARE = Link("eth2", 4, up=True, loopback=False, mtu=1500)
DOWN = Link("eth3", 5, up=False, loopback=False, mtu=1500, addrs=((IP("203.0.113.10"), 24),))
LINKS = [LO, ETH0, ETH1, BARE, DOWN]


def chosen(result: Choice | str) -> tuple[str, str, int]:
    assert isinstance(result, Choice), result
    return result.link.name, str(result.addr), result.prefixlen


def test_preferred_addr_skips_link_local_and_loopback() -> None:
    link = Link("x", 9, True, False, 1500, ((IP("169.254.1.1"), 16), (IP("192.0.2.5"), 24)))
    assert preferred_addr(link) == (IP("192.0.2.5"), 24)
    only_ll = Link("x", 9, True, False, 1500, ((IP("169.254.1.1"), 16),))
    assert preferred_addr(only_ll) == (IP("169.254.1.1"), 16)
    assert preferred_addr(LO) == (IP("127.0.0.1"), 8)
    assert preferred_addr(BARE) is None


def test_entry_by_name_takes_first_address() -> None:
    assert chosen(match_iface_entry(LINKS, "eth1")) == ("eth1", "198.51.100.10", 24)


def test_entry_by_address_takes_that_address() -> None:
    assert chosen(match_iface_entry(LINKS, "198.51.100.11")) == ("eth1", "198.51.100.11", 25)


def test_entry_loopback_allowed_when_named() -> None:
    assert chosen(match_iface_entry(LINKS, "lo")) == ("lo", "127.0.0.1", 8)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("ens33", "no such interface"),
        ("203.0.113.99", "no interface carries this address"),
        ("eth2", "interface has no IPv4 address"),
        ("eth3", "interface is down; bring it up (ip link set eth3 up)"),
        ("2001:db8::1", "IPv6 addresses are not supported"),
    ],
)
def test_entry_failures(entry: str, reason: str) -> None:
    result = match_iface_entry(LINKS, entry)
    assert isinstance(result, str)
    assert result.startswith(reason)


def test_regex_on_name_skips_loopback_and_unusable() -> None:
    # "." matches every name; lo is skipped (not named), eth0 is the first usable one.
    assert chosen(match_regex(LINKS, re.compile("."))) == ("eth0", "192.0.2.10", 24)
    assert chosen(match_regex(LINKS, re.compile("^eth[12]$"))) == ("eth1", "198.51.100.10", 24)


def test_regex_on_address_takes_the_matching_address() -> None:
    assert chosen(match_regex(LINKS, re.compile(r"\.11$"))) == ("eth1", "198.51.100.11", 25)


def test_regex_addresses_are_tried_before_names() -> None:
    # "2" matches the name eth2 (index 4) but first the address 192.0.2.10 of eth0.
    named_first = [BARE, ETH0]
    assert chosen(match_regex(named_first, re.compile("2"))) == ("eth0", "192.0.2.10", 24)


def test_regex_failures_name_the_unusable_matches() -> None:
    result = match_regex(LINKS, re.compile("^eth[23]$"))
    assert result == (
        "matches only unusable interfaces (eth2: interface has no IPv4 address, "
        "eth3: interface is down; bring it up (ip link set eth3 up))"
    )
    assert match_regex(LINKS, re.compile("^wl")) == "matches no interface name or IPv4 address"


def test_invalid_regex_is_reported() -> None:
    with pytest.raises(InterfaceError, match=r"^--iface-regex=\[: invalid regular expression"):
        compile_regex("[")


def test_usable_names_lists_interfaces_with_an_address_that_are_up() -> None:
    assert usable_names(LINKS) == "lo, eth0, eth1"
    assert usable_names([BARE, DOWN]) == "none"


def test_no_match_message_for_iface_only() -> None:
    msg = no_match_message(["--iface=ens33: no such interface"], [LO, ETH0], ["--iface"])
    assert msg == "--iface=ens33: no such interface (have: lo, eth0); set --iface to one of them"


def test_no_match_message_lists_every_entry_and_flag() -> None:
    failures = ["--iface=a: no such interface", "--iface-regex=b: matches nothing"]
    msg = no_match_message(failures, [ETH0], ["--iface", "--iface-regex"])
    assert msg == (
        "--iface=a: no such interface; --iface-regex=b: matches nothing (have: eth0); "
        "set --iface, --iface-regex or --iface-can-reach"
    )


def test_default_route_lowest_metric_in_main_table() -> None:
    routes = [
        Route(dst_len=24, table=254, type=1, oif=2, metric=0),
        Route(dst_len=0, table=254, type=1, oif=3, metric=200),
        Route(dst_len=0, table=254, type=1, oif=4, metric=100),
        Route(dst_len=0, table=100, type=1, oif=5, metric=0),  # other table
        Route(dst_len=0, table=254, type=6, oif=None, metric=0),  # prohibit
    ]
    assert default_route_oif(routes) == 4


def test_no_default_route() -> None:
    assert default_route_oif([Route(24, 254, 1, 2, 0), Route(0, 255, 1, 2, 0)]) is None


def test_parse_ipv4_rejects_garbage() -> None:
    assert parse_ipv4("203.0.113.7", "--public-ip") == IP("203.0.113.7")
    with pytest.raises(InterfaceError, match=r"^--public-ip=1\.2\.3: not an IPv4 address"):
        parse_ipv4("1.2.3", "--public-ip")


def test_ensure_ip_forward_sets_it_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    knob = tmp_path / "ip_forward"
    knob.write_text("0\n")
    log = logging.getLogger("test.iface")
    with caplog.at_level(logging.INFO, logger="test.iface"):
        assert ensure_ip_forward(log, path=knob) is True
        assert knob.read_text().strip() == "1"
        assert ensure_ip_forward(log, path=knob) is False
    assert [r.getMessage() for r in caplog.records] == [
        "net.ipv4.ip_forward was 0; set it to 1 so this node forwards overlay traffic"
    ]
