"""Whether a wheelhouse's wheels install on a node: the flannel role checks before copying.

pip on the node would refuse a wheel built for another Python or machine with "No matching
distribution found", naming neither; this says which wheel, what it was built for and what
the node runs. Wheel names are parsed by `packaging` (a dependency of ansible-core).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from ansible.errors import AnsibleFilterError
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

# platform.machine() -> the architecture as wheel platform tags spell it.
_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def _fits(tag: Tag, python: tuple[int, int], arch: str) -> bool:
    interpreter, abi, platform = tag.interpreter, tag.abi, tag.platform
    if platform != "any" and not (
        platform.startswith(("manylinux", "musllinux", "linux")) and platform.endswith(arch)
    ):
        return False
    if interpreter in ("py3", f"py{python[0]}{python[1]}"):
        return abi == "none"
    if not interpreter.startswith("cp"):
        return False
    major, minor = int(interpreter[2]), int(interpreter[3:] or 0)
    if abi == "abi3":  # the stable ABI: this CPython or any later 3.x
        return major == python[0] and minor <= python[1]
    return (major, minor) == python


def _node(node_tag: str) -> tuple[tuple[int, int], str]:
    """'cp311 x86_64' (what the role's probe prints) -> ((3, 11), 'x86_64')."""
    try:
        implementation, machine = node_tag.split()
        if not implementation.startswith("cp"):
            raise ValueError(implementation)
        python = (int(implementation[2]), int(implementation[3:]))
    except ValueError:
        raise AnsibleFilterError(
            f"flannel_wheel_mismatches: node tag {node_tag!r} is not like 'cp311 x86_64' "
            "(the node's CPython and platform.machine())"
        ) from None
    return python, _ARCH_ALIASES.get(machine, machine)


def flannel_wheel_mismatches(wheels: Iterable[Any], node_tag: str) -> list[str]:
    """The wheels (paths or names) that will not install on the node, each with its tags."""
    python, arch = _node(node_tag)
    problems = []
    for wheel in wheels:
        name = PurePath(str(wheel)).name
        try:
            _, _, _, tags = parse_wheel_filename(name)
        except InvalidWheelFilename as exc:
            problems.append(f"{name} (not a wheel file name: {exc})")
            continue
        if not any(_fits(tag, python, arch) for tag in tags):
            built = ", ".join(sorted(f"{t.interpreter}-{t.abi}-{t.platform}" for t in tags))
            problems.append(f"{name} (built for {built})")
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"flannel_wheel_mismatches": flannel_wheel_mismatches}
