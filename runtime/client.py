"""A Python client for invoking functions; any NATS client can do the same by the protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyNotFoundError

from runtime.errors import FunctionNotFound, ResultNotFound, WorkerUnavailable
from runtime.wire import answer, codec, protocol, tracing
from runtime.wire.connection import connect, kv
from runtime.wire.kvwatch import Change, Follower
from runtime.wire.results import Result, ResultStore

if TYPE_CHECKING:
    from types import TracebackType

    from nats.aio.client import Client as NATS

    from runtime.wire.codec import Encoding


class Client:
    """Invoke functions by request/reply or as durable events, and look results up by id."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._results: ResultStore | None = None

    @classmethod
    async def connect(cls, url: str | None = None) -> Client:
        return cls(await connect(url, name="shoal-client"))

    async def close(self) -> None:
        await self.nc.drain()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def call(
        self,
        function: str,
        event: Any,
        *,
        timeout: float = 60.0,
        encoding: Encoding = "json",
        request_id: str | None = None,
    ) -> Any:
        """Invoke ``function`` on ``fn.<name>.call`` and return its result, or raise its error."""
        # Inside a traced invocation (a handler calling another function), the trace goes on.
        headers = tracing.inject({protocol.CONTENT_TYPE: codec.CONTENT_TYPES[encoding]})
        if request_id:
            headers[protocol.MSG_ID] = request_id
        try:
            reply = await self.nc.request(
                protocol.call_subject(function),
                codec.encode(event, encoding),
                timeout=timeout,
                headers=headers,
            )
        except NoRespondersError:
            if not await self._deployed(function):
                raise FunctionNotFound(
                    f"no function {function!r} is deployed: shoal deploy <file.py>",
                    request_id=request_id,
                ) from None
            raise WorkerUnavailable(
                f"{function!r} is deployed but nothing serves it: run a controller (shoal up)",
                request_id=request_id,
            ) from None
        except NatsTimeout:
            raise WorkerUnavailable(
                f"no answer from {function!r} within {timeout:g}s", request_id=request_id
            ) from None
        return answer.decode(reply.data, reply.headers)

    async def publish(
        self,
        subject_or_function: str,
        event: Any,
        *,
        request_id: str | None = None,
        reply_to: str | None = None,
        encoding: Encoding = "json",
    ) -> str:
        """Publish a durable event; returns the request id to look its result up by.

        A bare function name goes to ``fn.<name>``; anything with a dot is used as the subject.
        Returns once JetStream has stored the event.
        """
        subject = (
            subject_or_function
            if "." in subject_or_function
            else protocol.event_subject(subject_or_function)
        )
        request_id = request_id or answer.new_request_id()
        headers = tracing.inject(
            {protocol.CONTENT_TYPE: codec.CONTENT_TYPES[encoding], protocol.MSG_ID: request_id}
        )
        if reply_to:
            headers[protocol.REPLY_TO] = reply_to
        await self.nc.jetstream().publish(subject, codec.encode(event, encoding), headers=headers)
        return request_id

    async def cancel(self, request_id: str) -> None:
        """Cancel ``request_id``: if queued it will not run, if running it is interrupted
        (a sync handler's thread finishes on its own); its answer is a ``Cancelled`` error."""
        bucket = await kv(self.nc.jetstream(), protocol.CANCEL_BUCKET)
        await bucket.put(protocol.result_key(request_id), request_id.encode())

    async def result(self, request_id: str) -> Result | None:
        """The stored outcome of ``request_id``, or None if there is none (yet)."""
        return await (await self._store()).get(request_id)

    async def wait_result(self, request_id: str, *, timeout: float = 60.0) -> Result:
        """Wait for ``request_id``'s outcome, following its key in the results bucket (no
        polling; across reconnects, like every follower)."""
        bucket = await kv(self.nc.jetstream(), protocol.RESULTS_BUCKET)
        outcome: list[Result | Exception] = []
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as tg:

                def on_change(change: Change) -> None:
                    if change.deleted or outcome:
                        return
                    try:
                        outcome.append(Result.from_bytes(change.value))
                    except Exception as e:  # raised here, not inside the follower
                        outcome.append(e)
                    tg.cancel_scope.cancel()

                key = protocol.result_key(request_id)
                tg.start_soon(Follower(bucket, on_change, keys=key).run)
        if outcome:
            if isinstance(outcome[0], Exception):
                raise outcome[0]
            return outcome[0]
        raise ResultNotFound(
            f"no result for {request_id!r} within {timeout:g}s", request_id=request_id
        )

    async def _deployed(self, function: str) -> bool:
        functions = await kv(self.nc.jetstream(), protocol.FUNCTIONS_BUCKET)
        try:
            await functions.get(function)
        except KeyNotFoundError:
            return False
        return True

    async def _store(self) -> ResultStore:
        if self._results is None:
            self._results = ResultStore(
                self.nc, await kv(self.nc.jetstream(), protocol.RESULTS_BUCKET)
            )
        return self._results
