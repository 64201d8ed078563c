"""pyroute2's package __init__ deferred by pyflannel (pyroute2_lazy.py), in new interpreters."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_agent_imports_without_the_package_init() -> None:
    out = run_python(
        "import sys, pyflannel.daemon, pyflannel.ctl\n"
        "print(sorted(m for m in ('pyroute2.ndb', 'pyroute2.ipdb', 'pyroute2.conntrack')"
        " if m in sys.modules))\n"
        "print('pyroute2.iproute.linux' in sys.modules)"
    )
    assert out.splitlines() == ["[]", "True"]


def test_names_of_the_package_init_still_import() -> None:
    out = run_python(
        "import pyflannel\n"
        "from pyroute2.iproute.linux import IPRoute\n"
        "from pyroute2 import NDB, IPRoute as PackageIPRoute, config\n"
        "import pyroute2\n"
        "print(PackageIPRoute is IPRoute, NDB.__name__, config.__name__, type(pyroute2).__name__,"
        " pyroute2.__version__ != 'unknown')"
    )
    assert out == "True NDB pyroute2.config module True"


def test_an_earlier_import_of_pyroute2_is_left_alone() -> None:
    out = run_python(
        "import pyroute2, sys\n"
        "before = sys.modules['pyroute2']\n"
        "import pyflannel.daemon\n"
        "print(sys.modules['pyroute2'] is before, 'pyroute2.ndb' in sys.modules)"
    )
    assert out == "True True"
