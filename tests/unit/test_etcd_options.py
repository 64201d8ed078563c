"""One table of etcd settings: flanneld's flags, flannelctl and the modules all follow it.

The entry points build their parsers from pyflannel.etcd_options; these tests fail when one of
them grows its own copy of a setting (a flag missing, a default that differs, a module option
left undocumented) or when a lower layer's error names a setting in the wrong tool's words.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from pyflannel import etcd_options
from pyflannel.ctl import main as ctl_main
from pyflannel.ctl.options import connection
from pyflannel.ctl.parser import build_parser
from pyflannel.daemon import main as daemon_main
from pyflannel.errors import SettingError
from pyflannel.flags import DaemonOptions, etcd_settings, parse_flags, usage, usage_message
from pyflannel.store import EtcdOptions, parse_endpoint

KEYS = [option.key for option in etcd_options.ETCD_OPTIONS]
REPO = Path(__file__).resolve().parents[2]


def collection_module(name: str) -> ModuleType:
    """Import a plugin as Ansible does, from the checkout's collection link."""
    collections = str(REPO / "collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    return importlib.import_module(f"ansible_collections.pyflannel.overlay.plugins.{name}")


def test_the_agent_imports_the_modules_file() -> None:
    # pyflannel/etcd_options.py is a link to the collection's module_utils file.
    module_copy = collection_module("module_utils.etcd_options")
    assert etcd_options.__file__ is not None and module_copy.__file__ is not None
    assert os.path.samefile(etcd_options.__file__, module_copy.__file__)


def test_every_setting_is_a_flanneld_flag_with_the_tables_default() -> None:
    text = usage()
    defaults = DaemonOptions()
    for option in etcd_options.ETCD_OPTIONS:
        assert f"--{option.flag}=<{option.metavar}>" in text
        if option.default is not None:
            value = getattr(
                parse_flags([f"--{option.flag}={option.default}"], {}), "etcd_" + option.key
            )
            assert getattr(defaults, "etcd_" + option.key) == value


def test_flannelctl_resolves_the_same_defaults_as_the_agent() -> None:
    args = build_parser().parse_args(["config", "show"])
    options, prefix = connection(args, {})
    agent = DaemonOptions()
    assert options == EtcdOptions(**etcd_settings(agent))
    assert prefix == agent.etcd_prefix


def test_flannelctl_takes_each_setting_from_flag_and_environment() -> None:
    args = build_parser().parse_args(
        ["--etcd-endpoints=https://198.51.100.7:2379", "--etcd-timeout=2", "config", "show"]
    )
    options, _ = connection(args, {"FLANNELD_ETCD_CAFILE": "/etc/ca.pem"})
    assert options.endpoints == ("https://198.51.100.7:2379",)
    assert options.timeout == 2.0
    assert options.cafile == "/etc/ca.pem"


@pytest.mark.parametrize("spec_owner", ["etcd_key", "flannel_lease"])
def test_every_module_option_is_in_the_spec_and_the_doc_fragment(spec_owner: str) -> None:
    module = collection_module(f"modules.{spec_owner}")
    fragment = collection_module("doc_fragments.etcd").ModuleDocFragment
    documented = set(yaml.safe_load(fragment.DOCUMENTATION)["options"])
    for option in etcd_options.ETCD_OPTIONS:
        if option.key == "prefix":
            continue  # only flannel_lease has one, documented in the module itself
        assert module.ARGUMENT_SPEC[option.module_option] == option.module_spec
        assert option.module_option in documented
    # And the fragment documents nothing that the table does not have.
    assert documented <= {option.module_option for option in etcd_options.ETCD_OPTIONS}


def test_a_bad_endpoint_is_a_setting_error_each_edge_names_its_own_way() -> None:
    with pytest.raises(SettingError) as caught:
        parse_endpoint("ftp://198.51.100.7:2379")
    error = caught.value
    assert error.setting == "endpoints"
    assert usage_message(error).startswith("--etcd-endpoints: 'ftp://198.51.100.7:2379'")
    assert error.named(etcd_options.module_names()).startswith("endpoints: 'ftp://")
    assert "--etcd" not in error.named(etcd_options.module_names())


def test_flannelctl_prints_the_flag_name_and_exits_2() -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = ctl_main(["--etcd-endpoints=http://198.51.100.7:99999", "config", "show"], {})
    assert code == 2
    assert "--etcd-endpoints" in stderr.getvalue()


def test_flanneld_prints_the_flag_name_and_exits_2() -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = daemon_main(["--etcd-endpoints=gopher://198.51.100.7"])
    assert code == 2
    assert stderr.getvalue().startswith("flanneld: invalid --etcd-endpoints value")


def test_module_names_cover_every_key() -> None:
    assert list(etcd_options.module_names()) == KEYS
    assert list(etcd_options.flag_names()) == KEYS
