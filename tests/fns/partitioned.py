"""Partitioned models for the data-plane tests: small, exact, and easy to check by hand."""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np

from runtime import InvalidPayload, Plan, Shard, partitioned


def _plan(request: Any, most: int) -> Plan:
    if not isinstance(request, dict) or not isinstance(request.get("partitions"), int):
        raise InvalidPayload('expected {"partitions": <int>, ...}')
    return Plan(partitions=request["partitions"], model_bytes=int(request.get("model_bytes", 0)))


@partitioned(name="allsum", max_partitions=4, min_workers=4, worker_memory_mb=1, timeout=20.0)
class AllSum:
    """Row partitions: every step, each partition adds what all others hold (an all-reduce).

    Partition i starts with ``arange(n) * (i + 1)``; after a step every partition holds the
    sum of all of them. ``sparse`` sends only to the next partition and "nothing" to others.
    """

    def plan(self, request: Any) -> Plan:
        return _plan(request, 4)

    async def shard(self, request: dict[str, Any], shard: Shard) -> Any:
        n, steps = int(request.get("n", 8)), int(request.get("steps", 3))
        x = np.arange(n, dtype=np.float64) * (shard.index + 1)
        for step in range(steps):
            if request.get("sparse"):
                outgoing = {(shard.index + 1) % shard.count: x} if shard.count > 1 else {}
            else:
                outgoing = {q: x for q in range(shard.count) if q != shard.index}
            got = await shard.exchange(step, outgoing)
            x = x + sum(got.values(), np.zeros(n))
            if request.get("delay"):
                await anyio.sleep(float(request["delay"]))
        return {"x": x, "stats": shard.stats()}

    def combine(self, request: Any, parts: list[Any]) -> Any:
        return {
            "sums": [float(p["x"].sum()) for p in parts],
            "first": parts[0]["x"][:4].tolist(),
            "sent_bytes": sum(p["stats"]["sent_bytes"] for p in parts),
            "sent_objects": sum(p["stats"]["sent_objects"] for p in parts),
        }


@partitioned(name="chain", max_partitions=3, timeout=20.0)
class Chain:
    """A pipeline of stages: stage i doubles the array and adds i, then hands it on."""

    def plan(self, request: Any) -> Plan:
        return _plan(request, 3)

    async def shard(self, request: dict[str, Any], shard: Shard) -> Any:
        if shard.index == 0:
            x = np.asarray(request["x"], dtype=np.float64)
        else:
            x = await shard.recv(0, shard.index - 1)
        x = x * 2 + shard.index
        if shard.index == shard.count - 1:
            return x
        await shard.send(0, shard.index + 1, x)
        return None

    def combine(self, request: Any, parts: list[Any]) -> Any:
        return {"x": parts[-1].tolist()}
