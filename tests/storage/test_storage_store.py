"""ObjectStore against a real S3 server."""

from __future__ import annotations

import hashlib
import io
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from storage import (
    ChecksumMismatch,
    ObjectNotFound,
    ObjectRef,
    ObjectStore,
    S3Settings,
    StorageAccessDenied,
    StorageUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from minio import Minio

MiB = 1024 * 1024


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _keys(raw_client: Minio, bucket: str, prefix: str) -> list[str]:
    return [
        o.object_name
        for o in raw_client.list_objects(bucket, prefix=prefix, recursive=True)
        if o.object_name is not None
    ]


# -- bucket bootstrap --------------------------------------------------------------------


def test_ensure_bucket_is_idempotent(s3_server: Any, raw_client: Minio) -> None:
    store = ObjectStore(s3_server.settings())
    assert not raw_client.bucket_exists(store.bucket)
    store.ensure_bucket()
    store.ensure_bucket()
    assert raw_client.bucket_exists(store.bucket)
    lifecycle = raw_client.get_bucket_lifecycle(store.bucket)
    assert lifecycle is not None
    rules = [r for r in lifecycle.rules if r.rule_id == "shoal-intermediates-ttl"]
    assert len(rules) == 1
    assert rules[0].expiration is not None and rules[0].expiration.days == 1
    assert rules[0].rule_filter is not None
    assert rules[0].rule_filter.prefix == "intermediates/"
    # Usable right away.
    ref = store.put_bytes("k", b"v")
    assert store.get_bytes(ref) == b"v"


def test_ensure_bucket_concurrently(s3_server: Any, raw_client: Minio) -> None:
    settings = s3_server.settings()
    stores = [ObjectStore(settings) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(s.ensure_bucket) for s in stores]:
            future.result()
    assert raw_client.bucket_exists(settings.bucket)


# -- round trips --------------------------------------------------------------------------


def test_put_get_small(store: ObjectStore, prefix: str) -> None:
    data = b"hello shoal"
    ref = store.put_bytes(prefix + "small", data, {"stage": "0"})
    assert ref == ObjectRef(
        store.bucket, prefix + "small", len(data), hashlib.sha256(data).hexdigest()
    )
    assert store.get_bytes(ref) == data
    assert store.get_bytes(prefix + "small") == data
    assert store.stat(prefix + "small") == ref
    assert store.exists(prefix + "small")
    with store.get_stream(ref) as stream:
        assert stream.metadata["stage"] == "0"
        assert b"".join(stream) == data
        assert stream.ref() == ref


def test_put_get_empty(store: ObjectStore, prefix: str) -> None:
    ref = store.put_bytes(prefix + "empty", b"")
    assert ref.size == 0
    assert store.get_bytes(ref) == b""


def test_large_stream_from_iterable_is_multipart_and_verified(
    store: ObjectStore, prefix: str
) -> None:
    data = os.urandom(20 * MiB)
    key = prefix + "large-iter"
    # Unknown length and 5 MiB parts: a multipart upload of four full parts and a short one.
    ref = store.put_stream(key, _chunks(data, 3 * MiB + 7), part_size=5 * MiB)
    assert ref.size == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert store.stat(key) == ref
    received = hashlib.sha256()
    size = 0
    with store.get_stream(ref, chunk_size=MiB) as stream:
        for chunk in stream:
            received.update(chunk)
            size += len(chunk)
    assert (size, received.hexdigest()) == (ref.size, ref.sha256)
    # The staging object used to attach the checksum is gone.
    assert store.delete_prefix(store.settings.intermediate_prefix + ".staging/") == 0


def test_large_stream_from_seekable_file(
    store: ObjectStore, raw_client: Minio, prefix: str
) -> None:
    data = os.urandom(20 * MiB)
    ref = store.put_stream(prefix + "large-file", io.BytesIO(data), part_size=5 * MiB)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    # A multipart upload's ETag ends in "-<part count>".
    etag = raw_client.stat_object(store.bucket, ref.key).etag
    assert etag is not None and etag.endswith("-4")
    assert store.get_bytes(ref) == data


def test_stream_of_known_length_without_checksum(store: ObjectStore, prefix: str) -> None:
    data = os.urandom(6 * MiB + 3)
    ref = store.put_stream(prefix + "known-len", _chunks(data, MiB), len(data), part_size=5 * MiB)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes(prefix + "known-len") == data


def test_put_stream_with_known_checksum(store: ObjectStore, prefix: str) -> None:
    data = os.urandom(MiB)
    digest = hashlib.sha256(data).hexdigest()
    ref = store.put_stream(prefix + "known", _chunks(data, 64 * 1024), len(data), sha256=digest)
    assert ref.sha256 == digest
    assert store.get_bytes(prefix + "known") == data


def test_put_stream_with_wrong_checksum_leaves_nothing(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ChecksumMismatch):
        store.put_stream(prefix + "wrong", iter([b"abc"]), 3, sha256="00" * 32)
    assert not store.exists(prefix + "wrong")


def test_reserved_metadata_is_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        store.put_bytes(prefix + "x", b"x", {"shoal-sha256": "00" * 32})
    with pytest.raises(ValueError):
        store.put_bytes(prefix + "x", b"x", {"name": "caf\u00e9"})


# -- integrity -----------------------------------------------------------------------------


def _tamper(raw_client: Minio, bucket: str, key: str, new_bytes: bytes) -> None:
    """Overwrite the object's bytes, keeping the checksum metadata it had."""
    info = raw_client.stat_object(bucket, key)
    assert info.metadata is not None
    kept: dict[str, str | list[str] | tuple[str]] = {
        k: v for k, v in info.metadata.items() if k.lower().startswith("x-amz-meta-")
    }
    assert any("sha256" in k.lower() for k in kept)
    raw_client.put_object(bucket, key, io.BytesIO(new_bytes), len(new_bytes), metadata=kept)


def test_tampering_is_detected(store: ObjectStore, raw_client: Minio, prefix: str) -> None:
    key = prefix + "victim"
    original = b"A" * 4096
    ref = store.put_bytes(key, original)
    _tamper(raw_client, store.bucket, key, b"B" * 4096)  # same size: only the hash can tell

    with pytest.raises(ChecksumMismatch):
        store.get_bytes(ref)
    with pytest.raises(ChecksumMismatch):
        store.get_bytes(key)
    with pytest.raises(ChecksumMismatch), store.get_stream(key) as stream:
        for _ in stream:
            pass
    # Explicitly unverified reads still work, e.g. for forensics.
    assert store.get_bytes(key, verify=False) == b"B" * 4096


def test_replaced_object_does_not_match_old_ref(store: ObjectStore, prefix: str) -> None:
    key = prefix + "replaced"
    old = store.put_bytes(key, b"first version")
    store.put_bytes(key, b"second, longer version")
    with pytest.raises(ChecksumMismatch):
        store.get_bytes(old)


def test_object_without_checksum_is_rejected(
    store: ObjectStore, raw_client: Minio, prefix: str
) -> None:
    key = prefix + "foreign"
    raw_client.put_object(store.bucket, key, io.BytesIO(b"x"), 1)
    with pytest.raises(ChecksumMismatch, match="no recorded checksum"):
        store.get_bytes(key)
    assert store.get_bytes(key, verify=False) == b"x"


# -- missing objects and deletion ----------------------------------------------------------


def test_missing_object(store: ObjectStore, prefix: str) -> None:
    key = prefix + "missing"
    with pytest.raises(ObjectNotFound) as info:
        store.get_bytes(key)
    assert info.value.code == "object_not_found"
    assert info.value.key == key
    with pytest.raises(ObjectNotFound):
        store.get_stream(key)
    with pytest.raises(ObjectNotFound):
        store.stat(key)
    assert not store.exists(key)
    store.delete(key)  # deleting what is not there is fine


def test_delete(store: ObjectStore, prefix: str) -> None:
    ref = store.put_bytes(prefix + "doomed", b"x")
    store.delete(ref.key)
    assert not store.exists(ref.key)
    with pytest.raises(ObjectNotFound):
        store.get_bytes(ref)


def test_delete_prefix(store: ObjectStore, raw_client: Minio, prefix: str) -> None:
    doomed = prefix + "req-1/"
    for i in range(5):
        store.put_bytes(f"{doomed}stage-{i}", b"x" * i)
    store.put_bytes(f"{doomed}nested/deeper/part", b"y")
    keep = store.put_bytes(prefix + "req-10/out", b"kept")

    assert store.delete_prefix(doomed) == 6
    assert _keys(raw_client, store.bucket, doomed) == []
    assert _keys(raw_client, store.bucket, prefix) == [keep.key]
    assert store.delete_prefix(doomed) == 0
    with pytest.raises(ValueError):
        store.delete_prefix("")


def test_intermediate_key(store: ObjectStore) -> None:
    assert store.intermediate_key("req-1", "stage-0") == "intermediates/req-1/stage-0"
    with pytest.raises(ValueError):
        store.intermediate_key("/abs")


def test_abandoned_stream_releases_connection(store: ObjectStore, prefix: str) -> None:
    ref = store.put_bytes(prefix + "partial", os.urandom(3 * MiB))
    for _ in range(20):  # more than the pool holds: leaked connections would block
        with store.get_stream(ref, chunk_size=64 * 1024) as stream:
            next(stream)
    assert store.get_bytes(ref) != b""


# -- failures ------------------------------------------------------------------------------


def test_server_down_raises_storage_unavailable(dead_settings: S3Settings) -> None:
    store = ObjectStore(dead_settings)
    with pytest.raises(StorageUnavailable) as info:
        store.put_bytes("k", b"data")
    assert info.value.retryable
    assert info.value.code == "storage_unavailable"
    assert dead_settings.secret_key not in str(info.value)
    with pytest.raises(StorageUnavailable):
        store.get_bytes("k")
    with pytest.raises(StorageUnavailable):
        store.ensure_bucket()
    with pytest.raises(StorageUnavailable):
        store.exists("k")
    with pytest.raises(StorageUnavailable):
        store.delete_prefix("p/")


def test_unresponsive_server_times_out(dead_settings: S3Settings) -> None:
    # Accepts TCP connections (the kernel completes the handshake) but never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        store = ObjectStore(replace(dead_settings, endpoint=f"127.0.0.1:{port}", read_timeout=0.3))
        with pytest.raises(StorageUnavailable):
            store.get_bytes("k")


def test_wrong_secret_is_access_denied(store: ObjectStore) -> None:
    bad = ObjectStore(replace(store.settings, secret_key="wrong-secret"))
    with pytest.raises(StorageAccessDenied):
        bad.put_bytes("k", b"x")
