"""flannel's subnet file (/run/flannel/subnet.env): render, write atomically, read back.

Docker (through mk-docker-opts) and CNI read this file, so the format is flannel's byte for byte.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SubnetEnv:
    """The lease as flanneld publishes it to the host."""

    network: ipaddress.IPv4Network
    subnet: ipaddress.IPv4Interface  # the bridge gateway, e.g. 10.5.52.1/24
    mtu: int
    ipmasq: bool
    ipv6_network: ipaddress.IPv6Network | None = None
    ipv6_subnet: ipaddress.IPv6Interface | None = None

    def __post_init__(self) -> None:
        if (self.ipv6_network is None) != (self.ipv6_subnet is None):
            raise ValueError("ipv6_network and ipv6_subnet must be given together")
        if self.mtu < 68:
            raise ValueError(f"FLANNEL_MTU {self.mtu} is below the IPv4 minimum of 68")
        if not self.subnet.network.subnet_of(self.network):
            raise ValueError(
                f"FLANNEL_SUBNET {self.subnet} is outside FLANNEL_NETWORK {self.network}"
            )

    def render(self) -> str:
        """The file's text, in flanneld's order (IPv6 lines between SUBNET and MTU)."""
        lines = [f"FLANNEL_NETWORK={self.network}", f"FLANNEL_SUBNET={self.subnet}"]
        if self.ipv6_network is not None:
            lines += [
                f"FLANNEL_IPV6_NETWORK={self.ipv6_network}",
                f"FLANNEL_IPV6_SUBNET={self.ipv6_subnet}",
            ]
        lines += [f"FLANNEL_MTU={self.mtu}", f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}"]
        return "".join(line + "\n" for line in lines)


def atomic_write_text(path: str, content: str, mode: int = 0o644) -> bool:
    """Replace `path` with `content` so readers never see a partial file.

    Returns False, leaving the file untouched, when it already holds exactly `content`.
    The directory is created (0755) when missing.
    """
    data = content.encode()
    try:
        with open(path, "rb") as current:
            if current.read() == data:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)  # makedirs' mode is filtered by the umask
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return True


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable across a crash.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_subnet_env(path: str, env: SubnetEnv) -> bool:
    """Write the subnet file atomically; False when it already had this content."""
    return atomic_write_text(path, env.render())


def read_subnet_env(path: str) -> dict[str, str]:
    """KEY=VALUE pairs of an env file; blanks and # comments skipped, double quotes removed.

    Raises FileNotFoundError when missing, ValueError for a line that is not KEY=VALUE.
    """
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values[key] = value
    return values


def load_subnet_env(path: str) -> SubnetEnv | None:
    """The subnet file as a SubnetEnv; None when it does not exist.

    Raises ValueError naming the key when a value is missing or malformed.
    """
    try:
        values = read_subnet_env(path)
    except FileNotFoundError:
        return None
    network = _required(values, "FLANNEL_NETWORK", path, cidr_parser(ipaddress.IPv4Network))
    subnet = _required(values, "FLANNEL_SUBNET", path, cidr_parser(ipaddress.IPv4Interface))
    mtu = _required(values, "FLANNEL_MTU", path, parse_mtu)
    ipmasq = _required(values, "FLANNEL_IPMASQ", path, parse_ipmasq)
    ipv6_network = _optional(
        values, "FLANNEL_IPV6_NETWORK", path, cidr_parser(ipaddress.IPv6Network)
    )
    ipv6_subnet = _optional(
        values, "FLANNEL_IPV6_SUBNET", path, cidr_parser(ipaddress.IPv6Interface)
    )
    try:
        return SubnetEnv(network, subnet, mtu, ipmasq, ipv6_network, ipv6_subnet)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def parse_ipmasq(value: str) -> bool:
    """FLANNEL_IPMASQ as flanneld writes it: exactly true or false."""
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError("must be true or false")


def cidr_parser(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse`, but insisting on an explicit /prefix: ipaddress would read a bare IP as /32."""

    def parse_cidr(value: str) -> T:
        if "/" not in value:
            raise ValueError("must be in CIDR form address/prefix")
        return parse(value)

    return parse_cidr


def parse_mtu(value: str) -> int:
    """FLANNEL_MTU: a plain decimal number."""
    if not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number")
    return int(value)


def _required(values: dict[str, str], key: str, path: str, parse: Callable[[str], T]) -> T:
    if key not in values:
        raise ValueError(f"{path}: {key} is missing; restart the agent to rewrite the file")
    return _parse(values[key], key, path, parse)


def _optional(values: dict[str, str], key: str, path: str, parse: Callable[[str], T]) -> T | None:
    return _parse(values[key], key, path, parse) if key in values else None


def _parse(value: str, key: str, path: str, parse: Callable[[str], T]) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{path}: {key}={value!r} is invalid: {exc}") from None
