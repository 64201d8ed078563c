"""What flannelctl's commands share: the program name, exit codes, the Context and output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from pyflannel.store import EtcdOptions, Store
from pyflannel.subnet.manager import SubnetManager

PROG = "flannelctl"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


@dataclass
class Context:
    """What a command needs: output mode and a store opened on first use."""

    options: EtcdOptions
    prefix: str
    json_output: bool
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.options)
        return self._store

    @property
    def manager(self) -> SubnetManager:
        return SubnetManager(self.store, self.prefix)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)
