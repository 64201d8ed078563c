"""mk-docker-opts: byte-for-byte output of flannel's mk-docker-opts.sh, switches, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyflannel.dockeropts import Switches, main, parse_switches

REPO = Path(__file__).resolve().parents[2]

WALKTHROUGH_ENV = (
    "FLANNEL_NETWORK=10.100.0.0/16\n"
    "FLANNEL_SUBNET=10.100.50.1/24\n"
    "FLANNEL_MTU=1500\n"
    "FLANNEL_IPMASQ=false\n"
)
WALKTHROUGH_OPTS = (
    'DOCKER_OPT_BIP="--bip=10.100.50.1/24"\n'
    'DOCKER_OPT_IPMASQ="--ip-masq=true"\n'
    'DOCKER_OPT_MTU="--mtu=1500"\n'
    'DOCKER_OPTS=" --bip=10.100.50.1/24 --ip-masq=true --mtu=1500"\n'
)


def run(tmp_path: Path, env_text: str | None, *switches: str) -> tuple[int, bytes | None]:
    """main() on a flannel env holding env_text (None: no file); returns status and output."""
    flannel_env, docker_env = tmp_path / "subnet.env", tmp_path / "out" / "docker_opts.env"
    if env_text is not None:
        flannel_env.write_text(env_text)
    status = main(["-f", str(flannel_env), "-d", str(docker_env), *switches])
    return status, docker_env.read_bytes() if docker_env.exists() else None


def test_walkthrough_output_byte_for_byte(tmp_path: Path) -> None:
    assert run(tmp_path, WALKTHROUGH_ENV) == (0, WALKTHROUGH_OPTS.encode())


def test_flannel_masquerading_turns_docker_masquerading_off(tmp_path: Path) -> None:
    status, output = run(tmp_path, WALKTHROUGH_ENV.replace("=false", "=true"))
    assert status == 0 and output is not None
    assert b'DOCKER_OPT_IPMASQ="--ip-masq=false"\n' in output
    assert output.endswith(b'DOCKER_OPTS=" --bip=10.100.50.1/24 --ip-masq=false --mtu=1500"\n')


def test_individual_only(tmp_path: Path) -> None:
    expected = "".join(WALKTHROUGH_OPTS.splitlines(keepends=True)[:3]).encode()
    assert run(tmp_path, WALKTHROUGH_ENV, "-i") == (0, expected)


def test_combined_only_with_custom_key(tmp_path: Path) -> None:
    expected = b'FLANNEL_DOCKER=" --bip=10.100.50.1/24 --ip-masq=true --mtu=1500"\n'
    assert run(tmp_path, WALKTHROUGH_ENV, "-c", "-k", "FLANNEL_DOCKER") == (0, expected)


def test_both_switches_write_both(tmp_path: Path) -> None:
    assert run(tmp_path, WALKTHROUGH_ENV, "-ic") == (0, WALKTHROUGH_OPTS.encode())


def test_no_ipmasq_option(tmp_path: Path) -> None:
    expected = (
        b'DOCKER_OPT_BIP="--bip=10.100.50.1/24"\n'
        b'DOCKER_OPT_MTU="--mtu=1500"\n'
        b'DOCKER_OPTS=" --bip=10.100.50.1/24 --mtu=1500"\n'
    )
    assert run(tmp_path, WALKTHROUGH_ENV, "-m") == (0, expected)


def test_ipv6_subnet_gives_no_option_as_in_flannels_script(tmp_path: Path) -> None:
    # flannel v0.20.2's mk-docker-opts.sh has no IPv6 option (tests/interop compares the two).
    env = (
        WALKTHROUGH_ENV
        + "FLANNEL_IPV6_NETWORK=fd00:64::/56\nFLANNEL_IPV6_SUBNET=fd00:64:0:32::1/64\n"
    )
    assert run(tmp_path, env) == (0, WALKTHROUGH_OPTS.encode())


def test_quoted_values_and_comments_are_read_like_the_shell_would(tmp_path: Path) -> None:
    env = '# flannel\nFLANNEL_SUBNET="10.100.50.1/24"\n\nFLANNEL_MTU="1500"\nFLANNEL_IPMASQ=false\n'
    assert run(tmp_path, env) == (0, WALKTHROUGH_OPTS.encode())


def test_absent_keys_give_absent_options(tmp_path: Path) -> None:
    assert run(tmp_path, "FLANNEL_MTU=1472\n") == (
        0,
        b'DOCKER_OPT_MTU="--mtu=1472"\nDOCKER_OPTS=" --mtu=1472"\n',
    )
    assert run(tmp_path, "") == (0, b'DOCKER_OPTS=""\n')


def test_existing_output_is_replaced(tmp_path: Path) -> None:
    docker_env = tmp_path / "out" / "docker_opts.env"
    docker_env.parent.mkdir()
    docker_env.write_text('DOCKER_OPTS=" --bip=10.1.1.1/24"\nSTALE=1\n')
    assert run(tmp_path, WALKTHROUGH_ENV) == (0, WALKTHROUGH_OPTS.encode())
    assert os.listdir(docker_env.parent) == ["docker_opts.env"]


def test_missing_flannel_env_is_one_line_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, None) == (1, None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot read the flannel env" in err and "subnet.env" in err
    assert not (tmp_path / "out").exists()


def test_unreadable_flannel_env_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "subnet.env").mkdir()  # a directory cannot be read as a file, even by root
    status = main(["-f", str(tmp_path / "subnet.env"), "-d", str(tmp_path / "docker.env")])
    assert status == 1
    assert not (tmp_path / "docker.env").exists()
    assert "cannot read the flannel env" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        (WALKTHROUGH_ENV.replace("=false", "=maybe"), "FLANNEL_IPMASQ='maybe'"),
        (WALKTHROUGH_ENV.replace("=1500", "=15x0"), "FLANNEL_MTU='15x0'"),
        (WALKTHROUGH_ENV.replace("10.100.50.1/24", "10.100.50.1"), "FLANNEL_SUBNET"),
    ],
)
def test_malformed_values_are_errors_and_the_old_output_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, key: str
) -> None:
    docker_env = tmp_path / "out" / "docker_opts.env"
    docker_env.parent.mkdir()
    docker_env.write_bytes(WALKTHROUGH_OPTS.encode())
    assert run(tmp_path, bad) == (1, WALKTHROUGH_OPTS.encode())
    err = capsys.readouterr().err
    assert key in err and err.count("\n") == 1


def test_malformed_ipmasq_is_an_error_even_with_no_ipmasq_switch(tmp_path: Path) -> None:
    assert run(tmp_path, WALKTHROUGH_ENV.replace("=false", "=yes"), "-m") == (1, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-x"], "option -x not recognized"),
        (["-k"], "option -k requires argument"),
        (["-k", "1BAD"], "shell variable name"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_switches(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("mk-docker-opts: ")


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: mk-docker-opts [-f FLANNEL-ENV-FILE]")
    for switch in ("-f", "-d", "-i", "-c", "-k", "-m"):
        assert f"  {switch}  " in out


def test_switch_defaults_are_the_scripts() -> None:
    assert parse_switches([]) == Switches(
        flannel_env="/run/flannel/subnet.env",
        docker_env="/run/docker_opts.env",
        individual=True,
        combined=True,
        combined_key="DOCKER_OPTS",
        ipmasq=True,
    )
    assert parse_switches(["-f/tmp/a.env", "-d/tmp/b.env", "-c"]) == Switches(
        flannel_env="/tmp/a.env", docker_env="/tmp/b.env", individual=False
    )


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    flannel_env, docker_env = tmp_path / "subnet.env", tmp_path / "docker_opts.env"
    flannel_env.write_text(WALKTHROUGH_ENV)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyflannel.dockeropts",
            "-f",
            str(flannel_env),
            "-d",
            str(docker_env),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert docker_env.read_bytes() == WALKTHROUGH_OPTS.encode()

    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyflannel.dockeropts",
            "-f",
            str(tmp_path / "nope.env"),
            "-d",
            str(docker_env),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("mk-docker-opts: cannot read the flannel env")
    assert docker_env.read_bytes() == WALKTHROUGH_OPTS.encode()  # left as it was
