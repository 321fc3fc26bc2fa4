"""ObjectStore: checksummed put/get/delete on one bucket of MinIO or any S3 API."""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import TYPE_CHECKING, BinaryIO, TypeAlias, cast

from minio.commonconfig import ENABLED, REPLACE, CopySource, Filter
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from .client import NOT_FOUND_CODES, build_client, translate_errors
from .errors import ChecksumMismatch, ObjectNotFound, StorageError, StorageUnavailable
from .metadata import CHECKSUM_META, Headers, metadata_from_headers, user_metadata
from .refs import ObjectRef
from .settings import S3Settings
from .streams import (
    DEFAULT_CHUNK_SIZE,
    BufferReader,
    BytesLike,
    ByteSource,
    HashingReader,
    ObjectStream,
    Readable,
    prehash,
    read_all,
    release,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from contextlib import AbstractContextManager

    from minio import Minio

__all__ = ["DEFAULT_PART_SIZE", "ObjectStore", "Target"]

log = logging.getLogger("shoal.storage")

DEFAULT_PART_SIZE = 16 * 1024 * 1024
"""Multipart part size for streamed uploads (S3 requires at least 5 MiB)."""

Target: TypeAlias = ObjectRef | str
"""What reads accept: an :class:`ObjectRef` (verified against the ref) or a key in the
store's bucket (verified against the checksum recorded at write time)."""

_MIN_PART_SIZE = 5 * 1024 * 1024
_LIFECYCLE_RULE_ID = "shoal-intermediates-ttl"


class ObjectStore:
    """Synchronous, checksummed access to one bucket of an S3-compatible server.

    Every write records the SHA-256 of the content as user metadata and returns it in an
    :class:`ObjectRef`; every read verifies it. Errors are always :class:`StorageError`
    subclasses. Instances are thread-safe (the underlying client and pool are).
    """

    def __init__(
        self,
        settings: S3Settings,
        *,
        client: Minio | None = None,
        pool_maxsize: int = 16,
        upload_threads: int = 1,
    ) -> None:
        # minio's parallel part uploader leaks its worker threads when the source fails
        # mid-upload, so parts go up sequentially unless the caller opts in.
        if upload_threads < 1:
            raise ValueError("upload_threads must be >= 1")
        self._settings = settings
        self._client = client or build_client(settings, pool_maxsize=pool_maxsize)
        self._upload_threads = upload_threads

    @classmethod
    def from_env(cls) -> ObjectStore:
        """Store configured by :meth:`S3Settings.from_env`."""
        return cls(S3Settings.from_env())

    @property
    def settings(self) -> S3Settings:
        """The settings this store was built with."""
        return self._settings

    @property
    def bucket(self) -> str:
        """The bucket that plain keys refer to."""
        return self._settings.bucket

    @property
    def client(self) -> Minio:
        """The underlying ``Minio`` client, for operations this layer does not wrap."""
        return self._client

    def __repr__(self) -> str:
        return f"ObjectStore({self._settings!r})"

    def intermediate_key(self, *parts: str) -> str:
        """Key under the intermediates prefix (expired by the lifecycle backstop)."""
        if not parts or any(not p or p.startswith("/") for p in parts):
            raise ValueError("intermediate_key needs non-empty parts not starting with '/'")
        return self._settings.intermediate_prefix + "/".join(parts)

    # -- bucket bootstrap ---------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if missing and install the intermediates expiry rule.

        Uses ``HEAD bucket`` and ``PUT bucket`` only: credentials scoped to one bucket are
        usually not allowed to list buckets. Safe to call concurrently from many workers.
        """
        bucket = self.bucket
        with self._errors(bucket):
            if not self._client.bucket_exists(bucket):
                try:
                    self._client.make_bucket(bucket, location=self._settings.region or None)
                except S3Error as exc:
                    # Another worker won the race: that is success.
                    if exc.code != "BucketAlreadyOwnedByYou":
                        raise
        self._install_lifecycle()

    def _install_lifecycle(self) -> None:
        # Intermediates are deleted by the runtime when a request finishes; the rule only
        # catches what a crash left behind, so a server without lifecycle support is fine.
        bucket, prefix = self.bucket, self._settings.intermediate_prefix
        rule = Rule(
            ENABLED,
            rule_filter=Filter(prefix=prefix),
            rule_id=_LIFECYCLE_RULE_ID,
            expiration=Expiration(days=self._settings.intermediate_ttl_days),
        )
        try:
            with self._errors(bucket):
                current = self._client.get_bucket_lifecycle(bucket)
                existing = list(current.rules) if current is not None else []
                if rule in existing:
                    return
                others = [r for r in existing if r.rule_id != rule.rule_id]
                self._client.set_bucket_lifecycle(bucket, LifecycleConfig([*others, rule]))
        except StorageUnavailable:
            raise
        except StorageError as exc:
            log.warning(
                "bucket %s: lifecycle rule for %s not installed (%s); intermediates left by "
                "crashed requests will not expire automatically",
                bucket,
                prefix,
                exc.message,
            )

    # -- writes -------------------------------------------------------------------------

    def put_bytes(
        self,
        key: str,
        data: BytesLike,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str = "application/octet-stream",
    ) -> ObjectRef:
        """Store ``data`` under ``key`` (replacing any object there) and return its ref."""
        view = memoryview(data).cast("B")
        headers = user_metadata(metadata)
        digest = headers[CHECKSUM_META] = hashlib.sha256(view).hexdigest()
        with self._errors(self.bucket, key):
            reader = BufferReader(view)
            self._put_object(key, reader, len(view), DEFAULT_PART_SIZE, content_type, headers)
        return ObjectRef(self.bucket, key, len(view), digest)

    def put_stream(
        self,
        key: str,
        source: ByteSource,
        length: int = -1,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        metadata: Mapping[str, str] | None = None,
        sha256: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> ObjectRef:
        """Upload a large payload without holding it in memory (multipart above ``part_size``).

        ``source`` is a binary file object or an iterable of byte chunks; ``length`` is its
        size, or -1 if unknown. S3 fixes metadata when an upload starts, so the checksum must
        be known before the first byte is sent:

        * with ``sha256`` given, it is recorded and checked against what was actually sent;
        * a seekable file is hashed in a first local pass, then rewound and uploaded;
        * anything else is uploaded to a staging key under the intermediates prefix and then
          server-side copied to ``key`` with its checksum, so ``key`` never appears without one.
        """
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {_MIN_PART_SIZE} bytes")
        if isinstance(source, bytes | bytearray | memoryview):
            return self.put_bytes(key, source, metadata, content_type=content_type)
        headers = user_metadata(metadata)  # validated before any byte moves
        if sha256 is None and (hashed := prehash(source, length)) is not None:
            sha256, length = hashed
        reader = HashingReader(source)
        if sha256 is None:
            digest = self._put_via_staging(key, reader, length, part_size, content_type, headers)
            return ObjectRef(self.bucket, key, reader.size, digest)
        sha256 = headers[CHECKSUM_META] = sha256.lower()
        with self._errors(self.bucket, key):
            self._put_object(key, reader, length, part_size, content_type, headers)
        if reader.hexdigest() != sha256:
            # The object claims a checksum its bytes do not have; readers would reject it
            # anyway, but do not leave it behind.
            self.delete(key)
            raise ChecksumMismatch(
                "uploaded bytes do not match the sha256 given for them",
                bucket=self.bucket,
                key=key,
            )
        return ObjectRef(self.bucket, key, reader.size, sha256)

    def _put_via_staging(
        self,
        key: str,
        reader: HashingReader,
        length: int,
        part_size: int,
        content_type: str,
        headers: Headers,
    ) -> str:
        """Upload to a staging key, then copy to ``key`` with the checksum; return it."""
        bucket = self.bucket
        staging = f"{self._settings.intermediate_prefix}.staging/{uuid.uuid4().hex}"
        try:
            # Errors name ``key``: the staging key means nothing to the caller.
            with self._errors(bucket, key):
                self._put_object(staging, reader, length, part_size, content_type, None)
                digest = headers[CHECKSUM_META] = reader.hexdigest()
                headers["Content-Type"] = content_type
                self._client.copy_object(
                    bucket,
                    key,
                    CopySource(bucket, staging),
                    metadata=headers,
                    metadata_directive=REPLACE,
                )
        finally:
            # Best effort: the lifecycle rule removes the staging object if this fails.
            try:
                self.delete(staging)
            except StorageError as exc:
                log.warning("could not delete staging object %s: %s", staging, exc.message)
        return digest

    def _put_object(
        self,
        key: str,
        reader: Readable,
        length: int,
        part_size: int,
        content_type: str,
        headers: Headers | None,
    ) -> None:
        self._client.put_object(
            self.bucket,
            key,
            cast("BinaryIO", reader),
            length,
            content_type=content_type,
            metadata=headers,
            part_size=part_size,
            num_parallel_uploads=self._upload_threads,
        )

    # -- reads --------------------------------------------------------------------------

    def get_bytes(self, target: Target, *, verify: bool = True) -> bytes:
        """Whole object content, verified against its checksum unless ``verify`` is false."""
        data, _ref, _meta = self._fetch(target, verify=verify)
        return bytes(data) if isinstance(data, bytearray) else data

    def get_stream(
        self, target: Target, *, chunk_size: int = DEFAULT_CHUNK_SIZE, verify: bool = True
    ) -> ObjectStream:
        """Open the object for streaming; iterate the result for chunks.

        The request is made now, so a missing object raises here. The checksum can only be
        checked once the last chunk has arrived: :class:`ChecksumMismatch` is raised at the
        end of iteration, and consumers must not commit results before iteration completes.
        Use as a context manager (or exhaust it) to release the connection.
        """
        bucket, key, ref = self._resolve(target)
        with self._errors(bucket, key):
            response = self._client.get_object(bucket, key)
        try:
            meta = metadata_from_headers(response.headers)
            recorded = meta.get(CHECKSUM_META, "").lower() or None
            length_header = response.headers.get("Content-Length")
            size = int(length_header) if length_header is not None else None
            sha256: str | None = None  # None: nothing to verify against
            if verify and ref is not None:
                # The ref pins the content it was made for; a different recorded checksum or
                # size means the object was replaced since, so fail before downloading.
                if (recorded is not None and recorded != ref.sha256) or (
                    size is not None and size != ref.size
                ):
                    raise ChecksumMismatch(
                        "object changed since its ref was made", bucket=bucket, key=key
                    )
                sha256, size = ref.sha256, ref.size
            elif verify:
                if recorded is None:
                    raise ChecksumMismatch(
                        "object has no recorded checksum", bucket=bucket, key=key
                    )
                sha256 = recorded
            return ObjectStream(response, bucket, key, sha256, size, meta, chunk_size, self._errors)
        except BaseException:
            release(response)
            raise

    def stat(self, key: str) -> ObjectRef:
        """Ref for an existing object in the store's bucket, from its recorded checksum."""
        with self._errors(self.bucket, key):
            info = self._client.stat_object(self.bucket, key)
        meta = metadata_from_headers(info.metadata or {})
        recorded = meta.get(CHECKSUM_META)
        if not recorded or info.size is None:
            raise ChecksumMismatch("object has no recorded checksum", bucket=self.bucket, key=key)
        return ObjectRef(self.bucket, key, info.size, recorded.lower())

    def exists(self, key: str) -> bool:
        """Whether an object exists under ``key`` in the store's bucket."""
        try:
            with self._errors(self.bucket, key):
                self._client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return False
        return True

    # -- deletes ------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        with self._errors(self.bucket, key):
            self._client.remove_object(self.bucket, key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix``; return how many.

        This is a plain string prefix: ``"req-1"`` also matches ``"req-10/..."``, so pass
        ``"req-1/"`` to delete one request's folder. An empty prefix is refused.
        """
        if not prefix:
            raise ValueError("refusing to delete with an empty prefix (the whole bucket)")
        bucket = self.bucket
        deleted = 0

        def names() -> Iterator[DeleteObject]:
            nonlocal deleted
            for obj in self._client.list_objects(bucket, prefix=prefix, recursive=True):
                if obj.object_name is not None and not obj.is_dir:
                    deleted += 1
                    yield DeleteObject(obj.object_name)

        with self._errors(bucket):
            # remove_objects is lazy: consuming its error iterator drives the deletion.
            errors = list(self._client.remove_objects(bucket, names()))
        failed = [e for e in errors if e.code not in NOT_FOUND_CODES]
        if failed:
            first = failed[0]
            raise StorageError(
                f"{len(failed)} objects under {prefix!r} not deleted: {first.code} {first.message}",
                bucket=bucket,
                key=first.name,
            )
        return deleted

    # -- internals ----------------------------------------------------------------------

    def _resolve(self, target: Target) -> tuple[str, str, ObjectRef | None]:
        if isinstance(target, ObjectRef):
            return target.bucket, target.key, target
        if isinstance(target, str) and target:
            return self.bucket, target, None
        raise TypeError(f"expected an ObjectRef or a non-empty key, got {type(target).__name__}")

    def _fetch(
        self, target: Target, *, verify: bool, writable: bool = False
    ) -> tuple[bytes | bytearray, ObjectRef, dict[str, str]]:
        """Whole object plus its (verified) ref and user metadata."""
        with self.get_stream(target, verify=verify) as stream:
            data = read_all(stream, writable=writable)
        return data, stream.ref(), stream.metadata

    def _errors(self, bucket: str, key: str | None = None) -> AbstractContextManager[None]:
        return translate_errors(self._settings.endpoint, bucket, key)
