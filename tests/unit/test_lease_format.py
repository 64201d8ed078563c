"""Lease keys and values, byte-compatible with what flanneld writes to etcd v3."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from pyflannel.subnet.lease import (
    Lease,
    LeaseAttrs,
    config_key,
    lease_backend_type,
    parse_key_name,
    subnet_key,
    subnet_to_key_name,
    subnets_prefix,
)

# flannel's own example lease value (docs/compatibility.md), to the byte.
FLANNEL_VXLAN_VALUE = (
    '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
)
VXLAN_ATTRS = LeaseAttrs(
    public_ip=IPv4Address("192.168.64.3"),
    backend_type="vxlan",
    backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"},
)


# -- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "name"),
    [
        ("10.5.52.0/24", "10.5.52.0-24"),
        ("10.100.50.0/24", "10.100.50.0-24"),
        ("10.9.0.16/28", "10.9.0.16-28"),
        ("10.0.0.0/8", "10.0.0.0-8"),
    ],
)
def test_key_name_round_trip(subnet: str, name: str) -> None:
    assert subnet_to_key_name(IPv4Network(subnet)) == name
    assert parse_key_name(name) == IPv4Network(subnet)


def test_dual_stack_key_name_gives_the_ipv4_subnet() -> None:
    assert parse_key_name("10.5.52.0-24&fd00::-64") == IPv4Network("10.5.52.0/24")
    assert parse_key_name("10.5.52.0-24&fd00:0:0:34::-64") == IPv4Network("10.5.52.0/24")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "junk",
        "10.5.52.0",
        "10.5.52.0-",
        "10.5.52.0/24",
        "10.5.52.0-24x",
        "x10.5.52.0-24",
        "10.5.52-24",
        "10.5.52.0-33",
        "10.5.52.0-124",
        "10.5.52.1-24",  # host bits set: not a subnet flannel would write
        "300.5.52.0-24",
        "fd00::-64",
        "&10.5.52.0-24",
        " 10.5.52.0-24",
    ],
)
def test_junk_key_names_give_none(name: str) -> None:
    assert parse_key_name(name) is None


def test_full_keys_under_the_prefix() -> None:
    subnet = IPv4Network("10.5.52.0/24")
    assert subnet_key("/coreos.com/network", subnet) == "/coreos.com/network/subnets/10.5.52.0-24"
    assert subnet_key("/coreos.com/network/", subnet) == "/coreos.com/network/subnets/10.5.52.0-24"
    assert subnets_prefix("/atomic.io/network") == "/atomic.io/network/subnets/"
    assert config_key("/docker-subnet/network") == "/docker-subnet/network/config"
    assert config_key("/coreos.com/network/") == "/coreos.com/network/config"


# -- values -----------------------------------------------------------------------------------


def test_vxlan_value_is_byte_identical_to_flannel() -> None:
    assert VXLAN_ATTRS.to_json() == FLANNEL_VXLAN_VALUE


@pytest.mark.parametrize("backend", ["host-gw", "ipip"])
def test_backends_without_data_have_no_backend_data_key(backend: str) -> None:
    attrs = LeaseAttrs(public_ip=IPv4Address("192.0.2.10"), backend_type=backend)
    assert attrs.to_json() == (
        f'{{"PublicIP":"192.0.2.10","PublicIPv6":null,"BackendType":"{backend}"}}'
    )


def test_udp_value_keeps_its_backend_data() -> None:
    attrs = LeaseAttrs(IPv4Address("198.51.100.7"), "udp", {"Port": 8285})
    assert attrs.to_json() == (
        '{"PublicIP":"198.51.100.7","PublicIPv6":null,"BackendType":"udp",'
        '"BackendData":{"Port":8285}}'
    )


def test_from_json_reads_flannels_value() -> None:
    attrs = LeaseAttrs.from_json(FLANNEL_VXLAN_VALUE)
    assert attrs == VXLAN_ATTRS
    assert attrs.public_ipv6 is None
    assert attrs.to_json() == FLANNEL_VXLAN_VALUE


def test_from_json_accepts_bytes() -> None:
    assert LeaseAttrs.from_json(FLANNEL_VXLAN_VALUE.encode()) == VXLAN_ATTRS


@pytest.mark.parametrize(
    "attrs",
    [
        VXLAN_ATTRS,
        LeaseAttrs(IPv4Address("192.0.2.1"), "host-gw"),
        LeaseAttrs(IPv4Address("203.0.113.9"), "udp", {"Port": 8285}),
        LeaseAttrs(IPv4Address("203.0.113.9"), "vxlan", {"VNI": 7, "VtepMAC": "aa:bb:cc:dd:ee:ff"}),
    ],
)
def test_to_json_from_json_round_trip(attrs: LeaseAttrs) -> None:
    text = attrs.to_json()
    again = LeaseAttrs.from_json(text)
    assert again == attrs
    assert again.to_json() == text


def test_from_json_keeps_a_dual_stack_public_ipv6() -> None:
    value = (
        '{"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
        '"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}'
    )
    attrs = LeaseAttrs.from_json(value)
    assert attrs.public_ip == IPv4Address("192.0.2.1")
    assert attrs.public_ipv6 == "2001:db8::1"
    assert attrs.backend_data == {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}


def test_from_json_without_backend_type_or_data() -> None:
    attrs = LeaseAttrs.from_json('{"PublicIP":"192.0.2.1"}')
    assert attrs == LeaseAttrs(IPv4Address("192.0.2.1"), "", None)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "not JSON"),
        ('{"PublicIP":"192.0.2.1"', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ('["192.0.2.1"]', "not a JSON object"),
        ("null", "not a JSON object"),
        ('"192.0.2.1"', "not a JSON object"),
        ("{}", "PublicIP"),
        ('{"PublicIP":null}', "PublicIP"),
        ('{"PublicIP":"2001:db8::1"}', "PublicIP"),
        ('{"PublicIP":"192.0.2.300"}', "PublicIP"),
        ('{"PublicIP":"192.0.2.1","BackendData":"x"}', "BackendData"),
        ('{"PublicIP":"192.0.2.1","BackendData":[1]}', "BackendData"),
        ('{"PublicIP":"192.0.2.1","BackendType":5}', "BackendType"),
    ],
)
def test_from_json_errors_name_the_problem(text: str | bytes, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        LeaseAttrs.from_json(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["3232235523", "true", "[192, 168, 64, 3]"])
def test_from_json_rejects_a_public_ip_that_is_not_a_string(value: str) -> None:
    # flanneld only ever writes a quoted dotted quad; a number is not an address to route to.
    with pytest.raises(ValueError, match="PublicIP"):
        LeaseAttrs.from_json(f'{{"PublicIP":{value},"BackendType":"host-gw"}}')


# -- Lease ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "gateway"),
    [
        ("10.5.52.0/24", "10.5.52.1/24"),
        ("10.100.50.0/24", "10.100.50.1/24"),
        ("10.9.0.16/28", "10.9.0.17/28"),
        ("10.5.0.0/30", "10.5.0.1/30"),
    ],
)
def test_gateway_is_network_plus_one_with_the_lease_prefix(subnet: str, gateway: str) -> None:
    lease = Lease(subnet=IPv4Network(subnet), attrs=VXLAN_ATTRS, etcd_lease=0x1234)
    assert lease.gateway == IPv4Interface(gateway)
    assert str(lease.gateway) == gateway


def test_reservation_is_a_lease_without_etcd_lease() -> None:
    subnet = IPv4Network("10.5.52.0/24")
    assert Lease(subnet=subnet, attrs=VXLAN_ATTRS).is_reservation
    assert not Lease(subnet=subnet, attrs=VXLAN_ATTRS, etcd_lease=0x694D).is_reservation


def test_expires_in_does_not_take_part_in_equality() -> None:
    subnet = IPv4Network("10.5.52.0/24")
    first = Lease(subnet=subnet, attrs=VXLAN_ATTRS, etcd_lease=7, expires_in=100)
    assert first == Lease(subnet=subnet, attrs=VXLAN_ATTRS, etcd_lease=7, expires_in=3)


def test_udp_lease_has_no_backend_type_as_flanneld_writes_it() -> None:
    # flanneld v0.20.2's udp lease, measured: no BackendType key at all.
    flanneld_value = '{"PublicIP":"192.0.2.10","PublicIPv6":null}'
    attrs = LeaseAttrs(IPv4Address("192.0.2.10"), lease_backend_type("udp"))
    assert attrs.to_json() == flanneld_value
    assert LeaseAttrs.from_json(flanneld_value) == attrs
    assert [lease_backend_type(b) for b in ("vxlan", "host-gw", "ipip")] == [
        "vxlan",
        "host-gw",
        "ipip",
    ]
