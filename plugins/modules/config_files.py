#!/usr/bin/python
"""Ansible module config_files: a service's directories and files in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_files
short_description: Write a set of files (and their directories) in one module run
description:
  - Makes each directory of O(directories) exist with its owner, group and mode, then each file
    of O(files) hold exactly its O(files[].content) with its owner, group and mode. A file whose
    content differs is written to a temporary file beside it and moved into place, so a reader
    never sees it half-written.
  - Why not M(ansible.builtin.copy) or M(ansible.builtin.template) per file? They cost two
    module runs per unchanged file (a stat, then the attributes); a role's unit, settings and
    certificates in one task cost one. On slow hosts (software-emulated VMs, 7-10 s per module
    run) that is most of an idempotent run's time.
  - The content comes from the controller, for example
    C(lookup('ansible.builtin.template', 'x.j2')) or
    C(lookup('ansible.builtin.file', path, rstrip=false)).
  - Supports check mode and diff mode; O(files[].diff=false) keeps a file out of the diff (files
    with passwords), C(no_log) on the task hides everything (private keys).
author:
  - pyflannel maintainers
options:
  directories:
    description:
      - Directories to create when missing (with missing parents, which get the same
        attributes) and whose owner, group and mode are then set.
      - Handled before O(files), in this order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path of the directory.
        type: path
        required: true
      mode:
        description: Its mode, as an octal string such as C("0755").
        type: str
        default: "0755"
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
  files:
    description:
      - The files. The directory of each must exist or be in O(directories).
    type: list
    elements: dict
    required: true
    suboptions:
      dest:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: Its whole content.
        type: str
        required: true
      mode:
        description: Its mode, as an octal string such as C("0644").
        type: str
        required: true
      owner:
        description: Its owner.
        type: str
        default: root
      group:
        description: Its group.
        type: str
        default: root
      diff:
        description: Whether diff mode shows this file's content.
        type: bool
        default: true
attributes:
  check_mode:
    description: Reports what would change (directories, content, attributes) and writes nothing.
    support: full
  diff_mode:
    description: The content before and after of each changed file, except O(files[].diff=false).
    support: full
notes:
  - Bad paths, modes, owners or groups fail the task before anything is touched.
seealso:
  - module: ansible.builtin.copy
  - module: ansible.builtin.template
"""

EXAMPLES = r"""
- name: Write the agent's settings and unit
  pyflannel.overlay.config_files:
    directories:
      - path: /etc/pyflannel
    files:
      - dest: /etc/default/flanneld
        content: "{{ lookup('ansible.builtin.template', 'flanneld.env.j2') }}"
        mode: "0600"
        diff: false
      - dest: /etc/systemd/system/flanneld.service
        content: "{{ lookup('ansible.builtin.template', 'flanneld.service.j2') }}"
        mode: "0644"
  register: agent_files
  notify: Restart flanneld

- name: Say which files changed
  ansible.builtin.debug:
    var: agent_files.changed_files
"""

RETURN = r"""
changed_files:
  description: The files whose content or attributes changed (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/default/flanneld]
changed_directories:
  description: The directories created or whose attributes changed.
  returned: always
  type: list
  elements: str
  sample: []
existed:
  description: For each file of O(files), whether it existed before this run.
  returned: always
  type: dict
  sample: {/etc/default/flanneld: true}
"""

import grp  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

HIDDEN = "(not shown: diff is false for this file)"


class Refused(Exception):
    """A bad entry or a failed write: the task fails with this one line."""


ARGUMENT_SPEC: dict[str, Any] = {
    "directories": {
        "type": "list",
        "elements": "dict",
        "default": [],
        "options": {
            "path": {"type": "path", "required": True},
            "mode": {"type": "str", "default": "0755"},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
        },
    },
    "files": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "dest": {"type": "path", "required": True},
            "content": {"type": "str", "required": True},
            "mode": {"type": "str", "required": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "diff": {"type": "bool", "default": True},
        },
    },
}


def attributes(module: AnsibleModule, path: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The file arguments AnsibleModule.set_fs_attributes_if_different expects."""
    wanted = {key: entry[key] for key in ("mode", "owner", "group")}
    return module.load_file_common_arguments(wanted, path=path)


def check_entries(entries: list[dict[str, Any]], option: str) -> None:
    """Refuse bad paths, modes, owners and groups before anything is touched."""
    for entry in entries:
        path = entry.get("path") or entry["dest"]
        if not os.path.isabs(path):
            raise Refused(f"{option}: {path!r} is not an absolute path; give the full path")
        try:
            if not 0 <= int(entry["mode"], 8) <= 0o7777:
                raise ValueError(entry["mode"])
        except ValueError:
            raise Refused(
                f'{option}: mode {entry["mode"]!r} of {path} is not an octal mode like "0644"'
            ) from None
        for kind, lookup in (("owner", pwd.getpwnam), ("group", grp.getgrnam)):
            name = entry[kind]
            if name.isdigit():
                continue
            try:
                lookup(name)
            except KeyError:
                raise Refused(
                    f"{option}: {kind} {name!r} of {path} does not exist on this host; "
                    f"create it first or name an existing one"
                ) from None


def ensure_directory(module: AnsibleModule, entry: dict[str, Any]) -> bool:
    """Create the directory (and missing parents) and set its attributes; True when changed."""
    path = entry["path"].rstrip("/") or "/"
    missing: list[str] = []
    cursor = path
    while not os.path.lexists(cursor):
        missing.append(cursor)
        cursor = os.path.dirname(cursor)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise Refused(f"directories: {path} exists and is not a directory; move it away")
    if missing and module.check_mode:
        return True
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
        except OSError as err:
            raise Refused(f"directories: cannot create {created}: {err.strerror}") from err
        module.set_fs_attributes_if_different(attributes(module, created, entry), False)
    changed = module.set_fs_attributes_if_different(attributes(module, path, entry), False)
    return changed or bool(missing)


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomically(module: AnsibleModule, dest: str, content: bytes) -> None:
    """Write beside dest, then rename over it: readers see the old file or the new one."""
    directory = os.path.dirname(dest)
    descriptor, temporary = tempfile.mkstemp(prefix=".config_files-", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        os.unlink(temporary)
        raise Refused(f"files: cannot write {dest}: {err.strerror}") from err
    module.atomic_move(temporary, dest)


def check_places(files: list[dict[str, Any]], planned: set[str]) -> None:
    """Each file's directory exists or is planned, and no directory stands where a file goes."""
    for entry in files:
        dest = entry["dest"]
        directory = os.path.dirname(dest)
        if not os.path.isdir(directory) and directory not in planned:
            raise Refused(
                f"files: the directory of {dest} does not exist; add {directory} to directories"
            )
        if os.path.isdir(dest):
            raise Refused(f"files: {dest} is a directory; a file was expected there")


def ensure_file(
    module: AnsibleModule, entry: dict[str, Any], diffs: list[dict[str, Any]]
) -> tuple[bool, bool]:
    """Make the file hold its content and attributes; (changed, existed)."""
    dest = entry["dest"]
    wanted = entry["content"].encode("utf-8")
    current = read_bytes(dest)
    existed = current is not None
    content_changed = current != wanted
    if content_changed and module._diff and entry["diff"]:
        diffs.append(
            {
                "before_header": dest,
                "after_header": dest,
                "before": (current or b"").decode("utf-8", errors="replace"),
                "after": entry["content"],
            }
        )
    if module.check_mode and not existed:
        return True, False
    if content_changed and not module.check_mode:
        write_atomically(module, dest, wanted)
    attributes_changed = module.set_fs_attributes_if_different(
        attributes(module, dest, entry), False
    )
    return content_changed or attributes_changed, existed


def shown_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the task result shows them: no content of a file kept out of diffs."""
    files = [
        entry if entry["diff"] else {**entry, "content": HIDDEN} for entry in params["files"] or []
    ]
    return {**params, "files": files}


def apply(module: AnsibleModule) -> dict[str, Any]:
    directories: list[dict[str, Any]] = module.params["directories"]
    files: list[dict[str, Any]] = module.params["files"]
    check_entries(directories, "directories")
    check_entries(files, "files")
    check_places(files, {entry["path"].rstrip("/") for entry in directories})
    changed_directories = [
        entry["path"] for entry in directories if ensure_directory(module, entry)
    ]
    diffs: list[dict[str, Any]] = []
    changed_files: list[str] = []
    existed: dict[str, bool] = {}
    for entry in files:
        changed, existed[entry["dest"]] = ensure_file(module, entry, diffs)
        if changed:
            changed_files.append(entry["dest"])
    result: dict[str, Any] = {
        "changed": bool(changed_files or changed_directories),
        "changed_files": changed_files,
        "changed_directories": changed_directories,
        "existed": existed,
    }
    if diffs:
        result["diff"] = diffs
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    invocation = {"module_args": shown_arguments(module.params)}
    try:
        result = apply(module)
    except Refused as refusal:
        module.fail_json(msg=str(refusal), invocation=invocation)
    module.exit_json(**result, invocation=invocation)


if __name__ == "__main__":
    main()
