"""Every way TLS to etcd goes wrong, told in one line by the store, flannelctl and flanneld.

Real etcd 3.4 servers (tests/etcd_harness.TlsLab): one with client-cert-auth, one plain, one
serving a certificate of another CA, one whose certificate lacks 127.0.0.1. Each case checks
the key words of the message (which side refused what, the file, the flag, what to do), that
it is one line, and the exit code: 2 for our own bad files, 1 for a refusal.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from pyflannel import ctl
from pyflannel.daemon import Agent
from pyflannel.flags import parse_flags
from pyflannel.store import EtcdOptions, Store, StoreTlsError, StoreTlsFileError
from pyflannel.subnet.manager import SubnetManager
from tests.etcd_harness import TlsCase, TlsLab, free_ports, issue_cert

pytestmark = pytest.mark.etcd

REPO = Path(__file__).resolve().parents[2]
FLAGS = ("--etcd-cafile", "--etcd-certfile", "--etcd-keyfile", "--etcd-endpoints")
# A refusal is seen within one handshake; nothing here may wait for a timeout.
FAST = 3.0
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWE] ")


def _case_names() -> list[str]:
    return [
        "no-client-cert",
        "client-cert-of-other-ca",
        "expired-client-cert",
        "client-cert-without-client-auth",
        "server-cert-of-other-ca",
        "server-name-not-in-sans",
        "http-to-tls-port",
        "https-to-plain-port",
        "cert-file-missing",
        "key-not-of-cert",
        "ca-not-a-cert",
    ]


@pytest.fixture(params=_case_names())
def case(request: pytest.FixtureRequest, tls_lab: TlsLab) -> TlsCase:
    by_name = {case.name: case for case in tls_lab.cases()}
    assert set(by_name) == set(_case_names())
    return by_name[request.param]


def assert_message(message: str, case: TlsCase) -> None:
    assert message.strip() and "\n" not in message.strip(), message
    for word in case.expected(*FLAGS):
        assert word in message, f"{word!r} missing from: {message}"
    # The operator must not get gRPC's or OpenSSL's jargon instead of a cause.
    for jargon in ("TSI_", "Unwrap failed", "EOF occurred", "UNAVAILABLE"):
        assert jargon not in message, message


def tls_flags(case: TlsCase) -> list[str]:
    flags = ["--etcd-endpoints", case.url]
    for flag, path in zip(FLAGS, (case.cafile, case.certfile, case.keyfile), strict=False):
        if path:
            flags += [flag, path]
    return flags


def test_the_lab_itself_works(tls_lab: TlsLab) -> None:
    """The right files work against the TLS server: the failures below are the cases' own."""
    tls = tls_lab.tls
    options = EtcdOptions(
        (tls_lab.url("etcd"),), tls.ca, tls.client_cert, tls.client_key, timeout=2
    )
    with Store(options) as store:
        store.put("/tls/ok", "yes")
        assert store.get("/tls/ok").value == b"yes"  # type: ignore[union-attr]


def test_store_says_what_is_wrong(case: TlsCase) -> None:
    options = EtcdOptions((case.url,), case.cafile, case.certfile, case.keyfile, timeout=FAST)
    started = time.monotonic()
    with Store(options) as store, pytest.raises(StoreTlsError) as caught:
        store.get("/tls/key")
    assert time.monotonic() - started < FAST
    assert isinstance(caught.value, StoreTlsFileError) is case.local
    assert_message(str(caught.value), case)


def test_store_names_every_endpoint_that_failed(tls_lab: TlsLab) -> None:
    """Two members, two different problems: one line with both."""
    tls = tls_lab.tls
    options = EtcdOptions(
        (tls_lab.url("foreign"), tls_lab.url("misnamed")), tls.ca, tls.client_cert, tls.client_key
    )
    with Store(options) as store, pytest.raises(StoreTlsError) as caught:
        store.get("/tls/key")
    message = str(caught.value)
    assert "\n" not in message
    assert f"we refused etcd at {tls_lab.url('foreign')}" in message
    assert f"etcd at {tls_lab.url('misnamed')} presents a server certificate" in message


def test_a_good_member_is_used_when_another_refuses_us(tls_lab: TlsLab) -> None:
    tls = tls_lab.tls
    options = EtcdOptions(
        (tls_lab.url("foreign"), tls_lab.url("etcd")), tls.ca, tls.client_cert, tls.client_key
    )
    with Store(options) as store:
        store.put("/tls/failover", "ok")
        assert store.get("/tls/failover").value == b"ok"  # type: ignore[union-attr]


def run_tool(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` from this checkout, without FLANNELD_* from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLANNELD_", "GRPC_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_flannelctl_one_line_on_stderr(case: TlsCase, tmp_path: Path) -> None:
    """The real process: stderr is exactly our line (no gRPC chatter), exit 2 or 1."""
    proc = run_tool("pyflannel.ctl", "leases", "list", *tls_flags(case), cwd=tmp_path)
    assert proc.returncode == (2 if case.local else 1), proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("flannelctl: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert_message(proc.stderr, case)


def test_flannelctl_in_process(case: TlsCase, capsys: pytest.CaptureFixture[str]) -> None:
    code = ctl.main(["config", "show", *tls_flags(case), "--etcd-timeout", str(FAST)], {})
    captured = capsys.readouterr()
    assert code == (2 if case.local else 1), captured.err
    assert_message(captured.err, case)


def test_flanneld_exits_at_startup_with_one_line(case: TlsCase, tmp_path: Path) -> None:
    """The agent as a process: a TLS setup that cannot work is fatal at startup.

    Exit 2 for a bad file, 1 for a refusal (systemd restarts it and it reads the files again);
    the reason is one error line in its log.
    """
    proc = run_tool(
        "pyflannel",
        *tls_flags(case),
        "--etcd-timeout",
        str(FAST),
        "--subnet-file",
        str(tmp_path / "subnet.env"),
        cwd=tmp_path,
    )
    assert proc.returncode == (2 if case.local else 1), proc.stderr
    lines = proc.stderr.splitlines()
    assert all(LOG_LINE.match(line) for line in lines), proc.stderr  # nothing but our log
    errors = [line for line in lines if " E flanneld: " in line]
    assert len(errors) == 1, proc.stderr
    assert_message(errors[0], case)
    assert not (tmp_path / "subnet.env").exists()


# -- which failures are fatal --------------------------------------------------------------


def test_flanneld_waits_for_an_unreachable_etcd_but_not_for_a_refusal(tls_lab: TlsLab) -> None:
    """The startup check: an etcd that is not there yet is waited for (no error), a TLS
    refusal ends the agent. (Its step on its own: the rest of startup touches the kernel.)"""
    tls = tls_lab.tls
    good = ["--etcd-cafile", tls.ca, "--etcd-certfile", tls.client_cert]
    good += ["--etcd-keyfile", tls.client_key, "--etcd-timeout", "1"]
    dead = f"https://127.0.0.1:{free_ports(1)[0]}"
    for endpoints, fatal in ((dead, False), (tls_lab.url("foreign"), True)):
        agent = Agent(parse_flags(["--etcd-endpoints", endpoints, *good], {}))
        agent.store = Store(
            EtcdOptions((endpoints,), tls.ca, tls.client_cert, tls.client_key, timeout=1)
        )
        try:
            if fatal:
                with pytest.raises(StoreTlsError, match="we refused etcd"):
                    agent._check_etcd_tls()
            else:
                agent._check_etcd_tls()
        finally:
            agent.store.close()


def test_a_running_agent_retries_and_picks_up_a_renewed_certificate(tls_lab: TlsLab) -> None:
    """Once running, a refusal is an outage like any other: the config wait retries it, and
    the next connection reads the certificate files again, so a renewal needs no restart."""
    tls = tls_lab.tls
    cert, key = issue_cert(tls, "renewed-later", expired=True)
    options = EtcdOptions((tls_lab.url("etcd"),), tls.ca, cert, key, timeout=2)
    with Store(options) as store:
        manager = SubnetManager(store, "/tls-renewal")
        stop = threading.Event()
        attempts: list[float] = []

        def count() -> None:
            attempts.append(time.monotonic())
            if len(attempts) >= 2:
                stop.set()

        assert manager.wait_for_config(stop, first_delay=0.05, on_wait=count) is None
        assert len(attempts) >= 2  # retried, did not raise
        with pytest.raises(StoreTlsError, match="it has expired"):
            store.get("/tls-renewal/config")

        fresh_cert, fresh_key = issue_cert(tls, "fresh-client")
        Path(cert).write_bytes(Path(fresh_cert).read_bytes())  # renewed in place
        Path(key).write_bytes(Path(fresh_key).read_bytes())
        store.put("/tls-renewal/config", '{"Network":"10.5.0.0/16"}')
        assert manager.get_config().network == IPv4Network("10.5.0.0/16")


def test_a_watch_says_what_is_wrong_too(tls_lab: TlsLab) -> None:
    """The agent's lease watch logs the same line when it cannot (re)open its stream."""
    tls = tls_lab.tls
    cert, key = issue_cert(tls, "expired-watcher", expired=True)
    options = EtcdOptions((tls_lab.url("etcd"),), tls.ca, cert, key, timeout=2)
    with Store(options) as store, pytest.raises(StoreTlsError) as caught:
        store.watch_prefix("/tls-watch/", 1)
    message = str(caught.value)
    assert "\n" not in message and "TSI_" not in message
    assert f"etcd at {tls_lab.url('etcd')} refused our client certificate {cert}" in message
    assert "it has expired" in message
