"""flannel's subnet file: exact format, atomic idempotent write, reading back."""

from __future__ import annotations

import os
import stat
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path

import pytest

from pyflannel.subnetenv import (
    SubnetEnv,
    atomic_write_text,
    load_subnet_env,
    read_subnet_env,
    write_subnet_env,
)

FLANNEL_FILE = (
    "FLANNEL_NETWORK=10.5.0.0/16\n"
    "FLANNEL_SUBNET=10.5.52.1/24\n"
    "FLANNEL_MTU=1450\n"
    "FLANNEL_IPMASQ=false\n"
)


def sample(**changes: object) -> SubnetEnv:
    values: dict[str, object] = {
        "network": IPv4Network("10.5.0.0/16"),
        "subnet": IPv4Interface("10.5.52.1/24"),
        "mtu": 1450,
        "ipmasq": False,
    }
    values.update(changes)
    return SubnetEnv(**values)  # type: ignore[arg-type]


def test_render_is_flannels_format() -> None:
    assert sample().render() == FLANNEL_FILE
    assert sample(ipmasq=True).render().endswith("FLANNEL_IPMASQ=true\n")


def test_render_dual_stack_puts_ipv6_between_subnet_and_mtu() -> None:
    env = sample(
        ipv6_network=IPv6Network("fd00:5::/56"), ipv6_subnet=IPv6Interface("fd00:5:0:34::1/64")
    )
    assert env.render().splitlines() == [
        "FLANNEL_NETWORK=10.5.0.0/16",
        "FLANNEL_SUBNET=10.5.52.1/24",
        "FLANNEL_IPV6_NETWORK=fd00:5::/56",
        "FLANNEL_IPV6_SUBNET=fd00:5:0:34::1/64",
        "FLANNEL_MTU=1450",
        "FLANNEL_IPMASQ=false",
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mtu": 60}, "FLANNEL_MTU 60"),
        ({"subnet": IPv4Interface("10.6.1.1/24")}, "outside FLANNEL_NETWORK"),
        ({"ipv6_network": IPv6Network("fd00::/56")}, "together"),
    ],
)
def test_inconsistent_values_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample(**changes)


def test_write_creates_directory_and_file_with_modes(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "subnet.env"
    old_umask = os.umask(0o077)  # the modes must not depend on the caller's umask
    try:
        assert write_subnet_env(str(path), sample()) is True
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == FLANNEL_FILE.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert os.listdir(path.parent) == ["subnet.env"]  # no temp file left behind


def test_identical_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    assert write_subnet_env(str(path), sample()) is True
    inode, mtime = path.stat().st_ino, path.stat().st_mtime_ns
    assert write_subnet_env(str(path), sample()) is False
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (inode, mtime)


def test_changed_content_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    write_subnet_env(str(path), sample())
    reader = path.open("rb")  # a reader of the old file keeps seeing a whole old file
    try:
        assert write_subnet_env(str(path), sample(mtu=1500)) is True
        assert reader.read() == FLANNEL_FILE.encode()
    finally:
        reader.close()
    assert "FLANNEL_MTU=1500\n" in path.read_text()
    assert sorted(os.listdir(tmp_path)) == ["subnet.env"]


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "subnet.env"
    target.mkdir()  # os.replace of a file over a directory fails
    with pytest.raises(OSError):
        atomic_write_text(str(target), "X=1\n")
    assert os.listdir(tmp_path) == ["subnet.env"]
    assert target.is_dir()


def test_atomic_write_text_honours_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret.env"
    assert atomic_write_text(str(path), "A=1\n", mode=0o600) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_read_parses_comments_blanks_quotes_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(
        '# written by hand\n\nFLANNEL_NETWORK="10.5.0.0/16"\n  FLANNEL_MTU = 1450 \n'
        "FLANNEL_IPMASQ=false \nEMPTY=\nEQ=a=b\n"
    )
    assert read_subnet_env(str(path)) == {
        "FLANNEL_NETWORK": "10.5.0.0/16",
        "FLANNEL_MTU": "1450",
        "FLANNEL_IPMASQ": "false",
        "EMPTY": "",
        "EQ": "a=b",
    }


def test_read_refuses_a_line_without_equals(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("FLANNEL_MTU=1450\nnonsense\n")
    with pytest.raises(ValueError, match=r"subnet.env:2: expected KEY=VALUE"):
        read_subnet_env(str(path))


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_subnet_env(str(tmp_path / "absent.env"))


def test_load_round_trips(tmp_path: Path) -> None:
    path = str(tmp_path / "subnet.env")
    for env in (
        sample(),
        sample(
            ipmasq=True,
            ipv6_network=IPv6Network("fd00:5::/56"),
            ipv6_subnet=IPv6Interface("fd00:5:0:34::1/64"),
        ),
    ):
        write_subnet_env(path, env)
        assert load_subnet_env(path) == env


def test_load_missing_file_is_none(tmp_path: Path) -> None:
    assert load_subnet_env(str(tmp_path / "absent.env")) is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (FLANNEL_FILE.replace("FLANNEL_MTU=1450\n", ""), "FLANNEL_MTU is missing"),
        (FLANNEL_FILE.replace("10.5.0.0/16", "10.5.0.1/16"), "FLANNEL_NETWORK='10.5.0.1/16'"),
        (FLANNEL_FILE.replace("10.5.52.1/24", "10.5.52.1"), "FLANNEL_SUBNET='10.5.52.1'.*CIDR"),
        (FLANNEL_FILE.replace("10.5.52.1/24", "banana"), "FLANNEL_SUBNET='banana'"),
        (FLANNEL_FILE.replace("1450", "1450b"), "FLANNEL_MTU='1450b'"),
        (FLANNEL_FILE.replace("=false", "=no"), "FLANNEL_IPMASQ='no'"),
        (FLANNEL_FILE + "FLANNEL_IPV6_NETWORK=10.0.0.0/8\n", "FLANNEL_IPV6_NETWORK"),
        (FLANNEL_FILE.replace("10.5.52.1/24", "10.9.52.1/24"), "FLANNEL_SUBNET 10.9.52.1/24"),
    ],
)
def test_load_malformed_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(text)
    with pytest.raises(ValueError, match=key) as caught:
        load_subnet_env(str(path))
    assert str(caught.value).startswith(str(path))
