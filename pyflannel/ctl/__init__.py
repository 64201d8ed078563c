"""`flannelctl`: inspect and administer a flannel network in etcd (config, leases, reservations).

Talks to etcd only through `Store` and `SubnetManager`, so what it reads and writes is exactly
what the agents read and write. Connection options and their FLANNELD_* environment variables
are flanneld's, so an operator can source flanneld's env file and run `flannelctl leases list`.
argparse is fine here (no Go flag syntax to stay compatible with); its error path is redirected
so that every failure is one line on stderr prefixed "flannelctl: ".

Modules by job: options (connection options), context (what commands share), config_commands,
lease_commands, parser (argparse and `version`); this one runs a command and reports failures.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence

from pyflannel.ctl.config_commands import (
    EXAMPLE_CONFIG,
    cmd_config_set,
    cmd_config_show,
    cmd_config_validate,
)
from pyflannel.ctl.context import EXIT_ERROR, EXIT_OK, EXIT_USAGE, PROG, Context
from pyflannel.ctl.lease_commands import (
    cmd_leases_list,
    cmd_leases_release,
    cmd_leases_reserve,
    format_table,
    format_ttl,
    parse_public_ip,
    parse_subnet,
)
from pyflannel.ctl.options import connection
from pyflannel.ctl.parser import build_parser, cmd_version
from pyflannel.errors import FlannelError, UsageError
from pyflannel.flags import usage_message

__all__ = [
    "DEBUG_HINT",
    "EXAMPLE_CONFIG",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "Context",
    "build_parser",
    "cmd_config_set",
    "cmd_config_show",
    "cmd_config_validate",
    "cmd_leases_list",
    "cmd_leases_release",
    "cmd_leases_reserve",
    "cmd_version",
    "connection",
    "format_table",
    "format_ttl",
    "main",
    "parse_public_ip",
    "parse_subnet",
]

DEBUG_HINT = "(run with --debug for a traceback)"

log = logging.getLogger("pyflannel")


class _StderrHandler(logging.Handler):
    """Writes to the sys.stderr of the moment (tests swap it), prefixed like our errors."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{PROG}: {record.levelname.lower()}: {self.format(record)}", file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logging_to_stderr(debug: bool) -> Iterator[None]:
    """Route pyflannel's log records (e.g. 'ignoring key ...') to stderr while a command runs.

    Undone afterwards, so that main() can run inside another program (the tests) without
    changing its logging.
    """
    handler = _StderrHandler()
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 error, 2 usage)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    with _logging_to_stderr(bool(args.debug)):
        return _run(args, os.environ if environ is None else environ)


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    ctx: Context | None = None
    try:
        options, prefix = connection(args, environ)
        ctx = Context(options, prefix, json_output=args.output == "json")
        return int(args.handler(ctx, args))
    except UsageError as exc:
        return _fail(usage_message(exc), EXIT_USAGE)
    except FlannelError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (`| head`); point stdout at /dev/null so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return _fail(f"unexpected error: {type(exc).__name__}: {detail} {DEBUG_HINT}", EXIT_ERROR)
    finally:
        if ctx is not None:
            ctx.close()
