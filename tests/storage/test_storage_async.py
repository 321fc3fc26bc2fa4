"""AsyncObjectStore: the same guarantees from event-loop code."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import anyio
import numpy as np
import pytest

from storage import (
    AsyncObjectStore,
    ChecksumMismatch,
    ObjectNotFound,
    ObjectStore,
    S3Settings,
    StorageUnavailable,
    get_array_async,
    put_array_async,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


@pytest.fixture
def astore(store: ObjectStore) -> AsyncObjectStore:
    return AsyncObjectStore(store, max_concurrency=4)


async def test_async_round_trip(astore: AsyncObjectStore, prefix: str) -> None:
    await astore.ensure_bucket()
    ref = await astore.put_bytes(prefix + "a", b"async bytes")
    assert await astore.get_bytes(ref) == b"async bytes"
    assert await astore.exists(ref.key)
    assert await astore.stat(ref.key) == ref
    await astore.delete(ref.key)
    with pytest.raises(ObjectNotFound):
        await astore.get_bytes(ref)


async def test_async_concurrent_puts(astore: AsyncObjectStore, prefix: str) -> None:
    async def put(i: int) -> None:
        ref = await astore.put_bytes(f"{prefix}many/{i}", bytes([i]) * 1000)
        assert await astore.get_bytes(ref) == bytes([i]) * 1000

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(put, i)
    assert await astore.delete_prefix(prefix + "many/") == 12


async def test_async_stream_upload_and_download(astore: AsyncObjectStore, prefix: str) -> None:
    data = os.urandom(12 * MiB)

    async def produce() -> AsyncIterator[bytes]:
        for start in range(0, len(data), MiB):
            await anyio.lowlevel.checkpoint()
            yield data[start : start + MiB]

    ref = await astore.put_stream(prefix + "streamed", produce(), part_size=5 * MiB)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()

    received = bytearray()
    stream = await astore.get_stream(ref, chunk_size=MiB)
    async with stream:
        async for chunk in stream:
            received += chunk
    assert bytes(received) == data
    assert stream.ref() == ref


async def test_async_stream_detects_tampering(astore: AsyncObjectStore, prefix: str) -> None:
    ref = await astore.put_bytes(prefix + "x", b"one")
    await astore.put_bytes(prefix + "x", b"two")
    with pytest.raises(ChecksumMismatch):
        await astore.get_stream(ref)


async def test_async_tensors(astore: AsyncObjectStore, prefix: str) -> None:
    array = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    tref = await put_array_async(astore, prefix + "t", array)
    np.testing.assert_array_equal(await get_array_async(astore, tref), array)


async def test_async_server_down(dead_settings: S3Settings) -> None:
    astore = AsyncObjectStore.from_settings(dead_settings)
    with pytest.raises(StorageUnavailable):
        await astore.put_bytes("k", b"x")
    with pytest.raises(StorageUnavailable):
        await astore.get_bytes("k")
