"""The ``shoal`` command line.

Every command fails fast and plainly: with NATS unreachable it exits within seconds with one
line naming the URL and one saying what to check; a refused user or a command the connected
role may not use says so at once; tracebacks only with ``-v``. Exit codes (:class:`Exit`)
are part of the interface, documented in README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import anyio
import msgpack
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from runtime import __version__
from runtime.client import Client
from runtime.config import ConfigError, nats_url
from runtime.errors import FunctionNotFound, ResultNotFound, ShoalError, WorkerUnavailable
from runtime.wire import deadletter, protocol
from runtime.wire.connection import NatsAuth, NatsRefused, connect, kv, redact, snapshot
from runtime.wire.spec import FunctionSpec

from .controller import Controller, ControllerSettings
from .deploy import deploy_file
from .launcher import Launcher, ProcessLauncher
from .remove import EventsQueued, remove_function
from .up import resolved, until_signalled, up, where

log = logging.getLogger("shoal")

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
    """The ``shoal`` command's exit codes."""

    OK = 0
    FUNCTION_ERROR = 1  # the function (or the request) answered with an error
    USAGE = 2  # bad arguments or a bad event
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


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    # Given before or after the command (absent: not given at all).
    args.verbose = getattr(args, "verbose", False)
    args.server = getattr(args, "server", None)
    try:
        _logging(args)
        anyio.run(args.run, args)
    except KeyboardInterrupt:  # up and controller stop on Ctrl-C by themselves, with 0
        sys.exit(130)
    except BaseException as e:  # one place turns every failure into lines and a code
        failure = _unwrap(e)
        if isinstance(failure, SystemExit | KeyboardInterrupt):
            raise failure from None
        _fail(failure, args.verbose)


def _fail(e: BaseException, verbose: bool) -> NoReturn:
    error = _as_cli_error(e)
    for line in error.lines:
        print(line, file=sys.stderr)
    if verbose:
        import traceback

        traceback.print_exception(e)
    elif error.code == Exit.FAILED and not isinstance(e, ShoalError | CliError):
        print("  (run with -v for the traceback)", file=sys.stderr)
    sys.exit(error.code)


def _unwrap(e: BaseException) -> BaseException:
    """The one exception inside (nested) single-exception groups from task groups."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _as_cli_error(e: BaseException) -> CliError:
    if isinstance(e, CliError):
        return e
    if isinstance(e, ConfigError):  # a bad SHOAL_* setting: the message names it
        return CliError(Exit.USAGE, f"error: {e.message}")
    if isinstance(e, FunctionNotFound | ResultNotFound):
        return CliError(Exit.NOT_FOUND, f"error: {e.message}")
    if isinstance(e, NatsRefused):
        return CliError(Exit.REFUSED, f"error: {e}", "  check SHOAL_NATS_USER/PASSWORD/CREDS")
    if isinstance(e, EventsQueued):
        return CliError(Exit.FAILED, f"error: {e.message}")
    if isinstance(e, ShoalError):
        return CliError(Exit.FAILED, f"error: {e.message}")
    if isinstance(e, nats.errors.TimeoutError | TimeoutError):
        return CliError(Exit.FAILED, "error: NATS did not answer in time")
    if isinstance(e, FileNotFoundError | ValueError) and str(e).startswith("SHOAL_"):
        return CliError(Exit.USAGE, f"error: {e}")  # a bad SHOAL_* setting
    return CliError(Exit.FAILED, f"error: {type(e).__name__}: {e}")


def _logging(args: argparse.Namespace) -> None:
    """Quiet unless ``-v``: Shoal's warnings only; ``up`` and ``controller`` also print one
    line per worker they start. ``-v`` shows everything, libraries included."""
    default = "INFO" if args.verbose else "WARNING"
    level = os.environ.get("SHOAL_LOG_LEVEL", default).upper()
    if level not in logging.getLevelNamesMapping():
        raise CliError(
            Exit.USAGE, f"error: SHOAL_LOG_LEVEL={level}: use DEBUG, INFO, WARNING or ERROR"
        )
    handler = logging.StreamHandler()
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
        # Workers log to this terminal too: as quiet as we are, unless told otherwise. Model
        # libraries' progress bars and notices (a first ONNX export) only with -v.
        os.environ.setdefault("SHOAL_LOG_LEVEL", level)
        for var, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(var, value)
    else:
        os.environ.setdefault("SHOAL_LOG_LEVEL", "INFO")


class _PlainFormatter(logging.Formatter):
    """Info lines as they are; warnings and errors with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


def _parser() -> argparse.ArgumentParser:
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
        epilog="exit codes: 0 ok, 1 the function answered an error, 2 usage, 3 not found, "
        "4 NATS unreachable, 5 refused (credentials or permissions), 6 other failure",
    )
    p.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[..., Any], help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, parents=[common])
        cmd.set_defaults(run=run)
        return cmd

    data_default = os.environ.get("SHOAL_DATA_DIR", ".shoal")
    up_ = command("up", _up, "run a one-host cluster: NATS (embedded if none), S3, controller")
    up_.add_argument("--functions", type=resolved, default="functions", help="folder to deploy")
    up_.add_argument("--data", type=resolved, default=data_default, help="data folder (.shoal)")
    up_.add_argument("--once", action="store_true", help="exit after the demo invocation")

    ctl = command("controller", _controller, "run a controller against an existing NATS")
    ctl.add_argument("--data", type=resolved, default=data_default)
    ctl.add_argument(
        "--launcher",
        choices=("process", "docker"),
        default=os.environ.get("SHOAL_LAUNCHER", "process"),
        help="workers as local processes, or as containers (docs/containers.md)",
    )

    dep = command("deploy", _deploy, "deploy the @functions in Python files or folders")
    dep.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a .py file, or a folder: deployed as one bundle (see docs/bundles.md)",
    )
    dep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME.OPTION=VALUE",
        help="override an option, e.g. --set embed.min_workers=2 (value parsed as JSON)",
    )
    fuse = dep.add_mutually_exclusive_group()
    fuse.add_argument(
        "--fuse",
        dest="fuse",
        action="store_true",
        default=None,
        help="run handlers' executors inside the handler workers",
    )
    fuse.add_argument(
        "--split",
        dest="fuse",
        action="store_false",
        help="run executors in their own workers (the default)",
    )

    rm = command("rm", _rm, "remove a function: drain its workers, delete its stream and code")
    rm.add_argument("function")
    rm.add_argument("--force", action="store_true", help="remove even with events queued")
    rm.add_argument("--purge", action="store_true", help="also delete its dead letters")

    inv = command("invoke", _invoke, "invoke a function and print its result")
    inv.add_argument("function")
    inv.add_argument("event", help="the event, as JSON")
    inv.add_argument("--durable", action="store_true", help="publish to fn.<name>, wait on result")
    inv.add_argument("--id", help="request id (Nats-Msg-Id)")
    inv.add_argument("--timeout", type=float, default=60.0)

    res = command("result", _result, "print the stored result of a request id")
    res.add_argument("request_id")
    res.add_argument("--json", action="store_true", help="one JSON object")

    command("cancel", _cancel, "cancel a queued or running invocation").add_argument("request_id")

    dlq = sub.add_parser("dlq", help="dead letters: list them, or re-drive them", parents=[common])
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dl = dlq_sub.add_parser("list", help="list dead letters", parents=[common])
    dl.set_defaults(run=_dlq_list)
    dl.add_argument("--function")
    dl.add_argument("--json", action="store_true", help="a JSON array")
    dr = dlq_sub.add_parser(
        "redrive", help="publish dead letters again and drop them", parents=[common]
    )
    dr.set_defaults(run=_dlq_redrive)
    dr.add_argument("--function")
    dr.add_argument("--seq", type=int, action="append", help="only these (repeatable)")

    st = command("status", _status, "functions, workers, load")
    st.add_argument("--json", action="store_true", help="one JSON object")

    command("calibrate", _calibrate, "measure the channels for intermediates, share the model")
    return p


# -- connecting -------------------------------------------------------------------------


@asynccontextmanager
async def _connected(args: argparse.Namespace, name: str) -> AsyncIterator[NATS]:
    """A connection for one command: unreachable and refused fail within ``CONNECT_WAIT``,
    and a permissions violation ends the command at once with what was refused."""
    url = args.server or nats_url()
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


# -- commands ---------------------------------------------------------------------------


async def _up(args: argparse.Namespace) -> None:
    await up(
        url=args.server,
        data=args.data,
        functions=args.functions,
        once=args.once,
        settings=ControllerSettings.from_env(),
    )


async def _controller(args: argparse.Namespace) -> None:
    settings = ControllerSettings.from_env()
    controller: Controller | None = None
    launcher: Launcher
    if args.launcher == "docker":
        from .docker_launcher import from_env

        def spec_of(name: str) -> FunctionSpec | None:
            return controller.functions.items().get(name) if controller is not None else None

        launcher = from_env(settings.controller_id, spec_of)
    else:
        launcher = ProcessLauncher(code_dir=args.data / "code")
    nc = await connect(args.server, name="shoal-controller")
    try:

        async def serve() -> None:
            nonlocal controller
            async with launcher:
                controller = Controller(nc, launcher, settings)
                await controller.run()

        await until_signalled(serve)
    finally:
        with anyio.CancelScope(shield=True):
            await nc.drain()


def _parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, option = key.rpartition(".")
        if not sep or not dot:
            raise CliError(Exit.USAGE, f"error: --set takes NAME.OPTION=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[option] = value
    return out


async def _deploy(args: argparse.Namespace) -> None:
    overrides = _parse_overrides(args.set)
    deployed: set[str] = set()
    async with _connected(args, "shoal-deploy") as nc:
        for f in args.files:
            for spec in await deploy_file(nc, f, fuse=args.fuse, overrides=overrides):
                deployed.add(spec.name)
                print(f"deployed {spec.name} (version {spec.version}) {where(spec)}")
    unknown = set(overrides) - deployed
    if unknown:
        raise CliError(
            Exit.FAILED,
            f"error: --set names nothing these files define: {', '.join(sorted(unknown))}",
            "  (what they define is deployed; check the names with shoal status)",
        )


async def _rm(args: argparse.Namespace) -> None:
    async with _connected(args, "shoal-rm") as nc:
        removed = await remove_function(nc, args.function, force=args.force, purge=args.purge)
    print("\n".join(removed.lines()))


async def _invoke(args: argparse.Namespace) -> None:
    try:
        event = json.loads(args.event)
    except json.JSONDecodeError as e:
        raise CliError(Exit.USAGE, f"error: the event must be JSON: {e}") from None
    async with _connected(args, "shoal-invoke") as nc:
        client = Client(nc)
        if args.durable:
            rid = await client.publish(args.function, event, request_id=args.id)
            try:
                result = await client.wait_result(rid, timeout=args.timeout)
            except ResultNotFound:
                raise CliError(
                    Exit.FAILED,
                    f"error: no answer within {args.timeout:g}s; the event is stored",
                    f"  look it up later: shoal result {rid}",
                ) from None
            print(json.dumps(result.value if result.ok else {"error": result.value}, default=repr))
            print(f"request id: {rid}", file=sys.stderr)
            if not result.ok:
                raise CliError(_error_exit(result.value))
            return
        try:
            value = await client.call(
                args.function, event, timeout=args.timeout, request_id=args.id
            )
        except ShoalError as e:
            print(json.dumps({"error": e.to_wire()}))
            raise CliError(_error_exit(e.to_wire())) from None
        print(json.dumps(value))


def _error_exit(wire: Any) -> Exit:
    """Not found (3), nothing answered (6), or the function's own error (1)."""
    code = wire.get("code") if isinstance(wire, dict) else None
    if code == FunctionNotFound.code:
        return Exit.NOT_FOUND
    if code == WorkerUnavailable.code:
        return Exit.FAILED
    return Exit.FUNCTION_ERROR


async def _result(args: argparse.Namespace) -> None:
    async with _connected(args, "shoal-result") as nc:
        result = await Client(nc).result(args.request_id)
    if result is None:
        raise CliError(
            Exit.NOT_FOUND,
            f"error: no result stored for {args.request_id!r} (unknown, still running, or expired)",
        )
    body = {
        "request_id": result.request_id,
        "function": result.function,
        "ok": result.ok,
        "result" if result.ok else "error": result.value,
        "finished_at": result.finished_at,
    }
    # One JSON object either way: --json is accepted so every reading command takes it.
    print(json.dumps(body, default=repr))
    if not result.ok:
        raise CliError(Exit.FUNCTION_ERROR)


async def _cancel(args: argparse.Namespace) -> None:
    async with _connected(args, "shoal-cancel") as nc:
        await Client(nc).cancel(args.request_id)
    print(f"cancelled {args.request_id}")


async def _dlq_list(args: argparse.Namespace) -> None:
    async with _connected(args, "shoal-dlq") as nc:
        letters = await deadletter.list_dead(nc.jetstream(), args.function)
    if args.json:
        keys = ("seq", "function", "subject", "request_id", "deliveries", "code", "reason")
        print(json.dumps([{k: getattr(d, k) for k in keys} for d in letters]))
        return
    rows = [("SEQ", "FUNCTION", "REQUEST ID", "DELIVERIES", "ERROR", "REASON")]
    for d in letters:
        rows.append(
            (str(d.seq), d.function, d.request_id or "-", str(d.deliveries), d.code, d.reason[:80])
        )
    _table(rows)


async def _dlq_redrive(args: argparse.Namespace) -> None:
    async with _connected(args, "shoal-dlq") as nc:
        js = nc.jetstream()
        letters = await deadletter.list_dead(js, args.function)
        chosen = [d for d in letters if not args.seq or d.seq in args.seq]
        missing = set(args.seq or ()) - {d.seq for d in chosen}
        if missing:
            raise CliError(
                Exit.NOT_FOUND, f"error: no dead letter {', '.join(map(str, sorted(missing)))}"
            )
        for d in chosen:
            await deadletter.redrive(js, d)
    print(f"re-drove {len(chosen)} dead letter(s)")


async def _status(args: argparse.Namespace) -> None:
    async with _connected(args, "shoal-status") as nc:
        js = nc.jetstream()
        specs = {
            k: FunctionSpec.from_bytes(v)
            for k, v in (await snapshot(await kv(js, protocol.FUNCTIONS_BUCKET))).items()
        }
        workers = [
            msgpack.unpackb(v)
            for v in (await snapshot(await kv(js, protocol.WORKERS_BUCKET))).values()
        ]
        controllers = await snapshot(await kv(js, protocol.CONTROLLERS_BUCKET))
        functions: list[dict[str, Any]] = []
        for name in sorted(specs):
            spec = specs[name]
            mine = [w for w in workers if w.get("function") == name]
            ready = [w for w in mine if w.get("state") == "ready"]
            backlog: int | None = None
            unacked: int | None = None
            if spec.kind == "function":
                try:
                    ci = await js.consumer_info(spec.stream, protocol.CONSUMER)
                    backlog, unacked = int(ci.num_pending or 0), int(ci.num_ack_pending or 0)
                except nats.js.errors.NotFoundError:
                    pass
            functions.append(
                {
                    "function": name,
                    "kind": spec.kind,
                    "version": spec.version,
                    "state": "warm" if ready else "cold",
                    "workers": len(ready),
                    "draining": len(mine) - len(ready),
                    "max_workers": spec.max_workers,
                    "in_flight": sum(int(w.get("inflight", 0)) for w in mine),
                    "backlog": backlog,
                    "unacked": unacked,
                    "subjects": list(spec.event_subjects),
                }
            )
    if args.json:
        print(
            json.dumps(
                {"functions": functions, "controllers": len(controllers), "workers": len(workers)}
            )
        )
        return
    rows = [
        ("FUNCTION", "VERSION", "STATE", "WORKERS", "IN FLIGHT", "BACKLOG", "UNACKED", "SUBJECTS")
    ]
    for f in functions:
        draining = f" (+{f['draining']} draining)" if f["draining"] else ""
        rows.append(
            (
                f["function"],
                f["version"],
                f["state"],
                f"{f['workers']}/{f['max_workers']}{draining}",
                str(f["in_flight"]),
                "-" if f["backlog"] is None else str(f["backlog"]),
                "-" if f["unacked"] is None else str(f["unacked"]),
                ", ".join(f["subjects"]),
            )
        )
    _table(rows)
    print(f"\ncontrollers: {len(controllers)}   workers: {len(workers)}")


async def _calibrate(args: argparse.Namespace) -> None:
    from runtime.partition import calibration
    from runtime.partition.worker import object_store_from_env

    async with _connected(args, "shoal-calibrate") as nc:
        model = await calibration.measure(nc, object_store_from_env())
        await calibration.publish(nc, model)
    print(json.dumps(model.describe()))
    for size in (1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20):
        picked = model.choose(size)
        print(f"{size:>10} bytes: {picked:<6} ({model.seconds(picked, size) * 1e3:.2f} ms)")


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
