"""The CNI protocol as a plugin sees it: environment, versions, and errors on stdout.

Spec: https://github.com/containernetworking/cni/blob/main/SPEC.md (versions 0.3.0 to 1.0.0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Versions whose ADD/DEL/CHECK/VERSION this plugin speaks (CHECK is 0.4.0 and later).
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")

# The spec's well-known error codes (0-99 are reserved to it).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11


class CniError(Exception):
    """An error as the spec wants it on stdout: code, one-line msg, optional details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> str:
        body: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return json.dumps(body)


@dataclass(frozen=True, slots=True)
class Invocation:
    """The CNI_* variables of one call."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: tuple[str, ...]

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Invocation:
        command = environ.get("CNI_COMMAND", "")
        if command not in COMMANDS:
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_COMMAND={command!r} is not one of {', '.join(COMMANDS)}",
                "this program is a CNI plugin: a container runtime runs it",
            )
        invocation = cls(
            command=command,
            container_id=environ.get("CNI_CONTAINERID", ""),
            netns=environ.get("CNI_NETNS", ""),
            ifname=environ.get("CNI_IFNAME", ""),
            args=environ.get("CNI_ARGS", ""),
            path=tuple(p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p),
        )
        invocation._check()
        return invocation

    def _check(self) -> None:
        if self.command == "VERSION":
            return
        required = {"CNI_CONTAINERID": self.container_id, "CNI_IFNAME": self.ifname}
        if self.command != "DEL":  # DEL may come without a namespace (it is gone)
            required["CNI_NETNS"] = self.netns
        if not self.path:
            required["CNI_PATH"] = ""
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise CniError(INVALID_ENVIRONMENT, f"{self.command}: {', '.join(missing)} must be set")
        if "/" in self.container_id or self.container_id in (".", ".."):
            raise CniError(
                INVALID_ENVIRONMENT, f"CNI_CONTAINERID={self.container_id!r} is not a valid ID"
            )


def check_version(version: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported; use one of {', '.join(SUPPORTED_VERSIONS)}",
        )


def version_report() -> str:
    """VERSION's answer."""
    return json.dumps({"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)})
