"""The collection pyflannel.overlay as operators get it: built, installed into a clean path, used.

`scripts/build-dist.sh collection` (make dist) builds the tarball; ansible-galaxy installs it
into a fresh collections path; everything below runs with an empty ansible.cfg and only that
path (plus the Python package's bundled collections), from a directory outside the checkout.
The molecule default scenario converges its nodes from such an installed copy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.ansible.test_etcd_key import REPO, RUN_TIMEOUT

NAMESPACE, NAME = "pyflannel", "overlay"


def version_in(path: Path, key: str) -> str:
    match = re.search(rf'(?m)^{key}\s*[=:]\s*"?([^"\s]+)"?\s*$', path.read_text())
    assert match, f"no {key} in {path}"
    return match[1]


VERSION = version_in(REPO / "pyproject.toml", "version")


@pytest.fixture(scope="module")
def tarball() -> Path:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build-dist.sh"), "collection"],
        check=True, capture_output=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    path = REPO / "dist" / f"{NAMESPACE}-{NAME}-{VERSION}.tar.gz"
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("collection")
    (root / "ansible.cfg").write_text("[defaults]\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(root / "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(root / "tmp"),
        "HOME": str(root),
    }
    return env


def ansible(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    cwd = Path(env["HOME"])
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tarball: Path, clean_env: dict[str, str]) -> Path:
    # --no-deps: no Galaxy here; the dependencies come with the ansible package (checked below).
    proc = ansible(
        clean_env, "ansible-galaxy", "collection", "install", "--no-deps",
        "-p", clean_env["ANSIBLE_COLLECTIONS_PATH"], str(tarball),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    root = Path(clean_env["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections" / NAMESPACE / NAME
    assert (root / "MANIFEST.json").is_file(), proc.stdout
    return root


def test_versions_agree(installed: Path) -> None:
    manifest = json.loads((installed / "MANIFEST.json").read_text())["collection_info"]
    assert manifest["version"] == version_in(REPO / "galaxy.yml", "version") == VERSION
    assert set(manifest["dependencies"]) >= {"community.crypto", "ansible.posix"}


def test_the_tarball_carries_files_only_and_no_checkout_parts(tarball: Path) -> None:
    with tarfile.open(tarball) as archive:
        members = archive.getmembers()
    links = [m.name for m in members if m.issym() or m.islnk()]
    assert links == [], f"links in the collection: {links}"
    tops = {m.name.split("/", 1)[0] for m in members}
    assert tops <= {
        "MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "requirements.yml", "docs",
        "inventory", "meta", "playbooks",
        "plugins", "roles",
    }, tops  # fmt: skip
    assert "inventory/lab" not in {m.name for m in members}


def test_the_tls_diagnosis_is_the_agents(installed: Path) -> None:
    shipped = installed / "plugins" / "module_utils" / "etcd_tls.py"
    assert not shipped.is_symlink()
    assert shipped.read_bytes() == (REPO / "pyflannel" / "tlscheck.py").read_bytes()


def test_the_wheel_carries_the_tls_diagnosis_as_a_file() -> None:
    wheel = REPO / "dist" / "wheelhouse" / f"pyflannel-{VERSION}-py3-none-any.whl"
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build-dist.sh"), "wheelhouse"],
        check=True, capture_output=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("pyflannel/tlscheck.py")
    assert shipped == (REPO / "plugins" / "module_utils" / "etcd_tls.py").read_bytes()


@pytest.mark.parametrize("module", ["etcd_key", "flannel_lease", "config_files"])
def test_modules_render_by_fqcn(installed: Path, clean_env: dict[str, str], module: str) -> None:
    proc = ansible(clean_env, "ansible-doc", f"{NAMESPACE}.{NAME}.{module}")
    assert proc.returncode == 0, proc.stderr
    assert str(installed) in proc.stdout  # the installed copy, not the checkout
    if module != "config_files":  # the shared connection options, from the doc fragment
        assert "client_cert" in proc.stdout and "timeout" in proc.stdout


@pytest.mark.parametrize("playbook", ["site", "verify", "remove_node", "reset"])
def test_playbooks_by_fqcn(installed: Path, clean_env: dict[str, str], playbook: str) -> None:
    proc = ansible(
        clean_env, "ansible-playbook", "-i", str(REPO / "inventory" / "example"),
        f"{NAMESPACE}.{NAME}.{playbook}", "--syntax-check",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(installed / "playbooks") in proc.stdout
