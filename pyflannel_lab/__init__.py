"""Network-namespace lab (switch, hosts, containers, etcd) for pyflannel's data-plane tests."""

from pyflannel_lab.lab import Lab, lab_namespaces

__all__ = ["Lab", "lab_namespaces"]
