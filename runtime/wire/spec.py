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

ENGINES = ("torch", "onnxruntime", "custom")
CHANNELS = ("auto", "inline", "object")

_SUBJECT_TOKEN_RE = re.compile(r"^[^\s.*>]+$")


@dataclass(frozen=True)
class FunctionSpec:
    """A function's deployable description; stored msgpack-encoded in the functions bucket."""

    name: str
    subjects: tuple[str, ...] = ()  # extra trigger subjects besides fn.<name>
    timeout: float = 60.0  # seconds, per invocation
    concurrency: int = 8  # invocations in flight per worker
    min_workers: int = 0  # kept warm even when idle
    max_workers: int = 4  # cluster-wide ceiling for scale-out
    idle_timeout: float = 300.0  # seconds a worker stays warm with nothing to do
    ack_wait: float = 10.0  # seconds before an unacknowledged event is redelivered
    max_deliver: int = 5  # deliveries before JetStream gives up on an event
    retries: int = 0  # re-runs after the handler raises or times out, then a dead letter
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0)  # seconds before retry n (last one repeats)
    # Handlers: the executors they await, and whether to run them in-process ("fused").
    uses: tuple[str, ...] = ()
    fuse: bool = False
    # Executors (kind="executor"): the model side, batched, on a GPU when there is one.
    kind: str = "function"  # or "executor"
    engine: str = ""  # "torch" | "onnxruntime" | "custom"
    gpu: int = 0  # GPUs wanted (0: CPU)
    memory_mb: int = 0  # memory the model needs (0: unknown)
    max_batch: int = 1
    max_wait_ms: float = 0.0  # how long a batch may wait to fill, from its first item
    latency_target_ms: float | None = None  # if set, batch size adapts to meet it
    # Partitioned models (partitions > 0): the most workers one request spans, how
    # intermediates travel, and how much of the model one worker may hold (0: no limit).
    partitions: int = 0
    channel: str = "auto"  # "auto" (cost model), "inline" (NATS) or "object" (S3)
    worker_memory_mb: int = 0
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
        return msgpack.packb(d, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_bytes(cls, data: bytes) -> FunctionSpec:
        d = msgpack.unpackb(data, raw=False)
        known = {f.name for f in dataclasses.fields(cls)}
        # Ignore fields from newer versions so old and new controllers interoperate.
        d = {k: v for k, v in d.items() if k in known}
        d["subjects"] = tuple(d.get("subjects", ()))
        d["uses"] = tuple(d.get("uses", ()))
        if "backoff" in d:
            d["backoff"] = tuple(d["backoff"])
        return cls(**d)

    def validate(self) -> FunctionSpec:
        if not protocol.NAME_RE.match(self.name):
            raise DefinitionError(
                f"function name {self.name!r} is not valid: use lower-case letters, digits, "
                "'_' or '-', starting with a letter (for example name='resize_image')"
            )
        for s in self.subjects:
            _check_subject(s, self.name)
        if len(set(self.subjects)) != len(self.subjects):
            raise DefinitionError(f"subjects= lists a subject twice: {list(self.subjects)}")
        _positive("timeout", self.timeout)
        _positive("ack_wait", self.ack_wait)
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise DefinitionError(f"concurrency must be an int >= 1, got {self.concurrency!r}")
        if not isinstance(self.min_workers, int) or self.min_workers < 0:
            raise DefinitionError(f"min_workers must be an int >= 0, got {self.min_workers!r}")
        if not isinstance(self.max_workers, int) or self.max_workers < max(1, self.min_workers):
            raise DefinitionError(
                f"max_workers must be an int >= max(1, min_workers), got {self.max_workers!r}"
            )
        if not isinstance(self.idle_timeout, int | float) or self.idle_timeout < 0:
            raise DefinitionError(f"idle_timeout must be seconds >= 0, got {self.idle_timeout!r}")
        if not isinstance(self.max_deliver, int) or not (self.max_deliver >= 1):
            raise DefinitionError(f"max_deliver must be an int >= 1, got {self.max_deliver!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise DefinitionError(f"retries must be an int >= 0, got {self.retries!r}")
        if self.retries >= self.max_deliver:
            raise DefinitionError(
                f"retries={self.retries} needs max_deliver > retries (got {self.max_deliver}): "
                f"set max_deliver={self.retries + 2} or more"
            )
        if not self.backoff or any(
            isinstance(b, bool) or not isinstance(b, int | float) or b < 0 for b in self.backoff
        ):
            raise DefinitionError(f"backoff must be seconds >= 0, got {list(self.backoff)!r}")
        if not isinstance(self.partitions, int) or not 0 <= self.partitions <= 64:
            raise DefinitionError(f"partitions must be an int in 0..64, got {self.partitions!r}")
        if self.channel not in CHANNELS:
            raise DefinitionError(
                f"channel must be one of {', '.join(CHANNELS)}, got {self.channel!r}"
            )
        if self.partitions and self.max_workers < self.partitions:
            raise DefinitionError(
                f"max_workers={self.max_workers} is below max_partitions={self.partitions}: "
                "one request may span that many workers"
            )
        if not isinstance(self.worker_memory_mb, int) or self.worker_memory_mb < 0:
            raise DefinitionError(
                f"worker_memory_mb must be an int >= 0, got {self.worker_memory_mb!r}"
            )
        if self.kind == "executor":
            if self.engine not in ENGINES:
                raise DefinitionError(
                    f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}"
                )
            if not isinstance(self.max_batch, int) or self.max_batch < 1:
                raise DefinitionError(f"max_batch must be an int >= 1, got {self.max_batch!r}")
            if not isinstance(self.max_wait_ms, int | float) or self.max_wait_ms < 0:
                raise DefinitionError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
            if self.latency_target_ms is not None and (
                not isinstance(self.latency_target_ms, int | float) or self.latency_target_ms <= 0
            ):
                raise DefinitionError(
                    f"latency_target_ms must be a positive number, got {self.latency_target_ms!r}"
                )
            if not isinstance(self.gpu, int) or self.gpu < 0:
                raise DefinitionError(f"gpu must be an int >= 0, got {self.gpu!r}")
        return self


def _positive(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise DefinitionError(f"{what} must be a positive number of seconds, got {value!r}")


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
