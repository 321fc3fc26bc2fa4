"""Typed executor handles: how a handler declares, and awaits, the executors it uses.

A handler names each executor it uses as a parameter whose default is :func:`uses`::

    @executor(name="minilm", max_batch=32)
    class MiniLM:
        def __call__(self, batch: list[str]) -> list[list[float]]: ...

    @function
    async def embed(event: str, minilm: Executor[str, list[float]] = uses(MiniLM)) -> ...:
        one = await minilm(event)                  # one item in, its result out
        many = await minilm.map(["a", "b", "c"])   # concurrently, results in order

``uses(MiniLM)`` is typed ``Executor[str, list[float]]`` from ``MiniLM.__call__``'s batch
signature, so a type checker refuses a parameter annotated with other types, and an item of
the wrong type. When Shoal runs the handler, the parameter receives the executor's handle
(remote, or in-process when fused); called directly, outside Shoal, the placeholder says so.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import anyio

from runtime.define.definition import Definition, definition_of
from runtime.errors import DefinitionError, ShoalError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)
Item = TypeVar("Item")
Result = TypeVar("Result", covariant=True)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


class Executor(ABC, Generic[In, Out]):
    """A handle on an ``@executor``: ``await h(item)`` is its result for one item;
    ``await h.map(items)`` runs the items concurrently and returns their results in order."""

    @abstractmethod
    async def __call__(self, item: In) -> Out:
        """The executor's result for one item (batched with others by the executor)."""

    async def map(self, items: Iterable[In]) -> list[Out]:
        """Results for ``items``, in their order, the calls made concurrently.

        If calls fail, the first Shoal error among them is raised (``ExecutorUnavailable``,
        ``FunctionError``...), else the first error: never an exception group.
        """
        todo = list(items)
        results: list[Any] = [None] * len(todo)

        async def one(i: int) -> None:
            results[i] = await self(todo[i])

        try:
            async with anyio.create_task_group() as tg:
                for i in range(len(todo)):
                    tg.start_soon(one, i)
        except ExceptionGroup as group:
            raise first_error(group) from None
        return results


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first :class:`ShoalError` in a (nested) exception group, else its first error."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop(0)
        if isinstance(e, BaseExceptionGroup):
            stack[:0] = list(e.exceptions)
        else:
            leaves.append(e)
    return next((e for e in leaves if isinstance(e, ShoalError)), leaves[0] if leaves else group)


class SyncModel(Protocol[Item, Result]):
    """An ``@executor`` class whose ``__call__`` takes a batch and returns its results."""

    def __call__(self, batch: list[Item], /) -> Sequence[Result]: ...


class AsyncModel(Protocol[Item, Result]):
    """An ``@executor`` class whose ``async __call__`` takes a batch and returns its results."""

    async def __call__(self, batch: list[Item], /) -> Sequence[Result]: ...


class Uses(Executor[Any, Any]):
    """The default of a handler parameter that receives an executor (see :func:`uses`)."""

    def __init__(self, definition: Definition) -> None:
        self.definition = definition

    async def __call__(self, item: Any) -> Any:
        name = self.definition.target.__name__
        raise DefinitionError(
            f"uses({name}) stands for the executor until Shoal runs the handler; to call the "
            "handler in a test, run it with runtime.testing.TestApp (or pass a handle)"
        )

    def __repr__(self) -> str:
        return f"uses({self.definition.target.__name__})"


@overload
def uses(model: type[AsyncModel[I, R]], /) -> Executor[I, R]: ...


@overload
def uses(model: type[SyncModel[I, R]], /) -> Executor[I, R]: ...


def uses(model: Any, /) -> Any:
    """Declare that a handler parameter receives the ``@executor`` class ``model``::

        async def f(event: str, model: Executor[str, float] = uses(Model)) -> float: ...

    Typed ``Executor[Item, Result]`` after ``model.__call__(self, batch: list[Item]) ->
    list[Result]``.
    """
    d = definition_of(model)
    if d is None or d.spec.kind != "executor":
        raise DefinitionError(
            f"uses() takes a class decorated with @executor, got {model!r}: "
            "decorate the model class with @executor(...)"
        )
    return Uses(d)


def is_handle_annotation(hint: object) -> bool:
    """Whether a parameter is annotated ``Executor[...]`` (resolved or as text)."""
    if isinstance(hint, str):
        return hint.split("[")[0].split(".")[-1] == "Executor"
    origin = getattr(hint, "__origin__", hint)
    return isinstance(origin, type) and issubclass(origin, Executor)
