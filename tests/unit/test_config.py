"""parse_config against every rule of docs/compatibility.md (defaults, ranges, types, messages)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from pyflannel.config import NetworkConfig, parse_config
from pyflannel.errors import ConfigError


def cfg(**fields: Any) -> NetworkConfig:
    """Parse a config given as keyword fields (Network defaults to 10.5.0.0/16)."""
    fields.setdefault("Network", "10.5.0.0/16")
    return parse_config(json.dumps(fields))


def rejected(text: str | bytes, *needles: str) -> ConfigError:
    """parse_config(text) raises one operator line containing every needle."""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert message and "\n" not in message, message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return info.value


def rejected_fields(fields: dict[str, Any], *needles: str) -> ConfigError:
    fields.setdefault("Network", "10.5.0.0/16")
    return rejected(json.dumps(fields), *needles)


# -- SubnetLen ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("10.0.0.0/8", 24),
        ("10.5.0.0/16", 24),
        ("10.5.0.0/21", 24),
        ("10.5.0.0/22", 24),
        ("10.5.0.0/23", 25),
        ("10.5.0.0/24", 26),
        ("10.5.0.0/26", 28),
        ("10.5.0.0/28", 30),
    ],
)
def test_subnet_len_default(network: str, expected: int) -> None:
    assert cfg(Network=network).subnet_len == expected


@pytest.mark.parametrize("network", ["10.5.0.0/29", "10.5.0.0/30", "10.5.0.0/32"])
def test_network_smaller_than_28_is_an_error(network: str) -> None:
    rejected_fields({"Network": network}, "Network", network, "/28")


@pytest.mark.parametrize("subnet_len", [31, 32, 40])
def test_explicit_subnet_len_above_30_is_an_error(subnet_len: int) -> None:
    rejected_fields({"SubnetLen": subnet_len}, "SubnetLen", str(subnet_len), "30")


@pytest.mark.parametrize(
    ("network", "subnet_len", "minimum"),
    [("10.5.0.0/16", 17, 18), ("10.5.0.0/16", 16, 18), ("10.5.0.0/22", 23, 24)],
)
def test_explicit_subnet_len_below_prefix_plus_2_is_an_error(
    network: str, subnet_len: int, minimum: int
) -> None:
    rejected_fields({"Network": network, "SubnetLen": subnet_len}, "SubnetLen", str(minimum))


def test_network_29_with_explicit_subnet_len_is_still_an_error() -> None:
    rejected_fields({"Network": "10.5.0.0/29", "SubnetLen": 30}, "SubnetLen")


@pytest.mark.parametrize(
    ("network", "subnet_len"),
    [("10.5.0.0/16", 18), ("10.5.0.0/16", 30), ("10.5.0.0/16", 20), ("10.5.0.0/22", 24)],
)
def test_explicit_subnet_len_within_bounds_is_kept(network: str, subnet_len: int) -> None:
    assert cfg(Network=network, SubnetLen=subnet_len).subnet_len == subnet_len


def test_subnet_len_null_means_default() -> None:
    assert cfg(SubnetLen=None).subnet_len == 24


# -- SubnetMin / SubnetMax ----------------------------------------------------------------


def test_subnet_min_max_defaults_skip_first_subnet() -> None:
    config = cfg(Network="10.5.0.0/16")
    assert config.subnet_min == IPv4Address("10.5.1.0")
    assert config.subnet_max == IPv4Address("10.5.255.0")


@pytest.mark.parametrize(
    ("network", "subnet_len", "low", "high"),
    [
        ("10.0.0.0/8", None, "10.0.1.0", "10.255.255.0"),
        ("10.5.0.0/16", 20, "10.5.16.0", "10.5.240.0"),
        ("10.9.0.0/26", None, "10.9.0.16", "10.9.0.48"),
        ("10.9.0.0/28", None, "10.9.0.4", "10.9.0.12"),
    ],
)
def test_subnet_min_max_defaults_follow_subnet_len(
    network: str, subnet_len: int | None, low: str, high: str
) -> None:
    config = cfg(Network=network, SubnetLen=subnet_len)
    assert (config.subnet_min, config.subnet_max) == (IPv4Address(low), IPv4Address(high))


def test_explicit_subnet_min_max_are_kept() -> None:
    config = cfg(SubnetMin="10.5.10.0", SubnetMax="10.5.20.0")
    assert config.subnet_min == IPv4Address("10.5.10.0")
    assert config.subnet_max == IPv4Address("10.5.20.0")


def test_subnet_min_may_be_the_network_address_when_given() -> None:
    assert cfg(SubnetMin="10.5.0.0").subnet_min == IPv4Address("10.5.0.0")


@pytest.mark.parametrize("key", ["SubnetMin", "SubnetMax"])
@pytest.mark.parametrize("address", ["10.6.1.0", "10.4.255.0", "192.0.2.0"])
def test_subnet_bound_outside_network_is_an_error(key: str, address: str) -> None:
    rejected_fields({key: address}, key, address, "10.5.0.0/16")


@pytest.mark.parametrize("key", ["SubnetMin", "SubnetMax"])
def test_unaligned_subnet_bound_is_an_error_with_the_aligned_hint(key: str) -> None:
    rejected_fields({key: "10.5.7.1"}, key, "10.5.7.1", "/24", "10.5.7.0")


def test_subnet_bound_aligned_to_explicit_subnet_len() -> None:
    rejected_fields({"SubnetLen": 20, "SubnetMin": "10.5.8.0"}, "SubnetMin", "/20", "10.5.0.0")
    assert cfg(SubnetLen=20, SubnetMin="10.5.32.0").subnet_min == IPv4Address("10.5.32.0")


@pytest.mark.parametrize("key", ["SubnetMin", "SubnetMax"])
def test_subnet_bound_that_is_not_an_address_is_an_error(key: str) -> None:
    rejected_fields({key: "10.5.300.0"}, key, "10.5.300.0")


@pytest.mark.parametrize("key", ["SubnetMin", "SubnetMax"])
def test_subnet_bound_of_wrong_type_is_an_error(key: str) -> None:
    rejected_fields({key: 167051520}, key, "string")


def test_subnet_min_greater_than_max_is_an_error() -> None:
    rejected_fields(
        {"SubnetMin": "10.5.20.0", "SubnetMax": "10.5.10.0"},
        "SubnetMin",
        "SubnetMax",
        "10.5.20.0",
        "10.5.10.0",
    )


def test_subnet_max_below_default_min_is_an_error() -> None:
    rejected_fields({"SubnetMax": "10.5.0.0"}, "SubnetMax", "10.5.0.0", "SubnetMin 10.5.1.0")
    rejected_fields({"Network": "10.9.0.0/26", "SubnetMax": "10.9.0.0"}, "SubnetMax")


def test_subnet_min_equal_to_default_max_is_accepted() -> None:
    config = cfg(Network="10.9.0.0/26", SubnetMin="10.9.0.48")
    assert config.subnet_min == config.subnet_max == IPv4Address("10.9.0.48")


def test_subnet_min_equal_max_is_one_subnet() -> None:
    config = cfg(SubnetMin="10.5.7.0", SubnetMax="10.5.7.0")
    assert config.contains_subnet(IPv4Network("10.5.7.0/24"))
    assert not config.contains_subnet(IPv4Network("10.5.8.0/24"))


# -- Network --------------------------------------------------------------------------------


def test_host_bits_in_network_are_masked() -> None:
    config = cfg(Network="10.5.1.7/16")
    assert config.network == IPv4Network("10.5.0.0/16")
    assert config.subnet_min == IPv4Address("10.5.1.0")


def test_missing_network_is_an_error() -> None:
    rejected('{"SubnetLen": 24}', "Network", "missing")
    rejected("{}", "Network")


@pytest.mark.parametrize("value", ["10.5.0.0", "10.5.0.0/33", "fd00::/64", "ten/8", ""])
def test_network_that_is_not_an_ipv4_cidr_is_an_error(value: str) -> None:
    rejected_fields({"Network": value}, "Network")


@pytest.mark.parametrize("value", [10, True, ["10.5.0.0/16"], {"a": 1}])
def test_network_of_wrong_type_is_an_error(value: Any) -> None:
    rejected_fields({"Network": value}, "Network", "string")


# -- types, JSON, shape ------------------------------------------------------------------


def test_subnet_len_as_string_is_an_error() -> None:
    rejected('{"Network":"10.5.0.0/16","SubnetLen":"24"}', "SubnetLen", "integer", '"24"')


@pytest.mark.parametrize("value", ["true", "false", "24.0", "[24]"])
def test_subnet_len_of_other_json_types_is_an_error(value: str) -> None:
    rejected(f'{{"Network":"10.5.0.0/16","SubnetLen":{value}}}', "SubnetLen", "integer")


@pytest.mark.parametrize(
    ("backend", "field"),
    [
        ({"Type": "vxlan", "VNI": True}, "Backend.VNI"),
        ({"Type": "vxlan", "VNI": "1"}, "Backend.VNI"),
        ({"Type": "vxlan", "Port": False}, "Backend.Port"),
        ({"Type": "vxlan", "MTU": "1450"}, "Backend.MTU"),
        ({"Type": "vxlan", "DirectRouting": "true"}, "Backend.DirectRouting"),
        ({"Type": "vxlan", "DirectRouting": 1}, "Backend.DirectRouting"),
        ({"Type": "vxlan", "GBP": 0}, "Backend.GBP"),
        ({"Type": "udp", "Port": "8285"}, "Backend.Port"),
        ({"Type": "udp", "Port": True}, "Backend.Port"),
        ({"Type": "ipip", "DirectRouting": "yes"}, "Backend.DirectRouting"),
        ({"Type": 3}, "Backend.Type"),
    ],
)
def test_backend_option_of_wrong_type_is_an_error(backend: dict[str, Any], field: str) -> None:
    rejected_fields({"Backend": backend}, field)


@pytest.mark.parametrize("key", ["EnableIPv4", "EnableIPv6"])
def test_enable_flags_of_wrong_type_are_errors(key: str) -> None:
    rejected_fields({key: "true"}, key, "true or false")


@pytest.mark.parametrize(
    "text",
    ['{"Network": "10.5.0.0/16"', "{'Network': '10.5.0.0/16'}", "", "Network=10.5.0.0/16"],
)
def test_invalid_json_is_an_error(text: str) -> None:
    rejected(text, "not valid JSON")


@pytest.mark.parametrize(
    ("text", "kind"),
    [('["10.5.0.0/16"]', "list"), ('"10.5.0.0/16"', "str"), ("16", "int"), ("null", "None")],
)
def test_config_that_is_not_an_object_is_an_error(text: str, kind: str) -> None:
    rejected(text, "JSON object", kind)


def test_non_utf8_bytes_are_an_error() -> None:
    rejected(b'{"Network":"10.5.0.0/16\xff"}', "UTF-8")


def test_bytes_are_accepted() -> None:
    config = parse_config(b'{"Network":"10.5.0.0/16"}')
    assert config.network == IPv4Network("10.5.0.0/16")
    assert config.raw == '{"Network":"10.5.0.0/16"}'


def test_enable_ipv6_true_is_rejected() -> None:
    rejected_fields({"EnableIPv6": True, "IPv6Network": "fd00::/48"}, "EnableIPv6")


def test_enable_ipv6_false_and_ipv4_true_are_accepted() -> None:
    config = cfg(EnableIPv6=False, EnableIPv4=True)
    assert config.network == IPv4Network("10.5.0.0/16")
    assert config.warnings == ()


def test_enable_ipv4_false_is_rejected() -> None:
    rejected_fields({"EnableIPv4": False}, "EnableIPv4")


# -- unknown keys --------------------------------------------------------------------------


def test_unknown_top_level_keys_are_warnings_not_errors() -> None:
    config = cfg(Subnetlen=26, Foo={"x": 1})
    assert config.subnet_len == 24  # the typo is not taken for SubnetLen
    assert len(config.warnings) == 2
    assert any("'Subnetlen'" in warning for warning in config.warnings)
    assert any("'Foo'" in warning for warning in config.warnings)
    assert all("\n" not in warning for warning in config.warnings)


def test_unknown_backend_option_is_a_warning() -> None:
    config = cfg(Backend={"Type": "vxlan", "Vni": 4, "VNI": 2})
    assert config.backend.options["VNI"] == 2
    assert len(config.warnings) == 1
    assert "Backend.Vni" in config.warnings[0]
    assert "vxlan" in config.warnings[0]


def test_option_of_another_backend_is_a_warning() -> None:
    config = cfg(Backend={"Type": "host-gw", "VNI": 1})
    assert config.backend.type == "host-gw"
    assert any("Backend.VNI" in warning for warning in config.warnings)


def test_known_keys_give_no_warnings() -> None:
    config = cfg(
        SubnetLen=24,
        SubnetMin="10.5.1.0",
        SubnetMax="10.5.200.0",
        EnableIPv4=True,
        EnableIPv6=False,
        Backend={"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": True},
    )
    assert config.warnings == ()


# -- Backend ---------------------------------------------------------------------------------


def test_backend_defaults_to_udp_with_port_8285() -> None:
    config = cfg()
    assert config.backend.type == "udp"
    assert dict(config.backend.options) == {"Port": 8285}


def test_backend_without_type_is_an_error_as_in_flannel() -> None:
    # flannel falls back to udp only when "Backend" is absent; {"Port": 9000} has no Type.
    with pytest.raises(ConfigError, match=r"^Backend\.Type: missing"):
        cfg(Backend={"Port": 9000})
    assert cfg(Backend={}).backend.type == "udp"


def test_vxlan_defaults() -> None:
    options = dict(cfg(Backend={"Type": "vxlan"}).backend.options)
    assert options["VNI"] == 1
    assert options["Port"] == 0  # 0: the kernel's default 8472
    assert options["GBP"] is False
    assert options["Learning"] is False
    assert options["DirectRouting"] is False
    assert options["MTU"] == 0


def test_vxlan_options_are_kept() -> None:
    backend = cfg(
        Backend={"Type": "vxlan", "VNI": 42, "Port": 4789, "DirectRouting": True, "MTU": 9000}
    ).backend
    assert (backend.options["VNI"], backend.options["Port"]) == (42, 4789)
    assert backend.options["DirectRouting"] is True
    assert backend.options["MTU"] == 9000


def test_ipip_and_host_gw_defaults() -> None:
    assert dict(cfg(Backend={"Type": "ipip"}).backend.options) == {"DirectRouting": False}
    assert dict(cfg(Backend={"Type": "host-gw"}).backend.options) == {}


def test_udp_port_is_kept() -> None:
    assert cfg(Backend={"Type": "udp", "Port": 8999}).backend.options["Port"] == 8999


@pytest.mark.parametrize(
    ("given", "meant"),
    [("Host-GW", "host-gw"), ("host_gw", "host-gw"), ("VXLAN", "vxlan"), ("UDP", "udp")],
)
def test_unknown_backend_type_suggests_the_right_spelling(given: str, meant: str) -> None:
    error = rejected_fields(
        {"Backend": {"Type": given}}, "Backend.Type", given, f"did you mean {meant!r}"
    )
    assert "host-gw" in str(error) and "vxlan" in str(error)  # lists the supported types


@pytest.mark.parametrize("given", ["wireguard", "alloc", "gre", ""])
def test_unsupported_backend_type_lists_the_supported_ones(given: str) -> None:
    error = rejected_fields({"Backend": {"Type": given}}, "Backend.Type", "udp", "ipip")
    assert "did you mean" not in str(error)


@pytest.mark.parametrize("value", ["vxlan", ["vxlan"], 1])
def test_backend_that_is_not_an_object_is_an_error(value: Any) -> None:
    rejected_fields({"Backend": value}, "Backend", "Type")


@pytest.mark.parametrize(
    ("backend", "field"),
    [
        ({"Type": "udp", "Port": 65536}, "Backend.Port"),
        ({"Type": "udp", "Port": -1}, "Backend.Port"),
        ({"Type": "vxlan", "Port": 70000}, "Backend.Port"),
        ({"Type": "vxlan", "VNI": 1 << 24}, "Backend.VNI"),
        ({"Type": "vxlan", "VNI": -1}, "Backend.VNI"),
        ({"Type": "vxlan", "MTU": 100}, "Backend.MTU"),
        ({"Type": "vxlan", "MTU": 70000}, "Backend.MTU"),
    ],
)
def test_backend_option_out_of_range_is_an_error(backend: dict[str, Any], field: str) -> None:
    rejected_fields({"Backend": backend}, field)


def test_backend_option_range_edges_are_accepted() -> None:
    assert cfg(Backend={"Type": "vxlan", "VNI": (1 << 24) - 1}).backend.options["VNI"] == 16777215
    assert cfg(Backend={"Type": "udp", "Port": 65535}).backend.options["Port"] == 65535
    assert cfg(Backend={"Type": "vxlan", "MTU": 118}).backend.options["MTU"] == 118


def test_config_is_immutable() -> None:
    config = cfg()
    with pytest.raises(AttributeError):
        config.subnet_len = 25  # type: ignore[misc]


# -- contains_subnet -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("10.5.1.0/24", True),
        ("10.5.52.0/24", True),
        ("10.5.255.0/24", True),
        ("10.5.0.0/24", False),  # the skipped first subnet (below SubnetMin)
        ("10.5.1.0/25", False),  # wrong length
        ("10.5.0.0/23", False),
        ("10.6.1.0/24", False),  # outside Network
        ("10.4.255.0/24", False),
    ],
)
def test_contains_subnet_with_defaults(subnet: str, expected: bool) -> None:
    assert cfg().contains_subnet(IPv4Network(subnet)) is expected


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        ("10.5.9.0/24", False),
        ("10.5.10.0/24", True),
        ("10.5.15.0/24", True),
        ("10.5.20.0/24", True),
        ("10.5.21.0/24", False),
    ],
)
def test_contains_subnet_honours_min_and_max(subnet: str, expected: bool) -> None:
    config = cfg(SubnetMin="10.5.10.0", SubnetMax="10.5.20.0")
    assert config.contains_subnet(IPv4Network(subnet)) is expected


def test_contains_subnet_of_a_tiny_pool() -> None:
    config = cfg(Network="10.9.0.0/26", SubnetLen=28)
    inside = [
        n for n in IPv4Network("10.9.0.0/26").subnets(new_prefix=28) if config.contains_subnet(n)
    ]
    assert inside == [IPv4Network(f"10.9.0.{n}/28") for n in (16, 32, 48)]
