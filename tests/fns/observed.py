"""Functions for the metrics and status-page tests: each figure of the contract moves."""

from typing import Any

from runtime import Executor, Plan, Shard, executor, function, partitioned, uses


@function(name="echo", idle_timeout=1.0)
def echo(event: Any) -> Any:
    return event


@function(name="flaky", retries=1, backoff=[0.1])
def flaky(event: Any) -> Any:
    raise ValueError(f"flaky refuses {event}")


@executor(name="tally", max_batch=8, max_wait_ms=20)
class Tally:
    def __call__(self, batch: list[Any]) -> list[int]:
        return [len(batch) for _ in batch]


@function(name="tallied", concurrency=16)
async def tallied(event: Any, tally: Executor[Any, int] = uses(Tally)) -> int:
    return await tally(event)


@partitioned(name="pairsum", max_partitions=2, channel="inline", timeout=20.0)
class PairSum:
    """Two partitions swap a list and add up what they got: bytes on the inline channel."""

    def plan(self, request: Any) -> Plan:
        return Plan(partitions=2)

    async def shard(self, request: Any, shard: Shard) -> int:
        got = await shard.exchange(0, {1 - shard.index: [shard.index + 1] * 100})
        return sum(sum(v) for v in got.values())

    def combine(self, request: Any, parts: list[Any]) -> int:
        return sum(parts)
