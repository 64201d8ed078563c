"""Running the delegate plugin (bridge, host-local, ...) found on CNI_PATH."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from pyflannel.cni.protocol import INVALID_CONFIG, IO_FAILURE, CniError, Invocation

# A delegate that fails without a CNI error on stdout (crashed, killed): plugin-specific code.
DELEGATE_FAILED = 100
DELEGATE_TIMEOUT = 60.0


def find_plugin(plugin_type: str, path: tuple[str, ...]) -> str:
    if not plugin_type or "/" in plugin_type:
        raise CniError(INVALID_CONFIG, f"delegate type {plugin_type!r} is not a plugin name")
    for directory in path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(
        INVALID_CONFIG,
        f"delegate plugin {plugin_type!r} not found in CNI_PATH ({os.pathsep.join(path)}); "
        "install the standard plugins (Debian: containernetworking-plugins)",
    )


def run_delegate(
    command: str,
    delegate: dict[str, Any],
    invocation: Invocation,
    environ: Mapping[str, str] = os.environ,
    timeout: float = DELEGATE_TIMEOUT,
) -> str:
    """Run the delegate for `command` with `delegate` on stdin; its stdout (a result or "")."""
    plugin = find_plugin(str(delegate.get("type", "")), invocation.path)
    env = dict(
        environ,
        CNI_COMMAND=command,
        CNI_CONTAINERID=invocation.container_id,
        CNI_NETNS=invocation.netns,
        CNI_IFNAME=invocation.ifname,
        CNI_ARGS=invocation.args,
        CNI_PATH=os.pathsep.join(invocation.path),
    )
    try:
        done = subprocess.run(
            [plugin],
            input=json.dumps(delegate).encode(),
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CniError(
            DELEGATE_FAILED, f"{plugin} {command} did not finish in {timeout:g} s"
        ) from None
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot run {plugin}: {exc}") from None
    stdout = done.stdout.decode(errors="replace")
    if done.returncode == 0:
        return stdout
    raise _delegate_error(plugin, command, done.returncode, stdout, done.stderr)


def _delegate_error(plugin: str, command: str, rc: int, stdout: str, stderr: bytes) -> CniError:
    """The delegate's own CNI error when it printed one (its code and msg reach the runtime)."""
    try:
        error = json.loads(stdout)
    except json.JSONDecodeError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("code"), int) and "msg" in error:
        return CniError(
            error["code"], f"{os.path.basename(plugin)}: {error['msg']}", error.get("details", "")
        )
    detail = (stderr.decode(errors="replace") or stdout).strip().splitlines()
    return CniError(
        DELEGATE_FAILED,
        f"{plugin} {command} exited with {rc}",
        detail[-1] if detail else "",
    )
