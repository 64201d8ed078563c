"""The bad-inventory catalogue: every role variable's invalid values stop site.yml first.

Each row of ROWS is one variable, one invalid value and the words its message must carry. The
whole site.yml runs against real hosts: inventory hosts backed by one Debian node container
(pyflannel-node:bookworm-plain, no network, plain `sleep`: a disposable host the later plays
could really change). Every row is a host of its own in one run (its value in its host vars),
so one ansible start checks the whole table; a control host with no bad value passes every
check and is stopped only by the last task. Proof that nothing changed: the run ends inside the
"Inventory check" play (no later play starts), every host reports changed=0, and the files the
roles write are absent from the node and from the controller's inventory directory.

A new variable in roles/*/defaults/main.yml needs a row here (or an entry in ANY_VALUE saying
why no value is invalid): test_every_variable_has_a_row fails otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyflannel_lab.runner_events import run_ansible, runner_report
from tests.ansible.test_etcd_key import REPO, ansible_env

NODE_IMAGE = os.environ.get("PYFLANNEL_PLAIN_NODE_IMAGE", "pyflannel-node:bookworm-plain")
CHECK_PLAY = "Inventory check"
STOP_TASK = "inventory_check : Stop unless every host passed"
RUN_TIMEOUT = 240
# What the roles would write on a host (and the controller's CA directory): all must stay absent.
WRITTEN_ON_NODE = (
    "/etc/etcd",
    "/etc/default/flanneld",
    "/etc/pyflannel",
    "/opt/pyflannel",
    "/opt/pyflannel-wheelhouse",
    "/etc/systemd/system/flanneld.service",
    "/etc/systemd/system/etcd.service",
    "/etc/systemd/system/docker.service.d",
)
MISSING = "/nonexistent/pyflannel-test"


@dataclass(frozen=True)
class Row:
    """One invalid value of one variable and the words its message must have."""

    variable: str
    value: Any
    words: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)  # other host vars the case needs

    @property
    def host(self) -> str:
        return f"{self.variable}-{ROW_INDEX[id(self)]}"


NOT_BOOL = "maybe"
BOOL_WORDS = ("bool", "valid booleans")
INT_WORDS = ("int",)
LIST_WORDS = ("list",)
DICT_WORDS = ("dict",)
STR_WORDS = ("must be a string",)
ABS_WORDS = ("absolute path",)


def bool_row(variable: str) -> Row:
    return Row(variable, NOT_BOOL, BOOL_WORDS)


def int_row(variable: str) -> Row:
    return Row(variable, "soon", INT_WORDS)


def str_row(variable: str) -> Row:
    return Row(variable, ["not", "text"], STR_WORDS)


def abs_row(variable: str) -> Row:
    return Row(variable, "relative/path", ABS_WORDS)


ROWS: list[Row] = [
    # -- etcd -----------------------------------------------------------------------------------
    Row("etcd_install_method", "pip", ("package", "archive")),
    bool_row("etcd_install_packages"),
    Row("etcd_packages", ["Etcd Server"], ("debian package",)),
    Row("etcd_tool_packages", {"iproute2": True}, LIST_WORDS),
    bool_row("etcd_apt_update_cache"),
    Row("etcd_apt_cache_valid_time", -1, (">= 0",)),
    int_row("etcd_apt_cache_valid_time"),
    Row("etcd_version", "v3.4", ("3.4.23",)),
    Row("etcd_archive_arch", "x86_64", ("amd64", "arm64")),
    Row("etcd_archive_url", "gopher://example.org/etcd.tgz", ("https", "http")),
    Row("etcd_archive_src", f"{MISSING}/etcd.tar.gz", ("on the controller", "no such file")),
    Row("etcd_archive_checksum", "deadbeef", ("sha256:<hex>",)),
    abs_row("etcd_archive_install_dir"),
    abs_row("etcd_bin_dir"),
    abs_row("etcd_binary"),
    abs_row("etcd_etcdctl"),
    Row("etcd_user", "Etcd User", ("posix user",)),
    Row("etcd_group", "9etcd", ("posix user or group",)),
    Row("etcd_group_name", "nosuchgroup", ("not a group of the inventory",)),
    Row("etcd_name", "etcd 1", ("no spaces",)),
    Row("etcd_address", "https://198.51.100.10:2379", ("ip address or a host name", "no scheme")),
    Row("etcd_client_port", 70000, ("1..65535",)),
    int_row("etcd_client_port"),
    Row("etcd_peer_port", 0, ("1..65535",)),
    Row("etcd_peer_port", 2379, ("must differ",)),
    Row("etcd_client_scheme", "ftp", ("http", "https")),
    Row("etcd_client_scheme", "http", ("etcd_tls true", "must be https")),
    Row("etcd_peer_scheme", "tcp", ("http", "https")),
    Row("etcd_listen_client_urls", ["198.51.100.10:2379"], ("https://", "port")),
    Row("etcd_listen_client_urls", ["http://198.51.100.10:2379"], ("must be https:// urls",)),
    Row("etcd_advertise_client_urls", ["https://198.51.100.10"], ("with a host and a port",)),
    Row("etcd_listen_peer_urls", ["unix:///run/etcd"], ("http:// or https://",)),
    Row("etcd_initial_advertise_peer_urls", [], ("must not be empty",)),
    abs_row("etcd_data_dir"),
    Row("etcd_initial_cluster_token", "", ("must not be empty",)),
    Row("etcd_extra_env", {"HEARTBEAT_INTERVAL": "200"}, ("etcd_heartbeat_interval",)),
    Row("etcd_extra_env", "ETCD_X", DICT_WORDS),
    abs_row("etcd_env_file"),
    abs_row("etcd_bootstrap_env_file"),
    Row("etcd_unit_file", "/etc/systemd/system/etcd", (".service",)),
    bool_row("etcd_tls"),
    abs_row("etcd_tls_dir"),
    Row("etcd_tls_cert_src", f"{MISSING}/member.crt", ("no such file",)),
    Row("etcd_tls_key_src", "", ("set both", "or neither"), {"etcd_tls_cert_src": "/etc/hostname"}),
    Row("etcd_cert_file", "", ("must be set while etcd_tls is true",)),
    Row("etcd_key_file", "member.key", ABS_WORDS),
    Row("etcd_trusted_ca_file", "", ("must be set while etcd_tls is true",)),
    bool_row("etcd_client_cert_auth"),
    Row(
        "etcd_client_cert_auth",
        True,
        ("needs etcd_trusted_ca_file",),
        {"etcd_tls": False, "etcd_trusted_ca_file": ""},
    ),
    Row("etcd_peer_cert_file", "peer.crt", ABS_WORDS),
    Row("etcd_peer_key_file", "", ("set both",)),
    Row("etcd_peer_trusted_ca_file", "ca.crt", ABS_WORDS),
    bool_row("etcd_peer_client_cert_auth"),
    Row("etcd_etcdctl_cert_file", "admin.crt", ABS_WORDS),
    Row("etcd_etcdctl_key_file", "", ("set both",)),
    abs_row("etcd_etcdctl_env_file"),
    bool_row("etcd_remove_unlisted_members"),
    Row("etcd_health_retries", 0, (">= 1",)),
    Row("etcd_health_delay", -2, (">= 0",)),
    Row("etcd_start_timeout", 0, (">= 1",)),
    # -- etcd_pki -------------------------------------------------------------------------------
    bool_row("etcd_pki_enabled"),
    str_row("etcd_pki_dir"),
    Row(
        "etcd_pki_ca_cert",
        f"{MISSING}/ca.crt",
        ("does not exist on the controller",),
        {"etcd_pki_ca_create": False},
    ),
    str_row("etcd_pki_ca_key"),
    str_row("etcd_pki_ca_key_passphrase"),
    bool_row("etcd_pki_ca_create"),
    Row("etcd_pki_ca_common_name", "x" * 65, ("1 to 64 characters",)),
    Row("etcd_pki_ca_valid_days", 0, (">= 1",)),
    Row("etcd_pki_valid_days", "a year", INT_WORDS),
    Row("etcd_pki_renew_days", -1, (">= 0",)),
    Row("etcd_pki_key_type", "DSA", ("ecc", "rsa")),
    Row("etcd_pki_etcd_group", "members", ("not a group of the inventory",)),
    Row("etcd_pki_flannel_group", "nodes", ("not a group of the inventory",)),
    Row("etcd_pki_member_addresses", ["198.51.100.300"], ("ip address",)),
    Row("etcd_pki_member_names", [""], ("must not be empty",)),
    Row("etcd_pki_member_extra_sans", ["etcd.example.org"], ("dns:<name> or ip:<address>",)),
    Row("etcd_pki_flanneld_common_name", "", ("1 to 64 characters",)),
    Row("etcd_pki_admin_common_name", "y" * 80, ("1 to 64 characters",)),
    abs_row("etcd_pki_node_dir"),
    # -- flannel_network ------------------------------------------------------------------------
    Row("flannel_network_cidr", "10.5.0.0/33", ("network",)),
    Row("flannel_network_cidr", "fd00::/64", ("ipv4",)),
    Row("flannel_network_subnet_len", 33, ("subnetlen",)),
    Row("flannel_network_subnet_len", 8, ("subnetlen",)),
    int_row("flannel_network_subnet_len"),
    Row("flannel_network_subnet_min", "10.6.0.0", ("subnetmin", "not inside network")),
    Row("flannel_network_subnet_max", "not-an-ip", ("subnetmax", "ipv4")),
    Row("flannel_network_backend", "geneve", ("vxlan", "udp", "host-gw", "ipip", "bgp")),
    Row("flannel_network_backend_options", {"VNI": 16777216}, ("vni", "out of range")),
    Row("flannel_network_backend_options", {"Port": 70000}, ("port", "out of range")),
    Row("flannel_network_backend_options", {"Type": "udp"}, ("must not contain type",)),
    Row("flannel_network_backend_options", "VNI", DICT_WORDS),
    Row("flannel_network_etcd_prefix", "coreos.com/network", ("absolute etcd key path",)),
    Row("flannel_network_etcd_endpoints", ["etcd-1:2379"], ("is not an http:// or https:// url",)),
    bool_row("flannel_network_etcd_tls"),
    abs_row("flannel_network_etcd_tls_dir"),
    Row("flannel_network_etcd_ca_cert", "", ("must be set while flannel_network_etcd_tls",)),
    Row("flannel_network_etcd_client_cert", "admin.crt", ABS_WORDS),
    Row("flannel_network_etcd_client_key", "", ("set both",)),
    Row("flannel_network_etcd_username", "root", ("set both",)),
    str_row("flannel_network_etcd_password"),
    Row("flannel_network_etcd_timeout", 0, ("greater than 0",)),
    Row("flannel_network_etcd_timeout", "fast", ("float",)),
    # -- flannel --------------------------------------------------------------------------------
    Row("flannel_version", "latest", ("pep 440",)),
    str_row("flannel_wheelhouse_dir"),
    Row("flannel_wheelhouse_dir", MISSING, ("has no pyflannel-", "make dist")),
    Row("flannel_package_index", "ftp://mirror/simple", ("must be a URL", "https")),
    bool_row("flannel_install_packages"),
    Row("flannel_packages", ["python3 venv"], ("debian package",)),
    bool_row("flannel_apt_update_cache"),
    Row("flannel_apt_cache_valid_time", -5, (">= 0",)),
    abs_row("flannel_node_wheelhouse_dir"),
    abs_row("flannel_venv_dir"),
    abs_row("flannel_node_python"),
    Row(
        "flannel_etcd_endpoints",
        ["ftp://198.51.100.10:2379"],
        ("is not an http:// or https:// url",),
    ),
    Row("flannel_etcd_prefix", "network", ("absolute etcd key path",)),
    bool_row("flannel_etcd_tls"),
    abs_row("flannel_etcd_tls_dir"),
    Row("flannel_etcd_cert_src", f"{MISSING}/flanneld.crt", ("no such file",)),
    Row("flannel_etcd_key_src", "", ("set both",), {"flannel_etcd_cert_src": "/etc/hostname"}),
    Row("flannel_etcd_cafile", "", ("must be set while flannel_etcd_tls",)),
    Row("flannel_etcd_certfile", "", ("must be set while flannel_etcd_tls",)),
    Row("flannel_etcd_keyfile", "flanneld.key", ABS_WORDS),
    Row("flannel_tools_etcd_certfile", "admin.crt", ABS_WORDS),
    Row("flannel_tools_etcd_keyfile", "", ("set both",)),
    Row("flannel_etcd_username", "flannel", ("set both",)),
    str_row("flannel_etcd_password"),
    Row("flannel_iface", ["nosuch0"], ("no such interface", "it has")),
    Row("flannel_iface", [""], ("must not be empty",)),
    Row("flannel_iface_regex", ["eth[0-"], ("regular expression",)),
    Row("flannel_iface_can_reach", "gateway", ("ipv4 address",)),
    Row("flannel_public_ip", "198.51.100.256", ("ipv4 address",)),
    bool_row("flannel_ip_masq"),
    abs_row("flannel_subnet_file"),
    Row("flannel_subnet_lease_renew_margin", 1440, ("1..1439",)),
    Row("flannel_subnet_lease_renew_margin", 0, ("1..1439",)),
    Row("flannel_healthz_ip", "localhost", ("ip address",)),
    Row("flannel_healthz_port", 65536, ("0..65535",)),
    Row("flannel_extra_env", {"FLANNELD_IPTABLES_RESYNC": "0"}, ("iptables_resync", ">= 1")),
    Row("flannel_extra_env", {"IFACE": "eth0"}, ("flanneld_<flag>",)),
    Row("flannel_extra_args", ["--no-such-flag"], ("unknown flag",)),
    Row("flannel_extra_args", ["-v=loud"], ("-v",)),
    bool_row("flannel_manage_ip_forward"),
    abs_row("flannel_ctl_wrapper"),
    abs_row("flannel_ctl_env_file"),
    abs_row("flannel_env_file"),
    Row("flannel_unit_file", "/etc/systemd/system/flanneld", (".service",)),
    Row("flannel_subnet_file_timeout", -1, (">= 1",)),
    Row("flannel_network_config_applied", ["vxlan"], DICT_WORDS),
    abs_row("flannel_network_config_record"),
    bool_row("flannel_health_check"),
    Row("flannel_health_attempts", 0, (">= 1",)),
    Row("flannel_container_networking", "podman", ("docker", "cni", "both")),
    # -- docker ---------------------------------------------------------------------------------
    bool_row("docker_install_packages"),
    Row("docker_packages", ["Docker IO"], ("debian package",)),
    bool_row("docker_keep_existing"),
    Row("docker_tool_packages", [["iproute2"]], ("list of strings",)),
    bool_row("docker_apt_update_cache"),
    Row("docker_apt_cache_valid_time", -1, (">= 0",)),
    Row("docker_flannel_lease", "10.5.1.1/24", DICT_WORDS),
    abs_row("docker_dockerd"),
    Row("docker_dockerd_base_args", {"-H": "fd://"}, LIST_WORDS),
    Row("docker_extra_args", ["--bip=172.17.0.1/16"], ("from the flannel lease",)),
    Row("docker_extra_args", ["--live-restore"], ("live-restore", "docker_live_restore")),
    Row("docker_dropin_file", "/etc/docker/flannel.conf", ("docker.service.d",)),
    abs_row("docker_daemon_json"),
    Row("docker_bridge", "a-bridge-name-too-long", ("1 to 15 characters",)),
    bool_row("docker_check_bridge"),
    Row("docker_ready_timeout", 0, (">= 1",)),
    bool_row("docker_live_restore"),
    bool_row("docker_share_bridge_with_cni"),
    # -- cni ------------------------------------------------------------------------------------
    bool_row("cni_install_packages"),
    Row("cni_packages", ["Containernetworking Plugins"], ("debian package",)),
    bool_row("cni_apt_update_cache"),
    Row("cni_apt_cache_valid_time", -1, (">= 0",)),
    abs_row("cni_plugin_dir"),
    abs_row("cni_flannel_plugin"),
    abs_row("cni_config_dir"),
    Row("cni_conflist_file", "/etc/cni/net.d/10-flannel.conf", (".conflist",)),
    Row("cni_network_name", "-cbr0", ("letters, digits",)),
    Row("cni_version", "0.2.0", ("1.0.0",)),
    abs_row("cni_subnet_file"),
    abs_row("cni_data_dir"),
    Row("cni_delegate", {"ipam": {"type": "dhcp"}}, ("must not set ipam", "from the lease")),
    Row("cni_delegate", ["hairpinMode"], DICT_WORDS),
    bool_row("cni_portmap"),
    bool_row("cni_share_docker_bridge"),
    Row("cni_docker_bridge", "a-bridge-name-too-long", ("1 to 15 characters",)),
    Row("cni_flannel_lease", "10.5.1.1/24", DICT_WORDS),
    # -- bird -----------------------------------------------------------------------------------
    bool_row("bird_install_packages"),
    Row("bird_packages", ["Bird 2"], ("debian package",)),
    bool_row("bird_apt_update_cache"),
    Row("bird_apt_cache_valid_time", -1, (">= 0",)),
    Row("bird_service", "bird service", ("must look like bird",)),
    # -- overlay_verify -------------------------------------------------------------------------
    bool_row("overlay_verify_install_packages"),
    Row("overlay_verify_packages", ["Docker.IO"], ("debian package",)),
    bool_row("overlay_verify_apt_update_cache"),
    Row("overlay_verify_apt_cache_valid_time", "hourly", INT_WORDS),
    Row("overlay_verify_image", "Busybox Latest", ("busybox:latest",)),
    Row("overlay_verify_image_archive", f"{MISSING}/busybox.tar", ("no such file",)),
    abs_row("overlay_verify_node_archive"),
    Row("overlay_verify_container", "-verify", ("docker container name",)),
    Row("overlay_verify_peers", ["no-such-node"], ("not hosts of the inventory",)),
    Row("overlay_verify_group", "nodes", ("not a group of the inventory",)),
    Row("overlay_verify_ping_count", 0, (">= 1",)),
    Row("overlay_verify_ping_interval", 0, ("greater than 0",)),
    Row("overlay_verify_ping_deadline", 0, (">= 1",)),
    Row("overlay_verify_expected_mtu", 40, ("68..65535",)),
    str_row("overlay_verify_report_file"),
    bool_row("overlay_verify_docker"),
    bool_row("overlay_verify_cni"),
    abs_row("overlay_verify_cni_tool"),
    Row("overlay_verify_cni_conflist", "/etc/cni/net.d/cbr0.json", (".conflist",)),
    Row("overlay_verify_cni_path", "/usr/lib/cni:bin", ("absolute path", "'bin'")),
    Row("overlay_verify_cni_pod", "-pod", ("overlay-verify",)),
    Row("overlay_verify_cni_expected_mtu", 40, ("68..65535",)),
    str_row("overlay_verify_cni_report_file"),
]
ROW_INDEX = {id(row): index for index, row in enumerate(ROWS)}

# Variables with no invalid value, and why (none today: every one has a type at least).
ANY_VALUE: dict[str, str] = {}


def role_variables() -> dict[str, str]:
    """Every variable of every roles/*/defaults/main.yml -> its role."""
    found: dict[str, str] = {}
    for defaults in sorted((REPO / "roles").glob("*/defaults/main.yml")):
        for name in yaml.safe_load(defaults.read_text()) or {}:
            found[name] = defaults.parents[1].name
    return found


def removal_only_variables() -> set[str]:
    """Variables that only the roles' removal entry points (remove_node.yml, reset.yml) take.

    site.yml never reads them, so its inventory check has nothing to say of them; each is
    validated by the argument spec of its entry point when those playbooks run.
    """
    main: set[str] = set()
    other: set[str] = set()
    for specs in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        for entry, spec in (yaml.safe_load(specs.read_text())["argument_specs"]).items():
            (main if entry == "main" else other).update(spec.get("options") or {})
    return other - main


def test_every_variable_has_a_row() -> None:
    variables = role_variables()
    with_rows = {row.variable for row in ROWS}
    missing = sorted(set(variables) - with_rows - set(ANY_VALUE) - removal_only_variables())
    assert not missing, f"variables without a row in ROWS (or an ANY_VALUE entry): {missing}"
    unknown = sorted((with_rows | set(ANY_VALUE)) - set(variables))
    assert not unknown, f"rows for variables no role defines: {unknown}"


# -- the real hosts --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheelhouse() -> None:
    """This tree's dist/wheelhouse: the inventory check wants the agent's wheel in it."""
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build-dist.sh"), "wheelhouse"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def node(wheelhouse: None) -> Iterator[str]:
    """A disposable Debian host (no network): what later plays would change if a check slipped."""
    name = f"{os.environ.get('PYFLANNEL_MOLECULE_PREFIX', 'pyflannel')}-badinv-{os.getpid()}"
    started = subprocess.run(
        ["docker", "run", "--pull", "never", "--detach", "--rm", "--network", "none",
         "--name", name, "--entrypoint", "sleep", NODE_IMAGE, "900"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if started.returncode != 0:
        pytest.fail(
            f"the catalogue needs dockerd and the image {NODE_IMAGE} (scripts/ensure-dockerd.sh, "
            f"scripts/build-images.sh): docker run failed: {started.stderr.strip()}"
        )
    try:
        yield name
    finally:
        subprocess.run(
            ["docker", "rm", "--force", name], capture_output=True, timeout=60, check=False
        )


def host_entry(node: str, **host_vars: Any) -> dict[str, Any]:
    return {
        "ansible_host": node,
        "ansible_connection": "community.docker.docker",
        "ansible_python_interpreter": "/usr/bin/python3",
        **host_vars,
    }


@dataclass(frozen=True)
class SiteRun:
    returncode: int
    report: dict[str, Any]
    stderr: str
    seconds: float

    def plays(self) -> list[str]:
        return [play["play"]["name"] for play in self.report["plays"]]

    def first_failure(self, host: str) -> tuple[str, str, str]:
        """(play, task, message) of the host's first failed task."""
        for play in self.report["plays"]:
            for task in play["tasks"]:
                result = task["hosts"].get(host)
                if result and (result.get("failed") or result.get("unreachable")):
                    return play["play"]["name"], task["task"]["name"], str(result.get("msg", ""))
        raise AssertionError(f"{host} failed nowhere")

    def changed(self) -> dict[str, int]:
        return {host: stats["changed"] for host, stats in self.report["stats"].items()}


def run_site(workdir: Path, inventory: dict[str, Any], *extra: str) -> SiteRun:
    """site.yml as an operator runs it, through ansible-runner (its events for the assertions)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "inventory.yml"
    path.write_text(json.dumps(inventory, indent=1))  # JSON is YAML
    env = {k: v for k, v in ansible_env(workdir, None).items() if k.startswith("ANSIBLE_")}
    start = time.monotonic()
    run = run_ansible(
        "ansible-playbook", ["-i", str(path), "--forks", "20", str(REPO / "site.yml"), *extra],
        workdir / "runner", envvars=env, cwd=REPO, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    seconds = time.monotonic() - start
    return SiteRun(run.rc, runner_report(run.events), run.stderr, seconds)


def cluster(hosts: dict[str, dict[str, Any]], etcd: list[str] | None = None) -> dict[str, Any]:
    members = list(hosts) if etcd is None else etcd
    return {
        "all": {
            "children": {
                "etcd": {"hosts": {name: {} for name in members}},
                "flannel": {"hosts": hosts},
            }
        }
    }


def assert_nothing_changed(run: SiteRun, node: str, workdir: Path) -> None:
    assert run.returncode != 0
    assert run.plays() == [CHECK_PLAY], f"plays that started: {run.plays()}"
    assert set(run.changed().values()) == {0}, run.changed()
    present = subprocess.run(
        ["docker", "exec", node, "sh", "-c",
         " ".join(f"[ -e {p} ] && echo {p};" for p in WRITTEN_ON_NODE) + " true"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    assert present == [], f"written on the node: {present}"
    assert not (workdir / "pki").exists(), "the CA directory was created on the controller"


@pytest.fixture(scope="module")
def catalogue_run(node: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteRun, Path]:
    workdir = tmp_path_factory.mktemp("bad-inventory")
    hosts = {"control-1": host_entry(node)}
    for row in ROWS:
        hosts[row.host] = host_entry(node, **row.extra, **{row.variable: row.value})
    if len(hosts) % 2 == 0:  # an odd etcd group: its size is not what this run tests
        hosts["control-2"] = host_entry(node)
    return run_site(workdir, cluster(hosts)), workdir


def test_catalogue_changes_nothing(catalogue_run: tuple[SiteRun, Path], node: str) -> None:
    run, workdir = catalogue_run
    assert_nothing_changed(run, node, workdir)
    # The control host passed every check: only the last task, for the others' sake, stopped it.
    assert run.first_failure("control-1")[1] == STOP_TASK
    print(f"catalogue: {len(ROWS)} rows in one site.yml run, {run.seconds:.1f} s")


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.host)
def test_bad_value_is_named(catalogue_run: tuple[SiteRun, Path], row: Row) -> None:
    play, task, message = catalogue_run[0].first_failure(row.host)
    assert play == CHECK_PLAY
    assert task != STOP_TASK, f"{row.variable}={row.value!r} passed the checks"
    assert message.startswith(row.variable) or f"{row.variable}:" in message, message
    for word in row.words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"


def test_even_etcd_group(node: str, tmp_path: Path) -> None:
    hosts = {name: host_entry(node) for name in ("node-1", "node-2", "node-3")}
    run = run_site(tmp_path, cluster(hosts, etcd=["node-1", "node-2"]))
    assert_nothing_changed(run, node, tmp_path)
    for member in ("node-1", "node-2"):
        play, _, message = run.first_failure(member)
        assert play == CHECK_PLAY
        assert "etcd_group_name" in message and "odd number" in message, message
    assert run.first_failure("node-3")[1] == STOP_TASK


def test_empty_etcd_group_needs_endpoints(node: str, tmp_path: Path) -> None:
    hosts = {name: host_entry(node) for name in ("node-1", "node-2", "node-3")}
    run = run_site(tmp_path, cluster(hosts, etcd=[]))
    assert_nothing_changed(run, node, tmp_path)
    for host in hosts:
        _, _, message = run.first_failure(host)
        assert message.startswith("flannel_network_etcd_endpoints:"), message
        assert "external etcd" in message, message


def test_limit_refuses_an_etcd_membership_change(node: str, tmp_path: Path) -> None:
    """--limit on an etcd host without data (it would join): refused before anything changes."""
    hosts = {name: host_entry(node) for name in ("node-1", "node-2", "node-3")}
    run = run_site(tmp_path, cluster(hosts), "--limit", "node-1")
    assert_nothing_changed(run, node, tmp_path)
    play, _, message = run.first_failure("node-1")
    assert play == CHECK_PLAY
    assert "not an etcd member yet" in message and "without --limit" in message, message


def test_extra_vars_are_checked_too(node: str, tmp_path: Path) -> None:
    hosts = {name: host_entry(node) for name in ("node-1", "node-2", "node-3")}
    run = run_site(tmp_path, cluster(hosts), "-e", "flannel_network_backend=geneve")
    assert_nothing_changed(run, node, tmp_path)
    for host in hosts:
        _, _, message = run.first_failure(host)
        assert message.startswith("flannel_network_backend:") and "vxlan" in message, message


def test_members_sharing_an_etcd_name(node: str, tmp_path: Path) -> None:
    """Two members named alike (one by its host name, one set by hand): both told, the third not."""
    hosts = {
        "node-1": host_entry(node),
        "node-2": host_entry(node, etcd_name="node-1"),
        "node-3": host_entry(node, etcd_name="etcd-3"),
    }
    run = run_site(tmp_path, cluster(hosts))
    assert_nothing_changed(run, node, tmp_path)
    for host, other in (("node-1", "node-2"), ("node-2", "node-1")):
        play, _, message = run.first_failure(host)
        assert play == CHECK_PLAY
        assert message.startswith("etcd_name: 'node-1' is also the name of " + other), message
    assert run.first_failure("node-3")[1] == STOP_TASK


@pytest.mark.parametrize("value", ["0", "150%", "half"])
def test_bad_roll_batch_on_the_command_line(node: str, tmp_path: Path, value: str) -> None:
    hosts = {name: host_entry(node) for name in ("node-1", "node-2", "node-3")}
    run = run_site(tmp_path, cluster(hosts), "-e", f"flannel_roll_batch={value}")
    assert_nothing_changed(run, node, tmp_path)
    _, _, message = run.first_failure("node-1")
    assert message.startswith(f"flannel_roll_batch: '{value}' must be a number of nodes"), message


def test_roll_batch_in_the_inventory_is_refused(node: str, tmp_path: Path) -> None:
    """serial is read before inventory variables: an inventory value would be ignored silently."""
    hosts = {
        name: host_entry(node, flannel_roll_batch=2) for name in ("node-1", "node-2", "node-3")
    }
    run = run_site(tmp_path, cluster(hosts))
    assert_nothing_changed(run, node, tmp_path)
    _, _, message = run.first_failure("node-2")
    assert message.startswith("flannel_roll_batch: 2 is set in the inventory"), message
    assert "-e flannel_roll_batch=2" in message, message
