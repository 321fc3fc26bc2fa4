"""What a decorator attaches to the function, class or model it makes deployable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.wire.spec import FunctionSpec

ATTR = "__shoal__"


@dataclass(frozen=True)
class Definition:
    """What ``@function`` attaches to its target: the spec and how to call the target."""

    spec: FunctionSpec
    target: Any  # the decorated function or class, returned unchanged to the author
    is_class: bool
    wants_ctx: bool
    executors: tuple[tuple[str, Definition], ...] = ()  # (parameter name, executor) pairs
    partitioned: bool = False  # a @partitioned model: plan/shard/combine instead of __call__


def definition_of(obj: Any) -> Definition | None:
    """The :class:`Definition` attached by ``@function``, or None."""
    d = getattr(obj, ATTR, None)
    return d if isinstance(d, Definition) and d.target is obj else None
