"""Cold start of a worker: a containerized one (DockerLauncher, shoal-handler) against a
process (ProcessLauncher), measured the same way.

Each round calls ``echo`` when it has no worker: the controller's cold path holds the request,
the controller spawns a worker, the worker connects, loads the function's code from NATS and
answers. The figure is the caller's: request sent to answer received. The worker's own
phases come from its heartbeat: ``spawn`` (launch request to the worker's main, i.e.
container create + start + interpreter + imports), ``connect``, ``load``, ``setup``.

    python docker/coldstart.py [--rounds 5] [--image shoal-handler]

Needs a Docker engine (docker/ensure-engine.sh) and the image (docker/build.sh handler).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgpack

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller import (  # noqa: E402
    Controller,
    ControllerSettings,
    DockerLauncher,
    EmbeddedNats,
    ProcessLauncher,
    deploy_file,
)
from runtime import Client  # noqa: E402
from runtime.wire import protocol  # noqa: E402
from runtime.wire.connection import connect, kv  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@asynccontextmanager
async def launcher_of(kind: str, tmp: Path, image: str) -> AsyncIterator[Any]:
    if kind == "process":
        async with ProcessLauncher(code_dir=tmp / "code") as launcher:
            yield launcher
    else:
        cid = "coldstart-" + uuid.uuid4().hex[:6]
        async with DockerLauncher(controller_id=cid, images={"function": image}) as launcher:
            yield launcher


async def startup_of(workers: Any, key: str) -> dict[str, float]:
    """The worker's cold-start phases, from its registry entry (once it has announced)."""
    with anyio.move_on_after(5):
        while True:
            try:
                entry = await workers.get(key)
                phases: dict[str, float] = msgpack.unpackb(entry.value).get("startup", {})
                if phases:
                    return phases
            except Exception:
                pass
            await anyio.sleep(0.05)
    return {}


async def measure(kind: str, rounds: int, image: str) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = EmbeddedNats(tmp / "nats", port=0).start()
        try:
            nc = await connect(server.url, name="coldstart")
            workers = await kv(nc.jetstream(), protocol.WORKERS_BUCKET)
            settings = ControllerSettings(tick=0.1, heartbeat=0.5, stale_after=2.0)
            async with launcher_of(kind, tmp, image) as launcher:
                controller = Controller(nc, launcher, settings)
                async with anyio.create_task_group() as tg:
                    await tg.start(controller.run)
                    await deploy_file(nc, REPO / "functions" / "echo.py")
                    client = Client(nc)
                    for _ in range(rounds + 1):  # the first round warms the page cache
                        t0 = time.perf_counter()
                        await client.call("echo", {"n": 1}, timeout=120)
                        total = time.perf_counter() - t0
                        [wid] = launcher.running()
                        phases = await startup_of(workers, f"echo.{wid}")
                        out.append({"total": total, **phases})
                        await launcher.kill(wid)
                        with anyio.fail_after(30):
                            while launcher.running():  # noqa: ASYNC110
                                await anyio.sleep(0.02)
                            while True:  # the registry forgot it: the next call is cold
                                try:
                                    await workers.get(f"echo.{wid}")
                                except Exception:
                                    break
                                await anyio.sleep(0.02)
                    tg.cancel_scope.cancel()
            await nc.close()
        finally:
            server.stop()
    return out[1:]


def summary(kind: str, rows: list[dict[str, float]]) -> None:
    keys = ["total", "spawn", "connect", "load", "setup"]
    cells = []
    for k in keys:
        values = [r[k] for r in rows if k in r]
        if values:
            cells.append(f"{k} {statistics.median(values) * 1000:4.0f} ms")
    totals = sorted(r["total"] * 1000 for r in rows)
    print(
        f"{kind:<8} median of {len(rows)}: "
        + "  ".join(cells)
        + f"   (total min {totals[0]:.0f} ms, max {totals[-1]:.0f} ms)"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image", default="shoal-handler")
    args = ap.parse_args()
    for kind in ("process", "docker"):
        summary(kind, await measure(kind, args.rounds, args.image))


if __name__ == "__main__":
    anyio.run(main)
