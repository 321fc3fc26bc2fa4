"""Shoal's object store layer: checksummed intermediates and artifacts in MinIO or any S3 API.

Large tensors between partitioned model stages travel as :class:`ObjectRef` (or
:class:`TensorRef`) in messages while their bytes live in the object store. Every write
records a SHA-256 of the content and every read verifies it.
"""

from .aio import AsyncObjectStore, AsyncObjectStream
from .client import build_client
from .errors import (
    BucketError,
    ChecksumMismatch,
    ObjectNotFound,
    StorageAccessDenied,
    StorageError,
    StorageUnavailable,
)
from .refs import ObjectRef
from .settings import S3Settings
from .store import DEFAULT_PART_SIZE, ObjectStore
from .streams import DEFAULT_CHUNK_SIZE, ObjectStream
from .tensors import TensorRef, get_array, get_array_async, put_array, put_array_async

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PART_SIZE",
    "AsyncObjectStore",
    "AsyncObjectStream",
    "BucketError",
    "ChecksumMismatch",
    "ObjectNotFound",
    "ObjectRef",
    "ObjectStore",
    "ObjectStream",
    "S3Settings",
    "StorageAccessDenied",
    "StorageError",
    "StorageUnavailable",
    "TensorRef",
    "build_client",
    "get_array",
    "get_array_async",
    "put_array",
    "put_array_async",
]
