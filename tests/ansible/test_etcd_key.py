"""The etcd_key module, run for real by ansible / ansible-playbook against a real etcd.

The module runs under /usr/bin/python3, the system Python without pyflannel or grpc: that is
what a target host has, and the module must work with the standard library only. The other
Ansible test files import the runner helpers from here.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyflannel_lab.runner_events import AnsibleRun, run_ansible, task_results
from tests.etcd_harness import EtcdServer, TlsEtcd, etcdctl, free_ports

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_CFG = REPO / "ansible.cfg"
# The checkout is this collection (ansible.cfg finds it): modules are called by FQCN.
COLLECTION = "pyflannel.overlay"
SYSTEM_PYTHON = "/usr/bin/python3"
RUN_TIMEOUT = 120


# -- running ansible ----------------------------------------------------------------------


@dataclass(frozen=True)
class PlayRun:
    """runner_events' AnsibleRun of one play, read the way these tests assert on it: each
    task's result in order, and the last one (the task under test)."""

    run: AnsibleRun

    @property
    def returncode(self) -> int:
        return self.run.rc

    @property
    def stdout(self) -> str:
        return self.run.stdout

    @property
    def stderr(self) -> str:
        return self.run.stderr

    @property
    def results(self) -> list[dict[str, Any]]:
        return task_results(self.run.events)

    @property
    def last(self) -> dict[str, Any]:
        return self.results[-1]


def ansible_env(workdir: Path, callback: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-local"),
        "ANSIBLE_REMOTE_TMP": str(workdir / "ansible-remote"),
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    env.pop("ANSIBLE_FORCE_COLOR", None)
    if callback:
        env["ANSIBLE_STDOUT_CALLBACK"] = callback
    return env


def _runner_env(workdir: Path, callback: str | None) -> dict[str, str]:
    """ansible_env() for ansible-runner: it sets its own stdout callback for the events."""
    env = ansible_env(workdir, None)
    if callback == "default":  # the human output the test reads (diffs)
        env["ANSIBLE_STDOUT_CALLBACK"] = "default"
    return {k: v for k, v in env.items() if k.startswith("ANSIBLE_")}


def run_playbook(
    workdir: Path,
    tasks: list[dict[str, Any]],
    *,
    interpreter: str = sys.executable,
    check: bool = False,
    diff: bool = False,
    callback: str | None = "events",
    play_vars: dict[str, Any] | None = None,
) -> PlayRun:
    """Run `tasks` in one play on localhost (connection local) with the repo's ansible.cfg.

    Through ansible-runner: each task's result comes from its events. The playbook's directory
    is `workdir`, so nothing (pyflannel included) is importable by accident. callback="default":
    stdout is Ansible's default output (for the diffs a test reads).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": interpreter, **(play_vars or {})},
        "tasks": tasks,
    }
    playbook = workdir / "playbook.yml"
    playbook.write_text(json.dumps([play], indent=2))  # JSON is YAML
    flags = [flag for flag, on in (("--check", check), ("--diff", diff)) if on]
    return PlayRun(
        run_ansible(
            "ansible-playbook",
            ["-i", "localhost,", str(playbook), *flags],
            workdir / "runner",
            envvars=_runner_env(workdir, callback),
            cwd=workdir,
            timeout=RUN_TIMEOUT,
        )
    )


def run_adhoc(
    workdir: Path,
    module: str,
    args: str,
    *,
    interpreter: str = SYSTEM_PYTHON,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`ansible localhost -m <collection>.MODULE -a ARGS` with the repo's ansible.cfg."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        "ansible",
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={interpreter}",
        "-m",
        f"{COLLECTION}.{module}",
        "-a",
        args,
        *options,
    ]
    return subprocess.run(
        command,
        cwd=workdir,
        env=ansible_env(workdir, None),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def importable(interpreter: str, module: str, workdir: Path) -> bool:
    """Whether `interpreter` (started in `workdir`) can import `module`."""
    proc = subprocess.run(
        [interpreter, "-c", f"import {module}"],
        cwd=workdir,
        capture_output=True,
        check=False,
        timeout=60,
    )
    return proc.returncode == 0


def supported_parameters(workdir: Path, module: str, interpreter: str, required: str) -> set[str]:
    """The module's argument_spec names, read from its own 'Unsupported parameters' error.

    `required` gives the required arguments (k=v ...), checked before unknown ones.
    """
    proc = run_adhoc(workdir, module, f"{required} no_such_option=1", interpreter=interpreter)
    marker = "Supported parameters include: "
    output = proc.stdout + proc.stderr
    assert marker in output, output
    names = output.split(marker, 1)[1].split(")", 1)[0].split("\n", 1)[0]
    return {name.strip().split(" ")[0].rstrip(".") for name in names.split(",")}


def doc_options(workdir: Path, module: str) -> dict[str, Any]:
    """`ansible-doc <collection>.MODULE` (must render), as a dict of its --json doc."""
    fqcn = f"{COLLECTION}.{module}"
    text = subprocess.run(
        ["ansible-doc", fqcn],
        cwd=workdir,
        env=ansible_env(workdir, None),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert text.returncode == 0, text.stderr
    assert f"MODULE {fqcn}" in text.stdout and "EXAMPLES" in text.stdout, text.stdout
    assert "RETURN VALUES" in text.stdout, text.stdout
    proc = subprocess.run(
        ["ansible-doc", "--json", fqcn],
        cwd=workdir,
        env=ansible_env(workdir, None),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    entry = json.loads(proc.stdout)[fqcn]
    assert entry["examples"].strip() and entry["return"], entry
    return dict(entry["doc"])


# -- fixtures and helpers for this module -------------------------------------------------


@pytest.fixture(scope="module")
def system_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/usr/bin/python3, checked to lack pyflannel (the module must not need it)."""
    workdir = tmp_path_factory.mktemp("syspython")
    assert Path(SYSTEM_PYTHON).exists()
    assert not importable(SYSTEM_PYTHON, "pyflannel", workdir), (
        f"{SYSTEM_PYTHON} imports pyflannel: this test needs a Python that only has the stdlib"
    )
    return SYSTEM_PYTHON


def etcd_key_task(**args: Any) -> dict[str, Any]:
    return {"name": "etcd_key", f"{COLLECTION}.etcd_key": args}


def stored(target: EtcdServer | TlsEtcd, key: str) -> str | None:
    """The key's value as etcdctl sees it; None when absent."""
    out = etcdctl(target, "get", key, "-w", "json")
    kvs = json.loads(out).get("kvs") or []
    if not kvs:
        return None
    return base64.b64decode(kvs[0]["value"]).decode()


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


# -- tests --------------------------------------------------------------------------------


def test_adhoc_writes_then_reports_ok(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    args = f"endpoints={etcd_server.client_url} key=/pyflannel/test/owner value=ops"
    first = run_adhoc(tmp_path, "etcd_key", args, interpreter=system_python)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "localhost | CHANGED" in first.stdout
    assert stored(etcd_server, "/pyflannel/test/owner") == "ops"

    second = run_adhoc(tmp_path, "etcd_key", args, interpreter=system_python)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "localhost | SUCCESS" in second.stdout
    assert "changed: false" in second.stdout

    third = run_adhoc(
        tmp_path, "etcd_key", args.replace("value=ops", "value=dev"), interpreter=system_python
    )
    assert "localhost | CHANGED" in third.stdout
    assert "old_value: ops" in third.stdout and "new_value: dev" in third.stdout
    assert stored(etcd_server, "/pyflannel/test/owner") == "dev"


def test_value_json_is_compared_semantically_and_written_compact(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    endpoints = [etcd_server.client_url]
    key = "/coreos.com/network/config"
    run = run_playbook(
        tmp_path,
        [
            etcd_key_task(
                endpoints=endpoints,
                key=key,
                value_json={"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}},
            ),
            # The same JSON as text, other key order and spacing: unchanged.
            etcd_key_task(
                endpoints=endpoints,
                key=key,
                value_json='{ "Backend": {"VNI": 1, "Type": "vxlan"},\n "Network": "10.5.0.0/16" }',
            ),
            # true is not 1 in JSON: changed.
            etcd_key_task(
                endpoints=endpoints,
                key=key,
                value_json={"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan", "VNI": True}},
            ),
        ],
        interpreter=system_python,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    first, same, other = run.results
    assert first["changed"] is True and first["old_value"] is None
    assert first["new_value"] == '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":1}}'
    assert same["changed"] is False
    assert same["new_value"] == same["old_value"] == first["new_value"]
    assert other["changed"] is True
    assert stored(etcd_server, key) == (
        '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":true}}'
    )


def test_json_key_written_by_others_with_spacing_is_unchanged(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    etcdctl(etcd_server, "put", "/k", '{"b": [1, 2],\n  "a": {"x": null}}')
    run = run_playbook(
        tmp_path,
        [
            etcd_key_task(
                endpoints=[etcd_server.client_url],
                key="/k",
                value_json={"a": {"x": None}, "b": [1, 2]},
            )
        ],
        interpreter=system_python,
    )
    assert run.returncode == 0, run.stdout
    assert run.last["changed"] is False
    assert stored(etcd_server, "/k") == '{"b": [1, 2],\n  "a": {"x": null}}'


def test_check_mode_reports_changes_and_writes_nothing(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    etcdctl(etcd_server, "put", "/keep", "old")
    etcdctl(etcd_server, "put", "/drop", "x")
    endpoints = [etcd_server.client_url]
    run = run_playbook(
        tmp_path,
        [
            etcd_key_task(endpoints=endpoints, key="/keep", value="new"),
            etcd_key_task(endpoints=endpoints, key="/fresh", value_json=[1, 2]),
            etcd_key_task(endpoints=endpoints, key="/drop", state="absent"),
            etcd_key_task(endpoints=endpoints, key="/keep", value="old"),
        ],
        interpreter=system_python,
        check=True,
    )
    assert run.returncode == 0, run.stdout
    keep, fresh, drop, unchanged = run.results
    assert (keep["changed"], keep["old_value"], keep["new_value"]) == (True, "old", "new")
    assert (fresh["changed"], fresh["new_value"]) == (True, "[1,2]")
    assert (drop["changed"], drop["old_value"], drop["new_value"]) == (True, "x", None)
    assert unchanged["changed"] is False
    assert stored(etcd_server, "/keep") == "old"
    assert stored(etcd_server, "/fresh") is None
    assert stored(etcd_server, "/drop") == "x"


def test_diff_shows_pretty_sorted_json(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    etcdctl(etcd_server, "put", "/cfg", '{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}')
    run = run_playbook(
        tmp_path,
        [
            etcd_key_task(
                endpoints=[etcd_server.client_url],
                key="/cfg",
                value_json={"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}},
            )
        ],
        interpreter=system_python,
        check=True,
        diff=True,
        callback="default",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "--- before: /cfg" in out and "+++ after: /cfg" in out, out
    assert '-    "Type": "udp"' in out and '+    "Type": "vxlan"' in out, out
    # Sorted keys, one per line: "Backend" comes before "Network".
    assert out.index('"Backend": {') < out.index('"Network": "10.5.0.0/16"'), out
    assert stored(etcd_server, "/cfg") == '{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}'


def test_diff_of_a_new_and_a_deleted_plain_key(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    etcdctl(etcd_server, "put", "/gone", "bye")
    endpoints = [etcd_server.client_url]
    run = run_playbook(
        tmp_path,
        [
            etcd_key_task(endpoints=endpoints, key="/new", value="hello"),
            etcd_key_task(endpoints=endpoints, key="/gone", state="absent"),
        ],
        interpreter=system_python,
        diff=True,
    )
    assert run.returncode == 0, run.stdout
    new, gone = run.results
    assert new["diff"] == {
        "before": "",
        "after": "hello\n",
        "before_header": "/new",
        "after_header": "/new",
    }
    assert (gone["diff"]["before"], gone["diff"]["after"]) == ("bye\n", "")
    assert stored(etcd_server, "/new") == "hello"


def test_absent_deletes_then_reports_ok(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    etcdctl(etcd_server, "put", "/coreos.com/network/subnets/10.5.9.0-24", "{}")
    task = etcd_key_task(
        endpoints=[etcd_server.client_url],
        key="/coreos.com/network/subnets/10.5.9.0-24",
        state="absent",
    )
    run = run_playbook(tmp_path, [task, task], interpreter=system_python)
    assert run.returncode == 0, run.stdout
    first, second = run.results
    assert (first["changed"], first["old_value"], first["new_value"]) == (True, "{}", None)
    assert (second["changed"], second["old_value"]) == (False, None)
    assert stored(etcd_server, "/coreos.com/network/subnets/10.5.9.0-24") is None


def test_tls_with_client_certificate(etcd_tls: TlsEtcd, tmp_path: Path, system_python: str) -> None:
    tls = etcd_tls.tls
    base = {"endpoints": [etcd_tls.client_url], "key": "/tls/key", "value": "secure"}
    good = run_playbook(
        tmp_path / "good",
        [
            etcd_key_task(
                **base, ca_cert=tls.ca, client_cert=tls.client_cert, client_key=tls.client_key
            )
        ],
        interpreter=system_python,
    )
    assert good.returncode == 0, good.stdout
    assert good.last["changed"] is True
    assert stored(etcd_tls, "/tls/key") == "secure"

    wrong_ca = run_playbook(
        tmp_path / "wrong-ca",
        [
            etcd_key_task(
                **base, ca_cert=tls.other_ca, client_cert=tls.client_cert, client_key=tls.client_key
            )
        ],
        interpreter=system_python,
    )
    assert wrong_ca.returncode != 0
    message = wrong_ca.last["msg"]
    assert "\n" not in message
    # Which side refused what (every case: test_tls_errors.py).
    assert f"we refused etcd at {etcd_tls.client_url}" in message
    assert f"not signed by the CA in ca_cert ({tls.other_ca})" in message


def test_unreachable_endpoint_fails_in_one_line_and_the_next_one_is_used(
    etcd_server: EtcdServer, tmp_path: Path, system_python: str
) -> None:
    dead = dead_endpoint()
    failed = run_playbook(
        tmp_path / "dead",
        [etcd_key_task(endpoints=[dead], key="/x", value="1", timeout=2)],
        interpreter=system_python,
    )
    assert failed.returncode != 0
    message = failed.last["msg"]
    assert failed.last["failed"] is True
    assert "\n" not in message
    assert f"{dead}: connection refused" in message and "no endpoint reachable" in message

    failover = run_playbook(
        tmp_path / "failover",
        [etcd_key_task(endpoints=[dead, etcd_server.client_url], key="/x", value="1")],
        interpreter=system_python,
    )
    assert failover.returncode == 0, failover.stdout
    assert failover.last["changed"] is True
    assert stored(etcd_server, "/x") == "1"


def test_username_and_password(etcd_server: EtcdServer, tmp_path: Path, system_python: str) -> None:
    etcdctl(etcd_server, "user", "add", "root:rootpw")
    etcdctl(etcd_server, "user", "grant-role", "root", "root")
    etcdctl(etcd_server, "auth", "enable")
    base = {"endpoints": [etcd_server.client_url], "key": "/auth/key", "value": "v"}
    good = run_playbook(
        tmp_path / "good",
        [etcd_key_task(**base, username="root", password="rootpw")],
        interpreter=system_python,
    )
    assert good.returncode == 0, good.stdout
    assert good.last["changed"] is True
    assert "rootpw" not in good.stdout  # no_log keeps the password out of the output
    got = etcdctl(etcd_server, "get", "/auth/key", "--print-value-only", user="root:rootpw")
    assert got.strip() == "v"

    bad = run_playbook(
        tmp_path / "bad",
        [etcd_key_task(**base, username="root", password="wrong")],
        interpreter=system_python,
    )
    assert bad.returncode != 0
    assert "authentication as 'root' failed" in bad.last["msg"]
    assert etcd_server.client_url in bad.last["msg"]

    anonymous = run_playbook(tmp_path / "anon", [etcd_key_task(**base)], interpreter=system_python)
    assert anonymous.returncode != 0
    assert etcd_server.client_url in anonymous.last["msg"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"value": "a", "value_json": {"a": 1}}, "mutually exclusive: value|value_json"),
        ({}, "state is present but any of the following are missing: value, value_json"),
        ({"value_json": "{not json"}, "value_json: not valid JSON"),
        (
            {"value": "a", "username": "root"},
            "parameters are required together: username, password",
        ),
    ],
)
def test_bad_arguments_fail_clearly(
    args: dict[str, Any], expected: str, tmp_path: Path, system_python: str
) -> None:
    # An unreachable endpoint: argument errors must be reported before any connection.
    run = run_playbook(
        tmp_path,
        [etcd_key_task(endpoints=[dead_endpoint()], key="/k", **args)],
        interpreter=system_python,
    )
    assert run.returncode != 0
    assert expected in run.last["msg"], run.last["msg"]


def test_ansible_doc_matches_the_argument_spec(tmp_path: Path, system_python: str) -> None:
    doc = doc_options(tmp_path, "etcd_key")
    assert set(doc["options"]) == supported_parameters(
        tmp_path, "etcd_key", system_python, f"endpoints={dead_endpoint()} key=/k value=v"
    )
    assert doc["options"]["state"]["choices"] == ["present", "absent"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "full"
