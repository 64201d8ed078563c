"""BIRD's configuration file after a switch away from bgp: retired (no subnet announced, no
sessions). The bgp backend writes it with subnetenv.atomic_write_text, as here."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from pyflannel.bgp.birdconf import HEADER, BirdSettings, render
from pyflannel.bgp.birdctl import BirdControl, BirdError
from pyflannel.subnetenv import atomic_write_text

log = logging.getLogger(__name__)


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
    if not atomic_write_text(str(path), render(BirdSettings(router_id, network, own_subnet=None))):
        return False
    log.info("bgp is off: wrote %s without our subnet and BGP sessions", path)
    try:
        control.configure()
    except BirdError as exc:
        log.warning("bgp is off but BIRD did not reload (%s): it reads %s at its start", exc, path)
        return False
    return True
