"""Fuzzing a real cluster with bad and odd inputs, sent with raw nats-py.

The inputs come from Hypothesis strategies: valid values in both encodings, random bytes,
truncated and corrupted msgpack, invalid UTF-8, deep nesting, odd ``Content-Type``,
``Nats-Msg-Id`` and ``Shoal-Reply-To`` values, random and JetStream headers, payloads over
NATS's ``max_payload``, unknown functions and subjects, schema violations, handler and
executor exceptions, and timeouts. They go to a real nats-server, controller and process
workers, 64 in flight.

The rule checked for each input is the contract's: a request gets an answer, a result or a
structured error ``{"error": {"type", "code", "message", "request_id"}}`` with
``Shoal-Status: error``, never silence; a durable event is answered on its
``Shoal-Reply-To`` subject (or, without a usable one, its result is stored); what cannot be
sent fails on the client with a clear error. Where the outcome follows from the input (an
echo of a decodable payload, a textstats schema violation, a timeout...) it is checked too.
After the run no worker or controller may have died, and ``echo`` still answers.

Hypothesis runs in a thread and hands each example (a batch of inputs) to the event loop,
which sends while the next batch is generated; the cluster is shared by all examples.
Inputs of the kinds that broke the contract when this fuzzing first ran are kept out of the
random mix (they are counted and printed); each of those bugs, now fixed, has its own
regression test at the end of this file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
import msgpack
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.errors import BadSubjectError, MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NoStreamResponseError

from runtime import Client, errors
from runtime.wire import codec, protocol
from runtime.wire.connection import connect
from runtime.wire.results import make_result
from tests.conftest import FNS, FUNCTIONS, Cluster, wait_workers, workers_of

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

pytestmark = pytest.mark.anyio

FUZZED = FNS / "fuzzed.py"
EXECUTORS = FNS / "executors.py"
DEPLOY = (FUNCTIONS / "echo.py", FUNCTIONS / "textstats.py", FUZZED, EXECUTORS)
# Functions the fuzz run calls (blocker and exiter have tests of their own), and every
# worker kind it watches for crashes (doubler is the executor behind double and batchinfo).
TARGETS = ("echo", "textstats", "raiser", "sleepy", "double", "batchinfo")
WATCHED = (*TARGETS, "doubler")
DEPLOYED = frozenset({*WATCHED, "blocker", "exiter"})

IN_FLIGHT = 64
BATCH = 20  # inputs per Hypothesis example (larger lists overrun its choice budget)
CALL_TIMEOUT = 15.0  # seconds without an answer that count as silence
EVENT_TIMEOUT = 20.0  # ... for a durable event's answer or stored result
# Valid payloads stay under 300 kB: an echo may come back 3x larger (JSON \u escapes), and an
# answer over max_payload is never sent (bug_answer_over_max_payload).
LARGE_MAX = 300 * 1024
MAX_PAYLOAD = 1024 * 1024  # nats-server's default; checked against the connection

# Error types and their wire codes, as runtime.errors defines them.
ERROR_CODES = {
    c.__name__: c.code
    for c in vars(errors).values()
    if isinstance(c, type) and issubclass(c, errors.ShoalError)
}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Blob:
    """A large payload, built only when sent: ``head + unit * count + tail``."""

    head: bytes
    unit: bytes
    count: int
    tail: bytes = b""

    def build(self) -> bytes:
        return self.head + self.unit * self.count + self.tail

    def __len__(self) -> int:
        return len(self.head) + len(self.unit) * self.count + len(self.tail)


@dataclass(frozen=True)
class Oversize:
    """``max_payload + extra`` bytes: the client must refuse to send it."""

    extra: int

    def build(self, max_payload: int) -> bytes:
        return b"o" * (max_payload + self.extra)

    def __len__(self) -> int:
        return MAX_PAYLOAD + self.extra


@dataclass(eq=False)
class Input:
    label: str  # the generator, for the report
    kind: str  # "call" | "client" | "event" | "dup"
    subject: str
    payload: bytes | Blob | Oversize
    headers: dict[str, str] = field(default_factory=dict)
    reply: str | None = "ours"  # events: "ours" (a fuzz.ans.<n> inbox), None, or an odd subject
    function: str | None = None  # the function that should answer, if any
    internal: bool = False  # an executor's subject: answers carry no request id
    # Filled in by prepare():
    expect: frozenset[str] | None = None  # allowed outcomes; None: any typed answer
    answer_ct: str | None = None  # the Content-Type the answer must have
    answer_digest: tuple[int, str] | None = None  # echo: (length, sha256) of the exact answer
    excluded: str | None = None  # the known bug this input would hit

    def data(self, max_payload: int = MAX_PAYLOAD) -> bytes:
        if isinstance(self.payload, Oversize):
            return self.payload.build(max_payload)
        if isinstance(self.payload, Blob):
            return self.payload.build()
        return self.payload

    @property
    def reply_kind(self) -> str:
        return "ours" if self.reply == "ours" else "none" if not self.reply else "odd"

    def __repr__(self) -> str:
        p = self.payload
        shown = repr(p[:48]) if isinstance(p, bytes) else type(p).__name__
        hdrs = {k: (v if len(v) < 40 else v[:37] + "...") for k, v in self.headers.items()}
        reply = f" reply={self.reply!r}" if self.kind in ("event", "dup") else ""
        return (
            f"<{self.label}:{self.kind} {self.subject} {len(p)}B {shown} {hdrs}{reply}"
            f" expect={sorted(self.expect) if self.expect else 'typed'}>"
        )


# ----------------------------------------------------------------------- strategies

TEXT = st.text(max_size=24)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=8,
)
# Characters that may stand in a JSON string as they are.
JSON_SAFE = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\')

VALID_TYPES = [
    "application/json",
    "application/msgpack",
    "text/json",
    "text/plain",
    "application/x-msgpack",
    "application/vnd.msgpack",
    "APPLICATION/JSON",
    "application/json; charset=utf-8",
    " application/msgpack ",
]
ODD_TYPES = [
    "",
    "text/html",
    "application/xml",
    "application/octet-stream",
    "multipart/form-data; boundary=x",
    "application/json, application/msgpack",
    ";",
    "*/*",
    "json",
    "msgpack",
    "application/cbor",
]
CONTENT_TYPES = st.sampled_from(VALID_TYPES + ODD_TYPES) | st.text(max_size=30)

ODD_IDS = (
    st.sampled_from([" ", "*", ">", ".", "a.b", "a b", "..", "$JS", "ü", "id\twith\ttabs", "%"])
    | st.text(min_size=1, max_size=40)
    | st.text(alphabet="ab.-", min_size=200, max_size=1000)
)
# Header names a client might send; the ones with a meaning to Shoal, NATS or JetStream
# are drawn separately (a "Status" header on a durable event is a known bug, see below).
RESERVED_HEADERS = {"content-type", "status"}
TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
HEADER_NAMES = st.text(alphabet=TOKEN, min_size=1, max_size=20).filter(
    lambda k: k.lower() not in RESERVED_HEADERS and not k.lower().startswith(("nats-", "shoal-"))
)
EXTRA_HEADERS = st.dictionaries(HEADER_NAMES, st.text(max_size=40), max_size=3)
# JetStream publish headers, with values it always refuses: one it accepts is copied into
# the dead letter of a failed event, which JetStream then refuses (bug_dead_letter_headers).
JS_HEADER_VALUES = [
    ("Nats-Expected-Stream", "SHOAL_FN_NOPE"),
    ("Nats-Expected-Last-Sequence", "999999999"),
    ("Nats-Expected-Last-Msg-Id", "nobody"),
    ("Nats-Expected-Last-Subject-Sequence", "999999999"),
    ("Nats-TTL", "1s"),
    ("Nats-Rollup", "sub"),
]
JS_HEADER_NAMES = {name for name, _ in JS_HEADER_VALUES}
JS_HEADERS = st.sampled_from(JS_HEADER_VALUES)
ODD_REPLIES = st.sampled_from(
    [
        "",  # empty: no reply subject
        "fuzz.*",
        "fuzz.>",
        ">",
        "*",
        "fuzz..x",
        ".fuzz",
        "fuzz.",
        "fn.nope",
        "fn.echo.call",  # refused as internal: would feed the answer to echo
        "fn.echo",
        "$JS.API.INFO",
        f"$KV.{protocol.RESULTS_BUCKET}.fuzz-victim",
        "shoal.worker.nobody.stop",
        "_INBOX.nobody",
        "fuzz.odd." + "x" * 900,
    ]
) | st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=4,
).map(lambda tokens: "fuzz.odd." + ".".join(tokens))
NAMES = st.builds(
    str.__add__,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", max_size=15),
)
UNKNOWN_SUBJECTS = st.sampled_from(
    [
        "fn.echo.call.extra",
        "fn.echo.nope",
        "fn..call",
        "fn.*.call",
        "fn.>",
        "fn.echo.call ",
        "fn.ECHO.call",
        "fuzz.nobody",
        "shoal.nothing",
    ]
) | NAMES.filter(lambda n: n not in DEPLOYED).map(protocol.call_subject)
UNKNOWN_NAMES = NAMES.filter(lambda n: n not in DEPLOYED)
RAISER_COMMANDS = ["invalid", "key", "zero", "type", "unserializable", "set", "nan", "ok"]

# Weighted families and delivery modes: sampled_from picks uniformly among the repeats.
# Hypothesis favours the first entry (about a quarter of all draws): "value" is first, with
# fewer repeats than its share.
_WEIGHTS = {
    "value": 6,
    "garbage": 10,
    "truncated": 6,
    "corrupt": 6,
    "utf8": 4,
    "deep": 5,
    "ctype": 6,
    "large": 4,
    "oversize": 3,
    "schema": 6,
    "raise": 6,
    "executor": 6,
    "timeout": 4,
    "unknown": 4,
    "client": 2,
    "internal": 2,
}
FAMILIES = [f for i in range(20) for f, w in _WEIGHTS.items() if w > i]
MODES = [
    m
    for i in range(64)
    for m, w in (("call", 64), ("ours", 22), ("odd", 5), ("none", 3), ("dup", 2), ("js", 4))
    if w > i
]


@st.composite
def encoded(draw: Any, values: Any) -> tuple[bytes, str | None]:
    """A value as JSON or msgpack, with a matching, aliased or absent Content-Type."""
    value = draw(values)
    if draw(st.booleans()):
        data = json.dumps(value, ensure_ascii=draw(st.booleans())).encode()
        ct = draw(st.sampled_from([None, "application/json", "text/plain", "APPLICATION/JSON"]))
    else:
        data = msgpack.packb(value, use_bin_type=True)
        ct = draw(st.sampled_from([None, "application/msgpack", "application/x-msgpack"]))
    return data, ct


def _utf8(draw: Any) -> tuple[bytes | Blob, str | None]:
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]))
    text = draw(st.text(alphabet=JSON_SAFE, max_size=10)).encode()
    if draw(st.booleans()):
        return b'{"text": "' + text + bad + b'"}', draw(st.sampled_from([None, VALID_TYPES[0]]))
    raw = text + bad
    return b"\x81\xa4text" + bytes([0xD9, len(raw)]) + raw, VALID_TYPES[1]


def _deep(draw: Any) -> tuple[bytes | Blob, str | None]:
    depth = draw(st.integers(1, 300) | st.integers(300, 1100) | st.integers(1100, 20_000))
    shape = draw(st.sampled_from(["list", "object", "msgpack", "unbalanced"]))
    if shape == "list":
        return b"[" * depth + b"]" * depth, None
    if shape == "object":
        return b'{"a":' * depth + b"null" + b"}" * depth, VALID_TYPES[0]
    if shape == "msgpack":
        return b"\x91" * min(depth, 2000) + b"\xc0", VALID_TYPES[1]
    return b"[" * depth, None


def _large(draw: Any, function: str) -> tuple[bytes | Blob, str | None]:
    size = draw(st.integers(min_value=10_000, max_value=LARGE_MAX - 64))
    shape = draw(st.sampled_from(["text", "json-array", "bin", "float32"]))
    if shape == "text":  # a JSON document holding a long string (ASCII or not)
        unit = draw(st.text(alphabet=JSON_SAFE, min_size=1, max_size=8)).encode()
        count = size // len(unit)
        head = b'{"text": "' if function == "textstats" else b'"'
        return Blob(head, unit, count, b'"}' if function == "textstats" else b'"'), None
    if shape == "json-array":
        return Blob(b"[0", b",1.5", size // 4, b"]"), VALID_TYPES[0]
    if shape == "bin":
        unit = draw(st.binary(min_size=1, max_size=8))
        count = size // len(unit)
        return Blob(b"\xc6" + (len(unit) * count).to_bytes(4, "big"), unit, count), (VALID_TYPES[1])
    count = size // 5  # msgpack float32s: echoed as float64 (9 bytes each)
    return Blob(b"\xdd" + count.to_bytes(4, "big"), b"\xca\x3f\xc0\x00\x00", count), (
        VALID_TYPES[1]
    )


def _corrupt(draw: Any) -> tuple[bytes | Blob, str | None]:
    data, ct = draw(encoded(VALUES))
    buf = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        i = draw(st.integers(min_value=0, max_value=len(buf) - 1))
        buf[i] = draw(st.integers(min_value=0, max_value=255))
    return bytes(buf), ct


def _raise_event(draw: Any) -> tuple[bytes | Blob, str | None]:
    do = draw(st.sampled_from([*RAISER_COMMANDS, "big_message", "big_result", "other"]))
    event: Any = {"do": do}
    if do.startswith("big_"):
        event["size"] = draw(st.integers(min_value=0, max_value=100_000))
    if do == "other":
        event = draw(VALUES)
    return draw(encoded(st.just(event)))


@st.composite
def payload_for(draw: Any, family: str, function: str) -> tuple[bytes | Blob, str | None]:
    """A payload of one family, with the Content-Type to send (None: no header)."""
    if family == "value":
        return draw(encoded(VALUES))
    if family == "garbage":
        return draw(st.binary(max_size=512)), draw(st.none() | st.sampled_from(VALID_TYPES))
    if family == "truncated":
        data, ct = draw(encoded(VALUES.filter(lambda v: isinstance(v, list | dict | str))))
        cut = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        return data[:cut], ct
    if family == "corrupt":
        return _corrupt(draw)
    if family == "utf8":
        return _utf8(draw)
    if family == "deep":
        return _deep(draw)
    if family == "ctype":
        data, _ = draw(encoded(VALUES))
        return data, draw(CONTENT_TYPES)
    if family == "large":
        return _large(draw, function)
    if family == "schema":  # textstats wants {"text": <str>}
        bad = st.one_of(
            VALUES.filter(lambda v: not (isinstance(v, dict) and isinstance(v.get("text"), str))),
            st.fixed_dictionaries({"text": SCALARS.filter(lambda v: not isinstance(v, str))}),
            st.fixed_dictionaries({"txt": TEXT}),
        )
        good = st.fixed_dictionaries({"text": st.text(max_size=200)}, optional={"lang": TEXT})
        return draw(encoded(draw(st.sampled_from([bad, bad, good]))))
    if family == "raise":
        return _raise_event(draw)
    if family == "executor":
        n = st.integers(-1000, 1000) | st.floats(allow_nan=False) | TEXT | st.none()
        events = st.fixed_dictionaries({"n": n}, optional={"poison": st.booleans()})
        return draw(encoded(events | VALUES))
    if family == "timeout":
        seconds = st.floats(0, 1.5) | st.integers(0, 2) | st.sampled_from([-1, "1", None, True])
        return draw(encoded(st.fixed_dictionaries({"seconds": seconds}) | VALUES))
    raise AssertionError(family)


@st.composite
def fuzz_input(draw: Any) -> Input:
    family = draw(st.sampled_from(FAMILIES))
    headers: dict[str, str] = dict(draw(EXTRA_HEADERS))
    if draw(st.booleans()):
        headers[protocol.MSG_ID] = draw(ODD_IDS)

    if family == "unknown":
        if draw(st.booleans()):
            return Input(family, "call", draw(UNKNOWN_SUBJECTS), b"{}", headers)
        subject = draw(st.sampled_from(["fn.nope", "fuzz.unrouted", "fn.echo.call.x"]))
        return Input(family, "event", subject, b"{}", headers, reply="ours")
    if family == "client":
        return Input(family, "client", protocol.call_subject(draw(UNKNOWN_NAMES)), b"{}")
    if family == "internal":  # an executor's own subject, reached directly
        data, ct = draw(payload_for("value", "doubler"))
        if ct:
            headers[protocol.CONTENT_TYPE] = ct
        subject = protocol.executor_subject("doubler")
        return Input(family, "call", subject, data, headers, function="doubler", internal=True)

    function = {
        "schema": "textstats",
        "raise": "raiser",
        "executor": draw(st.sampled_from(["double", "batchinfo"])),
        "timeout": "sleepy",
    }.get(family) or draw(st.sampled_from(["echo"] * 6 + ["textstats"] * 2 + list(TARGETS)))
    if family == "oversize":
        payload: bytes | Blob | Oversize = Oversize(draw(st.integers(1, 64 * 1024)))
        ct = None
    else:
        payload, ct = draw(payload_for(family, function))
    if ct is not None:
        headers[protocol.CONTENT_TYPE] = ct

    mode = draw(st.sampled_from(MODES))
    if mode == "call":
        return Input(
            family, "call", protocol.call_subject(function), payload, headers, function=function
        )
    subject = protocol.event_subject(function)
    if function == "textstats" and draw(st.booleans()):
        subject = "docs.uploaded"
    reply: str | None = "ours"
    if mode == "odd":
        reply = draw(ODD_REPLIES)
    elif mode == "none":
        reply = None
    elif mode == "js":
        name, value = draw(JS_HEADERS)
        headers[name] = value
    kind = "dup" if mode == "dup" else "event"
    return Input(family, kind, subject, payload, headers, reply=reply, function=function)


# ----------------------------------------------------------------------- predictions


def wire(value: str) -> str:
    """A header value as the receiver sees it after nats-py's normalisation."""
    sent = value.strip().translate(str.maketrans({"\r": " ", "\n": " "})).encode()
    return sent.strip().decode("utf-8", "replace")


_INVALID = object()


def _digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def prepare(inp: Input) -> None:
    """Work out what the cluster must answer, or which known bug the input would hit."""
    if isinstance(inp.payload, Oversize):
        inp.expect = frozenset({"client:MaxPayloadError"})
        return
    if inp.kind == "client":
        inp.expect = frozenset({"client:FunctionNotFound"})
        return
    if inp.function is None or inp.subject in ("fn.nope", "fuzz.unrouted", "fn.echo.call.x"):
        inp.expect = frozenset(
            {"no-stream"} if inp.kind != "call" else {"no-responders", "client:BadSubjectError"}
        )
        return
    data = inp.data()
    raw_ct = inp.headers.get(protocol.CONTENT_TYPE)
    ct = wire(raw_ct) if raw_ct is not None else None
    inp.answer_ct = codec.CONTENT_TYPES[codec.encoding_of(ct)]
    value: Any = _INVALID
    try:
        value, enc = codec.decode(data, ct or None)
        inp.answer_ct = codec.CONTENT_TYPES[enc]
    except errors.InvalidPayload:
        enc = "json"
    except Exception:
        # bug_undecodable_msgpack_map_key: a TypeError escapes the codec, no answer.
        inp.excluded = "msgpack map key that is an array or a map (bug_unhashable_map_key)"
        return
    # Without a reply subject of ours, a durable event's outcome is read from the store.
    durable_unanswered = inp.kind != "call" and inp.reply != "ours" and inp.function == "echo"
    if json_depth(data) >= DEEP_JSON:
        if durable_unanswered:
            inp.excluded = "result the results bucket cannot store (bug_unstorable_result)"
        return  # any typed answer
    if value is _INVALID:
        inp.expect = frozenset({"error:InvalidPayload"})
        return
    if isinstance(value, dict) and value.get("hold") and inp.function in ("batchinfo", "doubler"):
        inp.excluded = "'hold' (a test fixture that stalls the doubler executor for 30 s)"
        return
    if inp.internal:
        return  # any typed answer
    if inp.kind != "call" and "Status" in inp.headers:
        inp.excluded = "a 'Status' header on a durable event (bug_status_header)"
        return
    if durable_unanswered and (nesting(value) >= DEEP_VALUE or not _storable(value, enc)):
        inp.excluded = "result the results bucket cannot store (bug_unstorable_result)"
        return
    inp.expect = _expect(inp.function, value, enc, inp)


def _storable(value: Any, enc: Any) -> bool:
    try:
        make_result("x", "echo", True, value, enc).to_bytes()
        return True
    except Exception:
        return False


def json_depth(data: bytes) -> int:
    """How deep a generated JSON document nests (0 for anything else)."""
    if data.startswith(b"["):
        return len(data) - len(data.lstrip(b"["))
    if data.startswith(b'{"a":'):
        return (len(data) - len(data.lstrip(b'{"a:'))) // 5
    return 0


def nesting(value: Any) -> int:
    """How deep a decoded value nests, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            todo.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list | tuple):
            todo.extend((x, d + 1) for x in v)
    return deepest


# How deep JSON may nest before json gives up depends on the recursion limit and the stack
# depth of the decoding thread, and Hypothesis raises the limit while it runs: past 600
# levels any typed answer is accepted. Storing a result recurses too (bug_unstorable_result):
# past 200 levels it may fail in the worker where it does not here.
DEEP_JSON = 600
DEEP_VALUE = 200


def _expect(function: str, value: Any, enc: str, inp: Input) -> frozenset[str] | None:
    ok, fe = frozenset({"ok"}), frozenset({"error:FunctionError"})
    if function == "echo":
        try:
            body = codec.encode(value, enc)  # type: ignore[arg-type]
        except errors.ResultNotSerializable:
            return frozenset({"error:ResultNotSerializable"})
        inp.answer_digest = _digest(body)
        return ok
    if function == "textstats":
        good = isinstance(value, dict) and isinstance(value.get("text"), str)
        return ok if good else frozenset({"error:InvalidPayload"})
    if function == "raiser":
        do = value.get("do") if isinstance(value, dict) else None
        if do in ("big_message", "big_result"):
            size = value.get("size", 100)
            if not (isinstance(size, int) and 0 <= size <= 200_000):
                inp.excluded = "an answer over max_payload (bug_answer_over_max_payload)"
            return fe if do == "big_message" else ok
        return {
            "invalid": frozenset({"error:InvalidPayload"}),
            "unserializable": frozenset({"error:ResultNotSerializable"}),
            "set": frozenset({"error:ResultNotSerializable"}),
            "nan": ok if enc == "msgpack" else frozenset({"error:ResultNotSerializable"}),
            "ok": ok,
        }.get(do, fe)
    if function == "sleepy":
        s = value.get("seconds", 0) if isinstance(value, dict) else 0
        if not isinstance(s, int | float) or s != s:
            s = 0
        s = min(max(s, 0), 2)
        if s < 0.05:  # the timeout is 0.3 s
            return ok
        if s > 0.8:
            return frozenset({"error:FunctionTimeout"})
        return frozenset({"ok", "error:FunctionTimeout"})
    if function in ("double", "batchinfo"):
        # An executor that does not answer within its timeout (3 s) under this load is a
        # typed, retryable ExecutorUnavailable.
        away = frozenset({"error:ExecutorUnavailable"})
        if not isinstance(value, dict) or "n" not in value:
            return fe
        n = value["n"]
        if isinstance(n, int) and abs(n) < 2**60 and not value.get("poison"):
            return ok | away
        if function == "batchinfo" and value.get("poison"):
            return fe | away
    return None  # any typed answer


# -------------------------------------------------------------------------- sending


@dataclass
class Report:
    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    late_answers: int = 0

    def fail(self, inp: Input, what: str) -> None:
        self.failures.append(f"{what}: {inp!r}")

    def summary(self) -> str:
        ok = self.outcomes["ok"]
        typed = {k: v for k, v in self.outcomes.items() if k.startswith("error:")}
        other = {
            k: v
            for k, v in self.outcomes.items()
            if k not in typed and k not in ("ok", "SILENCE", "malformed")
        }
        lines = [
            f"inputs sent: {self.sent} in {time.monotonic() - self.started:.1f} s",
            f"answered ok: {ok}",
            f"typed errors: {sum(typed.values())} {dict(sorted(typed.items()))}",
            f"refused by the client, NATS or JetStream: {sum(other.values())} "
            f"{dict(sorted(other.items()))}",
            f"silences: {self.outcomes['SILENCE']}, malformed answers: "
            f"{self.outcomes['malformed']}",
            f"failures: {len(self.failures)}",
            f"by generator: {dict(sorted(self.labels.items()))}",
            f"by path: {dict(sorted(self.kinds.items()))}",
            f"late or repeated answers ignored: {self.late_answers}",
            f"not sent, known bugs: {dict(self.excluded)}",
        ]
        return "\n".join(lines)


class Fuzzer:
    def __init__(self, cluster: Cluster, fz: NATS) -> None:
        self.cluster = cluster
        self.fz = fz
        self.js = fz.jetstream()
        self.client = Client(fz)
        self.report = Report()
        self._waiting: dict[str, tuple[anyio.Event, list[Msg]]] = {}
        self._n = 0

    async def start(self) -> None:
        await self.fz.subscribe("fuzz.ans.>", cb=self._on_answer)

    async def _on_answer(self, msg: Msg) -> None:
        slot = self._waiting.get(msg.subject)
        if slot is None or slot[1]:
            self.report.late_answers += 1
            return
        slot[1].append(msg)
        slot[0].set()

    async def run(self, batches: Any) -> None:
        sem = anyio.Semaphore(IN_FLIGHT)
        async with batches, anyio.create_task_group() as tg:
            async for batch in batches:
                for inp in batch:
                    if inp.excluded:
                        self.report.excluded[inp.excluded] += 1
                        continue
                    await sem.acquire()
                    tg.start_soon(self._one, inp, sem)

    async def _one(self, inp: Input, sem: anyio.Semaphore) -> None:
        try:
            await self.send(inp)
        except Exception as e:  # a bug in this test, or an unexpected client error
            self.report.fail(inp, f"{type(e).__name__}: {e}")
        finally:
            sem.release()

    async def send(self, inp: Input) -> None:
        self.report.sent += 1
        self.report.labels[inp.label] += 1
        self.report.kinds[inp.kind if inp.kind != "event" else f"event-reply-{inp.reply_kind}"] += 1
        if inp.kind == "call":
            outcome = await self._call(inp)
        elif inp.kind == "client":
            outcome = await self._client_call(inp)
        else:
            outcome = await self._event(inp)
        self.report.outcomes[outcome] += 1
        if outcome == "js-rejected" and any(k in JS_HEADER_NAMES for k in inp.headers):
            return  # JetStream refused the publish, with an error, as its headers asked
        if outcome == "SILENCE":
            self.report.fail(inp, "no answer")
        elif inp.expect is not None and outcome not in inp.expect:
            self.report.fail(inp, f"got {outcome}")
        elif inp.expect is None and not (outcome == "ok" or outcome.startswith("error:")):
            self.report.fail(inp, f"got {outcome}")

    async def _call(self, inp: Input) -> str:
        try:
            msg = await self.fz.request(
                inp.subject,
                inp.data(self.fz.max_payload),
                timeout=CALL_TIMEOUT,
                headers=inp.headers or None,
            )
        except NoRespondersError:
            return "no-responders"
        except NatsTimeout:
            return "SILENCE"
        except (MaxPayloadError, BadSubjectError) as e:
            return f"client:{type(e).__name__}"
        return self._check_answer(inp, msg, wire(inp.headers.get(protocol.MSG_ID, "")) or None)

    async def _client_call(self, inp: Input) -> str:
        name = inp.subject.split(".")[1]
        try:
            await self.client.call(name, {}, timeout=5)
        except errors.ShoalError as e:
            return f"client:{type(e).__name__}"
        return "ok"

    async def _event(self, inp: Input) -> str:
        self._n += 1
        headers = dict(inp.headers)
        if protocol.MSG_ID in headers or inp.kind == "dup":
            # Unique per input: JetStream would deduplicate a repeat within two minutes.
            headers[protocol.MSG_ID] = headers.get(protocol.MSG_ID, "dup") + f"~{self._n}"
        inbox = f"fuzz.ans.{self._n}"
        if inp.reply == "ours":
            headers[protocol.REPLY_TO] = inbox
            self._waiting[inbox] = (anyio.Event(), [])
        elif inp.reply is not None:
            headers[protocol.REPLY_TO] = inp.reply
        data = inp.data(self.fz.max_payload)
        try:
            try:
                ack = await self.js.publish(inp.subject, data, headers=headers)
            except (NoRespondersError, NoStreamResponseError):
                return "no-stream"
            except MaxPayloadError as e:
                return f"client:{type(e).__name__}"
            except APIError:
                return "js-rejected"
            if ack.duplicate:
                self.report.fail(inp, "a unique Nats-Msg-Id was taken as a duplicate")
            if inp.kind == "dup":
                again = await self.js.publish(inp.subject, data, headers=headers)
                if not again.duplicate or again.seq != ack.seq:
                    self.report.fail(inp, f"repeat not deduplicated: {ack} then {again}")
            request_id = wire(headers.get(protocol.MSG_ID, "")) or f"{inp.function}-{ack.seq}"
            if inp.reply == "ours":
                event, got = self._waiting[inbox]
                with anyio.move_on_after(EVENT_TIMEOUT):
                    await event.wait()
                if not got:
                    return "SILENCE"
                return self._check_answer(inp, got[0], request_id)
            return await self._stored(inp, request_id)
        finally:
            self._waiting.pop(inbox, None)

    async def _stored(self, inp: Input, request_id: str) -> str:
        result = None
        with anyio.move_on_after(EVENT_TIMEOUT):
            while True:
                result = await self.client.result(request_id)
                if result is not None:
                    break
                await anyio.sleep(0.2)
        if result is None:
            return "SILENCE"
        if result.request_id != request_id or result.function != inp.function:
            self.report.fail(inp, f"stored under the wrong id/function: {result}")
        if result.ok:
            return "ok"
        return self._error_outcome(inp, result.value, request_id)

    def _error_outcome(self, inp: Input, err: Any, request_id: str | None) -> str:
        if not (
            isinstance(err, dict)
            and all(isinstance(err.get(k), str) for k in ("type", "code", "message"))
        ):
            self.report.fail(inp, f"unstructured error {err!r:.200}")
            return "malformed"
        if ERROR_CODES.get(err["type"]) != err["code"]:
            self.report.fail(inp, f"unknown error type/code {err['type']}/{err['code']}")
        if not inp.internal and err.get("request_id") != request_id:
            self.report.fail(inp, f"error request_id {err.get('request_id')!r} != {request_id!r}")
        return "error:" + err["type"]

    def _check_answer(self, inp: Input, msg: Msg, request_id: str | None) -> str:
        h = msg.headers or {}
        status, ct = h.get(protocol.STATUS), h.get(protocol.CONTENT_TYPE)
        if status not in ("ok", "error") or ct not in (protocol.JSON, protocol.MSGPACK):
            self.report.fail(inp, f"answer headers {h}")
            return "malformed"
        if inp.answer_ct and ct != inp.answer_ct and not inp.internal:
            self.report.fail(inp, f"answered in {ct}, not {inp.answer_ct}")
        rid = h.get(protocol.REQUEST_ID)
        if not inp.internal:
            if not rid or (request_id is not None and rid != request_id):
                self.report.fail(inp, f"Shoal-Request-Id {rid!r}, expected {request_id!r}")
            request_id = rid
        if status == "ok":
            if inp.answer_digest and _digest(msg.data) != inp.answer_digest:
                self.report.fail(inp, f"echo answered {msg.data[:80]!r}")
            return "ok"
        try:
            if ct == protocol.JSON:
                body = json.loads(msg.data)
            else:
                body = msgpack.unpackb(msg.data, raw=False, strict_map_key=False)
        except Exception as e:
            self.report.fail(inp, f"undecodable error answer: {e}")
            return "malformed"
        return self._error_outcome(
            inp, body.get("error") if isinstance(body, dict) else body, request_id
        )


# ----------------------------------------------------------------- cluster helpers


async def deploy_and_warm(cluster: Cluster, files: Any, functions: Any) -> None:
    """Deploy, call each function once (a cold start), and wait until each is warm."""
    for path in files:
        await cluster.deploy(path)
    client = Client(cluster.nc)
    warmers = {"double": {"n": 1}, "batchinfo": {"n": 1}, "raiser": {"do": "ok"}}
    for name in functions:
        await client.call(name, warmers.get(name, {"text": "warm"}), timeout=60)
    for name in functions:
        await wait_workers(
            cluster.nc, name, lambda e: any(w["state"] == "ready" for w in e.values())
        )
    await anyio.sleep(0.5)  # the controller closes the cold paths on its next tick


async def live_workers(cluster: Cluster) -> dict[str, tuple[str, int]]:
    """worker id -> (function, pid), from the registry."""
    out = {}
    for name in WATCHED:
        for info in (await workers_of(cluster.nc, name)).values():
            out[str(info["id"])] = (name, int(info["pid"]))
    return out


async def assert_cluster_intact(cluster: Cluster, before: dict[str, tuple[str, int]]) -> None:
    """No worker that served before has died or changed, and the controller is alive."""
    after = await live_workers(cluster)
    running = cluster.launcher.running()
    for wid, (name, pid) in before.items():
        assert wid in running, f"worker {wid} of {name} (pid {pid}) exited"
        assert after.get(wid) == (name, pid), f"worker {wid} of {name} left the registry"
        os.kill(pid, 0)  # raises if the process is gone
    assert cluster.nc.is_connected, "the controller's NATS connection is down"
    bucket = await cluster.nc.jetstream().key_value(protocol.CONTROLLERS_BUCKET)
    first = (await bucket.get(cluster.controller.id)).revision
    await anyio.sleep(1.0)
    assert (await bucket.get(cluster.controller.id)).revision > first, "controller stopped"
    answer = await Client(cluster.nc).call("echo", {"still": "here"}, timeout=10)
    assert answer == {"still": "here"}


# ------------------------------------------------------------------------ the fuzz run


def soak_selected(config: pytest.Config) -> bool:
    return "soak" in (config.getoption("-m") or "")


@pytest.mark.parametrize(
    "total", [10_000, pytest.param(50_000, marks=pytest.mark.soak, id="50000-soak")]
)
async def test_fuzz_cluster_answers_every_input(
    cluster: Cluster, total: int, request: pytest.FixtureRequest
) -> None:
    # 10,000 inputs take 45-75 s on two cores; the longer run waits for -m soak.
    if total > 10_000 and not soak_selected(request.config):
        pytest.skip("the 50,000-input run is a soak test: select it with -m soak")
    await deploy_and_warm(cluster, DEPLOY, TARGETS)
    before = await live_workers(cluster)
    assert {name for name, _ in before.values()} == set(WATCHED)
    fz = await connect(cluster.url, name="fuzzer")
    try:
        assert fz.max_payload == MAX_PAYLOAD
        fuzzer = Fuzzer(cluster, fz)
        await fuzzer.start()
        send, receive = anyio.create_memory_object_stream[list[Input]](2)
        examples = math.ceil(total * 1.03 / BATCH)  # a margin for inputs not sent

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            # CI replays one fixed sequence (a failure there reproduces); elsewhere each run
            # explores new inputs.
            derandomize=bool(os.environ.get("CI")),
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(batch=st.lists(fuzz_input(), min_size=BATCH, max_size=BATCH))
        def generate(batch: list[Input]) -> None:
            for inp in batch:
                prepare(inp)
            anyio.from_thread.run(send.send, batch)

        def produce() -> None:
            try:
                generate()
            finally:
                anyio.from_thread.run_sync(send.close)

        async with anyio.create_task_group() as tg:
            tg.start_soon(fuzzer.run, receive)
            await anyio.to_thread.run_sync(produce)
        report = fuzzer.report
        print("\n" + report.summary())
        assert report.sent >= total, report.summary()
        assert not report.failures, "\n".join(report.failures[:40])
        await assert_cluster_intact(cluster, before)
    finally:
        await fz.close()


# ------------------------------------------------- a handler that blocks its event loop


async def _echo_latencies(nc: NATS, limit: int, until: anyio.Event | None = None) -> list[float]:
    """Up to ``limit`` echo calls, 10 ms apart (until ``until`` is set): their latencies."""
    times: list[float] = []
    while len(times) < limit and not (until is not None and until.is_set()):
        t = time.perf_counter()
        msg = await nc.request("fn.echo.call", b'{"i": 1}', timeout=10)
        times.append(time.perf_counter() - t)
        assert msg.headers and msg.headers[protocol.STATUS] == "ok"
        await anyio.sleep(0.01)
    return times


async def test_blocking_handler_does_not_stall_other_functions(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py", FUZZED), ("echo", "blocker"))
    before = await live_workers(cluster)
    nc = cluster.nc
    baseline = await _echo_latencies(nc, 100)

    # Eight calls that each block the blocker's event loop for 0.5 s: its one worker
    # (concurrency 4) runs them back to back, nothing else running in it meanwhile.
    answers: list[tuple[float, Msg]] = []
    done = anyio.Event()
    started = time.monotonic()

    async def block() -> None:
        msg = await nc.request("fn.blocker.call", b'{"seconds": 0.5}', timeout=30)
        answers.append((time.monotonic() - started, msg))

    async def blockers() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(block)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(blockers)
        await anyio.sleep(0.2)  # the first handler is blocking by now
        during = await _echo_latencies(nc, 300, until=done)
        overlap = time.monotonic() - started - 0.2
    assert len(during) >= 50 and overlap >= 1.0, (len(during), overlap)

    for _, msg in answers:  # it completes (the timeout cannot fire while the loop is blocked)
        assert msg.headers is not None
        body = json.loads(msg.data)
        if msg.headers[protocol.STATUS] == "ok":
            assert body == {"blocked": 0.5}
        else:
            assert body["error"]["type"] == "FunctionTimeout"
    assert max(t for t, _ in answers) >= 3.0  # the eight ran one after another
    base_p50, during_p50 = statistics.median(baseline), statistics.median(during)
    print(
        f"\necho p50 {base_p50 * 1e3:.2f} ms before, {during_p50 * 1e3:.2f} ms while the "
        f"blocker's loop is blocked ({len(during)} calls over {overlap:.1f} s; blocker "
        f"answers at {sorted(round(t, 1) for t, _ in answers)} s)"
    )
    # A behavioural check, not a timing goal: were echo stuck behind the blocked loop its
    # p50 would be hundreds of ms (>100x); sharing two cores with the blocker's worker and
    # the controller costs a few x at most. 10x separates the two with a wide margin.
    assert during_p50 < 10 * base_p50
    await assert_cluster_intact(cluster, before)


# ------------------------------------------------------------------------ regressions
# Each test is the smallest input the fuzz run (or building it) found that broke the
# contract; all are fixed. Their kinds are still excluded from the random mix above.

ANSWER_WITHIN = 3.0  # seconds: a warm worker answers these in milliseconds


async def _request(nc: NATS, subject: str, data: bytes, headers: dict[str, str]) -> Msg:
    return await nc.request(subject, data, timeout=ANSWER_WITHIN, headers=headers)


def _error_type(msg: Msg) -> str:
    assert msg.headers and msg.headers[protocol.STATUS] == "error", msg.headers
    if msg.headers[protocol.CONTENT_TYPE] == protocol.MSGPACK:
        return str(msgpack.unpackb(msg.data)["error"]["type"])
    return str(json.loads(msg.data)["error"]["type"])


async def _publish_and_wait(nc: NATS, subject: str, data: bytes, headers: dict[str, str]) -> Msg:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.jetstream().publish(subject, data, headers={**headers, protocol.REPLY_TO: inbox})
    try:
        return await sub.next_msg(timeout=ANSWER_WITHIN)
    finally:
        await sub.unsubscribe()


async def test_bug_unhashable_map_key(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py",), ("echo",))
    # {[1]: 2} in msgpack
    msg = await _request(
        cluster.nc, "fn.echo.call", b"\x81\x91\x01\x02", {protocol.CONTENT_TYPE: protocol.MSGPACK}
    )
    assert _error_type(msg) == "InvalidPayload"


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        ("fn.raiser.call", b'{"do": "big_result", "size": 2000000}'),
        ("fn.raiser.call", b'{"do": "big_message", "size": 2000000}'),
        # 600 kB of UTF-8 text comes back as 1.8 MB of \\u escapes
        ("fn.echo.call", json.dumps("é" * 300_000, ensure_ascii=False).encode()),
    ],
    ids=["result", "error-message", "json-escapes"],
)
async def test_bug_answer_over_max_payload(cluster: Cluster, subject: str, payload: bytes) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py", FUZZED), ("echo", "raiser"))
    msg = await _request(cluster.nc, subject, payload, {protocol.CONTENT_TYPE: protocol.JSON})
    assert msg.headers and msg.headers[protocol.STATUS] in ("ok", "error")


@pytest.mark.parametrize("warm", [True, False], ids=["warm-worker", "cold-controller"])
async def test_bug_body_within_max_payload_but_not_with_headers(
    cluster: Cluster, warm: bool
) -> None:
    if warm:
        await deploy_and_warm(cluster, (FUNCTIONS / "echo.py",), ("echo",))
    else:
        await cluster.deploy(FUNCTIONS / "echo.py")
    before = await workers_of(cluster.nc, "echo")
    size = cluster.nc.max_payload - 64  # room for this request's own headers
    body = b"\xc6" + (size - 5).to_bytes(4, "big") + b"z" * (size - 5)  # msgpack bin
    try:
        msg = await _request(
            cluster.nc, "fn.echo.call", body, {protocol.CONTENT_TYPE: protocol.MSGPACK}
        )
        assert msg.headers and msg.headers[protocol.STATUS] in ("ok", "error")
    finally:
        assert not cluster.nc.is_closed, "the controller's connection was closed"
    msg = await _request(cluster.nc, "fn.echo.call", b'"next"', {})
    assert json.loads(msg.data) == "next"
    if warm:  # served by the same worker, not a replacement
        assert (await workers_of(cluster.nc, "echo")).keys() == before.keys()


async def test_bug_unstorable_result(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py",), ("echo",))
    array = msgpack.packb(["<f4", [2], b"\x00\x00\x80?\x00\x00\x00@"])  # numpy [1.0, 2.0]
    events = {
        "surrogate": (b'{"s": "\\ud800"}', protocol.JSON),
        "bigint": (b"18446744073709551616", protocol.JSON),
        "deep": (b"[" * 400 + b"]" * 400, protocol.JSON),
        "ndarray": (msgpack.packb(msgpack.ExtType(1, array)), protocol.MSGPACK),
    }
    client = Client(cluster.nc)
    for rid, (data, ct) in events.items():
        await cluster.nc.jetstream().publish(
            "fn.echo", data, headers={protocol.MSG_ID: rid, protocol.CONTENT_TYPE: ct}
        )
    missing = []

    async def stored(rid: str) -> None:
        try:
            await client.wait_result(rid, timeout=ANSWER_WITHIN)
        except errors.ResultNotFound:
            missing.append(rid)

    async with anyio.create_task_group() as tg:
        for rid in events:
            tg.start_soon(stored, rid)
    assert not missing, f"not stored: {sorted(missing)}"


async def test_bug_unprintable_exception(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUZZED,), ("raiser",))
    msg = await _request(cluster.nc, "fn.raiser.call", b'{"do": "unprintable"}', {})
    assert _error_type(msg) == "FunctionError"


@pytest.mark.parametrize("reply_to", ["a b", "fuzz." + "x" * 5000], ids=["space", "5000-chars"])
async def test_bug_reply_to_not_a_subject(cluster: Cluster, reply_to: str) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py",), ("echo",))
    await cluster.nc.jetstream().publish(
        "fn.echo",
        b'"odd reply"',
        headers={protocol.MSG_ID: "odd-reply", protocol.REPLY_TO: reply_to},
    )
    result = await Client(cluster.nc).wait_result("odd-reply", timeout=ANSWER_WITHIN)
    assert result.unwrap() == "odd reply"
    msg = await _request(cluster.nc, "fn.echo.call", b'"next"', {})
    assert json.loads(msg.data) == "next"


# Found by the fuzz run and fixed since (protocol.reply_allowed): kept as a regression test.
async def test_reply_to_internal_subject_is_refused(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py",), ("echo",))
    client = Client(cluster.nc)
    assert await client.call("echo", {"mine": True}, request_id="victim") == {"mine": True}
    await client.wait_result("victim", timeout=ANSWER_WITHIN)
    await cluster.nc.jetstream().publish(
        "fn.echo",
        b'"overwritten"',
        headers={
            protocol.MSG_ID: "attacker",
            protocol.REPLY_TO: f"$KV.{protocol.RESULTS_BUCKET}.victim",
        },
    )
    await client.wait_result("attacker", timeout=ANSWER_WITHIN)
    result = await client.result("victim")
    assert result is not None and result.value == {"mine": True}


async def test_bug_status_header(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py",), ("echo",))
    msg = await _publish_and_wait(cluster.nc, "fn.echo", b'"hi"', {"Status": "100"})
    assert json.loads(msg.data) == "hi"


async def test_bug_dead_letter_headers(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUNCTIONS / "echo.py",), ("echo",))
    stream = protocol.stream_name("echo")  # accepted by the function's stream...
    msg = await _publish_and_wait(
        cluster.nc,
        "fn.echo",
        b"{trunc",
        {protocol.CONTENT_TYPE: protocol.JSON, "Nats-Expected-Stream": stream},
    )
    assert _error_type(msg) == "InvalidPayload"  # ...and refused by the dead-letter stream


async def test_bug_handler_system_exit(cluster: Cluster) -> None:
    await deploy_and_warm(cluster, (FUZZED,), ("raiser",))
    msg = await _request(cluster.nc, "fn.exiter.call", b"{}", {})
    assert _error_type(msg) == "FunctionError"
