"""numpy arrays as raw bytes in the object store, described by dtype and shape (no pickle).

numpy is imported inside the functions so light workers that never touch tensors do not
need it installed.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import StorageError
from .refs import ObjectRef

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    import numpy.typing as npt

    from .aio import AsyncObjectStore
    from .store import ObjectStore

__all__ = ["TensorRef", "get_array", "get_array_async", "put_array", "put_array_async"]

_DTYPE_META = "shoal-dtype"
_SHAPE_META = "shoal-shape"


@dataclass(frozen=True, slots=True)
class TensorRef:
    """An :class:`ObjectRef` to a raw array buffer plus what is needed to rebuild the array.

    ``dtype`` is numpy's ``dtype.str`` (e.g. ``"<f4"``), which pins byte order so arrays move
    safely between machines; data is C-ordered.
    """

    ref: ObjectRef
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, str) or not self.dtype:
            raise ValueError("TensorRef dtype must be a non-empty string")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in self.shape):
            raise ValueError(f"TensorRef shape must be non-negative ints, got {self.shape!r}")

    def to_wire(self) -> dict[str, Any]:
        """The ref's wire dict plus ``dtype`` (str) and ``shape`` (list of int)."""
        return {**self.ref.to_wire(), "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> TensorRef:
        """Inverse of :meth:`to_wire` (msgpack hands shapes back as lists)."""
        shape = data.get("shape")
        if not isinstance(shape, list | tuple):
            raise ValueError("TensorRef wire dict needs a 'shape' list")
        return cls(ref=ObjectRef.from_wire(data), dtype=data.get("dtype", ""), shape=tuple(shape))


def put_array(
    store: ObjectStore,
    key: str,
    array: npt.ArrayLike,
    metadata: Mapping[str, str] | None = None,
) -> TensorRef:
    """Store an array's raw bytes under ``key``; dtype and shape go in metadata and the ref.

    C-contiguous arrays are uploaded without an intermediate copy of the whole buffer.
    """
    import numpy as np

    arr = np.asarray(array)
    dtype = _checked_dtype(arr.dtype)
    shape = tuple(int(d) for d in arr.shape)
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    # A uint8 view exposes the buffer for every dtype, including datetimes that the
    # buffer protocol itself rejects.
    raw = arr.reshape(-1).view(np.uint8).data
    meta = dict(metadata or {})
    meta[_DTYPE_META] = dtype.str
    meta[_SHAPE_META] = json.dumps(list(shape), separators=(",", ":"))
    ref = store.put_bytes(key, raw, meta)
    return TensorRef(ref=ref, dtype=dtype.str, shape=shape)


def get_array(
    store: ObjectStore, target: TensorRef | str, *, verify: bool = True
) -> np.ndarray[Any, Any]:
    """Read an array back as a writable array backed by the downloaded buffer.

    ``target`` is a :class:`TensorRef`, or a key whose dtype and shape are taken from the
    metadata recorded by :func:`put_array`.
    """
    import numpy as np

    object_target = target.ref if isinstance(target, TensorRef) else target
    data, ref, meta = store._fetch(object_target, verify=verify, writable=True)
    if isinstance(target, TensorRef):
        dtype_str, shape = target.dtype, target.shape
    else:
        dtype_str, shape = _layout_from_metadata(meta, ref)
    try:
        dtype = _checked_dtype(np.dtype(dtype_str))
    except TypeError:
        raise ValueError(f"not a numpy dtype: {dtype_str!r}") from None
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data):
        raise StorageError(
            f"tensor of shape {shape} and dtype {dtype.str} needs {expected} bytes, "
            f"object has {len(data)}",
            bucket=ref.bucket,
            key=ref.key,
        )
    buffer = data if isinstance(data, bytearray) else bytearray(data)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


async def put_array_async(
    store: AsyncObjectStore,
    key: str,
    array: npt.ArrayLike,
    metadata: Mapping[str, str] | None = None,
) -> TensorRef:
    """:func:`put_array` in a worker thread (hashing large arrays is CPU-bound too)."""
    return await store.run_sync(functools.partial(put_array, store.store, key, array, metadata))


async def get_array_async(
    store: AsyncObjectStore, target: TensorRef | str, *, verify: bool = True
) -> np.ndarray[Any, Any]:
    """:func:`get_array` in a worker thread."""
    return await store.run_sync(functools.partial(get_array, store.store, target, verify=verify))


def _checked_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    # Object arrays hold pointers and structured dtypes lose their field names in
    # ``dtype.str``: neither survives a trip through raw bytes.
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"dtype {dtype} cannot be stored as raw bytes")
    return dtype


def _layout_from_metadata(meta: Mapping[str, str], ref: ObjectRef) -> tuple[str, tuple[int, ...]]:
    try:
        dtype_str = meta[_DTYPE_META]
        shape = json.loads(meta[_SHAPE_META])
    except (KeyError, ValueError):
        raise StorageError(
            "object has no tensor dtype/shape metadata", bucket=ref.bucket, key=ref.key
        ) from None
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise StorageError("object has malformed tensor shape", bucket=ref.bucket, key=ref.key)
    return dtype_str, tuple(shape)
