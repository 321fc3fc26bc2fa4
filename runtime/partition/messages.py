"""What a coordinator and the workers of its run say to each other, on
``shoal.part.<function>.<worker>`` (:func:`task_subject`).

A coordinator asks a worker to serve one partition of a run (:class:`RunPartition`) or asks
whether it is still there (:class:`Ping`); the worker answers each with a :class:`Reply`.
Each is a msgpack map, written by its ``to_bytes`` and read by its ``from_bytes`` (tasks by
:func:`read_task`, which tells the two apart by their ``op``); bytes that are not a valid
message raise :class:`MalformedMessage`. The partitions' intermediates and their answers to
the coordinator travel on the data plane (:mod:`runtime.partition.dataplane`), not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from runtime.wire import codec

if TYPE_CHECKING:
    from collections.abc import Mapping


class MalformedMessage(ValueError):
    """Bytes that are not a valid partition message (or name an unknown ``op``)."""


def task_subject(function: str, worker_id: str) -> str:
    return f"shoal.part.{function}.{worker_id}"


@dataclass(frozen=True)
class RunPartition:
    """Serve partition ``index`` of ``count`` in ``run``, and report to ``coordinator``."""

    OP: ClassVar[str] = "run"

    run: str
    index: int
    count: int
    roster: tuple[str, ...]  # the worker serving each partition, by index
    coordinator: str  # the worker whose mailbox takes the partition's answer
    request: Any  # the event, as the function was called with it
    request_id: str
    channel: str  # how intermediates travel: auto | inline | object
    deadline: float  # seconds the partition may take, from when it is handed out
    traceparent: str | None = None  # the coordinator's span: the partition's is its child

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise MalformedMessage(f"partition {self.index} of {self.count}")
        if len(self.roster) != self.count:
            raise MalformedMessage(f"{len(self.roster)} workers for {self.count} partitions")

    def to_bytes(self) -> bytes:
        return _pack(
            {
                "op": self.OP,
                "run": self.run,
                "index": self.index,
                "count": self.count,
                "roster": list(self.roster),
                "coordinator": self.coordinator,
                "request": self.request,
                "request_id": self.request_id,
                "channel": self.channel,
                "deadline": self.deadline,
                **({"traceparent": self.traceparent} if self.traceparent else {}),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RunPartition:
        task = read_task(data)
        if not isinstance(task, RunPartition):
            raise MalformedMessage(f"expected a {cls.OP!r} task, got {task.OP!r}")
        return task

    @classmethod
    def _from_map(cls, m: Mapping[str, Any]) -> RunPartition:
        roster = _field(m, "roster", list)
        if not all(isinstance(w, str) for w in roster):
            raise MalformedMessage("roster: worker ids are strings")
        deadline = _field(m, "deadline", (int, float))
        return cls(
            run=_field(m, "run", str),
            index=_field(m, "index", int),
            count=_field(m, "count", int),
            roster=tuple(roster),
            coordinator=_field(m, "coordinator", str),
            request=m.get("request"),
            request_id=_field(m, "request_id", str),
            channel=_field(m, "channel", str),
            deadline=float(deadline),
            traceparent=_optional_text(m, "traceparent"),
        )


@dataclass(frozen=True)
class Ping:
    """Are you still there? (Any answer is yes; no responders or silence is no.)

    ``pad``: bytes that only add weight, for timing a payload's trip to the worker and back
    (calibrating a pair of hosts, :mod:`runtime.partition.calibration`); the worker ignores
    them."""

    OP: ClassVar[str] = "ping"

    pad: bytes = b""

    def to_bytes(self) -> bytes:
        return _pack({"op": self.OP, **({"pad": self.pad} if self.pad else {})})

    @classmethod
    def from_bytes(cls, data: bytes) -> Ping:
        task = read_task(data)
        if not isinstance(task, Ping):
            raise MalformedMessage(f"expected a {cls.OP!r} task, got {task.OP!r}")
        return task


Task = RunPartition | Ping


def read_task(data: bytes) -> Task:
    """The task ``data`` carries, whichever it is."""
    m = _unpack(data)
    op = m.get("op")
    if op == RunPartition.OP:
        return RunPartition._from_map(m)
    if op == Ping.OP:
        return Ping()
    raise MalformedMessage(f"unknown op {op!r}")


@dataclass(frozen=True)
class Reply:
    """A worker's answer to a task: taken (or here), or why not."""

    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_bytes(self) -> bytes:
        return _pack({"ok": True} if self.error is None else {"error": self.error})

    @classmethod
    def from_bytes(cls, data: bytes) -> Reply:
        m = _unpack(data)
        if "error" in m:
            return cls(error=str(m["error"]))
        if m.get("ok") is not True:
            raise MalformedMessage("a reply says ok or gives an error")
        return cls()


def _pack(value: dict[str, Any]) -> bytes:
    # The codec's msgpack: a request may hold what a msgpack event decodes to (numpy arrays).
    return codec.pack(value)


def _unpack(data: bytes) -> dict[str, Any]:
    try:
        m = codec.unpack(data)
    except Exception as e:
        raise MalformedMessage(f"not msgpack: {e}") from None
    if not isinstance(m, dict):
        raise MalformedMessage(f"not a map but {type(m).__name__}")
    return m


def _optional_text(m: Mapping[str, Any], name: str) -> str | None:
    value = m.get(name)
    if value is not None and not isinstance(value, str):
        raise MalformedMessage(f"{name}: {value!r} is not text")
    return value


def _field(m: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = m.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedMessage(f"{name}: {value!r} is not a valid value")
    return value
