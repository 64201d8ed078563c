"""flannelctl against a real etcd 3.4: config, leases, reservations, TLS, failures.

Commands run through `ctl.main([...])` (stdout/stderr via capsys) and, where the console
entry matters, as real processes. What landed in etcd is checked with `etcdctl`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pyflannel import __version__, ctl
from pyflannel.config import config_to_json, parse_config
from pyflannel.store import Store
from pyflannel.subnet.lease import LeaseAttrs
from pyflannel.subnet.manager import LeaseSettings, SubnetManager
from tests.etcd_harness import EtcdServer, TlsEtcd, etcdctl

pytestmark = pytest.mark.etcd

StoreFor = Callable[..., Store]

PREFIX = "/coreos.com/network"
CONFIG_KEY = f"{PREFIX}/config"
VXLAN = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'
NODE_A = "198.51.100.1"
NODE_B = "198.51.100.2"
NODE_C = "198.51.100.3"
MAC_A = "c6:d2:32:6f:8f:44"
MAC_B = "ae:11:22:33:44:55"
DAY = 24 * 3600


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """run(*argv, environ={}) -> Result; the environment is empty unless given."""

    def invoke(*argv: str, environ: dict[str, str] | None = None) -> Result:
        capsys.readouterr()  # drop output of earlier steps
        code = ctl.main(list(argv), environ or {})
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def ctl_on(run: Run, etcd_server: EtcdServer) -> Run:
    """Like `run`, against the test's etcd (options after the subcommand, as people type)."""

    def invoke(*argv: str, **kwargs: Any) -> Result:
        return run(*argv, "--etcd-endpoints", etcd_server.client_url, "--timeout", "3", **kwargs)

    return invoke


def assert_error(result: Result, code: int, *fragments: str) -> None:
    """A failure: exit `code`, nothing on stdout, one 'flannelctl: ' line naming `fragments`."""
    assert result.code == code, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("flannelctl: ")
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0]


def etcd_kv(server: EtcdServer | TlsEtcd, key: str) -> dict[str, Any] | None:
    """The key as etcdctl sees it: value (text), lease (int, 0 = none), mod_revision."""
    data = json.loads(etcdctl(server, "get", key, "-w", "json"))
    if not data.get("kvs"):
        return None
    raw = data["kvs"][0]
    return {
        "value": base64.b64decode(raw["value"]).decode(),
        "lease": int(raw.get("lease", 0)),
        "mod_revision": int(raw["mod_revision"]),
    }


def subnet_key(subnet: str) -> str:
    network = IPv4Network(subnet)
    return f"{PREFIX}/subnets/{network.network_address}-{network.prefixlen}"


def vxlan(ip: str, mac: str) -> LeaseAttrs:
    return LeaseAttrs(IPv4Address(ip), "vxlan", {"VNI": 1, "VtepMAC": mac})


@pytest.fixture
def network(etcd_server: EtcdServer, store_for: StoreFor) -> SubnetManager:
    """The vxlan config written and a manager that claims 1-day leases, as flanneld does."""
    etcdctl(etcd_server, "put", CONFIG_KEY, VXLAN)
    return SubnetManager(store_for(etcd_server), PREFIX, LeaseSettings(ttl=DAY))


def claim(manager: SubnetManager, ip: str, mac: str, subnet: str) -> None:
    config = manager.get_config()
    lease = manager.acquire(config, vxlan(ip, mac), previous_subnet=IPv4Network(subnet))
    assert lease.subnet == IPv4Network(subnet)


# -- config ------------------------------------------------------------------------------


def test_config_set_writes_exactly_the_text_and_show_prints_it(
    ctl_on: Run, etcd_server: EtcdServer
) -> None:
    result = ctl_on("config", "set", VXLAN)
    stored = etcd_kv(etcd_server, CONFIG_KEY)
    assert stored is not None and stored["value"] == VXLAN
    assert result.code == 0 and result.err == ""
    assert result.out.strip() == f"wrote {CONFIG_KEY} (revision {stored['mod_revision']})"

    shown = ctl_on("config", "show")
    assert (shown.code, shown.out, shown.err) == (0, VXLAN + "\n", "")


def test_config_show_effective_fills_defaults(ctl_on: Run, etcd_server: EtcdServer) -> None:
    etcdctl(etcd_server, "put", CONFIG_KEY, VXLAN)
    result = ctl_on("config", "show", "--effective")
    assert result.code == 0
    effective = json.loads(result.out)
    assert effective == json.loads(config_to_json(parse_config(VXLAN)))
    assert effective["SubnetLen"] == 24 and effective["SubnetMin"] == "10.5.1.0"
    assert effective["Backend"]["VNI"] == 1 and effective["Backend"]["Type"] == "vxlan"


def test_config_show_warns_about_a_stored_config_agents_refuse(
    ctl_on: Run, etcd_server: EtcdServer
) -> None:
    broken = '{"Network":"10.5.0.0/16","SubnetLen":40}'
    etcdctl(etcd_server, "put", CONFIG_KEY, broken)
    raw = ctl_on("config", "show")
    assert raw.code == 0 and raw.out == broken + "\n"
    assert raw.err.startswith("flannelctl: warning: ") and "SubnetLen" in raw.err
    assert_error(ctl_on("config", "show", "--effective"), 1, "SubnetLen: 40")


def test_config_show_of_a_missing_key_says_how_to_write_it(ctl_on: Run) -> None:
    assert_error(ctl_on("config", "show"), 1, CONFIG_KEY, "not found", "flannelctl config set")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"Network":"10.5.0.0/16","SubnetLen":33}', "SubnetLen"),
        ('{"Network":"10.5.0.0/16","Backend":{"Type":"vxlna"}}', "Backend.Type"),
        ('{"SubnetLen":24}', "Network: missing"),
        ('{"Network":"10.5.0.0/16",', "not valid JSON"),
    ],
)
def test_config_set_refuses_invalid_config_and_writes_nothing(
    ctl_on: Run, etcd_server: EtcdServer, text: str, field: str
) -> None:
    assert_error(ctl_on("config", "set", text), 1, "invalid network config", field, "nothing")
    assert etcd_kv(etcd_server, CONFIG_KEY) is None
    # An existing config is left alone too.
    etcdctl(etcd_server, "put", CONFIG_KEY, VXLAN)
    assert_error(ctl_on("config", "set", text), 1, field)
    stored = etcd_kv(etcd_server, CONFIG_KEY)
    assert stored is not None and stored["value"] == VXLAN


def test_config_set_of_an_equal_config_does_not_write(ctl_on: Run, etcd_server: EtcdServer) -> None:
    etcdctl(etcd_server, "put", CONFIG_KEY, VXLAN)
    before = etcd_kv(etcd_server, CONFIG_KEY)
    reordered = '{ "Backend": {"Type": "vxlan"},\n  "Network": "10.5.0.0/16" }'
    result = ctl_on("config", "set", reordered)
    assert result.code == 0 and "unchanged" in result.out
    assert etcd_kv(etcd_server, CONFIG_KEY) == before

    changed = ctl_on("config", "set", '{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}')
    assert changed.code == 0 and changed.out.startswith("wrote ") and "restart" in changed.out
    after = etcd_kv(etcd_server, CONFIG_KEY)
    assert after is not None and "host-gw" in after["value"]


def test_config_set_reads_stdin_and_files(
    ctl_on: Run, etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(VXLAN + "\n"))
    result = ctl_on("config", "set", "-f", "-")
    assert result.code == 0, result
    stored = etcd_kv(etcd_server, CONFIG_KEY)
    assert stored is not None and stored["value"] == VXLAN  # the trailing newline trimmed

    path = tmp_path / "network.json"
    path.write_text('{"Network":"10.6.0.0/16"}\n')
    assert ctl_on("config", "set", "--file", str(path)).code == 0
    stored = etcd_kv(etcd_server, CONFIG_KEY)
    assert stored is not None and stored["value"] == '{"Network":"10.6.0.0/16"}'

    missing = tmp_path / "absent.json"
    assert_error(ctl_on("config", "set", "-f", str(missing)), 2, str(missing), "cannot read")
    assert_error(ctl_on("config", "set", VXLAN, "-f", str(path)), 2, "not both")
    assert_error(ctl_on("config", "set"), 2, "no config given")


def test_config_set_dry_run_and_unknown_key_warnings(ctl_on: Run, etcd_server: EtcdServer) -> None:
    typo = '{"Network":"10.5.0.0/16","Subnetlen":26}'
    dry = ctl_on("config", "set", typo, "--dry-run")
    assert dry.code == 0 and dry.out.startswith("dry run: config is valid")
    assert "unknown key 'Subnetlen'" in dry.err and dry.err.startswith("flannelctl: warning: ")
    assert etcd_kv(etcd_server, CONFIG_KEY) is None

    real = ctl_on("config", "set", typo, "-o", "json")
    assert real.code == 0 and "unknown key 'Subnetlen'" in real.err
    report = json.loads(real.out)
    assert report["changed"] is True and report["dry_run"] is False
    assert report["warnings"] == ["unknown key 'Subnetlen' in network config is ignored"]
    stored = etcd_kv(etcd_server, CONFIG_KEY)
    assert stored is not None and stored["value"] == typo
    assert report["revision"] == stored["mod_revision"]


def test_config_validate_needs_no_etcd(run: Run) -> None:
    # The endpoint is unreachable on purpose: validate must not contact it.
    ok = run("config", "validate", VXLAN, "-o", "json", "--etcd-endpoints", "http://127.0.0.1:9")
    assert ok.code == 0 and ok.err == ""
    assert json.loads(ok.out)["effective"]["Backend"]["VNI"] == 1
    assert_error(run("config", "validate", '{"Network":"10.5.0.0"}'), 1, "Network", "prefix")


# -- leases ------------------------------------------------------------------------------


def _table(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_leases_list_text_sorted_by_subnet_with_expiry_and_vtep(
    ctl_on: Run, network: SubnetManager
) -> None:
    claim(network, NODE_A, MAC_A, "10.5.10.0/24")
    claim(network, NODE_B, MAC_B, "10.5.9.0/24")
    config = network.get_config()
    network.reserve(config, IPv4Network("10.5.100.0/24"), IPv4Address(NODE_C))

    result = ctl_on("leases", "list")
    assert result.code == 0 and result.err == ""
    rows = _table(result.out)
    assert rows[0] == ["SUBNET", "PUBLIC-IP", "BACKEND", "EXPIRES", "VTEP-MAC"]
    # Numeric order (a string sort would put 10.5.100.0 before 10.5.9.0).
    assert [row[0] for row in rows[1:]] == ["10.5.9.0/24", "10.5.10.0/24", "10.5.100.0/24"]
    assert rows[1][1:3] == [NODE_B, "vxlan"] and rows[1][4] == MAC_B
    assert rows[2][1:3] == [NODE_A, "vxlan"] and rows[2][4] == MAC_A
    for row in rows[1:3]:
        assert re.fullmatch(r"24h0m|23h59m", row[3]), row
    assert rows[3] == ["10.5.100.0/24", NODE_C, "vxlan", "reserved", "-"]
    # Columns line up: every cell starts where its header starts.
    lines = result.out.splitlines()
    starts = [lines[0].index(name) for name in ("PUBLIC-IP", "BACKEND", "EXPIRES", "VTEP-MAC")]
    for line in lines[1:]:
        assert all(line[start - 2 : start] == "  " and line[start] != " " for start in starts)


def test_leases_list_json(ctl_on: Run, network: SubnetManager) -> None:
    claim(network, NODE_A, MAC_A, "10.5.10.0/24")
    config = network.get_config()
    network.reserve(config, IPv4Network("10.5.3.0/24"), IPv4Address(NODE_C))

    result = ctl_on("leases", "list", "-o", "json")
    assert result.code == 0 and result.err == ""
    reservation, lease = json.loads(result.out)
    assert reservation == {
        "subnet": "10.5.3.0/24",
        "public_ip": NODE_C,
        "backend": "vxlan",
        "expires_in": None,
        "reserved": True,
        "backend_data": None,
    }
    expires_in = lease.pop("expires_in")
    assert isinstance(expires_in, int) and DAY - 60 < expires_in <= DAY
    assert lease == {
        "subnet": "10.5.10.0/24",
        "public_ip": NODE_A,
        "backend": "vxlan",
        "reserved": False,
        "backend_data": {"VNI": 1, "VtepMAC": MAC_A},
    }


def test_leases_list_empty(ctl_on: Run, network: SubnetManager) -> None:
    text = ctl_on("leases", "list")
    assert text.code == 0 and text.out.strip() == f"no subnet leases under {PREFIX}/subnets/"
    as_json = ctl_on("leases", "list", "-o", "json")
    assert as_json.code == 0 and json.loads(as_json.out) == []


def test_leases_reserve_creates_then_is_idempotent(
    ctl_on: Run, etcd_server: EtcdServer, network: SubnetManager
) -> None:
    first = ctl_on("leases", "reserve", "10.5.3.0/24", NODE_C)
    assert first.code == 0 and first.out.strip() == f"reserved 10.5.3.0/24 for {NODE_C}"
    stored = etcd_kv(etcd_server, subnet_key("10.5.3.0/24"))
    assert stored is not None and stored["lease"] == 0
    assert json.loads(stored["value"])["PublicIP"] == NODE_C

    again = ctl_on("leases", "reserve", "10.5.3.0-24", NODE_C, "-o", "json")
    assert again.code == 0
    report = json.loads(again.out)
    assert report["changed"] is False and report["reserved"] is True
    assert etcd_kv(etcd_server, subnet_key("10.5.3.0/24")) == stored


def test_leases_reserve_turns_the_nodes_own_lease_into_a_reservation(
    ctl_on: Run, etcd_server: EtcdServer, network: SubnetManager
) -> None:
    claim(network, NODE_A, MAC_A, "10.5.7.0/24")
    before = etcd_kv(etcd_server, subnet_key("10.5.7.0/24"))
    assert before is not None and before["lease"] != 0

    result = ctl_on("leases", "reserve", "10.5.7.0/24", NODE_A)
    assert result.code == 0 and "became a reservation" in result.out
    after = etcd_kv(etcd_server, subnet_key("10.5.7.0/24"))
    assert after is not None and after["lease"] == 0 and after["value"] == before["value"]


def test_leases_reserve_errors(ctl_on: Run, etcd_server: EtcdServer, store_for: StoreFor) -> None:
    assert_error(ctl_on("leases", "reserve", "10.5.3.0/24", NODE_A), 1, "config", "not found")
    etcdctl(etcd_server, "put", CONFIG_KEY, VXLAN)
    manager = SubnetManager(store_for(etcd_server), PREFIX, LeaseSettings(ttl=DAY))
    claim(manager, NODE_A, MAC_A, "10.5.7.0/24")
    held = etcd_kv(etcd_server, subnet_key("10.5.7.0/24"))

    assert_error(
        ctl_on("leases", "reserve", "10.5.7.0/24", NODE_B), 1, "held by " + NODE_A, "release"
    )
    assert etcd_kv(etcd_server, subnet_key("10.5.7.0/24")) == held
    assert_error(ctl_on("leases", "reserve", "10.6.0.0/24", NODE_B), 1, "not a /24 inside Network")
    assert_error(ctl_on("leases", "reserve", "10.5.7.0/25", NODE_B), 1, "not a /24")
    assert_error(ctl_on("leases", "reserve", "10.5.7.1/24", NODE_B), 2, "host bits", "10.5.7.0/24")
    assert_error(ctl_on("leases", "reserve", "10.5.7.0", NODE_B), 2, "no prefix length")
    assert_error(ctl_on("leases", "reserve", "10.5.8.0/24", "node-b"), 2, "PUBLIC_IP", "IPv4")
    assert_error(ctl_on("leases", "reserve", "10.5.8.0/24"), 2, "PUBLIC_IP")
    assert etcdctl(etcd_server, "get", f"{PREFIX}/subnets/", "--prefix", "--keys-only").split() == [
        subnet_key("10.5.7.0/24")
    ]


def test_leases_release_lease_and_reservation(
    ctl_on: Run, etcd_server: EtcdServer, network: SubnetManager
) -> None:
    claim(network, NODE_A, MAC_A, "10.5.7.0/24")
    claimed = etcd_kv(etcd_server, subnet_key("10.5.7.0/24"))
    assert claimed is not None
    network.reserve(network.get_config(), IPv4Network("10.5.3.0/24"), IPv4Address(NODE_C))

    wrong = ctl_on("leases", "release", "10.5.7.0/24", "--public-ip", NODE_B)
    assert_error(wrong, 1, "held by " + NODE_A, "not " + NODE_B)
    assert etcd_kv(etcd_server, subnet_key("10.5.7.0/24")) is not None

    released = ctl_on("leases", "release", "10.5.7.0/24", "--public-ip", NODE_A)
    assert released.code == 0 and released.out.startswith(
        f"released 10.5.7.0/24 (lease of {NODE_A}"
    )
    assert etcd_kv(etcd_server, subnet_key("10.5.7.0/24")) is None
    # The etcd lease is revoked with it, not left to run out.
    ttl = etcdctl(etcd_server, "lease", "timetolive", format(claimed["lease"], "x"))
    assert "already expired" in ttl or "not found" in ttl

    reservation = ctl_on("leases", "release", "10.5.3.0-24", "-o", "json")
    assert reservation.code == 0
    assert json.loads(reservation.out) == {
        "subnet": "10.5.3.0/24",
        "released": True,
        "public_ip": NODE_C,
        "reserved": True,
    }
    assert etcd_kv(etcd_server, subnet_key("10.5.3.0/24")) is None

    assert_error(ctl_on("leases", "release", "10.5.3.0/24"), 1, "no lease or reservation")
    quiet = ctl_on("leases", "release", "10.5.3.0/24", "--ignore-missing")
    assert quiet.code == 0 and quiet.out.startswith("unchanged")


# -- options, environment, TLS, failures -------------------------------------------------


def test_options_before_the_subcommand_env_and_prefix(
    run: Run, etcd_server: EtcdServer, store_for: StoreFor
) -> None:
    url = etcd_server.client_url
    result = run("--etcd-endpoints", url, "--etcd-prefix", "/test/net/", "config", "set", VXLAN)
    assert result.code == 0, result
    stored = etcd_kv(etcd_server, "/test/net/config")
    assert stored is not None and stored["value"] == VXLAN
    assert etcd_kv(etcd_server, CONFIG_KEY) is None

    # flanneld's environment variables, as in its env file; a flag wins over them.
    env = {"FLANNELD_ETCD_ENDPOINTS": url, "FLANNELD_ETCD_PREFIX": "/test/net"}
    assert run("config", "show", environ=env).out == VXLAN + "\n"
    dead = {**env, "FLANNELD_ETCD_ENDPOINTS": "http://127.0.0.1:9"}
    assert run("config", "show", "--etcd-endpoints", url, environ=dead).out == VXLAN + "\n"

    bad = {"FLANNELD_ETCD_ENDPOINTS": "127.0.0.1:2379"}
    assert_error(run("leases", "list", environ=bad), 2, "FLANNELD_ETCD_ENDPOINTS", "http://")
    assert_error(run("leases", "list", "--etcd-prefix", "coreos"), 2, "--etcd-prefix")
    assert_error(run("leases", "list", "--timeout", "0"), 2, "--etcd-timeout", "positive")


def test_usage_errors_are_one_line_exit_2(run: Run) -> None:
    assert_error(run(), 2, "required")
    assert_error(run("leases"), 2, "required", "flannelctl leases --help")
    assert_error(run("leases", "frobnicate"), 2, "invalid choice")
    assert_error(run("leases", "list", "--no-such-flag"), 2, "--no-such-flag")
    assert_error(run("version", "-o", "yaml"), 2, "yaml")


def test_help_exits_0_and_describes_the_command(run: Run) -> None:
    result = run("leases", "reserve", "--help")
    assert result.code == 0 and result.err == ""
    assert "PUBLIC_IP" in result.out and "FLANNELD_ETCD_ENDPOINTS" in result.out
    assert "flannelctl leases reserve 10.5.3.0/24 192.0.2.10" in result.out


def test_junk_keys_are_warned_about_in_one_line_and_logging_is_restored(
    ctl_on: Run, etcd_server: EtcdServer, network: SubnetManager
) -> None:
    claim(network, NODE_A, MAC_A, "10.5.10.0/24")
    etcdctl(etcd_server, "put", f"{PREFIX}/subnets/garbage", "x")
    logger = logging.getLogger("pyflannel")
    before = (list(logger.handlers), logger.level, logger.propagate)
    result = ctl_on("leases", "list", "-o", "json")
    assert result.code == 0
    assert [lease["subnet"] for lease in json.loads(result.out)] == ["10.5.10.0/24"]
    assert result.err.splitlines() == [
        f"flannelctl: warning: ignoring key {PREFIX}/subnets/garbage: not a subnet lease key"
    ]
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_version(run: Run) -> None:
    assert run("version").out.strip() == f"flannelctl (pyflannel) {__version__}"
    assert json.loads(run("version", "-o", "json").out) == {"version": __version__}


def test_tls_options_and_environment(run: Run, etcd_tls: TlsEtcd) -> None:
    tls = etcd_tls.tls
    flags = [
        "--etcd-endpoints",
        etcd_tls.client_url,
        "--etcd-cafile",
        tls.ca,
        "--etcd-certfile",
        tls.client_cert,
        "--etcd-keyfile",
        tls.client_key,
        "--timeout",
        "3",
    ]
    assert run("config", "set", VXLAN, *flags).code == 0
    stored = etcd_kv(etcd_tls, CONFIG_KEY)
    assert stored is not None and stored["value"] == VXLAN

    env = {
        "FLANNELD_ETCD_ENDPOINTS": etcd_tls.client_url,
        "FLANNELD_ETCD_CAFILE": tls.ca,
        "FLANNELD_ETCD_CERTFILE": tls.client_cert,
        "FLANNELD_ETCD_KEYFILE": tls.client_key,
    }
    assert run("leases", "reserve", "10.5.3.0/24", NODE_C, environ=env).code == 0
    listed = run("leases", "list", "-o", "json", environ=env)
    assert listed.code == 0 and json.loads(listed.out)[0]["subnet"] == "10.5.3.0/24"

    # A CA that did not sign the server's certificate: refused, one line, exit 1.
    untrusted = {**env, "FLANNELD_ETCD_CAFILE": tls.other_ca, "FLANNELD_ETCD_TIMEOUT": "2"}
    assert_error(run("leases", "list", environ=untrusted), 1, etcd_tls.client_url)
    no_key = {k: v for k, v in env.items() if k != "FLANNELD_ETCD_KEYFILE"}
    assert_error(run("leases", "list", environ=no_key), 2, "--etcd-certfile", "--etcd-keyfile")


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port on loopback that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["silent", "refused"])
def test_unreachable_etcd_fails_in_one_line_within_the_timeout(
    run: Run, silent_endpoint: str, kind: str
) -> None:
    url = silent_endpoint if kind == "silent" else "http://127.0.0.1:9"
    started = time.monotonic()
    result = run("leases", "list", "--etcd-endpoints", url, "--timeout", "1")
    elapsed = time.monotonic() - started
    assert_error(result, 1, "no endpoint reachable", url)
    assert elapsed < 4.0


# -- real processes ----------------------------------------------------------------------


def _process(command: list[str], env: dict[str, str], stdin: str = "") -> Result:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLANNELD_")}
    done = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_python_m_config_set_from_stdin_and_invalid(etcd_server: EtcdServer) -> None:
    env = {"FLANNELD_ETCD_ENDPOINTS": etcd_server.client_url}
    module = [sys.executable, "-m", "pyflannel.ctl"]
    done = _process([*module, "config", "set", "-f", "-"], env, stdin=VXLAN)
    assert done.code == 0 and done.out.startswith(f"wrote {CONFIG_KEY}"), done
    stored = etcd_kv(etcd_server, CONFIG_KEY)
    assert stored is not None and stored["value"] == VXLAN

    bad = _process([*module, "config", "set", '{"Network":"10.5.0.0/16","SubnetLen":31}'], env)
    assert_error(bad, 1, "SubnetLen: 31")
    assert etcd_kv(etcd_server, CONFIG_KEY) == stored


def test_console_script_lists_leases(etcd_server: EtcdServer, network: SubnetManager) -> None:
    claim(network, NODE_A, MAC_A, "10.5.10.0/24")
    script = str(Path(sys.executable).parent / "flannelctl")
    env = {"FLANNELD_ETCD_ENDPOINTS": etcd_server.client_url}
    done = _process([script, "leases", "list"], env)
    assert done.code == 0 and done.err == "", done
    assert _table(done.out)[1][:2] == ["10.5.10.0/24", NODE_A]
    usage = _process([script, "leases", "reserve", "10.5.3.0/24"], env)
    assert_error(usage, 2, "PUBLIC_IP")
