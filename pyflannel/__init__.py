"""pyflannel: a flanneld-compatible overlay network agent."""

from pyflannel import pyroute2_lazy

__version__ = "0.1.0"

# Before any module of ours imports pyroute2 (see pyroute2_lazy: 5 MB of RSS per process).
pyroute2_lazy.install()
