"""The flannel filters: unit tests of each function, then one playbook that uses them."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from tests.ansible.test_etcd_key import REPO, run_playbook

PLUGIN = REPO / "plugins" / "filter" / "flannel.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flannel_filters_under_test", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


flannel = _load()


# -- flannel_backend_mtu ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "underlay", "vxlan_mtu", "expected"),
    [
        ("udp", 1500, 0, 1472),
        ("vxlan", 1500, 0, 1450),
        ("vxlan", 9000, 0, 8950),
        ("vxlan", 1500, 9000, 8950),  # the backend's MTU option replaces the underlay MTU
        ("vxlan", "1500", "0", 1450),  # inventory strings are fine
        ("host-gw", 1500, 0, 1500),
        ("host-gw", 1500, 9000, 1500),  # vxlan_mtu means nothing to other backends
        ("ipip", 1500, 0, 1480),
    ],
)
def test_backend_mtu(backend: str, underlay: Any, vxlan_mtu: Any, expected: int) -> None:
    assert flannel.flannel_backend_mtu(backend, underlay, vxlan_mtu) == expected


def test_backend_mtu_uses_the_backends_own_overhead() -> None:
    from pyflannel.backend import backend_class

    for backend in ("udp", "vxlan", "host-gw", "ipip"):
        overhead = backend_class(backend).overhead
        assert flannel.flannel_backend_mtu(backend, 2000) == 2000 - overhead


def test_backend_mtu_unknown_type_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match=r"backend type 'wireguard' is unknown; use one"):
        flannel.flannel_backend_mtu("wireguard", 1500)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("vxlan", "jumbo"), r"underlay_mtu: must be a whole number, got 'jumbo'"),
        (("udp", 90), r"underlay MTU 90 leaves 62 for udp \(overhead 28\), below the IPv4"),
    ],
)
def test_backend_mtu_bad_numbers(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        flannel.flannel_backend_mtu(*args)


# -- flannel_gateway, flannel_lease_key -----------------------------------------------------


@pytest.mark.parametrize(
    ("subnet", "gateway"),
    [
        ("10.5.1.0/24", "10.5.1.1/24"),
        ("10.5.1.1/24", "10.5.1.1/24"),  # FLANNEL_SUBNET form is accepted as well
        ("10.244.8.0/22", "10.244.8.1/22"),
        ("172.16.0.64/26", "172.16.0.65/26"),
    ],
)
def test_gateway(subnet: str, gateway: str) -> None:
    assert flannel.flannel_gateway(subnet) == gateway


@pytest.mark.parametrize("subnet", ["10.5.1.0", "not-a-subnet", "10.5.1.0/33"])
def test_gateway_rejects_non_subnets(subnet: str) -> None:
    with pytest.raises(AnsibleFilterError, match=r"flannel_gateway: .* is not an IPv4 subnet"):
        flannel.flannel_gateway(subnet)


def test_lease_key() -> None:
    assert flannel.flannel_lease_key("10.5.52.0/24") == "/coreos.com/network/subnets/10.5.52.0-24"
    assert (
        flannel.flannel_lease_key("10.5.52.1/24", "/docker-subnet/network/")
        == "/docker-subnet/network/subnets/10.5.52.0-24"
    )
    with pytest.raises(AnsibleFilterError, match="flannel_lease_key"):
        flannel.flannel_lease_key("10.5.52.0")


# -- flannel_docker_opts ------------------------------------------------------------------


def test_docker_opts_negates_ipmasq() -> None:
    env = {
        "FLANNEL_NETWORK": "10.5.0.0/16",
        "FLANNEL_SUBNET": "10.5.52.1/24",
        "FLANNEL_MTU": "1450",
        "FLANNEL_IPMASQ": "false",
    }
    assert flannel.flannel_docker_opts(env) == {"bip": "10.5.52.1/24", "mtu": 1450, "ip_masq": True}
    env["FLANNEL_IPMASQ"] = "true"
    assert flannel.flannel_docker_opts(env)["ip_masq"] is False


def test_docker_opts_accepts_yaml_typed_values() -> None:
    env = {"FLANNEL_SUBNET": "10.5.52.1/24", "FLANNEL_MTU": 1472, "FLANNEL_IPMASQ": True}
    assert flannel.flannel_docker_opts(env) == {
        "bip": "10.5.52.1/24",
        "mtu": 1472,
        "ip_masq": False,
    }
    env["FLANNEL_IPMASQ"] = "False"  # a bool that went through a template as text
    assert flannel.flannel_docker_opts(env)["ip_masq"] is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "false"}, "FLANNEL_SUBNET is missing"),
        (
            {"FLANNEL_SUBNET": "10.5.52.1", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "false"},
            "FLANNEL_SUBNET='10.5.52.1' is invalid: must be in CIDR form",
        ),
        (
            {"FLANNEL_SUBNET": "10.5.52.1/24", "FLANNEL_MTU": "big", "FLANNEL_IPMASQ": "false"},
            "FLANNEL_MTU='big' is invalid",
        ),
        (
            {"FLANNEL_SUBNET": "10.5.52.1/24", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "yes"},
            "FLANNEL_IPMASQ='yes' is invalid: must be true or false",
        ),
    ],
)
def test_docker_opts_bad_env(env: dict[str, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError) as caught:
        flannel.flannel_docker_opts(env)
    assert message in str(caught.value)


def test_docker_opts_from_the_lease_facts() -> None:
    lease = {"subnet": "10.5.52.0/24", "gateway": "10.5.52.1/24", "mtu": 1450, "ipmasq": True}
    assert flannel.flannel_lease_docker_opts(lease) == {
        "bip": "10.5.52.1/24", "mtu": 1450, "ip_masq": False,
    }  # fmt: skip
    assert flannel.flannel_lease_docker_opts({**lease, "ipmasq": "False"})["ip_masq"] is True
    with pytest.raises(AnsibleFilterError, match="flannel_lease_docker_opts: mtu='big' is invalid"):
        flannel.flannel_lease_docker_opts({**lease, "mtu": "big"})
    with pytest.raises(AnsibleFilterError, match="gateway is missing"):
        flannel.flannel_lease_docker_opts({"mtu": 1450, "ipmasq": False})


# -- flannel_network_config ---------------------------------------------------------------


def test_shared_pools_from_the_lease_facts() -> None:
    lease = {"gateway": "10.5.3.1/24", "mtu": 1450, "ipmasq": False}
    assert flannel.flannel_lease_shared_pools(lease) == {
        "docker_fixed_cidr": "10.5.3.0/25",
        "cni_range_start": "10.5.3.128",
        "cni_range_end": "10.5.3.254",
    }
    with pytest.raises(AnsibleFilterError, match=r"'10.5.3.1/30': lease 10.5.3.0/30 is too small"):
        flannel.flannel_lease_shared_pools({"gateway": "10.5.3.1/30"})
    with pytest.raises(AnsibleFilterError, match="expects the lease facts with a gateway"):
        flannel.flannel_lease_shared_pools({})


def test_network_config_minimal_sets_only_given_keys() -> None:
    assert flannel.flannel_network_config("10.5.0.0/16") == {
        "Network": "10.5.0.0/16",
        "Backend": {"Type": "vxlan"},
    }


def test_network_config_full() -> None:
    config = flannel.flannel_network_config(
        "10.244.0.0/16", 26, "10.244.1.0", "10.244.200.0", "vxlan", {"VNI": 4, "Port": 4789}
    )
    assert config == {
        "Network": "10.244.0.0/16",
        "SubnetLen": 26,
        "SubnetMin": "10.244.1.0",
        "SubnetMax": "10.244.200.0",
        "Backend": {"Type": "vxlan", "VNI": 4, "Port": 4789},
    }
    assert flannel.flannel_network_config("10.5.0.0/16", "24")["SubnetLen"] == 24


@pytest.mark.parametrize(
    ("kwargs", "variable", "detail"),
    [
        ({"network": "10.5.0.0"}, "flannel_network_cidr", "Network: '10.5.0.0' has no prefix"),
        ({"network": "10.5.0.0/30"}, "flannel_network_cidr", "too small"),
        ({"subnet_len": 33}, "flannel_network_subnet_len", "SubnetLen: 33 is too long"),
        ({"subnet_len": 17}, "flannel_network_subnet_len", "must be at least 18"),
        ({"subnet_min": "10.6.1.0"}, "flannel_network_subnet_min", "not inside Network"),
        ({"subnet_max": "10.5.1.7"}, "flannel_network_subnet_max", "not on a /24 boundary"),
        (
            {"subnet_min": "10.5.9.0", "subnet_max": "10.5.2.0"},
            "flannel_network_subnet_min",
            "greater than SubnetMax",
        ),
        ({"backend_type": "vxLan"}, "flannel_network_backend", "did you mean 'vxlan'?"),
        (
            {"backend_options": {"VNI": "one"}},
            "flannel_network_backend_options",
            "Backend.VNI: must be an integer",
        ),
        (
            {"backend_options": {"Port": 70000}},
            "flannel_network_backend_options",
            "Backend.Port: 70000 is out of range",
        ),
        (
            {"backend_options": {"Type": "udp"}},
            "flannel_network_backend_options",
            "must not contain Type",
        ),
    ],
)
def test_network_config_errors_name_the_inventory_variable(
    kwargs: dict[str, Any], variable: str, detail: str
) -> None:
    arguments = {"network": "10.5.0.0/16", **kwargs}
    with pytest.raises(AnsibleFilterError) as caught:
        flannel.flannel_network_config(**arguments)
    message = str(caught.value)
    assert message.startswith(f"{variable}: "), message
    assert detail in message, message
    assert "\n" not in message


def test_network_config_uses_the_agents_validation() -> None:
    from pyflannel.config import config_from_dict
    from pyflannel.errors import ConfigError

    # Whatever the agent rejects, the filter rejects with the same text.
    bad = {"Network": "10.5.0.0/16", "SubnetLen": 29, "SubnetMin": "10.5.0.12"}
    with pytest.raises(ConfigError) as agent:
        config_from_dict({**bad, "Backend": {"Type": "vxlan"}})
    with pytest.raises(AnsibleFilterError) as filt:
        flannel.flannel_network_config("10.5.0.0/16", 29, "10.5.0.12")
    assert str(filt.value).endswith(str(agent.value))


# -- docker_daemon_settings ---------------------------------------------------------------

DAEMON_JSON = "/etc/docker/daemon.json"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"log-driver": "journald", "live-restore": true}',
         {"log-driver": "journald", "live-restore": True}),
        ("", {}),
        ("  \n", {}),
    ],
)  # fmt: skip
def test_daemon_settings(text: str, expected: dict[str, Any]) -> None:
    assert flannel.docker_daemon_settings(_b64(text), DAEMON_JSON) == expected


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (_b64('{"log-driver": "journald",\n "mtu" 1450}'),
         ("not valid JSON", "Expecting ':' delimiter at line 2 column 8")),
        (_b64('["live-restore"]'), ("JSON object", "not a list")),
        (base64.b64encode(b"\xff\xfe").decode(), ("UTF-8",)),
    ],
)  # fmt: skip
def test_daemon_settings_broken_file_is_one_line(content: str, words: tuple[str, ...]) -> None:
    with pytest.raises(AnsibleFilterError) as caught:
        flannel.docker_daemon_settings(content, DAEMON_JSON)
    message = str(caught.value)
    assert message.startswith(DAEMON_JSON + ": ") and "\n" not in message, message
    for word in words:
        assert word in message, message


def test_filter_module_lists_every_filter() -> None:
    names = set(flannel.FilterModule().filters())
    assert names == {
        "flannel_backend_mtu",
        "flannel_gateway",
        "flannel_docker_opts",
        "flannel_lease_docker_opts",
        "flannel_lease_shared_pools",
        "flannel_lease_key",
        "flannel_network_config",
        "docker_daemon_settings",
    }


# -- in a playbook ------------------------------------------------------------------------


def test_filters_in_a_playbook(tmp_path: Path) -> None:
    subnet_env = {"FLANNEL_SUBNET": "10.5.52.1/24", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "true"}
    play_vars = {
        "flannel_network_cidr": "10.5.0.0/16",
        "flannel_network_subnet_len": 24,
        "flannel_network_backend": "vxlan",
        "flannel_network_backend_options": {"VNI": 1},
        "subnet_env": subnet_env,
    }
    tasks: list[dict[str, Any]] = [
        {
            "name": "config",
            "ansible.builtin.debug": {
                "msg": "{{ flannel_network_cidr | pyflannel.overlay.flannel_network_config("
                "flannel_network_subnet_len, '', '', flannel_network_backend, "
                "flannel_network_backend_options) | to_json }}"
            },
        },
        {
            "name": "arithmetic",
            "ansible.builtin.assert": {
                "that": [
                    "'vxlan' | pyflannel.overlay.flannel_backend_mtu(1500) == 1450",
                    "'udp' | pyflannel.overlay.flannel_backend_mtu(9000) == 8972",
                    "'vxlan' | pyflannel.overlay.flannel_backend_mtu(1500, 9000) == 8950",
                    "'10.5.52.0/24' | pyflannel.overlay.flannel_gateway == '10.5.52.1/24'",
                    "'10.5.52.0/24' | pyflannel.overlay.flannel_lease_key('/atomic.io/network')"
                    " == '/atomic.io/network/subnets/10.5.52.0-24'",
                    "(subnet_env | pyflannel.overlay.flannel_docker_opts).bip == '10.5.52.1/24'",
                    "(subnet_env | pyflannel.overlay.flannel_docker_opts).mtu == 1450",
                    "(subnet_env | pyflannel.overlay.flannel_docker_opts).ip_masq is false",
                ]
            },
        },
        {
            "name": "a typo in an option is warned about",
            "ansible.builtin.debug": {
                "msg": "{{ flannel_network_cidr | pyflannel.overlay.flannel_network_config("
                "0, '', '', 'vxlan', {'VNl': 2}) }}"
            },
        },
        {
            "name": "a bad config fails naming the variable",
            "ansible.builtin.debug": {
                "msg": "{{ flannel_network_cidr | pyflannel.overlay.flannel_network_config(33) }}",
            },
            "ignore_errors": True,
        },
    ]
    run = run_playbook(tmp_path, tasks, play_vars=play_vars)
    assert run.returncode == 0, run.stdout + run.stderr
    config, arithmetic, typo, bad = run.results
    assert json.loads(config["msg"]) == {
        "Network": "10.5.0.0/16",
        "SubnetLen": 24,
        "Backend": {"Type": "vxlan", "VNI": 1},
    }
    assert arithmetic.get("failed") is not True, arithmetic
    assert typo["msg"]["Backend"] == {"Type": "vxlan", "VNl": 2}
    assert typo["warnings"] == [
        "flannel_network_config: unknown key 'Backend.VNl' for backend vxlan is ignored"
    ]
    assert bad["failed"] is True
    assert "flannel_network_subnet_len: SubnetLen: 33 is too long" in bad["msg"]


def test_a_controller_without_pyflannel_is_told_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broken install, for real: a pyflannel package that cannot be imported comes first.
    broken = tmp_path / "site" / "pyflannel"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('broken pyflannel install')\n")
    monkeypatch.setenv("PYTHONPATH", str(broken.parent))
    run = run_playbook(
        tmp_path / "play",
        [{"name": "gateway", "ansible.builtin.debug": {
            "msg": "{{ '10.5.52.0/24' | pyflannel.overlay.flannel_gateway }}"}}],
    )  # fmt: skip
    assert run.returncode != 0
    message = str(run.last["msg"])
    assert "cannot import the pyflannel package on the controller" in message, message
    assert "broken pyflannel install" in message and "make dist" in message
