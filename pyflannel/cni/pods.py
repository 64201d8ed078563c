"""`pyflannel-cni pod add|del NAME`: a test pod networked by the installed network config.

What a runtime does, reduced to one namespace: the pod is the network namespace NAME
(/run/netns/NAME, made with `ip netns`), the flannel plugin of the config list is run on it with
ADD (or DEL, then the namespace goes). The provisioner's overlay check uses it to ping between
nodes' pods; operators can use it to see whether pods get networked on a node. Runtimes call
the plugin without arguments: this mode is only reached with them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyflannel.cni.delegate import run_delegate
from pyflannel.cni.protocol import CniError, Invocation

DEFAULT_CONFLIST = "/etc/cni/net.d/10-flannel.conflist"
DEFAULT_CNI_PATH = "/usr/lib/cni"  # Debian's plugins; the provisioner links flannel there
IFNAME = "eth0"
PLUGIN_TIMEOUT = 120.0


class PodError(Exception):
    """One line for the operator."""


def _flannel_netconf(conflist_path: str) -> dict[str, Any]:
    """The list's flannel entry as a runtime hands it over (with the list's name and version)."""
    try:
        conflist = json.loads(Path(conflist_path).read_text())
    except OSError as exc:
        raise PodError(f"cannot read {conflist_path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PodError(f"{conflist_path} is not JSON: {exc}") from None
    plugins = conflist.get("plugins") if isinstance(conflist, dict) else None
    entry = next(
        (p for p in plugins or [] if isinstance(p, dict) and p.get("type") == "flannel"), None
    )
    if entry is None:
        raise PodError(f"{conflist_path} has no plugin of type flannel")
    return {"cniVersion": conflist.get("cniVersion"), "name": conflist.get("name"), **entry}


def _run_plugin(command: str, name: str, netconf: dict[str, Any], cni_path: str) -> str:
    """The list's flannel entry run on the pod as a runtime runs it."""
    path = tuple(p for p in cni_path.split(os.pathsep) if p)
    invocation = Invocation(command, name, f"/run/netns/{name}", IFNAME, "", path)
    try:
        # Longer than the plugin's own bound on its delegate: that error comes first.
        return run_delegate(command, netconf, invocation, timeout=PLUGIN_TIMEOUT)
    except CniError as exc:
        raise PodError(f"{command} {name}: {exc.msg} (CNI error {exc.code})") from None


def _ip_netns(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", "netns", *args], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise PodError(f"ip netns {' '.join(args)}: {done.stderr.strip()}")
    return done


def add_pod(name: str, conflist: str, cni_path: str) -> dict[str, Any]:
    """Create and network the pod; {name, ip, mtu}."""
    netconf = _flannel_netconf(conflist)
    _ip_netns("add", name)
    try:
        result = json.loads(_run_plugin("ADD", name, netconf, cni_path))
        mtu = _ip_netns("exec", name, "cat", f"/sys/class/net/{IFNAME}/mtu").stdout.strip()
    except BaseException:
        with contextlib.suppress(PodError, CniError, OSError, subprocess.SubprocessError):
            remove_pod(name, conflist, cni_path)
        raise
    address = result["ips"][0]["address"].split("/")[0]
    return {"name": name, "ip": address, "mtu": int(mtu)}


def remove_pod(name: str, conflist: str, cni_path: str) -> bool:
    """DEL, then the namespace; False when there was no such pod (nothing to do)."""
    exists = Path(f"/run/netns/{name}").exists()
    _run_plugin("DEL", name, _flannel_netconf(conflist), cni_path)
    if exists:
        _ip_netns("delete", name)
    return exists


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pyflannel-cni",
        description="Without arguments: the flannel CNI plugin (a runtime runs it). With "
        "`pod add|del NAME`: a test pod (network namespace NAME) networked by the config list.",
    )
    sub = parser.add_subparsers(dest="area", required=True)
    pod = sub.add_parser("pod", help="a test pod networked by the installed config list")
    pod.add_argument("action", choices=["add", "del"])
    pod.add_argument("name", help="the pod's network namespace (/run/netns/NAME)")
    pod.add_argument("--conflist", default=DEFAULT_CONFLIST, help="default: %(default)s")
    pod.add_argument(
        "--cni-path", default=DEFAULT_CNI_PATH, help="plugin directories, : separated (%(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "add":
            print(json.dumps(add_pod(args.name, args.conflist, args.cni_path)))
        else:
            removed = remove_pod(args.name, args.conflist, args.cni_path)
            print(json.dumps({"name": args.name, "removed": removed}))
    except (PodError, CniError) as exc:
        print(f"pyflannel-cni: {exc}", file=sys.stderr)
        return 1
    return 0
