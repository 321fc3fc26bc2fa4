"""Typed executor handles: how a handler declares, and awaits, the executors it uses.

A handler names each executor it uses as a parameter whose default is :func:`uses`::

    @executor(name="minilm", max_batch=32)
    class MiniLM:
        def __call__(self, batch: list[str]) -> list[list[float]]: ...

    @function
    async def embed(event: str, minilm: Executor[str, list[float]] = uses(MiniLM)) -> ...:
        one = await minilm(event)                  # one item in, its result out
        many = await minilm.map(["a", "b", "c"])   # one message, results in order

``uses(MiniLM)`` is typed ``Executor[str, list[float]]`` from ``MiniLM.__call__``'s batch
signature, so a type checker refuses a parameter annotated with other types, and an item of
the wrong type. When Shoal runs the handler, the parameter receives the executor's handle
(remote, or in-process when fused); called directly, outside Shoal, the placeholder says so.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, overload

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
    ``await h.map(items)`` is the results of many, in order (sent to a remote executor as one
    message, whose items join its batches one by one)."""

    @abstractmethod
    async def __call__(self, item: In) -> Out:
        """The executor's result for one item (batched with others by the executor)."""

    @overload
    async def map(self, items: Iterable[In]) -> list[Out]: ...

    @overload
    async def map(
        self, items: Iterable[In], *, return_errors: Literal[True]
    ) -> list[Out | ShoalError]: ...

    @overload
    async def map(
        self, items: Iterable[In], *, return_errors: bool
    ) -> list[Out] | list[Out | ShoalError]: ...

    async def map(
        self, items: Iterable[In], *, return_errors: bool = False
    ) -> list[Out] | list[Out | ShoalError]:
        """Results for ``items``, in their order.

        A remote executor gets them in as few messages as its ``max_batch`` allows, and its
        batcher runs them as separate items; an in-process one queues them all at once.
        If items fail, the first Shoal error among them, in item order, is raised
        (``ExecutorUnavailable``, ``FunctionError``...), never an exception group; with
        ``return_errors=True`` each failed item's typed error takes its place in the list
        instead, and the other items' results are kept.
        """
        outcomes = await self._outcomes(list(items))
        if return_errors:
            return outcomes
        for outcome in outcomes:
            if isinstance(outcome, ShoalError):
                raise outcome
        return outcomes  # no errors among them

    async def _outcomes(self, items: list[In]) -> list[Out | ShoalError]:
        """Each item's result or Shoal error, in order; here, one call per item, concurrently.
        Handles that can send many items at once override this."""
        results: list[Any] = [None] * len(items)

        async def one(i: int) -> None:
            try:
                results[i] = await self(items[i])
            except ShoalError as e:
                results[i] = e

        try:
            async with anyio.create_task_group() as tg:
                for i in range(len(items)):
                    tg.start_soon(one, i)
        except ExceptionGroup as group:  # not a Shoal error: the first Shoal error, else it
            shoal = next((r for r in results if isinstance(r, ShoalError)), None)
            raise (shoal or first_error(group)) from None
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
