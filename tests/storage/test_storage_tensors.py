"""numpy arrays through the object store as raw bytes."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from storage import ChecksumMismatch, ObjectStore, TensorRef, get_array, put_array


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.linspace(-1, 1, 1000, dtype=np.float16).reshape(10, 100),
        np.array([[1 + 2j, 3 - 4j]], dtype=np.complex128),
        np.arange(-50, 50, dtype=np.int8),
        np.array([True, False, True]),
        np.arange(6, dtype=">u4").reshape(3, 2),  # big-endian stays big-endian
        np.array(3.5, dtype=np.float64),  # 0-d
        np.zeros((0, 7), dtype=np.int64),  # empty
        np.array(["2024-01-01", "2025-06-30"], dtype="datetime64[ns]"),
    ],
    ids=["f32-3d", "f16-2d", "c128", "i8", "bool", "u4-be", "scalar", "empty", "datetime"],
)
def test_tensor_round_trip(store: ObjectStore, prefix: str, array: np.ndarray[Any, Any]) -> None:
    tref = put_array(store, prefix + "t", array)
    assert tref.shape == array.shape
    assert tref.dtype == array.dtype.str

    # Through the wire, as a message between stages would carry it.
    wire = msgpack.unpackb(msgpack.packb(tref.to_wire()), raw=False)
    back = get_array(store, TensorRef.from_wire(wire))
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable

    by_key = get_array(store, prefix + "t")
    np.testing.assert_array_equal(by_key, array)


def test_non_contiguous_array(store: ObjectStore, prefix: str) -> None:
    base = np.arange(100, dtype=np.float32).reshape(10, 10)
    view = base[::2, ::3].T
    assert not view.flags.c_contiguous
    tref = put_array(store, prefix + "view", view)
    np.testing.assert_array_equal(get_array(store, tref), view)


def test_object_arrays_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        put_array(store, prefix + "obj", np.array([object()], dtype=object))


def test_tensor_tampering_is_detected(store: ObjectStore, prefix: str) -> None:
    tref = put_array(store, prefix + "t", np.ones(16, dtype=np.float32))
    store.put_bytes(prefix + "t", np.zeros(16, dtype=np.float32).tobytes())
    with pytest.raises(ChecksumMismatch):
        get_array(store, tref)
