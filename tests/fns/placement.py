"""Functions placed across hosts (tests/test_placement.py)."""

import os

import anyio

from runtime import Executor, executor, function, uses


# Four workers whatever the load, so where they run is placement's choice alone.
@function(name="work", concurrency=8, min_workers=4, max_workers=4, ack_wait=2.0, max_deliver=20)
async def work(event):
    await anyio.sleep(0.005)
    return event


@executor(name="gpuprobe", gpu=1, max_batch=4, max_wait_ms=5, timeout=10, max_workers=2)
class GpuProbe:
    def __call__(self, batch):
        # The devices the controller gave this worker (CUDA reads the same variable).
        return [{"cuda": os.environ.get("CUDA_VISIBLE_DEVICES")} for _ in batch]


@function(name="probe")
async def probe(event, gpu: Executor[dict, dict] = uses(GpuProbe)):
    return await gpu({})
