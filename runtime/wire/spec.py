"""FunctionSpec: everything the control plane needs to know about a deployed function."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack

from runtime.errors import DefinitionError
from runtime.wire import protocol
from runtime.wire.options import (
    ADAPTIVE,
    FALLBACK_IDLE_S,
    FALLBACK_IDLE_S_POOLED,
    Batching,
    Delivery,
    Partitioning,
    Resources,
    Scaling,
)

_SUBJECT_TOKEN_RE = re.compile(r"^[^\s.*>]+$")

# The order a spec's fields are written in: the order of the fields before they moved into
# option groups. A spec's version is a hash of its bytes, so an unchanged spec must encode
# to the same bytes (workers and controllers of two releases agree on versions); fields added
# later go after these.
_WIRE_ORDER = (
    *("name", "subjects", "timeout", "concurrency", "min_workers", "max_workers"),
    *("idle_timeout", "ack_wait", "max_deliver", "retries", "backoff", "uses", "fuse"),
    *("kind", "engine", "gpu", "memory_mb", "max_batch", "max_wait_ms", "latency_target_ms"),
    *("partitions", "channel", "worker_memory_mb", "module", "attr", "code_sha", "extra"),
)
# idle_timeout="adaptive" is written as the fixed fallback window (a number, where releases
# before it expect one: they run that fixed window) and this key, last.
_KEEPALIVE_KEY = "keepalive"


@dataclass(frozen=True)
class FunctionSpec(Resources, Partitioning, Batching, Scaling, Delivery):
    """A function's deployable description; stored msgpack-encoded in the functions bucket.

    Its options are those of the groups in :mod:`runtime.wire.options`, flat (``spec.timeout``,
    ``FunctionSpec(name=..., max_batch=8)``), as they are on the wire.
    """

    name: str = field(kw_only=True)
    subjects: tuple[str, ...] = ()  # extra trigger subjects besides fn.<name>
    # Handlers: the executors they await, and whether to run them in-process ("fused").
    uses: tuple[str, ...] = ()
    fuse: bool = False
    kind: str = "function"  # or "executor": the model side, batched, on a GPU when there is one
    # Filled in at deploy time.
    module: str = ""
    attr: str = ""
    code_sha: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Workers of different versions are rolled; any change to the spec or code counts."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:12]

    @property
    def adaptive(self) -> bool:
        """Whether the keep-alive policy learns this function's windows (docs/keepalive.md)."""
        return self.idle_timeout == ADAPTIVE

    @property
    def fixed_idle_s(self) -> float:
        """The fixed keep-alive window: ``idle_timeout`` when it is a number; under
        "adaptive", the window used while the history is not representative (300 s for a
        function, 600 s for an executor or a partitioned pool: their models load slowly)."""
        if not self.adaptive:
            return float(self.idle_timeout)
        pooled = self.kind == "executor" or self.partitions > 0
        return FALLBACK_IDLE_S_POOLED if pooled else FALLBACK_IDLE_S

    @property
    def stream(self) -> str:
        return protocol.stream_name(self.name)

    @property
    def event_subjects(self) -> list[str]:
        if self.kind == "executor":
            return []
        return [protocol.event_subject(self.name), *self.subjects]

    def delay(self, attempt: int) -> float:
        """Seconds to wait before re-running after failed attempt ``attempt`` (1-based)."""
        return float(self.backoff[min(attempt, len(self.backoff)) - 1])

    @property
    def capacity(self) -> int:
        """Items one worker holds at once: a running batch and the next one filling."""
        return self.max_batch * 2 if self.kind == "executor" else self.concurrency

    def to_bytes(self) -> bytes:
        d = dataclasses.asdict(self)
        d["subjects"] = list(self.subjects)
        d["uses"] = list(self.uses)
        d["backoff"] = list(self.backoff)
        ordered = {k: d.pop(k) for k in _WIRE_ORDER}
        ordered.update(d)
        if self.adaptive:
            ordered["idle_timeout"] = self.fixed_idle_s
            ordered[_KEEPALIVE_KEY] = ADAPTIVE
        return msgpack.packb(ordered, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_bytes(cls, data: bytes) -> FunctionSpec:
        d = msgpack.unpackb(data, raw=False)
        if d.get(_KEEPALIVE_KEY) == ADAPTIVE:
            d["idle_timeout"] = ADAPTIVE
        known = {f.name for f in dataclasses.fields(cls)}
        # Ignore fields from newer versions so old and new controllers interoperate.
        d = {k: v for k, v in d.items() if k in known}
        d["subjects"] = tuple(d.get("subjects", ()))
        d["uses"] = tuple(d.get("uses", ()))
        if "backoff" in d:
            d["backoff"] = tuple(d["backoff"])
        return cls(**d)

    def validate(self) -> FunctionSpec:
        """Check every option (each group its own), then how they fit together."""
        if not protocol.NAME_RE.match(self.name):
            raise DefinitionError(
                f"function name {self.name!r} is not valid: use lower-case letters, digits, "
                "'_' or '-', starting with a letter (for example name='resize_image')"
            )
        for s in self.subjects:
            _check_subject(s, self.name)
        if len(set(self.subjects)) != len(self.subjects):
            raise DefinitionError(f"subjects= lists a subject twice: {list(self.subjects)}")
        self.check_delivery()
        self.check_scaling()
        self.check_partitioning()
        if self.partitions and self.max_workers < self.partitions:
            raise DefinitionError(
                f"max_workers={self.max_workers} is below max_partitions={self.partitions}: "
                "one request may span that many workers"
            )
        if self.kind == "executor":
            self.check_resources()
            self.check_batching()
        return self


def _check_subject(subject: object, name: str) -> None:
    if not isinstance(subject, str):
        raise DefinitionError(f"subjects= takes strings, got {subject!r}")
    tokens = subject.split(".")
    bad = (
        not subject
        or any(not (t in ("*", ">") or _SUBJECT_TOKEN_RE.match(t)) for t in tokens)
        or (">" in tokens[:-1])
    )
    if bad:
        raise DefinitionError(
            f"{subject!r} is not a valid NATS subject (dot-separated tokens, no spaces; "
            "'*' matches one token, '>' the rest)"
        )
    if tokens[0] in (protocol.EVENT_PREFIX, "shoal", "_INBOX") or subject.startswith("$"):
        raise DefinitionError(
            f"subject {subject!r} is reserved; fn.{name} is already a trigger of this "
            "function, so list only your own subjects (for example 'orders.created')"
        )
