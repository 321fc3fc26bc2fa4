"""A function's options, declared once, in small groups that check their own values.

:class:`~runtime.wire.spec.FunctionSpec` is made of these groups (its fields, flat on the
wire, are theirs), and ``@function``, ``@executor`` and ``@partitioned`` take their options
by these names. A group's ``check_*`` method validates its own fields; constraints between
groups (``partitions`` against ``max_workers``) live in ``FunctionSpec.validate``.

The defaults here are ``@function``'s (and a bare spec's); ``@executor`` and ``@partitioned``
declare their own in their signatures, and tests/test_options.py checks that every
decorator's options are these fields, with these types.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from runtime.errors import DefinitionError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

ENGINES = ("torch", "onnxruntime", "custom")
CHANNELS = ("auto", "inline", "object")
# idle_timeout="adaptive": keep-alive and pre-warm windows learned from the function's own
# history (docs/keepalive.md); until it is representative, the fixed window below.
ADAPTIVE: Literal["adaptive"] = "adaptive"
FALLBACK_IDLE_S = 300.0  # functions' fixed window under "adaptive"
FALLBACK_IDLE_S_POOLED = 600.0  # executors' and partitioned pools' (their models load slowly)


@dataclass(frozen=True)
class Delivery:
    """How each event is delivered, bounded in time and re-run."""

    timeout: float = 60.0  # seconds, per invocation (per item, for an executor)
    ack_wait: float = 10.0  # seconds before an unacknowledged event is redelivered
    max_deliver: int = 5  # deliveries before JetStream gives up on an event
    retries: int = 0  # re-runs after the handler raises or times out, then a dead letter
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0)  # seconds before retry n (last one repeats)

    def check_delivery(self) -> None:
        _positive_seconds("timeout", self.timeout)
        _positive_seconds("ack_wait", self.ack_wait)
        _int_at_least("max_deliver", self.max_deliver, 1)
        _int_at_least("retries", self.retries, 0)
        if self.retries >= self.max_deliver:
            raise DefinitionError(
                f"retries={self.retries} needs max_deliver > retries (got {self.max_deliver}): "
                f"set max_deliver={self.retries + 2} or more"
            )
        if not self.backoff or any(
            isinstance(b, bool) or not isinstance(b, int | float) or b < 0 for b in self.backoff
        ):
            raise DefinitionError(f"backoff must be seconds >= 0, got {list(self.backoff)!r}")


@dataclass(frozen=True)
class Scaling:
    """How many workers serve a function, and how much each takes on at once."""

    concurrency: int = 8  # invocations in flight per worker
    min_workers: int = 0  # kept warm even when idle
    max_workers: int = 4  # cluster-wide ceiling for scale-out
    # Seconds a worker stays warm with nothing to do, or "adaptive": learned per function.
    idle_timeout: float | Literal["adaptive"] = ADAPTIVE

    def check_scaling(self) -> None:
        _int_at_least("concurrency", self.concurrency, 1)
        _int_at_least("min_workers", self.min_workers, 0)
        if not isinstance(self.max_workers, int) or self.max_workers < max(1, self.min_workers):
            raise DefinitionError(
                f"max_workers must be an int >= max(1, min_workers), got {self.max_workers!r}"
            )
        t = self.idle_timeout
        if t != ADAPTIVE and (isinstance(t, bool) or not isinstance(t, int | float) or t < 0):
            raise DefinitionError(
                f'idle_timeout must be "{ADAPTIVE}" or seconds >= 0, got {self.idle_timeout!r}'
            )


@dataclass(frozen=True)
class Batching:
    """An executor's batches: how large, and how long one may wait to fill."""

    max_batch: int = 1
    max_wait_ms: float = 0.0  # how long a batch may wait to fill, from its first item
    latency_target_ms: float | None = None  # if set, batch size adapts to meet it

    def check_batching(self) -> None:
        _int_at_least("max_batch", self.max_batch, 1)
        if not isinstance(self.max_wait_ms, int | float) or self.max_wait_ms < 0:
            raise DefinitionError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        target = self.latency_target_ms
        if target is not None and (not isinstance(target, int | float) or target <= 0):
            raise DefinitionError(f"latency_target_ms must be a positive number, got {target!r}")


@dataclass(frozen=True)
class Partitioning:
    """A partitioned model: the most workers one request spans, how intermediates travel,
    and how much of the model one worker may hold (0: no limit)."""

    partitions: int = 0
    channel: str = "auto"  # "auto" (cost model), "inline" (NATS) or "object" (S3)
    worker_memory_mb: int = 0

    def check_partitioning(self) -> None:
        if not isinstance(self.partitions, int) or not 0 <= self.partitions <= 64:
            raise DefinitionError(f"partitions must be an int in 0..64, got {self.partitions!r}")
        if self.channel not in CHANNELS:
            raise DefinitionError(
                f"channel must be one of {', '.join(CHANNELS)}, got {self.channel!r}"
            )
        _int_at_least("worker_memory_mb", self.worker_memory_mb, 0)


@dataclass(frozen=True)
class Resources:
    """What an executor's model runs on and needs."""

    engine: str = ""  # "torch" | "onnxruntime" | "custom" (executors)
    gpu: int = 0  # GPUs wanted (0: CPU)
    memory_mb: int = 0  # memory the model needs (0: unknown)

    def check_resources(self) -> None:
        if self.engine not in ENGINES:
            raise DefinitionError(
                f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}"
            )
        _int_at_least("gpu", self.gpu, 0)
        _int_at_least("memory_mb", self.memory_mb, 0)


GROUPS: tuple[type, ...] = (Delivery, Scaling, Batching, Partitioning, Resources)


def fields_of(*groups: type) -> tuple[str, ...]:
    """The option names of ``groups``, in declaration order."""
    return tuple(f.name for g in groups for f in dataclasses.fields(g))


OPTIONS = frozenset(fields_of(*GROUPS))


def gather(values: Mapping[str, Any], *, accepted: Iterable[str] | None = None) -> dict[str, Any]:
    """The options among a decorator's arguments, as a spec takes them (sequences as tuples).

    ``values`` may hold other arguments too (a decorator's ``locals()``): only option names
    are kept. With ``accepted`` (a decorator's ``**options``), every name must be one of
    them, else a :class:`DefinitionError` suggests the option meant (a ``TypeError``, as
    Python's own for an unexpected keyword).
    """
    if accepted is not None:
        known = set(accepted)
        for key in values:
            if key not in known:
                raise unknown_option(key, known)
    return {k: tuple(v) if k == "backoff" else v for k, v in values.items() if k in OPTIONS}


def unknown_option(key: str, known: Iterable[str]) -> DefinitionError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f": did you mean {close[0]}=?" if close else f"; it takes {', '.join(sorted(known))}"
    return DefinitionError(f"unknown option {key}={hint}")


def _positive_seconds(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise DefinitionError(f"{what} must be a positive number of seconds, got {value!r}")


def _int_at_least(what: str, value: object, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise DefinitionError(f"{what} must be an int >= {low}, got {value!r}")
