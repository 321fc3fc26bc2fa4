"""``@partitioned``: a model served across several workers, FSD-Inference style.

A partitioned model is a class with three methods:

- ``plan(self, request) -> Plan``: runs in the worker that received the request; validates it
  and says how many partitions serve it and how many bytes the whole model holds;
- ``async shard(self, request, shard: Shard)``: runs once on each of ``Plan.partitions``
  distinct workers; partitions exchange intermediates directly with ``shard.send``,
  ``shard.recv`` and ``shard.exchange`` (no controller hop);
- ``combine(self, request, parts) -> answer``: runs where ``plan`` ran, with what every
  shard returned, in partition order.

Row partitions within layers exchange every step (``shard.exchange``); a pipeline of layer
stages passes one intermediate to the next stage (``shard.send`` / ``shard.recv``); both
may be mixed in one ``shard`` method.
"""

from __future__ import annotations

import inspect
import math

# Runtime imports, not type-checking-only: the decorators' signatures are public, and
# typing.get_type_hints() on them (tools, tests/test_options.py) evaluates these names.
from collections.abc import Callable, Sequence  # noqa: TC003
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from runtime import config
from runtime.define.decorator import ATTR, Definition
from runtime.errors import DefinitionError, InvalidPayload, ModelTooLarge
from runtime.wire.options import gather
from runtime.wire.spec import FunctionSpec

T = TypeVar("T")

MB = 1 << 20


@dataclass(frozen=True)
class Plan:
    """How one request is served: across ``partitions`` workers, for a model of ``model_bytes``."""

    partitions: int
    model_bytes: int = 0  # weights of the whole model; checked against the per-worker budget
    partition_bytes: int = 0  # the largest partition, when they are uneven (0: an even split)


def partitioned(
    *,
    max_partitions: int,
    name: str | None = None,
    worker_memory_mb: int = 0,
    channel: str = "auto",
    subjects: Sequence[str] = (),
    timeout: float = 120.0,
    concurrency: int = 4,
    min_workers: int | None = None,
    max_workers: int | None = None,
    idle_timeout: float | Literal["adaptive"] = "adaptive",
    ack_wait: float = 30.0,
    max_deliver: int = 5,
    retries: int = 0,
    backoff: Sequence[float] = (1.0, 5.0, 30.0),
) -> Callable[[type[T]], type[T]]:
    """Serve a model class partitioned across up to ``max_partitions`` workers.

    ``worker_memory_mb`` is what one worker may hold of the model (0: the worker's
    ``SHOAL_WORKER_MEMORY_MB``, else no limit): a plan whose partitions would each exceed it
    is refused with :class:`~runtime.errors.ModelTooLarge`, which names the partition count
    that fits. ``channel`` is how intermediates travel: ``"auto"`` picks NATS or the object
    store per message with a cost model calibrated on the running cluster; ``"inline"`` and
    ``"object"`` force one. The pool starts from zero like any function and scales to its
    widest plan on the first request, kept warm for ``idle_timeout`` seconds or, with
    ``"adaptive"`` (the default), at its width only when its history says a request is due
    (600 s until that history is representative); ``min_workers`` keeps
    workers warm with no request, e.g. ``max_partitions`` to never load the model on a
    request's path. Other options are those of :func:`~runtime.function`.
    """
    # The signature above declares this decorator's options and defaults; each is a field of
    # an option group (tests/test_options.py checks which, and that the types agree).
    given = gather(locals())
    if isinstance(subjects, str):
        raise DefinitionError(f"subjects= takes a list of subjects: write subjects=[{subjects!r}]")
    if isinstance(max_partitions, bool) or not isinstance(max_partitions, int):
        raise DefinitionError(f"max_partitions must be an int >= 1, got {max_partitions!r}")
    if max_partitions < 1:
        raise DefinitionError(f"max_partitions must be an int >= 1, got {max_partitions!r}")

    def apply(cls: type[T]) -> type[T]:
        if not inspect.isclass(cls):
            raise DefinitionError(
                "@partitioned applies to a class with plan(), async shard() and combine()"
            )
        _check_methods(cls)
        if hasattr(cls, ATTR) and getattr(cls, ATTR).target is cls:
            raise DefinitionError(f"{cls.__qualname__} is already decorated; apply it once")
        warm = 0 if min_workers is None else min_workers
        widest = max(max_partitions, warm) if max_workers is None else max_workers
        spec = FunctionSpec(
            **{**given, "min_workers": warm, "max_workers": widest},
            name=name or cls.__name__.lower(),
            subjects=tuple(subjects),
            partitions=max_partitions,
        ).validate()
        definition = Definition(
            spec=spec, target=cls, is_class=True, wants_ctx=False, partitioned=True
        )
        setattr(cls, ATTR, definition)
        return cls

    return apply


def _check_methods(cls: type) -> None:
    q = cls.__qualname__
    for method, params in (("plan", 1), ("shard", 2), ("combine", 2)):
        fn = getattr(cls, method, None)
        if fn is None or not callable(fn):
            raise DefinitionError(
                f"class {q} needs plan(self, request), async shard(self, request, shard) and "
                f"combine(self, request, parts); {method}() is missing"
            )
        required = [
            p
            for p in list(inspect.signature(fn).parameters.values())[1:]
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(required) != params:
            raise DefinitionError(
                f"{q}.{method} must take {params} argument(s) after self, "
                f"got {[p.name for p in required]}"
            )
    if not inspect.iscoroutinefunction(cls.shard):  # type: ignore[attr-defined]
        raise DefinitionError(
            f"{q}.shard must be 'async def': partitions await each other's intermediates"
        )
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise DefinitionError(
            f"class {q} must be constructible with no arguments; "
            "load state in 'setup(self)' instead of '__init__'"
        ) from None


def memory_budget(spec: FunctionSpec) -> int:
    """Bytes of model one worker may hold (0: no limit)."""
    mb = spec.worker_memory_mb or config.WORKER_MEMORY_MB.get()
    return mb * MB


def check_plan(spec: FunctionSpec, plan: Any, budget: int) -> Plan:
    """Validate what ``plan()`` returned against the deployment's limits."""
    if not isinstance(plan, Plan):
        raise DefinitionError(
            f"{spec.name}.plan() must return runtime.Plan(partitions=..., model_bytes=...), "
            f"got {type(plan).__name__}"
        )
    p = plan.partitions
    if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= spec.partitions:
        raise InvalidPayload(
            f"{spec.name} is served by 1 to {spec.partitions} partitions, not {p!r}"
        )
    largest = max(plan.partition_bytes, math.ceil(plan.model_bytes / p))
    if budget and largest > budget:
        need = max(p + 1, math.ceil(plan.model_bytes / budget))
        where = "unpartitioned" if p == 1 else f"in {p} partitions"
        hint = (
            f"use partitions={need} or more"
            if need <= spec.partitions
            else f"deploy with max_partitions >= {need} (now {spec.partitions})"
        )
        raise ModelTooLarge(
            f"{spec.name}: the model holds {plan.model_bytes / MB:.1f} MB ({largest / MB:.1f} MB "
            f"in its largest partition), too much to serve {where} with {budget / MB:.0f} MB "
            f"per worker (worker_memory_mb): {hint}"
        )
    return plan
