"""The ``shoal`` command line: one module per group of commands.

Every command fails fast and plainly: with NATS unreachable it exits within seconds with one
line naming the URL and one saying what to check; a refused user or a command the connected
role may not use says so at once; a bad ``SHOAL_*`` setting is one line naming the variable
(exit 2); tracebacks only with ``-v``. Exit codes (:class:`Exit`) are part of the interface,
documented in README.

- :mod:`.common`: exit codes, errors as lines, logging, the bounded NATS connection
- :mod:`.functions`: ``deploy``, ``rm``, ``status``
- :mod:`.invocations`: ``invoke``, ``result``, ``cancel``
- :mod:`.dlq`: ``dlq list``, ``dlq show``, ``dlq redrive``
- :mod:`.logs`: ``logs``
- :mod:`.serve`: ``up``, ``controller``, ``calibrate``
"""

from __future__ import annotations

import argparse
import sys

import anyio

from runtime import __version__

from . import dlq, functions, invocations, logs, serve
from .common import CliError, Commands, Exit, fail, setup_logging, unwrap

__all__ = ["CliError", "Exit", "main", "parser"]


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # Given before or after the command (absent: not given at all).
    args.verbose = getattr(args, "verbose", False)
    args.server = getattr(args, "server", None)
    try:
        setup_logging(args)
        anyio.run(args.run, args)
    except KeyboardInterrupt:  # up and controller stop on Ctrl-C by themselves, with 0
        sys.exit(130)
    except BaseException as e:  # one place turns every failure into lines and a code
        failure = unwrap(e)
        if isinstance(failure, SystemExit | KeyboardInterrupt):
            raise failure from None
        fail(failure, args.verbose)


def parser() -> argparse.ArgumentParser:
    """The ``shoal`` parser; it reads no environment (commands do, when they run)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show library warnings, info lines and tracebacks",
    )
    common.add_argument(
        "--server",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="NATS server URL(s), comma-separated (overrides SHOAL_NATS_URL)",
    )
    p = argparse.ArgumentParser(
        prog="shoal",
        description="Shoal: serverless inference on NATS",
        parents=[common],
        epilog="exit codes: 0 ok, 1 the function answered an error, 2 usage (or a bad SHOAL_* "
        "setting), 3 not found, 4 NATS unreachable, 5 refused (credentials or permissions), "
        "6 other failure; variables: docs/configuration.md",
    )
    p.add_argument("--version", action="version", version=f"shoal {__version__}")
    commands = Commands(p.add_subparsers(dest="command", required=True), common)
    serve.register(commands)
    functions.register(commands)
    invocations.register(commands)
    dlq.register(commands)
    logs.register(commands)
    return p
