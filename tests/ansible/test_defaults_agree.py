"""Defaults the agent owns, restated where Ansible needs literals, must agree with the agent.

Role defaults, argument specs and module documentation are YAML that Ansible reads without
importing pyflannel, so they carry the agent's default etcd prefix as text: the owner is
`pyflannel.etcd_options.DEFAULT_PREFIX`, and this test fails when a copy drifts.
"""

from __future__ import annotations

from typing import Any

import yaml

from pyflannel.etcd_options import DEFAULT_PREFIX, module_argument_spec
from pyflannel.flags import DaemonOptions
from tests.ansible.test_etcd_key import REPO


def _yaml(path: str) -> Any:
    return yaml.safe_load((REPO / path).read_text())


def test_the_agents_own_default() -> None:
    assert DaemonOptions().etcd_prefix == DEFAULT_PREFIX


def test_role_defaults_and_specs() -> None:
    assert _yaml("roles/flannel_network/defaults/main.yml")["flannel_network_etcd_prefix"] == (
        DEFAULT_PREFIX
    )
    spec = _yaml("roles/flannel_network/meta/argument_specs.yml")["argument_specs"]["main"]
    assert spec["options"]["flannel_network_etcd_prefix"]["default"] == DEFAULT_PREFIX
    flannel = _yaml("roles/flannel/defaults/main.yml")["flannel_etcd_prefix"]
    assert f"default('{DEFAULT_PREFIX}')" in flannel


def test_the_lease_module() -> None:
    source = (REPO / "plugins" / "modules" / "flannel_lease.py").read_text()
    doc = yaml.safe_load(source.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
    assert doc["options"]["prefix"]["default"] == DEFAULT_PREFIX
    # Its argument spec takes the prefix from the option table, whose default is the owner's.
    assert "module_argument_spec(with_prefix=True)" in source
    spec = module_argument_spec(with_prefix=True)
    assert spec["prefix"]["default"] == DEFAULT_PREFIX
