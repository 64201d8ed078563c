"""BIRD 2 daemons in lab namespaces: one per host for the bgp backend, one on the router.

Each runs in the foreground (`bird -f`), so the lab stops it by PID with its namespace; its
configuration file and control socket live in the lab's temp dir. A host's file is the agent's
to write (--bgp-bird-config): BIRD starts on a stub and the agent's first reload replaces it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pyflannel.bgp.birdctl import BirdControl, BirdError
from pyflannel.errors import FlannelError
from pyflannel_lab.lab import Lab
from pyflannel_lab.layout import Node


def bird_paths(lab: Lab, node: Node) -> tuple[Path, Path]:
    """(configuration file, control socket) of the BIRD of a lab node."""
    if lab.tmpdir is None:
        raise FlannelError("the lab is not up")
    name = lab.ns(node).removeprefix(f"{lab.prefix}-")
    return lab.tmpdir / f"{name}-bird.conf", lab.tmpdir / f"{name}-bird.ctl"


def stub_config(router_id: str) -> str:
    return f"router id {router_id};\nprotocol device {{ }}\n"


def start_bird(lab: Lab, node: Node, config: str) -> BirdControl:
    """Write `config` and start BIRD on it; returns its control client once it answers."""
    if shutil.which("bird") is None:
        raise FlannelError("bird is not installed; apt-get install bird2")
    conf, sock = bird_paths(lab, node)
    conf.write_text(config)
    conf.chmod(0o644)
    assert lab.tmpdir is not None
    name = conf.name.removesuffix(".conf")
    lab.popen(
        node, "bird", "-f", "-c", str(conf), "-s", str(sock), log_path=lab.tmpdir / f"{name}.log"
    )
    control = BirdControl(str(sock))
    _wait_answering(control)
    return control


def _wait_answering(control: BirdControl, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            control.protocols()
            return
        except BirdError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
