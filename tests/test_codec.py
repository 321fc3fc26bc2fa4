"""Payload decoding and encoding: JSON, msgpack, and typed errors for everything else."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import InvalidPayload, ResultNotSerializable
from runtime.errors import FunctionTimeout, ShoalError
from runtime.wire.codec import decode, encode, unpack
from runtime.wire.results import Result, make_result

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_json_round_trip(value: object) -> None:
    assert decode(encode(value, "json"), "application/json") == (value, "json")
    assert decode(encode(value, "json"), None) == (value, "json")


@given(json_values | st.binary())
def test_msgpack_round_trip(value: object) -> None:
    assert decode(encode(value, "msgpack"), "application/msgpack") == (value, "msgpack")


def test_headerless_msgpack_is_recognised() -> None:
    body = msgpack.packb({"a": b"\x00"})
    assert decode(body, None) == ({"a": b"\x00"}, "msgpack")


@pytest.mark.parametrize(
    ("data", "ctype"),
    [
        (b"{trunc", "application/json"),
        (msgpack.packb({"a": "long string"})[:-3], "application/msgpack"),
        (b"\xc1", None),
        (b"hello there", None),
        (b"{}", "text/xml"),
        (b"[" * 100_000, "application/json"),
    ],
)
def test_bad_payloads_raise_invalid_payload(data: bytes, ctype: str | None) -> None:
    with pytest.raises(InvalidPayload):
        decode(data, ctype)


def test_unencodable_result_is_typed() -> None:
    with pytest.raises(ResultNotSerializable):
        encode({"x": object()}, "json")
    with pytest.raises(ResultNotSerializable):
        encode(float("nan"), "json")


def test_errors_round_trip_by_code() -> None:
    wire = FunctionTimeout("too slow", request_id="r1").to_wire()
    back = ShoalError.from_wire(wire)
    assert isinstance(back, FunctionTimeout) and back.request_id == "r1"
    assert wire["type"] == "FunctionTimeout" and wire["code"] == "timeout"


@given(json_values, st.booleans())
def test_a_stored_result_is_its_every_field(value: object, ok: bool) -> None:
    # The record names each field of Result (one added there must reach it too).
    result = make_result("r1", "echo", ok, value, "msgpack")
    assert unpack(result.to_bytes()) == dataclasses.asdict(result)
    assert Result.from_bytes(result.to_bytes()) == result


def test_a_stored_result_msgpack_cannot_carry_is_its_typed_error() -> None:
    back = Result.from_bytes(make_result("r2", "echo", True, {"x": object()}, "json").to_bytes())
    assert not back.ok and back.request_id == "r2"
    assert isinstance(back.error, ResultNotSerializable) and back.error.request_id == "r2"
