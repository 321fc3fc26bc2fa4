"""Faults under load: each run publishes events, injects a fault mid-run, and counts
lost / duplicated / answered. The goal is lost = 0 in every one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import pytest

from controller import Controller, EmbeddedNats, ProcessLauncher, deploy_file
from runtime import Client
from runtime.wire.connection import connect
from tests.conftest import FAST, FNS, controller_settings, wait_workers

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio

LOAD = FNS / "load.py"


class Run:
    """Publishes numbered events durably and counts the answers by request id."""

    def __init__(self, nc: NATS, tag: str, n: int) -> None:
        self.nc = nc
        self.tag = tag
        self.n = n
        self.answers: Counter[str] = Counter()
        self.progress = anyio.Event()
        self.complete = anyio.Event()
        self.stored_only = 0  # processed, stored, but the answer message never arrived

    async def start(self) -> None:
        async def on_answer(msg) -> None:
            self.answers[msg.headers["Shoal-Request-Id"]] += 1
            self.progress.set()
            self.progress = anyio.Event()
            if len(self.answers) == self.n:
                self.complete.set()

        await self.nc.subscribe(f"answers.{self.tag}", cb=on_answer)

    async def publish(self) -> None:
        js = self.nc.jetstream()
        for i in range(self.n):
            rid = f"{self.tag}-{i}"
            while True:  # an event counts once JetStream has accepted it (the PubAck)
                try:
                    await js.publish(
                        "fn.work",
                        json.dumps({"i": i}).encode(),
                        headers={"Nats-Msg-Id": rid, "Shoal-Reply-To": f"answers.{self.tag}"},
                        timeout=2,
                    )
                    break
                except Exception:
                    await anyio.sleep(0.2)  # the server is away (restart test): try again

    async def wait_answered(self, count: int, timeout: float = 60) -> None:
        with anyio.fail_after(timeout):
            while len(self.answers) < count:
                await self.progress.wait()

    async def finish(self, timeout: float = 120) -> None:
        """Wait until every event is answered, or processed with its answer lost.

        Answers are plain NATS messages, at most once: one sent while the subscriber was
        reconnecting (a server restart) is gone, though its event was processed and its result
        stored. The results bucket is the durable record, so events without an answer are
        looked up there (a watch, no polling) before counting anything lost.
        """
        with anyio.move_on_after(20):
            await self.complete.wait()
        client = Client(self.nc)
        with anyio.fail_after(timeout / 2):
            for i in range(self.n):
                rid = f"{self.tag}-{i}"
                if rid not in self.answers:
                    await client.wait_result(rid, timeout=timeout / 2)
                    self.stored_only += 1

    def report(self, fault: str) -> tuple[int, int, int]:
        answered = len(self.answers)
        lost = self.n - answered - self.stored_only
        duplicated = sum(c - 1 for c in self.answers.values())
        print(
            f"\n[{fault}] events {self.n}: answered {answered}, processed with the answer lost "
            f"in transit {self.stored_only}, lost {lost}, duplicated answers {duplicated}"
        )
        return lost, duplicated, answered + self.stored_only


async def test_sigkill_a_worker_mid_load(nats_server, nc, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    run = Run(nc, "kill", 1000)
    await run.start()
    async with (
        ProcessLauncher(code_dir=tmp_path / "code") as launcher,
        anyio.create_task_group() as tg,
    ):
        await tg.start(Controller(nc, launcher, controller_settings()).run)
        await deploy_file(nc, LOAD)
        tg.start_soon(run.publish)
        await run.wait_answered(200)
        busy = await wait_workers(nc, "work", lambda e: any(w["inflight"] for w in e.values()))
        victim = next(w for w in busy.values() if w["inflight"])
        os.kill(victim["pid"], signal.SIGKILL)
        await run.finish()
        tg.cancel_scope.cancel()
    lost, _, answered = run.report("SIGKILL a worker")
    assert lost == 0 and answered == 1000


async def test_kill_one_of_two_controller_processes_mid_load(
    nats_server,
    nc,
    tmp_path,
) -> None:
    env = {
        **os.environ,
        **FAST,
        "SHOAL_NATS_URL": nats_server.url,
        "SHOAL_TICK": "0.1",
        "SHOAL_STALE_AFTER": "1.5",
        "SHOAL_LOG_LEVEL": "WARNING",
    }

    def controller(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "controller", "--data", str(tmp_path / name)],
            env={**env, "SHOAL_CONTROLLER_ID": name},
            start_new_session=True,
        )

    a, b = controller("ctl-a"), controller("ctl-b")
    try:
        await deploy_file(nc, LOAD)
        run = Run(nc, "ctl", 600)
        await run.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.publish)
            await run.wait_answered(150)
            # Kill whichever controller has launched the serving workers.
            serving = await wait_workers(nc, "work", lambda e: bool(e))
            owner = next(iter(serving.values()))["controller"]
            victim = a if owner == "ctl-a" else b
            os.killpg(victim.pid, signal.SIGKILL)  # the controller, not its workers
            await run.finish()
        lost, _, answered = run.report("SIGKILL one of two controllers")
        assert lost == 0 and answered == 600
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


async def test_controller_restart_mid_load(nats_server, nc, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    run = Run(nc, "restart", 600)
    await run.start()
    await deploy_file(nc, LOAD, wait=0)
    async with anyio.create_task_group() as publishing:
        publishing.start_soon(run.publish)
        for generation in range(2):  # the first controller stops mid-load, a new one takes over
            async with ProcessLauncher(code_dir=tmp_path / f"code{generation}") as launcher:
                async with anyio.create_task_group() as tg:
                    await tg.start(Controller(nc, launcher, controller_settings()).run)
                    if generation == 0:
                        await run.wait_answered(150)
                    else:
                        await run.finish()
                    tg.cancel_scope.cancel()
    lost, _, answered = run.report("restart the controller")
    assert lost == 0 and answered == 600


async def test_nats_server_restart_mid_load(tmp_path: Path, monkeypatch) -> None:
    server = EmbeddedNats(tmp_path / "nats", port=0).start()
    monkeypatch.setenv("SHOAL_NATS_URL", server.url)
    nc = await connect(server.url, name="test")
    try:
        run = Run(nc, "nats", 600)
        await run.start()
        async with ProcessLauncher(code_dir=tmp_path / "code") as launcher:
            async with anyio.create_task_group() as tg:
                await tg.start(Controller(nc, launcher, controller_settings()).run)
                await deploy_file(nc, LOAD)
                tg.start_soon(run.publish)
                await run.wait_answered(150)
                await anyio.to_thread.run_sync(server.restart)  # same port, same file storage
                await run.finish()
                tg.cancel_scope.cancel()
        lost, _, answered = run.report("restart nats-server")
        assert lost == 0 and answered == 600
    finally:
        await nc.close()
        server.stop()


async def test_s3_stops_mid_run_of_partitioned_requests(
    nats_server, nc, tmp_path, monkeypatch
) -> None:
    """Partitioned requests whose intermediates go through S3, and S3 stops mid-run: each
    request completes or gets a clear, typed error; none hangs."""
    from runtime import ShoalError
    from tests.storage.conftest import _seaweedfs
    from tests.test_partitioned import use_store

    (tmp_path / "s3").mkdir()
    gen = _seaweedfs(tmp_path / "s3")
    s3 = next(gen)
    use_store(monkeypatch, s3, "faults-s3")
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    outcomes: Counter[str] = Counter()
    messages: dict[str, str] = {}  # the first message of each kind of error, for the report
    n, lanes = 40, 8
    started = anyio.Event()
    async with ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher:
        controller = Controller(nc, launcher, controller_settings())
        async with anyio.create_task_group() as tg:
            await tg.start(controller.run)
            await deploy_file(
                nc, FNS / "partitioned.py", overrides={"allsum": {"channel": "object"}}
            )
            await wait_workers(nc, "allsum", lambda e: len(e) >= 4)
            client = Client(nc)
            todo = iter(range(n))

            async def lane() -> None:
                for i in todo:
                    request = {"partitions": 3, "n": 64, "steps": 20, "delay": 0.01, "i": i}
                    try:
                        # The function's timeout is 20 s, counted from when a worker starts
                        # the call; 8 lanes land at random on 4 workers of 4 slots each, so a
                        # call may first wait for a slot, up to one run ahead of it.
                        with anyio.fail_after(50):
                            await client.call("allsum", request, timeout=45)
                        outcomes["completed"] += 1
                        started.set()
                    except ShoalError as e:
                        outcomes[f"error {type(e).__name__}"] += 1
                        messages.setdefault(f"error {type(e).__name__}", e.message)
                    except TimeoutError:
                        outcomes["hung"] += 1

            async with anyio.create_task_group() as load:
                for _ in range(lanes):
                    load.start_soon(lane)
                await started.wait()  # requests are completing through S3
                gen.close()  # SIGKILL the S3 server
            tg.cancel_scope.cancel()
    print(f"\n[S3 stopped mid-run] requests {n}: {dict(outcomes)}")
    for kind, message in messages.items():
        print(f"  {kind}: {message}")
    assert outcomes["hung"] == 0
    assert sum(outcomes.values()) == n
    assert outcomes["completed"] > 0
    assert set(outcomes) - {"completed"} <= {
        "error IntermediateStoreError",
        "error PartitionLost",
    }, messages
