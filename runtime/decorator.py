"""The ``@function`` decorator: turns a plain function or a class into a deployable function."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .errors import DefinitionError
from .spec import FunctionSpec

T = TypeVar("T")

ATTR = "__shoal__"


@dataclass(frozen=True)
class Definition:
    """What ``@function`` attaches to its target: the spec and how to call the target."""

    spec: FunctionSpec
    target: Any  # the decorated function or class, returned unchanged to the author
    is_class: bool
    wants_ctx: bool


@overload
def function(target: T, /) -> T: ...


@overload
def function(
    *,
    name: str | None = None,
    subjects: Sequence[str] = (),
    timeout: float = 60.0,
    concurrency: int = 8,
    min_workers: int = 0,
    max_workers: int = 4,
    idle_timeout: float = 300.0,
    ack_wait: float = 10.0,
    max_deliver: int = 5,
) -> Callable[[T], T]: ...


def function(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    subjects: Sequence[str] = (),
    timeout: float = 60.0,
    concurrency: int = 8,
    min_workers: int = 0,
    max_workers: int = 4,
    idle_timeout: float = 300.0,
    ack_wait: float = 10.0,
    max_deliver: int = 5,
) -> Any:
    """Make a function (sync or async) or a class deployable.

    Bare ``@function`` names it after the function and triggers it on ``fn.<name>``.
    A class is instantiated once per worker: its ``setup()`` (sync or async) loads expensive
    state, and its ``__call__(self, event)`` handles each event. A handler may take a
    keyword ``ctx`` parameter to receive the invocation's :class:`~runtime.Context`.

    Options: ``name``, ``subjects`` (extra trigger subjects), ``timeout`` (seconds per
    invocation), ``concurrency`` (in flight per worker), ``min_workers``/``max_workers``,
    ``idle_timeout`` (seconds a worker stays warm), ``ack_wait`` and ``max_deliver``.
    """
    if isinstance(target, str):
        raise DefinitionError(
            f"@function({target!r}) is ambiguous: write @function(name={target!r})"
        )
    if isinstance(subjects, str):
        raise DefinitionError(f"subjects= takes a list of subjects: write subjects=[{subjects!r}]")

    def apply(obj: T) -> T:
        _define(
            obj,
            name=name,
            subjects=tuple(subjects),
            timeout=timeout,
            concurrency=concurrency,
            min_workers=min_workers,
            max_workers=max_workers,
            idle_timeout=idle_timeout,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
        )
        return obj

    if target is None:
        return apply
    return apply(target)


def _define(obj: Any, *, name: str | None, **options: Any) -> None:
    if hasattr(obj, ATTR) and getattr(obj, ATTR).target is obj:
        raise DefinitionError(f"{obj!r} is already decorated with @function; apply it once")
    is_class = inspect.isclass(obj)
    if is_class:
        handler = _check_class(obj)
    elif callable(obj) and (inspect.isfunction(obj) or inspect.ismethod(obj)):
        handler = obj
    else:
        raise DefinitionError(
            f"@function applies to a function or a class, not {type(obj).__name__}; "
            "write @function above a 'def' or a 'class'"
        )
    if inspect.isgeneratorfunction(handler) or inspect.isasyncgenfunction(handler):
        raise DefinitionError(
            f"{obj.__qualname__} is a generator; a function returns one result: "
            "use 'return' instead of 'yield'"
        )
    wants_ctx = _check_signature(handler, obj.__qualname__, skip_self=is_class)
    if name is None:
        name = obj.__name__.lower()
    spec = FunctionSpec(name=name, **options).validate()
    setattr(obj, ATTR, Definition(spec=spec, target=obj, is_class=is_class, wants_ctx=wants_ctx))


def _check_class(cls: type) -> Callable[..., Any]:
    if not any("__call__" in k.__dict__ for k in cls.__mro__[:-1]):
        raise DefinitionError(
            f"class {cls.__qualname__} needs a '__call__(self, event)' method that handles "
            "one event (and may load state in 'setup(self)')"
        )
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise DefinitionError(
            f"class {cls.__qualname__} must be constructible with no arguments; "
            "load state in 'setup(self)' instead of '__init__'"
        ) from None
    setup = getattr(cls, "setup", None)
    if setup is not None:
        params = list(inspect.signature(setup).parameters.values())[1:]
        if any(
            p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
        ):
            raise DefinitionError(f"{cls.__qualname__}.setup must take only 'self'")
    return cls.__call__


def _check_signature(fn: Callable[..., Any], qualname: str, *, skip_self: bool) -> bool:
    params = list(inspect.signature(fn).parameters.values())
    if skip_self:
        params = params[1:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise DefinitionError(
            f"{qualname} must take the event as its first parameter: def {fn.__name__}(event)"
        )
    wants_ctx = any(p.name == "ctx" for p in params[1:])
    for p in params[1:]:
        if p.name == "ctx" or p.default is not p.empty:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        raise DefinitionError(
            f"{qualname} has a required parameter {p.name!r}; a handler takes the event and "
            "optionally 'ctx' (the invocation context): give it a default or remove it"
        )
    return wants_ctx


def definition_of(obj: Any) -> Definition | None:
    """The :class:`Definition` attached by ``@function``, or None."""
    d = getattr(obj, ATTR, None)
    return d if isinstance(d, Definition) and d.target is obj else None
