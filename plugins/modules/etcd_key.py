#!/usr/bin/python
"""Ansible module etcd_key: one key's value in etcd v3, through etcd's JSON gateway."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: etcd_key
short_description: Set or remove one key in etcd v3
description:
  - Makes sure an etcd v3 key holds a given value, or does not exist.
  - Talks to etcd's JSON gateway (C(/v3/kv/...)) with the Python standard library only, so
    the target host needs nothing but python3.
  - The endpoints are tried in order; the next one is used when an endpoint cannot be reached
    within O(timeout), fails the TLS handshake or answers with a server error.
  - Writes are compare-and-swap transactions on the key's revision, so a value changed by
    someone else between read and write is never overwritten blindly.
  - With O(value_json) the stored value is compared as JSON, so the same JSON with other
    spacing or key order counts as unchanged. A changed value is written as compact JSON.
author:
  - pyflannel maintainers
extends_documentation_fragment:
  - pyflannel.overlay.etcd
options:
  key:
    description:
      - The full key, for example C(/coreos.com/network/config).
    type: str
    required: true
  value:
    description:
      - The value as plain text, compared byte for byte.
      - Mutually exclusive with O(value_json).
    type: str
  value_json:
    description:
      - The value as JSON, either a dict or list or a JSON text.
      - Compared semantically with the stored value; written as compact JSON.
      - Mutually exclusive with O(value).
    type: raw
  state:
    description:
      - V(present) writes the value when it differs, V(absent) deletes the key.
      - V(present) needs O(value) or O(value_json).
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    description: Reports what would change and writes nothing.
    support: full
  diff_mode:
    description:
      - Shows the value before and after; JSON values are pretty-printed with sorted keys.
    support: full
notes:
  - The agent itself (pyflannel) talks gRPC to etcd; this module is the provisioner's access.
  - etcd 3.4 serves the gateway under C(/v3/) and C(/v3beta/); etcd 3.5 and later under
    C(/v3/) only. This module uses C(/v3/).
seealso:
  - module: pyflannel.overlay.flannel_lease
"""

EXAMPLES = r"""
- name: Write the flannel network config
  pyflannel.overlay.etcd_key:
    endpoints: "{{ groups['etcd'] | map('extract', hostvars, 'etcd_client_url') | list }}"
    key: /coreos.com/network/config
    value_json:
      Network: 10.5.0.0/16
      Backend:
        Type: vxlan

- name: Write a plain value over TLS with a client certificate
  pyflannel.overlay.etcd_key:
    endpoints: [https://192.0.2.10:2379, https://192.0.2.11:2379]
    key: /site/owner
    value: ops
    ca_cert: /etc/etcd/pki/ca.pem
    client_cert: /etc/etcd/pki/client.pem
    client_key: /etc/etcd/pki/client-key.pem

- name: Remove a key, with etcd authentication
  pyflannel.overlay.etcd_key:
    endpoints: [http://127.0.0.1:2379]
    key: /site/owner
    state: absent
    username: root
    password: "{{ etcd_root_password }}"
"""

RETURN = r"""
key:
  description: The key.
  returned: always
  type: str
  sample: /coreos.com/network/config
old_value:
  description: The value before the task; null when the key did not exist.
  returned: always
  type: str
  sample: '{"Network":"10.5.0.0/16"}'
new_value:
  description:
    - The value after the task (in check mode, the value it would have); null when the key is
      (or would be) absent.
  returned: always
  type: str
  sample: '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'
changed:
  description: Whether the key was (in check mode, would be) written or deleted.
  returned: always
  type: bool
"""

import json  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.pyflannel.overlay.plugins.module_utils.etcd_gateway import (  # noqa: E402
    CONNECTION_ARGUMENT_SPEC,
    CONNECTION_REQUIRED_TOGETHER,
    EtcdGateway,
    EtcdGatewayError,
    KeyValue,
)

# Compare-and-swap retries when another writer changes the key between our read and write.
WRITE_ATTEMPTS = 3

ARGUMENT_SPEC: dict[str, Any] = {
    "key": {"type": "str", "required": True, "no_log": False},
    "value": {"type": "str"},
    "value_json": {"type": "raw"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    **CONNECTION_ARGUMENT_SPEC,
}


class Desired:
    """What the key should hold: the text to write and, for JSON, its canonical form."""

    def __init__(self, text: str, canonical: str | None) -> None:
        self.text = text
        self.canonical = canonical

    def matches(self, current: KeyValue) -> bool:
        if self.canonical is None:
            return current.value == self.text.encode("utf-8")
        parsed = _parse_json(current.value)
        return parsed is not _NOT_JSON and _canonical(parsed) == self.canonical


_NOT_JSON = object()


def _parse_json(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _canonical(data: Any) -> str:
    # sort_keys: key order is not meaningful; bools and numbers stay distinct (true != 1).
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def desired_value(params: dict[str, Any]) -> Desired:
    """The value to write from `value` or `value_json`; raises ValueError for bad JSON."""
    if params["value"] is not None:
        return Desired(params["value"], None)
    data = params["value_json"]
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"value_json: not valid JSON: {exc}") from None
    compact = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return Desired(compact, _canonical(data))


def diff_text(value: str | None, as_json: bool) -> str:
    """A value for --diff: JSON pretty-printed with sorted keys, so changes stand out."""
    if value is None:
        return ""
    if as_json:
        parsed = _parse_json(value)
        if parsed is not _NOT_JSON:
            return json.dumps(parsed, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    return value if value.endswith("\n") else value + "\n"


def connect(params: dict[str, Any]) -> EtcdGateway:
    return EtcdGateway(
        params["endpoints"],
        ca_cert=params["ca_cert"],
        client_cert=params["client_cert"],
        client_key=params["client_key"],
        username=params["username"],
        password=params["password"],
        timeout=params["timeout"],
    )


def apply(module: AnsibleModule, etcd: EtcdGateway) -> dict[str, Any]:
    """Read, compare and (outside check mode) write with compare-and-swap; the result dict."""
    params = module.params
    key = params["key"]
    present = params["state"] == "present"
    desired = desired_value(params) if present else None
    for _ in range(WRITE_ATTEMPTS):
        current = etcd.get(key)
        old = current.text if current is not None else None
        if desired is not None:
            changed = current is None or not desired.matches(current)
            new = desired.text if changed else old
        else:
            changed, new = current is not None, None
        result: dict[str, Any] = {
            "key": key,
            "old_value": old,
            "new_value": new,
            "changed": changed,
        }
        if module._diff:
            as_json = desired.canonical is not None if desired else True
            result["diff"] = {
                "before_header": key,
                "after_header": key,
                "before": diff_text(old, as_json),
                "after": diff_text(new, as_json),
            }
        if not changed or module.check_mode:
            return result
        revision = current.mod_revision if current is not None else 0
        if desired is not None and etcd.put_if_unchanged(key, desired.text, revision):
            return result
        if desired is None and etcd.delete_if_unchanged(key, revision):
            return result
    raise EtcdGatewayError(
        f"etcd key {key} kept changing while this task wrote it ({WRITE_ATTEMPTS} attempts); "
        "find the other writer and run again"
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[("value", "value_json")],
        required_if=[("state", "present", ("value", "value_json"), True)],
        required_together=CONNECTION_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    try:
        result = apply(module, connect(module.params))
    except (EtcdGatewayError, ValueError) as exc:
        module.fail_json(msg=str(exc), key=module.params["key"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
