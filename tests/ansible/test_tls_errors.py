"""etcd_key and flannel_lease against every TLS failure case: fail_json with one line.

The same real etcd servers and cases as tests/etcd/test_tls_errors.py (TlsLab). etcd_key runs
under the system Python (the stdlib JSON-gateway client), flannel_lease under this test's
Python with this checkout's pyflannel (the agent's gRPC store). One playbook per module runs
every case as its own task (ignore_errors), so each case is checked without an ansible start
per case.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.test_etcd_key import (
    COLLECTION,
    REPO,
    SYSTEM_PYTHON,
    PlayRun,
    importable,
    run_playbook,
)
from tests.etcd_harness import TlsCase, TlsLab

pytestmark = pytest.mark.etcd

OPTIONS = ("ca_cert", "client_cert", "client_key", "endpoints")
# Each case is decided within one handshake; a case that waited for the timeout would show.
TIMEOUT = 3


def tls_args(case: TlsCase) -> dict[str, Any]:
    args: dict[str, Any] = {"endpoints": [case.url], "timeout": TIMEOUT}
    for option, path in zip(OPTIONS, (case.cafile, case.certfile, case.keyfile), strict=False):
        if path:
            args[option] = path
    return args


def task(module: str, case_name: str, args: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": case_name,
        f"{COLLECTION}.{module}": args,
        "ignore_errors": True,
    }
    if module == "flannel_lease":
        entry["environment"] = {"PYTHONPATH": str(REPO)}  # this checkout's pyflannel
    return entry


def module_args(module: str, case: TlsCase) -> dict[str, Any]:
    if module == "etcd_key":
        return {**tls_args(case), "key": "/tls/key", "value": "v"}
    return {**tls_args(case), "public_ip": "192.0.2.11", "subnet_file": ""}


def run_cases(module: str, tls_lab: TlsLab, workdir: Path) -> tuple[list[TlsCase], PlayRun]:
    cases = tls_lab.cases()
    interpreter = SYSTEM_PYTHON if module == "etcd_key" else sys.executable
    workdir.mkdir(parents=True, exist_ok=True)
    if module == "etcd_key":  # the module must not lean on pyflannel
        assert not importable(SYSTEM_PYTHON, "pyflannel", workdir)
    tasks = [task(module, case.name, module_args(module, case)) for case in cases]
    return cases, run_playbook(workdir, tasks, interpreter=interpreter)


def assert_fails_in_one_line(result: dict[str, Any], case: TlsCase) -> None:
    assert result.get("failed") is True, result
    message = str(result["msg"])
    assert message and "\n" not in message, message
    for word in case.expected(*OPTIONS):
        assert word in message, f"{case.name}: {word!r} missing from: {message}"
    for jargon in ("TSI_", "EOF occurred", "UNAVAILABLE", "--etcd-"):
        assert jargon not in message, f"{case.name}: {message}"


@pytest.mark.parametrize("module", ["etcd_key", "flannel_lease"])
def test_every_tls_failure_is_one_line(module: str, tls_lab: TlsLab, tmp_path: Path) -> None:
    cases, run = run_cases(module, tls_lab, tmp_path)
    assert len(run.results) == len(cases), run.stdout
    for case, result in zip(cases, run.results, strict=True):
        assert_fails_in_one_line(result, case)


@pytest.mark.parametrize("module", ["etcd_key", "flannel_lease"])
def test_the_right_files_work(module: str, tls_lab: TlsLab, tmp_path: Path) -> None:
    """Against the same server the refusals came from: the files, not the server, were wrong."""
    tls = tls_lab.tls
    args: dict[str, Any] = {
        "endpoints": [tls_lab.url("etcd")],
        "ca_cert": tls.ca,
        "client_cert": tls.client_cert,
        "client_key": tls.client_key,
        "timeout": TIMEOUT,
    }
    if module == "etcd_key":
        args.update(key="/tls/works", value="yes")
    else:
        args.update(public_ip="192.0.2.11", subnet_file="")
    interpreter = SYSTEM_PYTHON if module == "etcd_key" else sys.executable
    run = run_playbook(tmp_path, [task(module, "good", args)], interpreter=interpreter)
    if module == "etcd_key":
        assert run.last.get("failed") is not True and run.last["changed"] is True, run.last
    else:  # TLS works; what fails is that etcd holds no network config (a flannel matter)
        assert "network config key" in run.last["msg"], run.last
        # Named as this module's option, not as the agent's flag.
        assert "check prefix" in run.last["msg"] and "--etcd-" not in run.last["msg"], run.last


@pytest.mark.parametrize("module", ["etcd_key", "flannel_lease"])
@pytest.mark.parametrize("given", ["client_cert", "client_key"])
def test_client_cert_and_key_are_required_together(
    module: str, given: str, tls_lab: TlsLab, tmp_path: Path
) -> None:
    tls = tls_lab.tls
    args: dict[str, Any] = {"endpoints": [tls_lab.url("etcd")], "ca_cert": tls.ca}
    args[given] = tls.client_cert if given == "client_cert" else tls.client_key
    if module == "etcd_key":
        args.update(key="/k", value="v")
    interpreter = SYSTEM_PYTHON if module == "etcd_key" else sys.executable
    run = run_playbook(tmp_path, [task(module, "half", args)], interpreter=interpreter)
    assert run.last.get("failed") is True
    assert "parameters are required together: client_cert, client_key" in run.last["msg"]


def test_one_copy_of_the_tls_diagnosis() -> None:
    """The agent's pyflannel/tlscheck.py is the collection's module_utils/etcd_tls.py (a link)."""
    link = REPO / "pyflannel" / "tlscheck.py"
    assert link.is_symlink(), "pyflannel/tlscheck.py must link to plugins/module_utils/etcd_tls.py"
    assert link.resolve() == (REPO / "plugins" / "module_utils" / "etcd_tls.py").resolve()
