"""flanneld-compatible command line: Go flag syntax, FLANNELD_* environment, validation."""

from __future__ import annotations

import dataclasses

import pytest

from pyflannel.errors import UsageError
from pyflannel.flags import DaemonOptions, parse_flags, usage


def parse(*argv: str, **environ: str) -> DaemonOptions:
    return parse_flags(list(argv), environ)


def test_defaults_match_flanneld() -> None:
    options = parse()
    assert options == DaemonOptions()
    assert options.etcd_endpoints == ("http://127.0.0.1:4001", "http://127.0.0.1:2379")
    assert options.etcd_prefix == "/coreos.com/network"
    assert options.subnet_file == "/run/flannel/subnet.env"
    assert options.subnet_lease_renew_margin == 60
    assert options.subnet_lease_ttl == 86400
    assert options.iptables_resync == 5
    assert options.iptables_forward_rules is True
    assert options.ip_masq is False
    assert options.logtostderr is True
    assert (options.healthz_ip, options.healthz_port) == ("0.0.0.0", 0)


def test_field_names_are_the_interface_others_use() -> None:
    assert [f.name for f in dataclasses.fields(DaemonOptions)] == [
        "etcd_endpoints", "etcd_prefix", "etcd_cafile", "etcd_certfile", "etcd_keyfile",
        "etcd_username", "etcd_password", "etcd_timeout", "iface", "iface_regex",
        "iface_can_reach", "public_ip", "ip_masq", "subnet_file", "subnet_lease_renew_margin",
        "subnet_lease_ttl", "healthz_ip", "healthz_port", "iptables_resync",
        "iptables_forward_rules", "reconcile_interval", "vxlan_disable_tx_checksum",
        "userspace_fast_path", "bgp_bird_config", "bgp_bird_socket", "verbosity", "logtostderr",
        "log_dir", "version", "help",
    ]  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        DaemonOptions().ip_masq = True  # type: ignore[misc]


def test_walkthrough_command_line_with_single_dash_prefix() -> None:
    argv = (
        "--etcd-endpoints=http://a:2379,http://b:2379 --iface=ens33 "
        "-etcd-prefix=/docker-subnet/network"
    )
    options = parse(*argv.split())
    assert options.etcd_endpoints == ("http://a:2379", "http://b:2379")
    assert options.iface == ("ens33",)
    assert options.etcd_prefix == "/docker-subnet/network"


def test_walkthrough_command_line_with_klog_flags() -> None:
    argv = (
        "--logtostderr=false --log_dir=/var/log/ "
        "--etcd-endpoints=http://192.168.255.154:2379,http://192.168.255.155:2379 --iface=ens33"
    )
    options = parse(*argv.split())
    assert options.logtostderr is False
    assert options.log_dir == "/var/log/"
    assert options.etcd_endpoints == ("http://192.168.255.154:2379", "http://192.168.255.155:2379")
    assert options.iface == ("ens33",)


@pytest.mark.parametrize(
    "argv",
    [
        ["-public-ip=192.0.2.7"],
        ["--public-ip=192.0.2.7"],
        ["-public-ip", "192.0.2.7"],
        ["--public-ip", "192.0.2.7"],
        ["--public_ip", "192.0.2.7"],
    ],
)
def test_go_flag_spellings(argv: list[str]) -> None:
    assert parse(*argv).public_ip == "192.0.2.7"


def test_log_dir_dash_and_underscore_are_the_same_flag() -> None:
    assert parse("--log-dir=/tmp/x").log_dir == "/tmp/x"
    assert parse("-log_dir", "/tmp/y").log_dir == "/tmp/y"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("1", True), ("0", False), ("T", True), ("FALSE", False)],
)
def test_boolean_with_explicit_value(value: str, expected: bool) -> None:
    assert parse(f"--ip-masq={value}").ip_masq is expected


def test_bare_boolean_is_true_and_never_consumes_the_next_argument() -> None:
    options = parse("--ip-masq", "--iface", "eth1")
    assert options.ip_masq is True
    assert options.iface == ("eth1",)
    with pytest.raises(UsageError, match="unexpected argument 'false'"):
        parse("--ip-masq", "false")


def test_value_flag_takes_the_next_argument_even_if_it_starts_with_a_dash() -> None:
    assert parse("--etcd-password", "-secret").etcd_password == "-secret"


def test_missing_value_is_reported() -> None:
    with pytest.raises(UsageError, match=r"flag --etcd-prefix needs a value"):
        parse("--etcd-prefix")


def test_repeatable_flags_accumulate_in_order() -> None:
    options = parse("--iface=eth1", "-iface", "192.0.2.5", "--iface-regex=^en", "--iface-regex=^wl")
    assert options.iface == ("eth1", "192.0.2.5")
    assert options.iface_regex == ("^en", "^wl")


def test_a_plain_flag_given_twice_keeps_the_last_value() -> None:
    assert parse("--healthz-port=1", "--healthz-port=2").healthz_port == 2


def test_verbosity_and_version() -> None:
    options = parse("-v=3", "--version")
    assert options.verbosity == 3
    assert options.version is True
    assert parse("-v", "2").verbosity == 2


def test_environment_supplies_every_flag() -> None:
    options = parse(
        FLANNELD_ETCD_ENDPOINTS="https://198.51.100.1:2379,https://198.51.100.2:2379",
        FLANNELD_ETCD_PREFIX="/atomic.io/network",
        FLANNELD_IP_MASQ="true",
        FLANNELD_IFACE="eth0, eth1",
        FLANNELD_SUBNET_LEASE_RENEW_MARGIN="30",
        FLANNELD_ETCD_TIMEOUT="2.5",
        FLANNELD_LOG_DIR="/var/log/flannel",
        FLANNELD_IPTABLES_FORWARD_RULES="false",
        FLANNELD_V="4",
    )
    assert options.etcd_endpoints == ("https://198.51.100.1:2379", "https://198.51.100.2:2379")
    assert options.etcd_prefix == "/atomic.io/network"
    assert options.ip_masq is True
    assert options.iface == ("eth0", "eth1")
    assert options.subnet_lease_renew_margin == 30
    assert options.etcd_timeout == 2.5
    assert options.log_dir == "/var/log/flannel"
    assert options.iptables_forward_rules is False
    assert options.verbosity == 4


def test_iface_regex_from_environment_is_one_regex_because_commas_are_regex_syntax() -> None:
    assert parse(FLANNELD_IFACE_REGEX="^eth[0-9]{1,2}$").iface_regex == ("^eth[0-9]{1,2}$",)


def test_command_line_wins_over_environment() -> None:
    options = parse(
        "--iface=ens33",
        "--ip-masq=false",
        FLANNELD_IFACE="eth0,eth1",
        FLANNELD_IP_MASQ="true",
        FLANNELD_PUBLIC_IP="192.0.2.9",
    )
    assert options.iface == ("ens33",)
    assert options.ip_masq is False
    assert options.public_ip == "192.0.2.9"


def test_empty_environment_variable_counts_as_unset() -> None:
    assert parse(FLANNELD_ETCD_PREFIX="").etcd_prefix == "/coreos.com/network"


def test_unrelated_environment_is_ignored() -> None:
    assert parse(FLANNELD_NOT_A_FLAG="x", PATH="/bin") == DaemonOptions()


def test_invalid_environment_value_names_the_variable() -> None:
    with pytest.raises(UsageError, match=r"FLANNELD_HEALTHZ_PORT value '99999'.*0\.\.65535"):
        parse(FLANNELD_HEALTHZ_PORT="99999")


def test_ignored_operator_flags_are_accepted() -> None:
    options = parse(
        "--alsologtostderr",
        "--stderrthreshold=INFO",
        "--log_file",
        "/var/log/flanneld.log",
        "-vmodule=subnet=4",
        "--kube-subnet-mgr=false",
        "--iface=eth0",
    )
    assert options == DaemonOptions(iface=("eth0",))


@pytest.mark.parametrize("argv", [["--kube-subnet-mgr"], ["--kube-subnet-mgr=true"]])
def test_kube_subnet_manager_is_refused(argv: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse(*argv)
    assert str(caught.value) == (
        "--kube-subnet-mgr: the Kubernetes subnet manager is not supported; pyflannel uses etcd"
    )


def test_kube_subnet_manager_from_environment_is_refused() -> None:
    with pytest.raises(UsageError, match="Kubernetes subnet manager is not supported"):
        parse(FLANNELD_KUBE_SUBNET_MGR="true")


def test_unknown_flag() -> None:
    with pytest.raises(UsageError) as caught:
        parse("--iface=eth0", "-foo=1")
    assert str(caught.value) == "unknown flag --foo; run flanneld --help for the list"


@pytest.mark.parametrize("arg", ["---iface=eth0", "-=x", "--=x"])
def test_bad_flag_syntax(arg: str) -> None:
    with pytest.raises(UsageError, match="bad flag syntax"):
        parse(arg)


@pytest.mark.parametrize("argv", [["eth0"], ["--iface=eth0", "extra"], ["--", "x"], ["-"]])
def test_positional_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(UsageError, match="unexpected argument"):
        parse(*argv)


def test_double_dash_alone_ends_the_flags() -> None:
    assert parse("--ip-masq", "--").ip_masq is True


@pytest.mark.parametrize(
    ("arg", "rule"),
    [
        ("--etcd-endpoints=127.0.0.1:2379", "is not an http:// or https:// URL"),
        ("--etcd-endpoints=http://a:2379,,ftp://b", "'ftp://b' is not an http:// or https:// URL"),
        ("--etcd-endpoints=http://a:99999", "has an invalid port"),
        ("--etcd-endpoints=,", "http:// or https:// URLs"),
        ("--etcd-prefix=coreos.com/network", "absolute etcd key path"),
        ("--etcd-timeout=0", "positive number of seconds"),
        ("--etcd-timeout=nan", "positive number of seconds"),
        ("--iface=", "must not be empty"),
        ("--iface-regex=eth[", "valid regular expression"),
        ("--iface-can-reach=example.com", "IPv4 address"),
        ("--public-ip=2001:db8::1", "IPv4 address"),
        ("--ip-masq=yes", "true or false"),
        ("--subnet-lease-renew-margin=0", r"1\.\.1439"),
        ("--subnet-lease-renew-margin=1440", r"1\.\.1439"),
        ("--subnet-lease-renew-margin=1h", r"1\.\.1439"),
        ("--subnet-lease-ttl=9", ">= 10"),
        ("--healthz-ip=localhost", "IP address"),
        ("--healthz-port=-1", r"0\.\.65535"),
        ("--healthz-port=65536", r"0\.\.65535"),
        ("--iptables-resync=0", ">= 1"),
        ("-v=-1", ">= 0"),
        ("--logtostderr=maybe", "true or false"),
    ],
)
def test_bad_values_name_flag_value_and_rule(arg: str, rule: str) -> None:
    flag, _, value = arg.lstrip("-").partition("=")
    with pytest.raises(UsageError, match=rule) as caught:
        parse(arg)
    message = str(caught.value)
    assert f"--{flag}" in message
    assert repr(value) in message
    assert "\n" not in message


def test_limits_are_inclusive() -> None:
    options = parse(
        "--subnet-lease-renew-margin=1439", "--healthz-port=65535", "--subnet-lease-ttl=10"
    )
    assert options.subnet_lease_renew_margin == 1439
    assert options.healthz_port == 65535
    assert options.subnet_lease_ttl == 10
    assert parse("--subnet-lease-renew-margin=1").subnet_lease_renew_margin == 1


def test_prefix_trailing_slash_is_removed() -> None:
    assert parse("--etcd-prefix=/atomic.io/network/").etcd_prefix == "/atomic.io/network"


def test_empty_tls_file_means_unset() -> None:
    assert parse("--etcd-cafile=").etcd_cafile is None
    assert parse("--etcd-cafile=/etc/ssl/ca.pem").etcd_cafile == "/etc/ssl/ca.pem"


@pytest.mark.parametrize("arg", ["-h", "--help", "-help"])
def test_help(arg: str) -> None:
    # help wins even over invalid environment values, so the operator can always read it
    assert parse(arg, FLANNELD_HEALTHZ_PORT="bad") == DaemonOptions(help=True)


def test_help_false_is_not_help() -> None:
    assert parse("--help=false").help is False


def test_usage_lists_every_flag_with_default() -> None:
    text = usage()
    for name in ("--etcd-endpoints", "--iface-regex", "--subnet-lease-renew-margin", "--log_dir"):
        assert name in text
    line = next(line for line in text.splitlines() if line.lstrip().startswith("--etcd-prefix"))
    assert "(default /coreos.com/network)" in line
    line = next(line for line in text.splitlines() if line.lstrip().startswith("--iptables-resync"))
    assert "(default 5)" in line


def test_pyflannel_extension_flags() -> None:
    options = parse("--reconcile-interval=2.5", "--vxlan-disable-tx-checksum")
    assert options.reconcile_interval == 2.5
    assert options.vxlan_disable_tx_checksum is True
    assert parse().reconcile_interval == 10.0
    with pytest.raises(UsageError, match="reconcile-interval"):
        parse("--reconcile-interval=0")
