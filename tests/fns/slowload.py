"""An executor whose setup takes seconds, as loading a model does: its handler is ready long
before it, so the handler's first item waits at the controller for the executor."""

import time

from runtime import Executor, executor, function, uses

LOAD_S = 2.0  # the model load this stands for; much longer than a handler's start


@executor(name="slowloader", max_batch=8, max_wait_ms=5)
class SlowLoader:
    def setup(self):
        time.sleep(LOAD_S)

    def __call__(self, batch):
        return [item * 2 for item in batch]


@function(name="slowload")
async def slowload(event, loader: Executor[int, int] = uses(SlowLoader)):
    return await loader(event["n"])
