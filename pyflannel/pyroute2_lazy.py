"""pyroute2 without its package __init__ until a name only the __init__ defines is asked for.

pyroute2/__init__.py re-exports the whole library (NDB with sqlite3, IPDB, conntrack, nftables,
wireguard, ...): importing it costs about 6 MB of RSS per process, which the agent, flannelctl and
the modules never use; they import the netlink classes from their submodules. `install()`
registers the package with an empty namespace instead; the first `from pyroute2 import X` of a
name no submodule import has put there runs the real __init__ then, so other code (the test lab,
a plugin) sees the package as always.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

PACKAGE = "pyroute2"


class _DeferredPackage(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        # `from pyroute2 import config` inside the library: a submodule, no __init__ needed.
        if importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            return importlib.import_module(f"{PACKAGE}.{name}")
        # Back to a plain module first, so attribute lookups inside the __init__ are ordinary.
        module: types.ModuleType = self
        module.__class__ = types.ModuleType
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(module)
        return getattr(module, name)


def install() -> None:
    """Register the deferred package, unless pyroute2 is already imported (then nothing to do)."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None:
        return  # not installed: the imports that need it will say so
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredPackage
    sys.modules[PACKAGE] = module
