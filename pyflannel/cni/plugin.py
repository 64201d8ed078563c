"""`flannel` CNI plugin entry point: ADD, DEL, CHECK and VERSION.

Runtimes find it on CNI_PATH by the name `flannel` (the provisioner links it there).
Errors go to stdout as the spec's JSON (code, msg, details) with exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pyflannel.cni.delegate import find_plugin, run_delegate
from pyflannel.cni.netconf import (
    FlannelNetConf,
    delegate_config,
    delegate_subnets,
    parse_netconf,
    read_lease,
)
from pyflannel.cni.protocol import (
    INCOMPATIBLE_VERSION,
    IO_FAILURE,
    LATEST,
    UNKNOWN_CONTAINER,
    CniError,
    Invocation,
    check_version,
    version_report,
)
from pyflannel.cni.saved import SavedConfigs

CHECK_SINCE = "0.4.0"


def cmd_add(invocation: Invocation, netconf: FlannelNetConf) -> str:
    delegate = delegate_config(netconf, read_lease(netconf))
    find_plugin(str(delegate["type"]), invocation.path)  # a missing plugin leaves nothing behind
    # Saved before the delegate runs: a runtime answers a failed ADD with DEL, which must
    # find what to undo.
    SavedConfigs(netconf.data_dir).save(invocation.container_id, delegate)
    return run_delegate("ADD", delegate, invocation)


def cmd_del(invocation: Invocation, netconf: FlannelNetConf) -> str:
    saved = SavedConfigs(netconf.data_dir)
    delegate = saved.load(invocation.container_id)
    if delegate is None:
        return ""  # nothing was set up, or an earlier DEL finished: DEL is idempotent
    delegate.update(netconf.passed_through)
    run_delegate("DEL", delegate, invocation)
    saved.remove(invocation.container_id)
    return ""


def cmd_check(invocation: Invocation, netconf: FlannelNetConf) -> str:
    if netconf.cni_version in ("0.3.0", "0.3.1"):
        raise CniError(INCOMPATIBLE_VERSION, f"CHECK needs cniVersion {CHECK_SINCE} or later")
    delegate = SavedConfigs(netconf.data_dir).load(invocation.container_id)
    if delegate is None:
        raise CniError(
            UNKNOWN_CONTAINER, f"no ADD recorded for container {invocation.container_id}"
        )
    lease = str(read_lease(netconf).subnet.network)
    subnets = delegate_subnets(delegate)
    if lease not in subnets:
        raise CniError(
            UNKNOWN_CONTAINER,
            f"container {invocation.container_id} is on {', '.join(subnets)}, "
            f"the node's lease is {lease} now: recreate the container",
        )
    delegate.update(netconf.passed_through)
    run_delegate("CHECK", delegate, invocation)
    return ""


COMMANDS: dict[str, Callable[[Invocation, FlannelNetConf], str]] = {
    "ADD": cmd_add,
    "DEL": cmd_del,
    "CHECK": cmd_check,
}


def main() -> int:
    if len(sys.argv) > 1:  # an operator's `pod add|del`: runtimes pass no arguments
        from pyflannel.cni.pods import main as pods_main

        return pods_main(sys.argv[1:])
    version = LATEST
    try:
        invocation = Invocation.from_environment()
        if invocation.command == "VERSION":
            sys.stdout.write(version_report())
            return 0
        netconf = parse_netconf(sys.stdin.buffer.read())
        version = netconf.cni_version
        check_version(version)
        sys.stdout.write(COMMANDS[invocation.command](invocation, netconf))
        return 0
    except CniError as exc:
        sys.stdout.write(exc.to_json(version))
        return 1
    except OSError as exc:  # the data directory, stdin: the spec's I/O failure
        sys.stdout.write(CniError(IO_FAILURE, str(exc)).to_json(version))
        return 1


if __name__ == "__main__":
    sys.exit(main())
