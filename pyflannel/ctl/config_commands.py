"""flannelctl config show, validate and set: the network config in <prefix>/config."""

from __future__ import annotations

import argparse
import json
import sys

from pyflannel.config import NetworkConfig, config_to_json, parse_config
from pyflannel.ctl.context import EXIT_OK, PROG, Context, _emit_json, _warn
from pyflannel.errors import ConfigError, ConfigMissingError, FlannelError, UsageError
from pyflannel.store import KeyValue, Store
from pyflannel.subnet.lease import config_key

EXAMPLE_CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'


def _read_config_input(args: argparse.Namespace) -> str:
    """The config text from the positional argument, -f FILE or -f - (stdin)."""
    if args.json is not None and args.file is not None:
        raise UsageError("give the config either as an argument or with -f, not both")
    if args.json is not None:
        return str(args.json)
    if args.file is None:
        raise UsageError(f"no config given; pass it as an argument ('{EXAMPLE_CONFIG}') or -f FILE")
    if args.file == "-":
        try:
            return sys.stdin.read()
        except UnicodeDecodeError:
            raise UsageError("-f -: standard input is not UTF-8 text") from None
    try:
        with open(args.file, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"-f: cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"-f: {args.file} is not UTF-8 text") from None


def _validate(text: str, action: str) -> NetworkConfig:
    try:
        return parse_config(text)
    except ConfigError as exc:
        raise ConfigError(f"invalid network config{action}: {exc}") from None


def _canonical(value: str | bytes) -> str | None:
    """Key order and spacing do not matter; true vs 1 does (json.loads(...) == would say equal)."""
    try:
        return json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError):
        return None


def _stored_config(ctx: Context) -> KeyValue:
    key = config_key(ctx.prefix)
    kv = ctx.store.get(key)
    if kv is None:
        raise ConfigMissingError(key, f"`{PROG} config set '{EXAMPLE_CONFIG}'`")
    return kv


def cmd_config_show(ctx: Context, args: argparse.Namespace) -> int:
    kv = _stored_config(ctx)
    if args.effective:
        config = _validate(kv.value.decode("utf-8", "replace"), " in etcd")
        for warning in config.warnings:
            _warn(warning)
        print(config_to_json(config))
        return EXIT_OK
    text = kv.value.decode("utf-8", "replace")
    if ctx.json_output:
        try:
            _emit_json(json.loads(text))
        except ValueError:
            raise ConfigError(
                f"{kv.key} does not hold JSON; show it as stored with `{PROG} config show`"
            ) from None
        return EXIT_OK
    print(text.rstrip("\n"))
    try:  # the raw value is shown as is; whether agents would accept it goes to stderr
        for warning in parse_config(kv.value).warnings:
            _warn(warning)
    except ConfigError as exc:
        _warn(f"the stored config is invalid, agents will refuse it: {exc}")
    return EXIT_OK


def cmd_config_validate(ctx: Context, args: argparse.Namespace) -> int:
    config = _validate(_read_config_input(args), "")
    for warning in config.warnings:
        _warn(warning)
    if ctx.json_output:
        _emit_json(
            {
                "valid": True,
                "warnings": list(config.warnings),
                "effective": json.loads(config_to_json(config)),
            }
        )
    else:
        print("config is valid; effective config:")
        print(config_to_json(config))
    return EXIT_OK


def cmd_config_set(ctx: Context, args: argparse.Namespace) -> int:
    text = _read_config_input(args).strip()
    config = _validate(text, "; nothing written")
    for warning in config.warnings:
        _warn(warning)
    key = config_key(ctx.prefix)
    current = ctx.store.get(key)
    unchanged = current is not None and _canonical(current.value) == _canonical(text)
    revision: int | None = None
    if unchanged:
        message = f"unchanged: {key} already holds this config"
    elif args.dry_run:
        message = f"dry run: config is valid; would write {key}"
    else:
        revision = _write_config(ctx.store, key, text, current)
        message = f"wrote {key} (revision {revision})"
        if current is not None:
            message += "; running agents read the config at start: restart them to apply it"
    if ctx.json_output:
        _emit_json(
            {
                "key": key,
                "changed": revision is not None,
                "unchanged": unchanged,
                "dry_run": bool(args.dry_run),
                "revision": revision,
                "warnings": list(config.warnings),
            }
        )
    else:
        print(message)
    return EXIT_OK


def _write_config(store: Store, key: str, text: str, current: KeyValue | None) -> int:
    """Compare-and-swap, so that a concurrent edit is not silently overwritten."""
    if current is None:
        written = store.create(key, text)
    else:
        written = store.replace(key, text, current.mod_revision)
    if not written:
        raise FlannelError(f"{key} was changed by someone else meanwhile; nothing written, retry")
    kv = store.get(key)
    return kv.mod_revision if kv is not None else 0
