"""The config_files module, run for real by ansible-playbook on localhost under /usr/bin/python3.

It replaces ansible.builtin.copy/template in the roles (one module run per set of files), so
these tests hold it to what those do: exact content, owner/group/mode, parents created, atomic
replacement, check mode and diff, and a changed=false second run.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.test_etcd_key import (
    COLLECTION,
    SYSTEM_PYTHON,
    doc_options,
    run_adhoc,
    run_playbook,
)


def files_task(**args: Any) -> dict[str, Any]:
    return {"name": "config_files", f"{COLLECTION}.config_files": args}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "target"


def test_creates_directories_and_files_then_reports_ok(tmp_path: Path, target: Path) -> None:
    args = {
        "directories": [{"path": str(target / "etc" / "app"), "mode": "0750"}],
        "files": [
            {"dest": str(target / "etc" / "app" / "app.conf"), "content": "a=1\n", "mode": "0640"},
            {"dest": str(target / "etc" / "app" / "key"), "content": "secret", "mode": "0600"},
        ],
    }
    first = run_playbook(tmp_path / "run1", [files_task(**args)], interpreter=SYSTEM_PYTHON)
    assert first.returncode == 0, first.stdout
    assert first.last["changed"] is True
    assert first.last["changed_files"] == [f["dest"] for f in args["files"]]
    assert first.last["changed_directories"] == [str(target / "etc" / "app")]
    assert first.last["existed"] == {f["dest"]: False for f in args["files"]}
    assert (target / "etc" / "app" / "app.conf").read_bytes() == b"a=1\n"
    assert (target / "etc" / "app" / "key").read_bytes() == b"secret"
    # Missing parents get the directory's attributes, as ansible.builtin.file does.
    assert mode_of(target / "etc") == 0o750 and mode_of(target / "etc" / "app") == 0o750
    assert mode_of(target / "etc" / "app" / "app.conf") == 0o640
    assert mode_of(target / "etc" / "app" / "key") == 0o600
    again = run_playbook(tmp_path / "run2", [files_task(**args)], interpreter=SYSTEM_PYTHON)
    assert again.returncode == 0, again.stdout
    assert again.last["changed"] is False
    assert again.last["changed_files"] == [] and again.last["changed_directories"] == []
    assert again.last["existed"] == {f["dest"]: True for f in args["files"]}


def test_only_the_changed_file_is_rewritten_by_rename(tmp_path: Path, target: Path) -> None:
    target.mkdir()
    kept, replaced = target / "kept", target / "replaced"
    kept.write_text("same\n")
    replaced.write_text("old\n")
    os.chmod(kept, 0o644)
    os.chmod(replaced, 0o644)
    kept_inode, replaced_inode = kept.stat().st_ino, replaced.stat().st_ino
    run = run_playbook(
        tmp_path,
        [
            files_task(
                files=[
                    {"dest": str(kept), "content": "same\n", "mode": "0644"},
                    {"dest": str(replaced), "content": "new\n", "mode": "0644"},
                ]
            )
        ],
        interpreter=SYSTEM_PYTHON,
    )
    assert run.returncode == 0, run.stdout
    assert run.last["changed_files"] == [str(replaced)]
    assert replaced.read_text() == "new\n"
    assert kept.stat().st_ino == kept_inode, "an unchanged file must not be rewritten"
    assert replaced.stat().st_ino != replaced_inode, "a new content must be moved into place"
    assert not [p for p in target.iterdir() if p.name.startswith(".config_files-")]


def test_a_mode_change_alone_is_a_change(tmp_path: Path, target: Path) -> None:
    target.mkdir()
    dest = target / "f"
    dest.write_text("x")
    os.chmod(dest, 0o666)
    run = run_playbook(
        tmp_path,
        [files_task(files=[{"dest": str(dest), "content": "x", "mode": "0600"}])],
        interpreter=SYSTEM_PYTHON,
    )
    assert run.returncode == 0, run.stdout
    assert run.last["changed_files"] == [str(dest)]
    assert mode_of(dest) == 0o600


def test_check_mode_reports_and_writes_nothing(tmp_path: Path, target: Path) -> None:
    target.mkdir()
    existing = target / "existing"
    existing.write_text("old\n")
    os.chmod(existing, 0o644)
    new_dir = target / "new"
    run = run_playbook(
        tmp_path,
        [
            files_task(
                directories=[{"path": str(new_dir)}],
                files=[
                    {"dest": str(existing), "content": "new\n", "mode": "0644"},
                    {"dest": str(new_dir / "file"), "content": "x", "mode": "0644"},
                ],
            )
        ],
        interpreter=SYSTEM_PYTHON,
        check=True,
    )
    assert run.returncode == 0, run.stdout
    assert run.last["changed"] is True
    assert run.last["changed_files"] == [str(existing), str(new_dir / "file")]
    assert run.last["existed"] == {str(existing): True, str(new_dir / "file"): False}
    assert existing.read_text() == "old\n"
    assert not new_dir.exists()


def test_diff_shows_content_except_where_turned_off(tmp_path: Path, target: Path) -> None:
    target.mkdir()
    (target / "shown").write_text("a=1\n")
    run = run_playbook(
        tmp_path,
        [
            files_task(
                files=[
                    {"dest": str(target / "shown"), "content": "a=2\n", "mode": "0644"},
                    {
                        "dest": str(target / "hidden"),
                        "content": "password=x\n",
                        "mode": "0600",
                        "diff": False,
                    },
                ]
            )
        ],
        interpreter=SYSTEM_PYTHON,
        diff=True,
    )
    assert run.returncode == 0, run.stdout
    diffs = run.last["diff"]
    assert diffs == [
        {
            "before_header": str(target / "shown"),
            "after_header": str(target / "shown"),
            "before": "a=1\n",
            "after": "a=2\n",
        }
    ]
    assert "password" not in run.stdout


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([{"dest": "relative/f", "content": "", "mode": "0644"}], "is not an absolute path"),
        ([{"dest": "/tmp/x", "content": "", "mode": "644x"}], "is not an octal mode"),
        (
            [{"dest": "/tmp/x", "content": "", "mode": "0644", "owner": "no-such-user-here"}],
            "owner 'no-such-user-here' of /tmp/x does not exist on this host",
        ),
        (
            [{"dest": "/tmp/x", "content": "", "mode": "0644", "group": "no-such-group-here"}],
            "group 'no-such-group-here' of /tmp/x does not exist on this host",
        ),
        (
            [{"dest": "/nonexistent-dir-of-test/f", "content": "", "mode": "0644"}],
            "the directory of /nonexistent-dir-of-test/f does not exist; add "
            "/nonexistent-dir-of-test to directories",
        ),
    ],
)
def test_bad_entries_fail_in_one_line_with_nothing_written(
    files: list[dict[str, Any]], expected: str, tmp_path: Path, target: Path
) -> None:
    # A good directory first: a bad file entry must stop the task before it is created.
    run = run_playbook(
        tmp_path,
        [files_task(directories=[{"path": str(target / "made")}], files=files)],
        interpreter=SYSTEM_PYTHON,
    )
    assert run.returncode != 0
    assert expected in run.last["msg"], run.last["msg"]
    assert "\n" not in run.last["msg"]
    assert not target.exists()


def test_a_directory_in_the_way_of_a_file_is_refused(tmp_path: Path, target: Path) -> None:
    (target / "f").mkdir(parents=True)
    run = run_playbook(
        tmp_path,
        [files_task(files=[{"dest": str(target / "f"), "content": "x", "mode": "0644"}])],
        interpreter=SYSTEM_PYTHON,
    )
    assert run.returncode != 0
    assert f"{target / 'f'} is a directory" in run.last["msg"]


def test_ansible_doc_matches_the_argument_spec(tmp_path: Path) -> None:
    doc = doc_options(tmp_path, "config_files")
    # JSON arguments: key=value cannot give a list of dicts.
    proc = run_adhoc(tmp_path, "config_files", '{"files": [], "no_such_option": 1}')
    output = proc.stdout + proc.stderr
    marker = "Supported parameters include: "
    assert marker in output, output
    names = output.split(marker, 1)[1].split("\n", 1)[0].rstrip(".")
    assert set(doc["options"]) == {name.strip() for name in names.split(",")}
    assert set(doc["options"]["files"]["suboptions"]) == {
        "dest",
        "content",
        "mode",
        "owner",
        "group",
        "diff",
    }
    assert set(doc["options"]["directories"]["suboptions"]) == {"path", "mode", "owner", "group"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "full"
