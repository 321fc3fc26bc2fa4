"""How a handler reaches its executors: over NATS to an executor pool, or in-process (fused)."""

from __future__ import annotations

import ctypes
import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.define.handles import Executor
from runtime.errors import ExecutorUnavailable, PayloadTooLarge, ShoalError
from runtime.models import ModelCache
from runtime.wire import answer, codec, logstream, protocol, tracing
from runtime.wire import items as batch_wire
from runtime.worker.batching import Batcher
from runtime.worker.invoker import run_hook

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from runtime.define.decorator import Definition
    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.executors")

_MSGPACK = {protocol.CONTENT_TYPE: protocol.MSGPACK}


def _attrs(name: str) -> dict[str, str]:
    return {"shoal.executor": name}


class RemoteExecutor(Executor[Any, Any]):
    """Sends items to the executor pool, which batches them across handlers: one item per
    request for ``await h(item)``; ``h.map(items)`` sends up to ``max_batch`` items per
    request (:mod:`runtime.wire.items`)."""

    def __init__(self, nc: NATS, spec: FunctionSpec) -> None:
        self._nc = nc
        self.spec = spec
        self._subject = protocol.executor_subject(spec.name)
        self._batches = True  # False once an executor answered a batch as one item

    async def __call__(self, item: Any) -> Any:
        name = self.spec.name
        with tracing.span(f"{name} send", kind=tracing.CLIENT, attributes=_attrs(name)) as span:
            try:
                body = codec.encode(item, "msgpack")
                reply = await self._request(body, self._headers(span.traceparent))
                return answer.decode(reply.data, reply.headers)
            except ShoalError as e:
                span.record_error(e, e.message)
                raise

    async def _outcomes(self, items: list[Any]) -> list[Any]:
        outcomes: list[Any] = [None] * len(items)
        bodies: dict[int, bytes] = {}
        for i, item in enumerate(items):
            encoded = batch_wire.encode_item(item)
            if isinstance(encoded, bytes):
                bodies[i] = encoded
            else:
                outcomes[i] = encoded
        sendable = list(bodies)
        limit = self._nc.max_payload
        groups = batch_wire.chunks([bodies[i] for i in sendable], self.spec.max_batch, limit)

        async def send(group: list[int]) -> None:
            indexes = [sendable[j] for j in group]
            results = await self._send_items([bodies[i] for i in indexes])
            for i, outcome in zip(indexes, results, strict=True):
                outcomes[i] = outcome

        async with anyio.create_task_group() as tg:
            for group in groups:
                tg.start_soon(send, group)
        return outcomes

    async def _send_items(self, bodies: list[bytes]) -> list[Any]:
        """Each item's outcome, the items sent in one request (one alone goes as a single
        item, which every executor reads)."""
        if len(bodies) == 1 or not self._batches:
            return list(await anyio_gather([self._send_one(b) for b in bodies]))
        name = self.spec.name
        attrs = {**_attrs(name), "shoal.items": len(bodies)}
        with tracing.span(f"{name} send", kind=tracing.CLIENT, attributes=attrs) as span:
            headers = batch_wire.request_headers(self._headers(span.traceparent))
            try:
                reply = await self._request(batch_wire.request_body(bodies), headers)
            except ShoalError as e:
                span.record_error(e, e.message)
                return [e] * len(bodies)
        if not batch_wire.is_batch(reply.headers):
            # An executor that predates batch requests read the list as one item.
            log.warning("executor %s answers one item per request: sending so", name)
            self._batches = False
            return await self._send_items(bodies)
        return batch_wire.decode_answer(reply.data, reply.headers, len(bodies))

    async def _send_one(self, body: bytes) -> Any:
        name = self.spec.name
        with tracing.span(f"{name} send", kind=tracing.CLIENT, attributes=_attrs(name)) as span:
            try:
                reply = await self._request(body, self._headers(span.traceparent))
                return answer.decode(reply.data, reply.headers)
            except ShoalError as e:
                span.record_error(e, e.message)
                return e

    def _headers(self, traceparent: str | None) -> dict[str, str]:
        headers = dict(_MSGPACK)
        if traceparent:
            headers[tracing.TRACEPARENT] = traceparent
        request_id = logstream.current_request()
        if request_id:  # the executor's log lines name the request they serve
            headers[protocol.REQUEST_ID] = request_id
        return headers

    async def _request(self, body: bytes, headers: dict[str, str]) -> Msg:
        if len(body) > self._nc.max_payload - batch_wire.HEADROOM:
            raise PayloadTooLarge(
                f"an item for executor {self.spec.name!r} is too large to send ({len(body)} bytes)"
            )
        try:
            return await self._nc.request(
                self._subject, body, timeout=self.spec.timeout, headers=headers
            )
        except NoRespondersError:
            raise ExecutorUnavailable(
                f"no executor {self.spec.name!r} and no controller to start one"
            ) from None
        except NatsTimeout:
            raise ExecutorUnavailable(
                f"executor {self.spec.name!r} did not answer within {self.spec.timeout:g}s"
            ) from None


async def anyio_gather(calls: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """The values of coroutines run concurrently, in order (they return errors, not raise)."""
    if len(calls) == 1:
        return [await calls[0]]
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results


class LocalExecutor(Executor[Any, Any]):
    """A fused executor: the model lives in the handler's own process."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher

    async def __call__(self, item: Any) -> Any:
        return await self._batcher.submit(item)

    async def _outcomes(self, items: list[Any]) -> list[Any]:
        return await self._batcher.submit_many(items)


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
