"""How a handler reaches its executors: over NATS to an executor pool, or in-process (fused)."""

from __future__ import annotations

import ctypes
import logging
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.define.handles import Executor
from runtime.errors import ExecutorUnavailable, ShoalError
from runtime.models import ModelCache
from runtime.wire import answer, codec, logstream, protocol, tracing
from runtime.worker.batching import Batcher
from runtime.worker.invoker import run_hook

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from runtime.define.decorator import Definition
    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.executors")

_MSGPACK = {protocol.CONTENT_TYPE: protocol.MSGPACK}


def _attrs(name: str) -> dict[str, str]:
    return {"shoal.executor": name}


class RemoteExecutor(Executor[Any, Any]):
    """Sends one item per request to the executor pool, which batches across handlers."""

    def __init__(self, nc: NATS, spec: FunctionSpec) -> None:
        self._nc = nc
        self.spec = spec
        self._subject = protocol.executor_subject(spec.name)

    async def __call__(self, item: Any) -> Any:
        name = self.spec.name
        with tracing.span(f"{name} send", kind=tracing.CLIENT, attributes=_attrs(name)) as span:
            headers = {**_MSGPACK, tracing.TRACEPARENT: span.traceparent}
            request_id = logstream.current_request()
            if request_id:  # the executor's log lines name the request they serve
                headers[protocol.REQUEST_ID] = request_id
            try:
                return await self._request(item, headers)
            except ShoalError as e:
                span.record_error(e, e.message)
                raise

    async def _request(self, item: Any, headers: dict[str, str]) -> Any:
        try:
            reply = await self._nc.request(
                self._subject,
                codec.encode(item, "msgpack"),
                timeout=self.spec.timeout,
                headers=headers,
            )
        except NoRespondersError:
            raise ExecutorUnavailable(
                f"no executor {self.spec.name!r} and no controller to start one"
            ) from None
        except NatsTimeout:
            raise ExecutorUnavailable(
                f"executor {self.spec.name!r} did not answer within {self.spec.timeout:g}s"
            ) from None
        return answer.decode(reply.data, reply.headers)


class LocalExecutor(Executor[Any, Any]):
    """A fused executor: the model lives in the handler's own process."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher

    async def __call__(self, item: Any) -> Any:
        return await self._batcher.submit(item)


def cuda_devices() -> int:
    """GPUs the NVIDIA driver reports (0 without a driver), asked without loading a framework."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except OSError:
        return 0


def pick_device(spec: FunctionSpec) -> str:
    """ "cuda" when there is a GPU and the executor's engine can use it, else "cpu"."""
    # onnxruntime-gpu lists its CUDA provider even where no GPU or CUDA libraries exist, so
    # the driver is asked first; the engine then confirms it can use the device.
    if spec.engine == "custom" or cuda_devices() == 0:
        return "cpu"
    try:
        if spec.engine == "torch":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        if spec.engine == "onnxruntime":
            import onnxruntime

            providers = onnxruntime.get_available_providers()
            return "cuda" if "CUDAExecutionProvider" in providers else "cpu"
    except ImportError as e:
        raise ShoalError(f"executor {spec.name} needs the {spec.engine} package: {e}") from e
    return "cpu"


async def start_executor(definition: Definition) -> Batcher:
    """Instantiate an executor class, load its model once, and wrap it in a batcher."""
    spec = definition.spec
    instance = definition.target()
    instance.device = await anyio.to_thread.run_sync(pick_device, spec)
    instance.engine = spec.engine
    # Where its engine keeps models prepared once (runtime.models): SHOAL_MODEL_CACHE...
    instance.model_cache = ModelCache.from_env()
    setup = getattr(instance, "setup", None)
    if setup is not None:
        await run_hook(setup)
    # The executor may have settled on another device than offered (engine_device).
    device = getattr(instance, "engine_device", instance.device)
    log.info("executor %s ready on %s (%s)", spec.name, device, spec.engine)
    return Batcher(
        instance,
        name=spec.name,
        max_batch=spec.max_batch,
        max_wait=spec.max_wait_ms / 1000,
        latency_target=spec.latency_target_ms / 1000 if spec.latency_target_ms else None,
    )
