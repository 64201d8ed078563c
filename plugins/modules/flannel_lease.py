#!/usr/bin/python
"""Ansible module flannel_lease: a node's subnet lease, through the agent's own leasing code."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flannel_lease
short_description: Inspect, reserve or release a node's flannel subnet lease
description:
  - Reads or changes the subnet lease of one node under C(<prefix>/subnets/) in etcd v3, with
    the leasing code of the pyflannel agent itself (C(pyflannel.subnet.manager)), so the module
    and the agent apply the same rules.
  - V(inspect) finds the node's lease and compares it with the node's subnet file, failing when
    there is no lease or when the subnet file disagrees with etcd.
  - V(reserved) turns a subnet into a reservation for a public IP (a key without an etcd lease,
    which never expires and only that node may use); V(released) deletes a lease or reservation.
  - Needs the pyflannel agent's Python; run it with C(ansible_python_interpreter) set to
    C(/opt/pyflannel/bin/python), the virtualenv the flannel role installs.
author:
  - pyflannel maintainers
requirements:
  - pyflannel (the agent's virtualenv, C(/opt/pyflannel/bin/python))
extends_documentation_fragment:
  - pyflannel.overlay.etcd
options:
  prefix:
    description:
      - The flannel key prefix (flanneld's C(--etcd-prefix)).
    type: str
    default: /coreos.com/network
  state:
    description:
      - V(inspect) reports the lease and changes nothing.
      - V(reserved) reserves O(subnet) for O(public_ip); an existing lease of that node for that
        subnet becomes a reservation, a subnet held by another node is refused.
      - V(released) deletes the lease or reservation of O(subnet), only if it names O(public_ip).
    type: str
    choices: [inspect, reserved, released]
    default: inspect
  public_ip:
    description:
      - The node's public IP, as in the lease's C(PublicIP).
      - For V(inspect), optional; without it (and without O(subnet)) the lease of the subnet in
        the node's O(subnet_file) (C(FLANNEL_SUBNET)) is inspected.
      - Required for V(reserved) and V(released).
    type: str
  subnet:
    description:
      - The lease's subnet, for example C(10.5.7.0/24).
      - For V(inspect), optional; selects the lease directly.
      - Required for V(reserved) and V(released).
    type: str
  subnet_file:
    description:
      - The node's subnet file (flanneld's C(--subnet-file)), read by V(inspect) for the MTU
        and ip-masq setting and checked against etcd.
      - When it does not exist, or is set to an empty string, C(mtu) and C(ipmasq) are null
        and nothing is compared.
    type: str
    default: /run/flannel/subnet.env
attributes:
  check_mode:
    description: V(reserved) and V(released) report what they would change and write nothing.
    support: full
  diff_mode:
    description: Not supported.
    support: none
notes:
  - The network config (C(<prefix>/config)) must exist for V(inspect) and V(reserved).
  - When TLS to etcd fails, the task fails with one line saying which side refused what and
    what to do (for example an expired client certificate, a client certificate from another
    CA, a server certificate without this endpoint's name, or C(http://) to a TLS port).
seealso:
  - module: pyflannel.overlay.etcd_key
"""

EXAMPLES = r"""
- name: Read this node's lease (from /run/flannel/subnet.env and etcd)
  pyflannel.overlay.flannel_lease:
    endpoints: "{{ flannel_etcd_endpoints }}"
  vars:
    ansible_python_interpreter: /opt/pyflannel/bin/python
  register: flannel_lease_info

- name: Show the bridge address Docker gets
  ansible.builtin.debug:
    msg: "{{ flannel_lease_info.lease.gateway }} mtu {{ flannel_lease_info.lease.mtu }}"

- name: Pin a subnet to a node before it joins
  pyflannel.overlay.flannel_lease:
    endpoints: [http://192.0.2.10:2379]
    state: reserved
    subnet: 10.5.7.0/24
    public_ip: 192.0.2.11
  vars:
    ansible_python_interpreter: /opt/pyflannel/bin/python

- name: Give a removed node's subnet back
  pyflannel.overlay.flannel_lease:
    endpoints: [http://192.0.2.10:2379]
    prefix: /atomic.io/network
    state: released
    subnet: 10.5.7.0/24
    public_ip: 192.0.2.11
  vars:
    ansible_python_interpreter: /opt/pyflannel/bin/python
"""

RETURN = r"""
lease:
  description:
    - The lease. For V(released), the lease as it was before; null when there was none.
    - For V(reserved) and V(released), C(mtu) and C(ipmasq) are null (the subnet file is not
      read).
  returned: always
  type: dict
  contains:
    subnet:
      description: The leased subnet.
      type: str
      sample: 10.5.1.0/24
    gateway:
      description: The subnet's first address with its prefix (Docker's C(--bip)).
      type: str
      sample: 10.5.1.1/24
    network:
      description: The flannel Network from C(<prefix>/config); null for V(released).
      type: str
      sample: 10.5.0.0/16
    mtu:
      description: C(FLANNEL_MTU) from the subnet file; null when it was not read.
      type: int
      sample: 1450
    ipmasq:
      description: C(FLANNEL_IPMASQ) from the subnet file; null when it was not read.
      type: bool
      sample: false
    backend:
      description: The lease's C(BackendType).
      type: str
      sample: vxlan
    public_ip:
      description: The lease's C(PublicIP).
      type: str
      sample: 192.0.2.11
    expires_in:
      description: Seconds until the etcd lease expires; null for a reservation.
      type: int
      sample: 86312
    reserved:
      description: Whether the key is a reservation (no etcd lease attached).
      type: bool
      sample: false
    backend_data:
      description: The lease's C(BackendData) (vxlan VNI and VtepMAC); null when there is none.
      type: dict
      sample: {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}
    key:
      description: The lease's etcd key.
      type: str
      sample: /coreos.com/network/subnets/10.5.1.0-24
changed:
  description: Whether a lease was (in check mode, would be) reserved or released.
  returned: always
  type: bool
"""

import ipaddress  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.pyflannel.overlay.plugins.module_utils.etcd_gateway import (  # noqa: E402
    CONNECTION_REQUIRED_TOGETHER,
    MODULE_OPTIONS,
)
from ansible_collections.pyflannel.overlay.plugins.module_utils.etcd_options import (  # noqa: E402
    module_argument_spec,
    module_names,
)

try:
    from pyflannel.config import NetworkConfig
    from pyflannel.errors import ConfigMissingError, FlannelError, SettingError
    from pyflannel.kvstore import DryRunStore
    from pyflannel.store import EtcdOptions, Store
    from pyflannel.subnet.lease import Lease, subnet_key, subnets_prefix
    from pyflannel.subnet.manager import SubnetManager
    from pyflannel.subnetenv import SubnetEnv, load_subnet_env
except ImportError as exc:
    PYFLANNEL_IMPORT_ERROR: str | None = str(exc)
else:
    PYFLANNEL_IMPORT_ERROR = None

AGENT_PYTHON = "/opt/pyflannel/bin/python"

ARGUMENT_SPEC: dict[str, Any] = {
    "state": {"type": "str", "choices": ["inspect", "reserved", "released"], "default": "inspect"},
    "public_ip": {"type": "str"},
    "subnet": {"type": "str"},
    "subnet_file": {"type": "str", "default": "/run/flannel/subnet.env"},
    **module_argument_spec(with_prefix=True),
}


class ModuleError(Exception):
    """A one-line failure for fail_json."""


class WarningCollector(logging.Handler):
    """pyflannel logs warnings (e.g. a malformed lease ignored); pass them to module.warn."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# -- parameters ---------------------------------------------------------------------------


def parse_ip(text: str | None) -> ipaddress.IPv4Address | None:
    if text is None:
        return None
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise ModuleError(f"public_ip: {text!r} is not an IPv4 address") from None


def parse_subnet(text: str | None) -> ipaddress.IPv4Network | None:
    if text is None:
        return None
    try:
        return ipaddress.IPv4Network(text.strip())
    except ValueError as exc:
        raise ModuleError(
            f"subnet: {text!r} is not an IPv4 subnet like 10.5.7.0/24 ({exc})"
        ) from None


def store_options(params: dict[str, Any]) -> EtcdOptions:
    """The module's connection options by etcd_options key (cafile <- ca_cert, ...)."""
    settings = {key: params[option] for key, option in module_names().items() if key != "prefix"}
    settings["endpoints"] = tuple(settings["endpoints"])
    settings["timeout"] = float(settings["timeout"])
    return EtcdOptions(**settings, option_names=MODULE_OPTIONS)


# -- results ------------------------------------------------------------------------------


def lease_info(
    lease: Lease, prefix: str, network: ipaddress.IPv4Network | None, env: SubnetEnv | None
) -> dict[str, Any]:
    attrs = lease.attrs
    return {
        "subnet": str(lease.subnet),
        "gateway": str(lease.gateway),
        "network": str(network) if network is not None else None,
        "mtu": env.mtu if env is not None else None,
        "ipmasq": env.ipmasq if env is not None else None,
        "backend": attrs.backend_type,
        "public_ip": str(attrs.public_ip),
        "expires_in": lease.expires_in,
        "reserved": lease.is_reservation,
        "backend_data": dict(attrs.backend_data) if attrs.backend_data else None,
        "key": subnet_key(prefix, lease.subnet),
    }


# -- inspect ------------------------------------------------------------------------------


def read_env(path: str) -> SubnetEnv | None:
    if not path:
        return None
    try:
        return load_subnet_env(path)
    except (OSError, ValueError) as exc:
        raise ModuleError(f"subnet_file: {exc}") from None


def find_lease(
    manager: SubnetManager,
    public_ip: ipaddress.IPv4Address | None,
    subnet: ipaddress.IPv4Network | None,
    env: SubnetEnv | None,
    subnet_file: str,
) -> Lease:
    """The lease to inspect: by subnet, by public IP, or the subnet file's FLANNEL_SUBNET."""
    where = subnets_prefix(manager.prefix).rstrip("/")
    if subnet is None and public_ip is None:
        if env is None:
            raise ModuleError(
                f"no public_ip or subnet given and no subnet file {subnet_file or '(none)'} to "
                "find the lease from; is flanneld running? or pass public_ip"
            )
        subnet = env.subnet.network
        origin = f" (FLANNEL_SUBNET in {subnet_file})"
    else:
        origin = f" ({public_ip})" if public_ip is not None else ""
    if subnet is not None:
        lease = manager.get_lease(subnet)
        if lease is None:
            raise ModuleError(f"no lease for {subnet}{origin} under {where}; is flanneld running?")
        if public_ip is not None and lease.attrs.public_ip != public_ip:
            raise ModuleError(
                f"the lease {subnet} under {where} is held by {lease.attrs.public_ip}, "
                f"not {public_ip}"
            )
        return lease
    leases, _ = manager.list_leases()
    mine = [lease for lease in leases if lease.attrs.public_ip == public_ip]
    if not mine:
        raise ModuleError(f"no lease for {public_ip} under {where}; is flanneld running?")
    # The subnet the node uses (its subnet file) first, then a reservation (the agent prefers
    # it), then the newest lease.
    in_use = env.subnet.network if env is not None else None
    mine.sort(key=lambda lease: (lease.subnet != in_use, not lease.is_reservation))
    return mine[0]


def check_env(
    env: SubnetEnv, lease: Lease, config: NetworkConfig, subnet_file: str, prefix: str
) -> None:
    """The subnet file must describe this lease and this network, or something is stale."""
    if env.subnet.network != lease.subnet:
        raise ModuleError(
            f"{subnet_file} says FLANNEL_SUBNET={env.subnet} but the lease of "
            f"{lease.attrs.public_ip} under {prefix} is {lease.subnet}; the file is stale: "
            "restart flanneld to rewrite it"
        )
    if env.network != config.network:
        raise ModuleError(
            f"{subnet_file} says FLANNEL_NETWORK={env.network} but {prefix}/config has "
            f"Network {config.network}; restart flanneld to pick up the config"
        )


def inspect(manager: SubnetManager, params: dict[str, Any]) -> dict[str, Any]:
    subnet_file = params["subnet_file"] or ""
    env = read_env(subnet_file)
    config = manager.get_config()
    lease = find_lease(
        manager, parse_ip(params["public_ip"]), parse_subnet(params["subnet"]), env, subnet_file
    )
    lease = manager.with_expiry(lease)
    if env is not None:
        check_env(env, lease, config, subnet_file, manager.prefix)
    return {"changed": False, "lease": lease_info(lease, manager.prefix, config.network, env)}


# -- reserve / release --------------------------------------------------------------------


def required_target(
    params: dict[str, Any],
) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
    subnet, public_ip = parse_subnet(params["subnet"]), parse_ip(params["public_ip"])
    assert subnet is not None and public_ip is not None  # required_if guarantees both
    return subnet, public_ip


def reserve(manager: SubnetManager, params: dict[str, Any]) -> dict[str, Any]:
    subnet, public_ip = required_target(params)
    config = manager.get_config()
    lease, changed = manager.reserve(config, subnet, public_ip)
    return {"changed": changed, "lease": lease_info(lease, manager.prefix, config.network, None)}


def release(manager: SubnetManager, params: dict[str, Any]) -> dict[str, Any]:
    subnet, public_ip = required_target(params)
    before = manager.get_lease(subnet)
    info = None
    if before is not None:  # read before the etcd lease is revoked with the key
        info = lease_info(manager.with_expiry(before), manager.prefix, None, None)
    changed = manager.release(subnet, public_ip)
    return {"changed": changed, "lease": info}


ACTIONS = {"inspect": inspect, "reserved": reserve, "released": release}


def run(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    store = Store(store_options(params))
    try:
        # Check mode: the same leasing decisions on reads, writes only answer what they would do.
        manager = SubnetManager(
            DryRunStore(store) if module.check_mode else store, params["prefix"]
        )
        return ACTIONS[params["state"]](manager, params)
    finally:
        store.close()


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[
            ("state", "reserved", ("public_ip", "subnet")),
            ("state", "released", ("public_ip", "subnet")),
        ],
        required_together=CONNECTION_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    if PYFLANNEL_IMPORT_ERROR is not None:
        module.fail_json(
            msg=(
                f"flannel_lease needs the pyflannel agent's Python ({sys.executable} cannot "
                f"import it: {PYFLANNEL_IMPORT_ERROR}); run the flannel role first or set "
                f"ansible_python_interpreter to {AGENT_PYTHON}"
            )
        )
    collector = WarningCollector()
    logging.getLogger("pyflannel").addHandler(collector)
    error: str | None = None
    try:
        result = run(module)
    except (SettingError, ConfigMissingError) as exc:  # this module's options, not the flags
        error = exc.named(module_names())
    except (ModuleError, FlannelError) as exc:
        error = str(exc)
    for message in collector.messages:
        module.warn(message)
    if error is not None:
        module.fail_json(msg=error)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
