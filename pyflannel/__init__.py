"""pyflannel: a flanneld-compatible overlay network agent."""

__version__ = "0.1.0"
