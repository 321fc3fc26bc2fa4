"""Error types raised by the object store layer.

This module deliberately imports nothing from the rest of Shoal: the runtime maps these
errors onto its own hierarchy using ``code`` and ``retryable``, so the storage layer can be
used (and tested) on its own.
"""

from __future__ import annotations

__all__ = [
    "BucketError",
    "ChecksumMismatch",
    "ObjectNotFound",
    "StorageAccessDenied",
    "StorageError",
    "StorageUnavailable",
]


class StorageError(Exception):
    """Root of every error raised by :mod:`storage`.

    ``code`` is a short, stable machine-readable identifier (safe to put on the wire);
    ``retryable`` tells callers whether the same request may succeed later unchanged.
    """

    code: str = "storage_error"
    retryable: bool = False

    def __init__(self, message: str, *, bucket: str | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.bucket = bucket
        self.key = key


class StorageUnavailable(StorageError):
    """The S3 server could not be reached or answered with a transient server error.

    Raised for refused connections, connect/read timeouts, resets and 5xx responses after
    the bounded retry budget is spent.
    """

    code = "storage_unavailable"
    retryable = True


class ObjectNotFound(StorageError):
    """The requested object does not exist."""

    code = "object_not_found"


class ChecksumMismatch(StorageError):
    """The bytes read back do not match the SHA-256 (or size) recorded when they were written.

    Also raised when an object carries no recorded checksum and verification was requested.
    """

    code = "checksum_mismatch"


class BucketError(StorageError):
    """The bucket is missing, owned by someone else, or could not be created."""

    code = "bucket_error"


class StorageAccessDenied(StorageError):
    """The server rejected the credentials or the operation is not permitted for them."""

    code = "storage_access_denied"
