"""Payload encoding: JSON and msgpack, chosen per request, answered in kind."""

from __future__ import annotations

import json
from typing import Any, Literal

import msgpack

from runtime.errors import InvalidPayload, ResultNotSerializable
from runtime.wire import protocol

Encoding = Literal["json", "msgpack"]

_TYPES: dict[str, Encoding] = {
    protocol.JSON: "json",
    "text/json": "json",
    "text/plain": "json",
    protocol.MSGPACK: "msgpack",
    "application/x-msgpack": "msgpack",
    "application/vnd.msgpack": "msgpack",
}
CONTENT_TYPES: dict[Encoding, str] = {"json": protocol.JSON, "msgpack": protocol.MSGPACK}


def decode(data: bytes, content_type: str | None) -> tuple[Any, Encoding]:
    """Decode a request body; with no Content-Type, JSON first (typed in a terminal), then msgpack.

    An empty body is the event ``None``.
    """
    if content_type:
        enc = _TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if enc is None:
            raise InvalidPayload(
                f"unsupported Content-Type {content_type!r}; "
                f"use {protocol.JSON!r} or {protocol.MSGPACK!r}"
            )
        return _decode_as(data, enc), enc
    if not data:
        return None, "json"
    try:
        return _decode_as(data, "json"), "json"
    except InvalidPayload:
        pass
    try:
        return _decode_as(data, "msgpack"), "msgpack"
    except InvalidPayload:
        raise InvalidPayload(
            "payload is neither JSON nor msgpack; send JSON text or set "
            f"Content-Type: {protocol.MSGPACK}"
        ) from None


def _decode_as(data: bytes, enc: Encoding) -> Any:
    if not data:
        return None
    try:
        if enc == "json":
            return json.loads(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)
    except (
        ValueError,
        TypeError,  # e.g. a msgpack map keyed by an array
        RecursionError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as e:
        kind = "JSON" if enc == "json" else "msgpack"
        raise InvalidPayload(f"invalid {kind} payload: {e}") from None


def encode(value: Any, enc: Encoding) -> bytes:
    try:
        if enc == "json":
            return json.dumps(
                value, separators=(",", ":"), allow_nan=False, default=_json_default
            ).encode()
        return msgpack.packb(value, use_bin_type=True, default=_msgpack_default)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as e:
        raise ResultNotSerializable(f"result cannot be encoded as {enc}: {e}") from None


# numpy arrays travel as msgpack extension type 1: a msgpack array [dtype, shape, raw bytes].
# numpy is imported only when an array is actually met, so light workers never load it.
NDARRAY_EXT = 1


def _is_numpy(obj: Any) -> bool:
    return type(obj).__module__ == "numpy"


def _msgpack_default(obj: Any) -> Any:
    if _is_numpy(obj):
        import numpy as np

        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise TypeError("numpy arrays of Python objects cannot be sent")
            arr = np.ascontiguousarray(obj)
            header = [arr.dtype.str, list(arr.shape), arr.tobytes()]
            return msgpack.ExtType(NDARRAY_EXT, msgpack.packb(header, use_bin_type=True))
        if isinstance(obj, np.generic):
            return obj.item()
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != NDARRAY_EXT:
        return msgpack.ExtType(code, data)
    import numpy as np

    try:
        dtype, shape, raw = msgpack.unpackb(data, raw=False)
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise ValueError("object arrays are not accepted")
        return np.frombuffer(raw, dtype=dt).reshape(shape)
    except (ValueError, TypeError) as e:
        raise InvalidPayload(f"invalid numpy array in msgpack payload: {e}") from None


def _json_default(obj: Any) -> Any:
    # JSON callers get plain lists and numbers for numpy results.
    if _is_numpy(obj) and hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def encoding_of(content_type: str | None) -> Encoding:
    if content_type and _TYPES.get(content_type.split(";", 1)[0].strip().lower()) == "msgpack":
        return "msgpack"
    return "json"


def pack(value: Any) -> bytes:
    """msgpack for Shoal's own stored records: numpy arrays, and any str a handler may return
    (lone surrogates from JSON escapes included, kept as they are)."""
    try:
        return msgpack.packb(  # type: ignore[no-any-return]
            value, use_bin_type=True, default=_msgpack_default, unicode_errors="surrogatepass"
        )
    except (TypeError, ValueError, OverflowError) as e:
        raise ResultNotSerializable(f"result cannot be stored: {e}") from None


def unpack(data: bytes) -> Any:
    """The inverse of :func:`pack`."""
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        ext_hook=_ext_hook,
        unicode_errors="surrogatepass",
    )
