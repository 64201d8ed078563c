"""The flannel_wheel_mismatches filter: which wheels of a wheelhouse will not install on a node.

Names as `make dist` writes them (grpcio is per CPython, protobuf uses the stable ABI); the
filter also runs inside a real play, from the collection by its FQCN.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from ansible.errors import AnsibleFilterError

from tests.ansible.test_etcd_key import REPO, run_playbook

WHEELHOUSE = [
    "pyflannel-0.1.0-py3-none-any.whl",
    "grpcio-1.85.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl",
    "etcd_sdk_python-0.0.7-py3-none-any.whl",
]


@pytest.fixture(scope="module")
def wheels() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "wheels_under_test", REPO / "plugins" / "filter" / "wheels.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_building_python_and_machine_fit(wheels: ModuleType) -> None:
    assert wheels.flannel_wheel_mismatches(WHEELHOUSE, "cp311 x86_64") == []
    # The stable ABI wheel (cp310-abi3) fits any later CPython 3; amd64 is x86_64.
    assert wheels.flannel_wheel_mismatches(WHEELHOUSE[2:3], "cp313 amd64") == []


def test_another_python_rejects_the_per_version_wheel(wheels: ModuleType) -> None:
    misfits = wheels.flannel_wheel_mismatches(WHEELHOUSE, "cp312 x86_64")
    assert len(misfits) == 1 and misfits[0].startswith("grpcio-1.85.1-cp311"), misfits
    assert "cp311-cp311-manylinux_2_17_x86_64" in misfits[0]
    # An older CPython than the stable ABI wheel's minimum.
    assert len(wheels.flannel_wheel_mismatches(WHEELHOUSE[2:3], "cp39 x86_64")) == 1


def test_another_machine_rejects_the_compiled_wheels(wheels: ModuleType) -> None:
    misfits = wheels.flannel_wheel_mismatches(
        [f"/controller/dist/wheelhouse/{w}" for w in WHEELHOUSE], "cp311 aarch64"
    )
    assert [m.split("-", 1)[0] for m in misfits] == ["grpcio", "protobuf"]


def test_a_file_that_is_no_wheel_is_named(wheels: ModuleType) -> None:
    assert wheels.flannel_wheel_mismatches(["notes.whl"], "cp311 x86_64")[0].startswith(
        "notes.whl (not a wheel file name"
    )


def test_a_bad_node_tag_is_an_error(wheels: ModuleType) -> None:
    with pytest.raises(AnsibleFilterError, match="not like 'cp311 x86_64'"):
        wheels.flannel_wheel_mismatches(WHEELHOUSE, "python3.11")


def test_the_filter_by_its_fqcn_in_a_play(tmp_path: Path) -> None:
    misfits = "pyflannel.overlay.flannel_wheel_mismatches"
    run = run_playbook(
        tmp_path,
        [
            {
                "name": "check",
                "ansible.builtin.assert": {
                    "that": [
                        f"{WHEELHOUSE} | {misfits}('cp311 x86_64') == []",
                        f"{WHEELHOUSE} | {misfits}('cp311 ppc64le') | length == 2",
                    ]
                },
            }
        ],
    )
    assert run.returncode == 0, run.stdout
