"""Async facade over :class:`ObjectStore` for event-loop code."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from .store import DEFAULT_PART_SIZE, ObjectStore, Target
from .streams import DEFAULT_CHUNK_SIZE, BytesLike, ByteSource, ObjectStream

if TYPE_CHECKING:
    from types import TracebackType

    from .refs import ObjectRef
    from .settings import S3Settings

__all__ = ["AsyncObjectStore", "AsyncObjectStream"]

T = TypeVar("T")


class AsyncObjectStore:
    """Async facade over :class:`ObjectStore` for event-loop code.

    The minio SDK blocks, so each call runs in a worker thread; a capacity limiter bounds
    how many run at once so bulk transfers cannot starve anyio's default thread pool.
    """

    def __init__(self, store: ObjectStore, *, max_concurrency: int = 8) -> None:
        self._store = store
        self._limiter = anyio.CapacityLimiter(max_concurrency)

    @classmethod
    def from_settings(cls, settings: S3Settings, *, max_concurrency: int = 8) -> AsyncObjectStore:
        """Facade over a new :class:`ObjectStore` built from ``settings``."""
        return cls(
            ObjectStore(settings, pool_maxsize=max(16, max_concurrency)),
            max_concurrency=max_concurrency,
        )

    @property
    def store(self) -> ObjectStore:
        """The wrapped synchronous store."""
        return self._store

    @property
    def bucket(self) -> str:
        """The bucket that plain keys refer to."""
        return self._store.bucket

    async def run_sync(self, func: Callable[[], T]) -> T:
        """Run a blocking callable in a worker thread under this store's limiter."""
        return await anyio.to_thread.run_sync(func, limiter=self._limiter)

    async def ensure_bucket(self) -> None:
        """See :meth:`ObjectStore.ensure_bucket`."""
        await self.run_sync(self._store.ensure_bucket)

    async def put_bytes(
        self,
        key: str,
        data: BytesLike,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str = "application/octet-stream",
    ) -> ObjectRef:
        """See :meth:`ObjectStore.put_bytes`."""
        return await self.run_sync(
            functools.partial(self._store.put_bytes, key, data, metadata, content_type=content_type)
        )

    async def put_stream(
        self,
        key: str,
        source: ByteSource | AsyncIterable[BytesLike],
        length: int = -1,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        metadata: Mapping[str, str] | None = None,
        sha256: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectRef:
        """See :meth:`ObjectStore.put_stream`; ``source`` may also be an async iterable,
        which is pulled from the event loop as the upload thread needs data."""
        sync_source: ByteSource = (
            _FromAsyncIterable(source) if isinstance(source, AsyncIterable) else source
        )
        return await self.run_sync(
            functools.partial(
                self._store.put_stream,
                key,
                sync_source,
                length,
                part_size=part_size,
                metadata=metadata,
                sha256=sha256,
                content_type=content_type,
            )
        )

    async def get_bytes(self, target: Target, *, verify: bool = True) -> bytes:
        """See :meth:`ObjectStore.get_bytes`."""
        return await self.run_sync(functools.partial(self._store.get_bytes, target, verify=verify))

    async def get_stream(
        self, target: Target, *, chunk_size: int = DEFAULT_CHUNK_SIZE, verify: bool = True
    ) -> AsyncObjectStream:
        """See :meth:`ObjectStore.get_stream`; iterate the result with ``async for``."""
        stream = await self.run_sync(
            functools.partial(self._store.get_stream, target, chunk_size=chunk_size, verify=verify)
        )
        return AsyncObjectStream(stream, self._limiter)

    async def stat(self, key: str) -> ObjectRef:
        """See :meth:`ObjectStore.stat`."""
        return await self.run_sync(functools.partial(self._store.stat, key))

    async def exists(self, key: str) -> bool:
        """See :meth:`ObjectStore.exists`."""
        return await self.run_sync(functools.partial(self._store.exists, key))

    async def delete(self, key: str) -> None:
        """See :meth:`ObjectStore.delete`."""
        await self.run_sync(functools.partial(self._store.delete, key))

    async def delete_prefix(self, prefix: str) -> int:
        """See :meth:`ObjectStore.delete_prefix`."""
        return await self.run_sync(functools.partial(self._store.delete_prefix, prefix))


class AsyncObjectStream:
    """Async iterator over an :class:`ObjectStream`; each chunk is read in a worker thread."""

    def __init__(self, stream: ObjectStream, limiter: anyio.CapacityLimiter) -> None:
        self._stream = stream
        self._limiter = limiter

    @property
    def size(self) -> int | None:
        """Size in bytes, when known before reading."""
        return self._stream.size

    @property
    def metadata(self) -> dict[str, str]:
        """User metadata recorded with the object."""
        return self._stream.metadata

    def ref(self) -> ObjectRef:
        """See :meth:`ObjectStream.ref`."""
        return self._stream.ref()

    def __aiter__(self) -> AsyncObjectStream:
        return self

    async def __anext__(self) -> bytes:
        # StopIteration must not cross the thread boundary (it would end the wrong frame),
        # so the worker signals the end with None.
        chunk = await anyio.to_thread.run_sync(next, self._stream, None, limiter=self._limiter)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Release the connection (closing a socket does not block)."""
        self._stream.close()

    async def __aenter__(self) -> AsyncObjectStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _FromAsyncIterable(Iterator[BytesLike]):
    """Sync iterator, used from a worker thread, that pulls an async iterable on the loop."""

    def __init__(self, source: AsyncIterable[BytesLike]) -> None:
        self._iterator = source.__aiter__()

    def __next__(self) -> BytesLike:
        chunk = anyio.from_thread.run(self._anext)
        if chunk is None:
            raise StopIteration
        return chunk

    async def _anext(self) -> BytesLike | None:
        # StopAsyncIteration must not cross the thread boundary either.
        return await anext(self._iterator, None)
