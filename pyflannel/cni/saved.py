"""Per-container delegate configs: what ADD ran, for DEL and CHECK to run against.

One file per container ID in the data directory, as flannel's plugin keeps them, so a node
that swaps flannel's plugin for this one can still delete the containers flannel's set up.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from pyflannel.cni.protocol import DECODING_FAILURE, CniError
from pyflannel.subnetenv import atomic_write_text


class SavedConfigs:
    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir

    def _path(self, container_id: str) -> str:
        return os.path.join(self.data_dir, container_id)

    def save(self, container_id: str, delegate: dict[str, Any]) -> None:
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        atomic_write_text(self._path(container_id), json.dumps(delegate), mode=0o600)

    def load(self, container_id: str) -> dict[str, Any] | None:
        """The saved config; None when ADD never ran for this container (or DEL finished)."""
        path = self._path(container_id)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            delegate = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            delegate = None
        if not isinstance(delegate, dict):
            raise CniError(DECODING_FAILURE, f"{path} is not a delegate config; remove it by hand")
        return delegate

    def remove(self, container_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(container_id))
