"""BIRD's configuration file as the agent keeps it: written atomically, only when its text
changes, and retired (no subnet announced, no sessions) after a switch away from bgp."""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
from pathlib import Path

from pyflannel.bgp.birdconf import HEADER, BirdSettings, render
from pyflannel.bgp.birdctl import BirdControl, BirdError

log = logging.getLogger(__name__)


def write_if_changed(path: Path, text: str) -> bool:
    """Replace the file when its text differs (atomically: BIRD may read it at any time)."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=".pyflannel-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # BIRD runs as its own user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def written_by_us(path: Path) -> bool:
    try:
        with path.open() as f:
            return f.readline().rstrip("\n") == HEADER
    except OSError:
        return False


def retire(
    path: Path,
    control: BirdControl,
    router_id: ipaddress.IPv4Address,
    network: ipaddress.IPv4Network,
) -> bool:
    """After a switch to another backend: our BIRD file without our subnet and sessions, so
    that BIRD withdraws what it announced and the routes it installed (the new backend routes
    the peers). A file we did not write is left alone. True when BIRD was told."""
    if not written_by_us(path):
        return False
    if not write_if_changed(path, render(BirdSettings(router_id, network, own_subnet=None))):
        return False
    log.info("bgp is off: wrote %s without our subnet and BGP sessions", path)
    try:
        control.configure()
    except BirdError as exc:
        log.warning("bgp is off but BIRD did not reload (%s): it reads %s at its start", exc, path)
        return False
    return True
