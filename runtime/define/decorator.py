"""The ``@function`` decorator: turns a plain function or a class into a deployable function."""

from __future__ import annotations

import inspect
import typing

# Runtime imports, not type-checking-only: the decorators' signatures are public, and
# typing.get_type_hints() on them (tools, tests/test_options.py) evaluates these names.
from collections.abc import Callable, Sequence  # noqa: TC003
from typing import Any, Literal, TypeVar, overload

from runtime.define.definition import ATTR, Definition, definition_of
from runtime.define.handles import Uses, is_handle_annotation
from runtime.errors import DefinitionError
from runtime.wire.options import Delivery, Scaling, fields_of, gather
from runtime.wire.spec import FunctionSpec

T = TypeVar("T")

__all__ = ["ATTR", "FUNCTION_OPTIONS", "Definition", "definition_of", "executor", "function"]

# @function's options (besides name, subjects, uses and fuse): those of the Delivery and
# Scaling groups, with their defaults. The overload below spells them out for type checkers
# and editors; tests/test_options.py fails when it and the groups drift apart.
FUNCTION_OPTIONS = fields_of(Delivery, Scaling)


@overload
def function(target: T, /) -> T: ...


@overload
def function(
    *,
    name: str | None = None,
    subjects: Sequence[str] = (),
    timeout: float = 60.0,
    ack_wait: float = 10.0,
    max_deliver: int = 5,
    retries: int = 0,
    backoff: Sequence[float] = (1.0, 5.0, 30.0),
    concurrency: int = 8,
    min_workers: int = 0,
    max_workers: int = 4,
    idle_timeout: float | Literal["adaptive"] = "adaptive",
    uses: Sequence[type] = (),
    fuse: bool = False,
) -> Callable[[T], T]: ...


def function(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    subjects: Sequence[str] = (),
    uses: Sequence[type] = (),
    fuse: bool = False,
    **options: Any,
) -> Any:
    """Make a function (sync or async) or a class deployable.

    Bare ``@function`` names it after the function and triggers it on ``fn.<name>``.
    A class is instantiated once per worker: its ``setup()`` (sync or async) loads expensive
    state, and its ``__call__(self, event)`` handles each event. A handler may take a
    keyword ``ctx`` parameter to receive the invocation's :class:`~runtime.Context`.

    Options: ``name``, ``subjects`` (extra trigger subjects), ``timeout`` (seconds per
    invocation), ``concurrency`` (in flight per worker), ``min_workers``/``max_workers``,
    ``idle_timeout`` (seconds a worker stays warm; ``"adaptive"``, the default, learns from
    the function's own idle times when to unload it and when to load it again ahead of the
    next event: docs/keepalive.md), ``ack_wait`` and ``max_deliver``;
    ``retries`` re-runs a durable event whose handler raised or timed out, waiting
    ``backoff[n]`` seconds (JetStream's delayed redelivery), then dead-letters it.

    A handler may choose a durable event's fate itself: ``raise Retry(delay=30)`` runs it
    again after 30 seconds (``backoff`` with no delay), counted against ``max_deliver``, and
    dead-letters it on the last delivery; ``raise Reject("why")`` dead-letters it now,
    skipping ``retries``. A request/reply call is never redelivered: its caller gets the
    :class:`~runtime.Retry` or :class:`~runtime.Reject` error.

    A handler receives each :func:`executor` it awaits as a parameter whose default is
    :func:`~runtime.uses`, typed :class:`~runtime.Executor`:
    ``async def f(event, model: Executor[Item, Result] = uses(Model))``, then
    ``await model(item)`` for one item or ``await model.map(items)`` for many. (The older
    ``uses=[Model]`` with a parameter annotated ``model: Model`` still runs, but a type
    checker cannot follow it.) ``fuse=True`` runs those executors inside the handler's
    worker instead of in their own pool.
    """
    if isinstance(target, str):
        raise DefinitionError(
            f"@function({target!r}) is ambiguous: write @function(name={target!r})"
        )
    if isinstance(subjects, str):
        raise DefinitionError(f"subjects= takes a list of subjects: write subjects=[{subjects!r}]")
    given = gather(options, accepted=FUNCTION_OPTIONS)

    def apply(obj: T) -> T:
        _define(obj, uses=tuple(uses), fuse=fuse, name=name, subjects=tuple(subjects), **given)
        return obj

    if target is None:
        return apply
    return apply(target)


def _define(obj: Any, *, name: str | None, uses: tuple[Any, ...] = (), **options: Any) -> None:
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
    used = _check_uses(uses)
    bound = _bind_executors(handler, obj.__qualname__, used, skip_self=is_class)
    wants_ctx = _check_signature(
        handler, obj.__qualname__, skip_self=is_class, bound={p for p, _ in bound}
    )
    if name is None:
        name = obj.__name__.lower()
    # uses= first, in its order (the spec, and so its version, as before), then the others.
    uses_names = tuple(
        dict.fromkeys([*(d.spec.name for d in used), *(d.spec.name for _, d in bound)])
    )
    spec = FunctionSpec(name=name, uses=uses_names, **options).validate()
    setattr(
        obj,
        ATTR,
        Definition(spec=spec, target=obj, is_class=is_class, wants_ctx=wants_ctx, executors=bound),
    )


def _check_uses(uses: tuple[Any, ...]) -> list[Definition]:
    used = []
    for u in uses:
        d = definition_of(u)
        if d is None or d.spec.kind != "executor":
            raise DefinitionError(
                f"uses= takes classes decorated with @executor, got {u!r}: "
                "decorate the model class with @executor(...)"
            )
        used.append(d)
    return used


def _bind_executors(
    fn: Callable[..., Any], qualname: str, used: list[Definition], *, skip_self: bool
) -> tuple[tuple[str, Definition], ...]:
    """Match each executor to the handler parameter that receives it: a parameter whose
    default is ``uses(Model)``, or (the older form) one annotated with a class in uses=."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable string annotations: fall back to their text
        hints = dict(getattr(fn, "__annotations__", {}))
    params = list(inspect.signature(fn).parameters.values())[1 + int(skip_self) :]
    bound: list[tuple[str, Definition]] = []
    for p in params:
        d = _executor_of(p, hints.get(p.name), used, qualname)
        if d is not None:
            bound.append((p.name, d))
    for u in used:
        if all(d.target is not u.target for _, d in bound):
            raise DefinitionError(
                f"{qualname} declares uses=[{u.target.__name__}] but no parameter receives it: "
                f"add a parameter 'model: Executor[Item, Result] = uses({u.target.__name__})'"
            )
    if bound and not inspect.iscoroutinefunction(fn):
        raise DefinitionError(
            f"{qualname} uses executors, so it must be 'async def' (it awaits them)"
        )
    return tuple(bound)


def _executor_of(
    p: inspect.Parameter, hint: Any, used: list[Definition], qualname: str
) -> Definition | None:
    """The executor parameter ``p`` receives, if any."""
    if isinstance(p.default, Uses):
        return p.default.definition
    if is_handle_annotation(hint):
        raise DefinitionError(
            f"{qualname}'s parameter {p.name!r} is an Executor but does not say which: "
            f"write '{p.name}: Executor[...] = uses(Model)' with the @executor class"
        )
    d = definition_of(hint) if hint is not None and not isinstance(hint, str) else None
    if d is None and isinstance(hint, str):
        d = next((u for u in used if u.target.__name__ == hint.split(".")[-1]), None)
    if d is None or d.spec.kind != "executor":
        return None
    if all(u.target is not d.target for u in used):
        raise DefinitionError(
            f"{qualname} awaits executor {d.target.__name__} through {p.name!r} but does not "
            f"declare it: write '{p.name}: Executor[Item, Result] = uses({d.target.__name__})'"
        )
    return d


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


def _check_signature(
    fn: Callable[..., Any], qualname: str, *, skip_self: bool, bound: set[str]
) -> bool:
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
        if p.name == "ctx" or p.name in bound or p.default is not p.empty:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        raise DefinitionError(
            f"{qualname} has a required parameter {p.name!r}; a handler takes the event, "
            "optionally 'ctx' (the invocation context), and the executors it declares in "
            "uses=[...] as parameters annotated with their class"
        )
    return wants_ctx


def executor(
    *,
    name: str | None = None,
    engine: str = "custom",
    gpu: int = 0,
    memory_mb: int = 0,
    max_batch: int = 8,
    max_wait_ms: float = 5.0,
    latency_target_ms: float | None = None,
    timeout: float = 60.0,
    min_workers: int = 0,
    max_workers: int = 2,
    idle_timeout: float | Literal["adaptive"] = "adaptive",
) -> Callable[[type[T]], type[T]]:
    """Make a class a model executor: loaded once per executor worker, called with batches.

    The class defines ``setup(self)`` (load weights; ``self.device`` is "cuda" or "cpu" by
    then, and ``self.model_cache`` a :class:`runtime.models.ModelCache` for models prepared
    once) and ``__call__(self, batch)`` taking a list of items and returning a list of results
    in the same order. Items from many handler workers are batched together, up to
    ``max_batch`` or ``max_wait_ms``; with ``latency_target_ms`` the batch size adapts to the
    measured service time to meet it. ``engine`` is "torch", "onnxruntime" or "custom";
    ``gpu`` and ``memory_mb`` declare resources; ``timeout`` bounds one item, end to end.
    ``idle_timeout``: seconds an idle executor worker stays loaded, or ``"adaptive"`` (the
    default): loaded while the handlers that call it are, and as its own history says, with
    a fixed 600 s window until that history is representative (docs/keepalive.md).
    """
    # The signature above declares this decorator's options and defaults; each is a field of
    # an option group (tests/test_options.py checks which, and that the types agree).
    given = gather(locals())

    def apply(cls: type[T]) -> type[T]:
        if not inspect.isclass(cls):
            raise DefinitionError(
                "@executor applies to a class with setup(self) and __call__(self, batch)"
            )
        call = _check_class(cls)
        params = [
            p
            for p in list(inspect.signature(call).parameters.values())[1:]
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) != 1:
            raise DefinitionError(
                f"{cls.__qualname__}.__call__ must take one batch: "
                "def __call__(self, batch): return [result for item in batch]"
            )
        if inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call):
            raise DefinitionError(
                f"{cls.__qualname__}.__call__ must return a list of results, not yield them"
            )
        if hasattr(cls, ATTR) and getattr(cls, ATTR).target is cls:
            raise DefinitionError(f"{cls.__qualname__} is already decorated; apply it once")
        spec = FunctionSpec(
            name=name or cls.__name__.lower(), kind="executor", concurrency=max_batch, **given
        ).validate()
        setattr(cls, ATTR, Definition(spec=spec, target=cls, is_class=True, wants_ctx=False))
        return cls

    return apply
