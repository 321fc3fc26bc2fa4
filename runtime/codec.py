"""Payload encoding: JSON and msgpack, chosen per request, answered in kind."""

from __future__ import annotations

import json
from typing import Any, Literal

import msgpack

from . import protocol
from .errors import InvalidPayload, ResultNotSerializable

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
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (
        ValueError,
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
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as e:
        raise ResultNotSerializable(f"result cannot be encoded as {enc}: {e}") from None


def encoding_of(content_type: str | None) -> Encoding:
    if content_type and _TYPES.get(content_type.split(";", 1)[0].strip().lower()) == "msgpack":
        return "msgpack"
    return "json"
