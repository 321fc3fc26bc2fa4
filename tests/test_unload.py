"""Calls that arrive while a function's last worker is unloaded (a real controller, real
worker processes): each is answered, by the draining worker or through the cold path by the
next one, none is told that nothing serves the function, and each is counted once.

``echo`` (``tests/fns/observed.py``) has a 1 s keep-alive, so calls spaced 0.6-2.0 s apart
(seeded) arrive before, during and after its workers' unloads."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING

import anyio
import pytest

from controller import deploy_file
from runtime import Client
from tests.conftest import FNS
from tests.observability import get, observed_cluster, poll

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio

CALLS = 30


async def test_calls_around_unloads_are_all_answered_and_counted(
    nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_server: object
) -> None:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)  # type: ignore[attr-defined]
    spacing = random.Random(13)
    async with observed_cluster(nc, tmp_path, controller_id="ctl-unload") as cluster:
        await deploy_file(nc, FNS / "observed.py")
        client = Client(nc)
        failed = []
        for i in range(CALLS):
            try:
                assert await client.call("echo", {"i": i}, timeout=30) == {"i": i}
            except Exception as e:  # every call is tried; the failures are listed at the end
                failed.append((i, repr(e)))
            await anyio.sleep(spacing.uniform(0.6, 2.0))  # the load's pattern, not a wait
        assert not failed

        async def counted() -> dict[str, object] | None:
            api = json.loads(await get(cluster.url + "api/status"))
            row = next(f for f in api["functions"] if f["name"] == "echo")
            done = row["workers"]["ready"] == 0 and row["workers"]["draining"] == 0
            return row if done and row["ok"] >= CALLS else None

        # Once the last worker is gone, every count is in the retired totals.
        row = await poll(counted, 30.0, "echo unloaded with its calls counted")
        assert row["ok"] == CALLS, row
        assert row["error"] == 0
        assert row["cold_starts"] >= 2  # its workers were unloaded and started again
