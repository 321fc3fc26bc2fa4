"""A light executor (no model framework) to test the handler/executor split quickly."""

import time

from runtime import Executor, executor, function, uses


@executor(name="doubler", max_batch=8, max_wait_ms=50, timeout=3, max_workers=1)
class Doubler:
    def setup(self):
        self.factor = 2

    def __call__(self, batch):
        if any(item.get("poison") for item in batch):
            raise ValueError("poisoned item")
        if any(item.get("hold") for item in batch):
            time.sleep(30)  # a batch that never finishes in time: its executor gets killed
        return [{"value": item["n"] * self.factor, "batch": len(batch)} for item in batch]


# The older form: uses=[...] and a parameter annotated with the class (still served).
@function(name="double", uses=[Doubler])
async def double(event, doubler: Doubler):
    return (await doubler({"n": event["n"]}))["value"]


@function(name="batchinfo", concurrency=32)
async def batchinfo(event, doubler: Executor[dict, dict] = uses(Doubler), ctx=None):
    # The first delivery asks to hold (so the test can kill the executor mid-batch);
    # a redelivery does not.
    item = {"n": event["n"], "poison": event.get("poison", False)}
    item["hold"] = bool(event.get("hold")) and ctx.attempt == 1
    return await doubler(item)


@function(name="doublemany")
async def doublemany(event, doubler: Executor[dict, dict] = uses(Doubler)):
    """All of ``event["ns"]`` through the executor at once, answered in their order."""
    results = await doubler.map({"n": n, "poison": n < 0} for n in event["ns"])
    return [r["value"] for r in results]


@function(name="doubleall")
async def doubleall(event, doubler: Executor[dict, dict] = uses(Doubler)):
    """Like doublemany, each failed item's error in its place instead of failing the call."""
    outcomes = await doubler.map(
        ({"n": n, "poison": n < 0} for n in event["ns"]), return_errors=True
    )
    return [o["value"] if isinstance(o, dict) else {"error": str(o)} for o in outcomes]
