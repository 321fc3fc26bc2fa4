"""What every ``shoal`` command shares: exit codes, turning failures into lines, logging, the
bounded NATS connection, registering commands, tables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, NoReturn

import anyio
import nats.errors

from runtime import config
from runtime.errors import FunctionNotFound, ResultNotFound, ShoalError
from runtime.wire import logstream
from runtime.wire.connection import NatsAuth, NatsRefused, connect, redact

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

CONNECT_WAIT = 5.0  # seconds: past this an unanswered connect is reported, not retried

# What keeps model libraries quiet in workers (without -v): progress bars, info notices,
# Python warnings of third-party code.
QUIET_LIBRARIES = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TORCH_LOGS": "-onnx",
    "PYTHONWARNINGS": "ignore",
}


class Exit(IntEnum):
    """The ``shoal`` command's exit codes (README, "The shoal command")."""

    OK = 0
    FUNCTION_ERROR = 1  # the function (or the request) answered with an error
    USAGE = 2  # bad arguments, a bad event, or a bad SHOAL_* setting
    NOT_FOUND = 3  # no such function, request id or dead letter
    UNREACHABLE = 4  # no NATS server answers
    REFUSED = 5  # NATS refused the credentials, or the role may not do this
    FAILED = 6  # anything else: a refused deploy or removal, a timeout, an internal error


class CliError(Exception):
    """Ends the command with ``lines`` on stderr and ``code`` as the exit status."""

    def __init__(self, code: Exit, *lines: str) -> None:
        super().__init__(lines[0] if lines else "")
        self.code = code
        self.lines = lines


Run = Callable[[argparse.Namespace], Awaitable[None]]


@dataclass
class Commands:
    """Where a group of commands registers itself: ``add`` one, or open a ``group`` of
    sub-commands (``shoal dlq list``). Every command takes the ``common`` options."""

    sub: argparse._SubParsersAction[argparse.ArgumentParser]
    common: argparse.ArgumentParser

    def add(self, name: str, run: Run, help: str) -> argparse.ArgumentParser:
        command = self.sub.add_parser(name, help=help, parents=[self.common])
        command.set_defaults(run=run)
        return command

    def group(self, name: str, help: str) -> Commands:
        parser = self.sub.add_parser(name, help=help, parents=[self.common])
        dest = f"{name}_command"
        return Commands(parser.add_subparsers(dest=dest, required=True), self.common)


def fail(e: BaseException, verbose: bool) -> NoReturn:
    """Print what went wrong (a traceback too with ``-v``) and exit with its code."""
    error = as_cli_error(e)
    for line in error.lines:
        print(line, file=sys.stderr)
    if verbose:
        import traceback

        traceback.print_exception(e)
    elif error.code == Exit.FAILED and not isinstance(e, ShoalError | CliError):
        print("  (run with -v for the traceback)", file=sys.stderr)
    sys.exit(error.code)


def unwrap(e: BaseException) -> BaseException:
    """The one exception inside (nested) single-exception groups from task groups."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def as_cli_error(e: BaseException) -> CliError:
    if isinstance(e, CliError):
        return e
    if isinstance(e, config.ConfigError):  # a bad SHOAL_* setting: the message names it
        return CliError(Exit.USAGE, f"error: {e.message}")
    if isinstance(e, FunctionNotFound | ResultNotFound):
        return CliError(Exit.NOT_FOUND, f"error: {e.message}")
    if isinstance(e, NatsRefused):
        return CliError(Exit.REFUSED, f"error: {e}", "  check SHOAL_NATS_USER/PASSWORD/CREDS")
    if isinstance(e, ShoalError):  # EventsQueued among them: `shoal rm` refused
        return CliError(Exit.FAILED, f"error: {e.message}")
    if isinstance(e, nats.errors.TimeoutError | TimeoutError):
        return CliError(Exit.FAILED, "error: NATS did not answer in time")
    return CliError(Exit.FAILED, f"error: {type(e).__name__}: {e}")


def setup_logging(args: argparse.Namespace) -> None:
    """Quiet unless ``-v``: Shoal's warnings only; ``up`` and ``controller`` also print one
    line per worker they start. ``-v`` shows everything, libraries included."""
    level = config.LOG_LEVEL.get() or ("INFO" if args.verbose else "WARNING")
    handler = logging.StreamHandler()
    if config.LOG_FORMAT.get() == "json":  # one JSON object per line, for log collectors
        handler.setFormatter(logstream.JsonFormatter())
        handler.addFilter(logstream.ContextFilter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            if args.verbose
            else _PlainFormatter()
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if not args.verbose:
        # Library chatter (urllib3's retries while S3 starts, nats-py's reconnects): -v.
        for name in ("urllib3", "nats", "asyncio", "docker"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if args.command in ("up", "controller"):
            logging.getLogger("shoal.launcher").setLevel(logging.INFO)  # workers started
        else:  # a command's failed connection attempts end in one error of its own
            logging.getLogger("shoal.nats").setLevel(logging.ERROR)
        # Workers (which inherit this environment) log to this terminal too: as quiet as we
        # are, unless told otherwise. Model libraries' progress bars and notices (a first
        # ONNX export) only with -v.
        os.environ.setdefault(config.LOG_LEVEL.name, level)
        for var, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(var, value)
    else:
        os.environ.setdefault(config.LOG_LEVEL.name, "INFO")


class _PlainFormatter(logging.Formatter):
    """Info lines as they are; warnings and errors with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


@asynccontextmanager
async def connected(args: argparse.Namespace, name: str) -> AsyncIterator[NATS]:
    """A connection for one command: unreachable and refused fail within ``CONNECT_WAIT``,
    and a permissions violation ends the command at once with what was refused."""
    url = args.server or config.nats_url()
    auth = NatsAuth.from_env()
    denied: list[str] = []
    scope = anyio.CancelScope()

    async def on_error(e: Exception) -> None:
        if "permissions violation" in str(e).lower():
            denied.append(str(e).removeprefix("nats: "))
            scope.cancel()

    try:
        with anyio.fail_after(CONNECT_WAIT):
            nc = await connect(
                url,
                name=name,
                auth=auth,
                error_cb=on_error,
                connect_timeout=2,
                max_reconnect_attempts=1,  # two tries per server, then NoServersError
            )
    except NatsRefused as e:
        raise CliError(
            Exit.REFUSED,
            f"error: {e}",
            "  check SHOAL_NATS_USER / SHOAL_NATS_PASSWORD (or _CREDS, _NKEY_SEED, TLS files)",
        ) from None
    except (OSError, TimeoutError, nats.errors.Error) as e:
        why = str(e) or type(e).__name__
        raise CliError(
            Exit.UNREACHABLE,
            f"error: no NATS server answers at {redact(url)} ({why})",
            "  check that it runs (`shoal up` starts one) and that --server or SHOAL_NATS_URL "
            "names it",
        ) from None
    try:
        with scope:
            yield nc
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await nc.drain()
    if denied:
        raise CliError(
            Exit.REFUSED,
            f"error: NATS refused this command to {auth.describe(url)}: {denied[0]}",
            "  the connected role may not do this: use credentials with that permission",
        )


def table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
