"""The answer envelope and the request-id rule (pure: no server)."""

from __future__ import annotations

import json

import msgpack
import pytest

from runtime.errors import FunctionError, InvalidPayload, ResultNotSerializable, ShoalError
from runtime.wire import answer, protocol
from runtime.wire.results import make_result


def test_ok_answer_body_and_headers() -> None:
    a = answer.ok({"n": 1}, "json", "rid-1")
    assert json.loads(a.body) == {"n": 1}
    assert a.headers == {
        protocol.REQUEST_ID: "rid-1",
        protocol.STATUS: "ok",
        protocol.CONTENT_TYPE: protocol.JSON,
    }
    assert list(a.headers) == [protocol.REQUEST_ID, protocol.STATUS, protocol.CONTENT_TYPE]


def test_answer_in_the_requests_encoding() -> None:
    a = answer.ok({"b": b"\x00"}, "msgpack", "rid-1")
    assert msgpack.unpackb(a.body) == {"b": b"\x00"}
    assert a.headers[protocol.CONTENT_TYPE] == protocol.MSGPACK


def test_error_answer_carries_the_wire_error() -> None:
    err = FunctionError("ValueError: no", request_id="rid-2")
    a = answer.error(err, "json", "rid-2")
    assert json.loads(a.body) == {"error": err.to_wire()}
    assert a.headers[protocol.STATUS] == "error"
    assert a.headers[protocol.REQUEST_ID] == "rid-2"
    # The same answer from the error's wire form.
    assert answer.error(err.to_wire(), "json", "rid-2") == a


def test_an_answer_without_a_request_id_has_no_such_header() -> None:
    a = answer.error(InvalidPayload("bad"), "msgpack")
    assert a.headers == {protocol.STATUS: "error", protocol.CONTENT_TYPE: protocol.MSGPACK}


def test_unencodable_value_is_a_typed_error() -> None:
    with pytest.raises(ResultNotSerializable):
        answer.ok(object(), "json")


@pytest.mark.parametrize("ok", [True, False])
def test_a_stored_result_is_answered_as_it_was_first(ok: bool) -> None:
    value = {"x": 1} if ok else FunctionError("boom", request_id="r").to_wire()
    result = make_result("r", "f", ok, value, "msgpack")
    first = answer.ok(value, "msgpack", "r") if ok else answer.error(value, "msgpack", "r")
    assert answer.of_result(result) == first


def test_decode_reads_what_was_encoded() -> None:
    a = answer.ok([1, 2], "msgpack", "r")
    assert answer.decode(a.body, a.headers) == [1, 2]
    e = answer.error(FunctionError("ValueError: no", request_id="r"), "json", "r")
    with pytest.raises(FunctionError) as info:
        answer.decode(e.body, e.headers)
    assert info.value.message == "ValueError: no" and info.value.request_id == "r"


def test_decode_of_a_body_that_is_not_an_answer_is_a_typed_error() -> None:
    with pytest.raises(InvalidPayload):
        answer.decode(b"\xc1", {protocol.CONTENT_TYPE: protocol.MSGPACK})


def test_request_id_prefers_shoal_then_nats_header() -> None:
    both = {protocol.REQUEST_ID: "shoal", protocol.MSG_ID: "nats"}
    assert answer.request_id(both, "fallback") == "shoal"
    assert answer.request_id({protocol.MSG_ID: "nats"}, "fallback") == "nats"
    assert answer.request_id({protocol.REQUEST_ID: "", protocol.MSG_ID: "nats"}) == "nats"


def test_durable_fallback_is_the_stream_sequence_and_stable() -> None:
    fallback = answer.sequence_id("resize", 41)
    assert fallback == "resize-41"
    assert answer.request_id({}, fallback) == answer.request_id(None, fallback) == "resize-41"


def test_a_call_without_an_id_gets_a_fresh_one() -> None:
    first, second = answer.request_id(None), answer.request_id({})
    assert first != second
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in (first, second))
    assert isinstance(answer.new_request_id(), str)


def test_error_answer_of_a_plain_shoal_error() -> None:
    a = answer.error(ShoalError("internal"), "json")
    assert json.loads(a.body)["error"]["code"] == "internal"


@pytest.mark.parametrize("body", [b"[1]", b'{"error": "text"}', b"{}"])
def test_an_error_answer_without_its_error_is_a_typed_error(body: bytes) -> None:
    headers = {protocol.STATUS: "error", protocol.CONTENT_TYPE: protocol.JSON}
    with pytest.raises(InvalidPayload, match="without its error"):
        answer.decode(body, headers)
