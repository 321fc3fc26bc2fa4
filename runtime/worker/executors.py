"""How a handler reaches its executors: over NATS to an executor pool, or in-process (fused)."""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
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


@dataclass
class _Call:
    """One item waiting to be sent with others of the same moment."""

    body: bytes
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: Any = None


@dataclass
class _Gathering:
    """Items of one turn of the event loop, to go in one request (sent by its first call)."""

    calls: list[_Call]
    size: int


class RemoteExecutor(Executor[Any, Any]):
    """Sends items to the executor pool, which batches them across handlers.

    Items sent by this worker in the same turn of its event loop (the items of ``h.map``,
    and single calls ``await h(item)`` of concurrent invocations) go together, up to
    ``max_batch`` items per request (:mod:`runtime.wire.items`). A call alone goes alone, at
    once: light load pays nothing for it.
    """

    def __init__(self, nc: NATS, spec: FunctionSpec) -> None:
        self._nc = nc
        self.spec = spec
        self._subject = protocol.executor_subject(spec.name)
        self._batches = True  # False once an executor answered a batch as one item
        self._gathering: _Gathering | None = None  # this turn's items, still open

    async def __call__(self, item: Any) -> Any:
        call = _Call(codec.encode(item, "msgpack"))
        gathering = self._join(call)
        if gathering is not None:
            await self._send_gathered(gathering)
        else:
            await call.done.wait()
        if isinstance(call.outcome, ShoalError):
            raise call.outcome
        return call.outcome

    async def _outcomes(self, items: list[Any]) -> list[Any]:
        calls: list[_Call] = []
        led: list[_Gathering] = []
        for item in items:
            encoded = batch_wire.encode_item(item)
            call = _Call(b"")
            calls.append(call)
            if isinstance(encoded, ShoalError):
                call.outcome = encoded
                call.done.set()
                continue
            call.body = encoded
            gathering = self._join(call)
            if gathering is not None:
                led.append(gathering)
        async with anyio.create_task_group() as tg:
            for gathering in led:
                tg.start_soon(self._send_gathered, gathering)
        for call in calls:  # those that joined another caller's request
            await call.done.wait()
        return [call.outcome for call in calls]

    def _join(self, call: _Call) -> _Gathering | None:
        """Add ``call`` to this turn's request; a new request (returned: the caller sends
        it) when there is none, or it is full."""
        room = self._nc.max_payload - batch_wire.HEADROOM
        g = self._gathering
        if g is not None and len(g.calls) < self.spec.max_batch and g.size + len(call.body) <= room:
            g.calls.append(call)
            g.size += len(call.body)
            return None
        g = self._gathering = _Gathering([call], len(call.body))
        return g

    async def _send_gathered(self, gathering: _Gathering) -> None:
        # Shielded: the calls that joined wait on this one; the request's own timeout bounds it.
        with anyio.CancelScope(shield=True):
            await anyio.lowlevel.checkpoint()  # the items of this same turn join
            if self._gathering is gathering:
                self._gathering = None
            calls = gathering.calls
            try:
                outcomes = await self._send_items([c.body for c in calls])
            except Exception as e:  # every call that joined must hear back: a typed error
                log.warning("executor %s request failed: %r", self.spec.name, e)
                err = ExecutorUnavailable(f"executor {self.spec.name!r} unreachable: {e!r}")
                outcomes = [err] * len(calls)
            for call, outcome in zip(calls, outcomes, strict=True):
                call.outcome = outcome
                call.done.set()

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
            try:
                answer.decode(reply.data, reply.headers)
            except ShoalError as e:
                if e.retryable:  # refused before any executor read it (one is starting)
                    return [e] * len(bodies)
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
