"""Byte streams in and out of the store, hashed as they pass."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from .errors import ChecksumMismatch
from .refs import ObjectRef

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from types import TracebackType

    from urllib3.response import BaseHTTPResponse

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BufferReader",
    "ByteSource",
    "BytesLike",
    "HashingReader",
    "ObjectStream",
    "Readable",
    "prehash",
    "read_all",
    "release",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview

DEFAULT_CHUNK_SIZE = 1024 * 1024
"""Chunk size yielded by streamed downloads."""


@runtime_checkable
class Readable(Protocol):
    """A binary file-like object: anything with ``read(size) -> bytes``."""

    def read(self, size: int = -1, /) -> bytes: ...


@runtime_checkable
class SeekableReadable(Readable, Protocol):
    def seekable(self) -> bool: ...
    def tell(self) -> int: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


ByteSource: TypeAlias = Readable | Iterable[BytesLike]
"""What ``put_stream`` accepts: a binary file object or an iterable of byte chunks."""


class ObjectStream(Iterator[bytes]):
    """Chunks of one object, hashed as they pass and verified after the last one.

    Returned by :meth:`ObjectStore.get_stream`. Closing (or exhausting) it releases the
    HTTP connection; iterating a closed stream stops immediately.
    """

    def __init__(
        self,
        response: BaseHTTPResponse,
        bucket: str,
        key: str,
        expected_sha256: str | None,
        expected_size: int | None,
        metadata: dict[str, str],
        chunk_size: int,
        errors: Callable[[str, str | None], AbstractContextManager[None]],
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.bucket = bucket
        self.key = key
        self.size = expected_size
        """Size in bytes, when known before reading."""
        self.metadata = metadata
        """User metadata recorded with the object (without the ``x-amz-meta-`` prefix)."""
        self._response = response
        self._chunks = response.stream(chunk_size)
        self._expected = expected_sha256
        self._hash = hashlib.sha256()
        self._received = 0
        self._errors = errors
        self._closed = False
        self._complete = False

    def __iter__(self) -> ObjectStream:
        return self

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            with self._errors(self.bucket, self.key):
                chunk = next(self._chunks, None)
        except BaseException:
            self.close()
            raise
        if chunk is None:
            self.close()
            self._verify()
            self._complete = True
            raise StopIteration
        self._hash.update(chunk)
        self._received += len(chunk)
        return chunk

    def _verify(self) -> None:
        if self.size is not None and self._received != self.size:
            raise ChecksumMismatch(
                f"received {self._received} bytes, expected {self.size}",
                bucket=self.bucket,
                key=self.key,
            )
        if self._expected is not None and self._hash.hexdigest() != self._expected:
            raise ChecksumMismatch(
                "content does not match its recorded sha256", bucket=self.bucket, key=self.key
            )

    def ref(self) -> ObjectRef:
        """Ref describing the bytes received; only valid once iteration completed."""
        if not self._complete:
            raise RuntimeError("stream not fully read")
        return ObjectRef(self.bucket, self.key, self._received, self._hash.hexdigest())

    def close(self) -> None:
        """Release the connection; safe to call more than once."""
        if not self._closed:
            self._closed = True
            release(self._response)

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BufferReader:
    """File-like view of an in-memory buffer that copies one part at a time, not all at once."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._pos + size)
        chunk = bytes(self._view[self._pos : end])
        self._pos = end
        return chunk


class HashingReader:
    """Adapts a file object or chunk iterable to ``read(size)`` and hashes what passes."""

    def __init__(self, source: ByteSource) -> None:
        self._file: Readable | None = None
        self._chunks: Iterator[BytesLike] = iter(())
        if isinstance(source, Readable):
            self._file = source
        else:
            self._chunks = iter(source)
        self._pending = memoryview(b"")
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        if self._file is not None:
            data = self._file.read(size)
            data = data if isinstance(data, bytes) else bytes(data)
        else:
            data = self._read_chunks(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def _read_chunks(self, size: int) -> bytes:
        # Chunks come in whatever sizes the producer chose; minio wants exactly ``size``.
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        while wanted is None or wanted > 0:
            if not self._pending:
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._pending = memoryview(nxt).cast("B")
                continue
            take = len(self._pending) if wanted is None else min(wanted, len(self._pending))
            parts.append(bytes(self._pending[:take]))
            self._pending = self._pending[take:]
            if wanted is not None:
                wanted -= take
        return b"".join(parts)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def prehash(source: ByteSource, length: int) -> tuple[str, int] | None:
    """SHA-256 and size of the next ``length`` bytes (all if -1), then seek back.

    ``None`` when ``source`` is not a seekable file, so it cannot be read twice.
    """
    if not isinstance(source, SeekableReadable):
        return None
    try:
        if not source.seekable():
            return None
    except (OSError, ValueError):  # e.g. a closed file
        return None
    start = source.tell()
    digest, size = hashlib.sha256(), 0
    while length < 0 or size < length:
        want = DEFAULT_CHUNK_SIZE if length < 0 else min(DEFAULT_CHUNK_SIZE, length - size)
        chunk = source.read(want)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    source.seek(start)
    if 0 <= length != size:
        raise ValueError(f"source has {size} bytes, expected {length}")
    return digest.hexdigest(), size


def read_all(stream: ObjectStream, *, writable: bool = False) -> bytes | bytearray:
    """Everything left in ``stream``; a ``bytearray`` when ``writable`` and the size is known.

    The writable form fills one preallocated buffer so callers (numpy) can wrap it without
    another copy.
    """
    if not writable or stream.size is None:
        return b"".join(stream)
    data = bytearray(stream.size)
    pos = 0
    with memoryview(data) as view:
        for chunk in stream:
            end = pos + len(chunk)
            if end > len(data):
                raise ChecksumMismatch(
                    "object longer than announced", bucket=stream.bucket, key=stream.key
                )
            view[pos:end] = chunk
            pos = end
    return data


def release(response: BaseHTTPResponse) -> None:
    """Close a response and hand its connection back to the pool."""
    response.close()
    response.release_conn()
