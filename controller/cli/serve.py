"""``shoal up``, ``shoal controller`` and ``shoal calibrate``: running a cluster."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio

from runtime import config
from runtime.wire.connection import connect

from ..controller import Controller, ControllerSettings
from ..docker_launcher import from_env as docker_launcher
from ..hosts import capacity, parse_capacity
from ..launcher import Launcher, ProcessLauncher
from ..up import resolved, until_signalled, up
from .common import Commands, connected

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from runtime.wire.spec import FunctionSpec


def register(commands: Commands) -> None:
    data = "data folder (default: SHOAL_DATA_DIR, else .shoal)"
    up_ = commands.add(
        "up", up_cluster, "run a one-host cluster: NATS (embedded if none), S3, controller"
    )
    up_.add_argument("--functions", type=resolved, default="functions", help="folder to deploy")
    up_.add_argument("--data", type=resolved, help=data)
    up_.add_argument("--once", action="store_true", help="exit after the demo invocation")

    ctl = commands.add("controller", controller, "run a controller against an existing NATS")
    ctl.add_argument("--data", type=resolved, help=data)
    ctl.add_argument(
        "--launcher",
        choices=("process", "docker"),
        help="workers as local processes, or as containers (docs/containers.md); "
        "default: SHOAL_LAUNCHER, else process",
    )

    ctl.add_argument(
        "--host-name",
        help="the host its workers run on, as placement names it (docs/placement.md); "
        "default: SHOAL_HOST_NAME, else the machine's host name",
    )
    ctl.add_argument(
        "--capacity",
        help="what this host offers workers, e.g. cpu=8,memory=16g,gpus=1; what it leaves "
        "out is read from the machine (default: SHOAL_CAPACITY)",
    )

    commands.add("calibrate", calibrate, "measure the channels for intermediates, share the model")


def data_dir(args: argparse.Namespace) -> Path:
    """``--data``, else ``SHOAL_DATA_DIR``, made absolute: servers and workers run elsewhere."""
    return args.data or resolved(str(config.DATA_DIR.get()))


async def up_cluster(args: argparse.Namespace) -> None:
    await up(
        url=args.server,
        data=data_dir(args),
        functions=args.functions,
        once=args.once,
        settings=ControllerSettings.from_env(),
    )


def host_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--host-name`` and ``--capacity`` as settings (over ``SHOAL_*``)."""
    out: dict[str, Any] = {}
    if args.host_name:
        out["host"] = args.host_name
    if args.capacity is not None:
        out["capacity"] = capacity(parse_capacity(args.capacity, "--capacity"))
    return out


async def controller(args: argparse.Namespace) -> None:
    settings = ControllerSettings.from_env(**host_settings(args))
    running: Controller | None = None
    launcher: Launcher
    if (args.launcher or config.LAUNCHER.get()) == "docker":

        def spec_of(name: str) -> FunctionSpec | None:
            return running.functions.items().get(name) if running is not None else None

        launcher = docker_launcher(settings.controller_id, spec_of)
    else:
        launcher = ProcessLauncher(code_dir=data_dir(args) / "code")
    nc = await connect(args.server, name="shoal-controller")
    try:

        async def serve() -> None:
            nonlocal running
            async with launcher, anyio.create_task_group() as tg:
                running = Controller(nc, launcher, settings)
                await tg.start(running.run)
                if running.metrics is not None and running.metrics.url:
                    print(
                        f"status page on {running.metrics.url} (Prometheus: /metrics)", flush=True
                    )

        await until_signalled(serve)
    finally:
        with anyio.CancelScope(shield=True):
            await nc.drain()


async def calibrate(args: argparse.Namespace) -> None:
    from runtime.partition import calibration
    from runtime.partition.worker import object_store_from_env

    async with connected(args, "shoal-calibrate") as nc:
        model = await calibration.measure(nc, object_store_from_env())
        await calibration.publish(nc, model)
    print(json.dumps(model.describe()))
    for size in (1 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20):
        picked = model.choose(size)
        print(f"{size:>10} bytes: {picked:<6} ({model.seconds(picked, size) * 1e3:.2f} ms)")
