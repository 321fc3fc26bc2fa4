"""Typed executor handles: uses(Model) binds, .map fans out in order, and mypy --strict checks
user code written in the documented pattern."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from mypy import api as mypy_api

from runtime import (
    DefinitionError,
    Executor,
    ExecutorUnavailable,
    FunctionError,
    executor,
    function,
    uses,
)
from runtime.define.decorator import definition_of
from runtime.define.handles import first_error
from runtime.worker.batching import Batcher
from runtime.worker.executors import LocalExecutor

ROOT = Path(__file__).parent.parent


@executor(name="pairs", max_batch=4, max_wait_ms=20)
class Pairs:
    def __call__(self, batch: list[int]) -> list[tuple[int, int]]:
        if any(n < 0 for n in batch):
            raise ValueError("negative item")
        return [(n * 2, len(batch)) for n in batch]


def test_uses_binds_the_parameter_and_names_the_executor_in_the_spec() -> None:
    @function
    async def handler(event: int, pairs: Executor[int, tuple[int, int]] = uses(Pairs)) -> int:
        return (await pairs(event))[0]

    d = definition_of(handler)
    assert d is not None and d.spec.uses == ("pairs",)
    assert [(p, e.target) for p, e in d.executors] == [("pairs", Pairs)]


def test_handle_misuse_is_refused_with_the_pattern_to_write() -> None:
    with pytest.raises(DefinitionError, match="decorated with @executor"):
        uses(int)  # type: ignore[arg-type]

    with pytest.raises(DefinitionError, match=r"= uses\(Model\)"):

        @function
        async def unbound(event: int, pairs: Executor[int, int]) -> int:
            return await pairs(event)

    with pytest.raises(DefinitionError, match="must be 'async def'"):

        @function
        def sync(event: int, pairs: Executor[int, Any] = uses(Pairs)) -> int:
            return event


@pytest.mark.anyio
async def test_the_placeholder_says_how_to_run_the_handler() -> None:
    @function
    async def handler(event: int, pairs: Executor[int, tuple[int, int]] = uses(Pairs)) -> int:
        return (await pairs(event))[0]

    with pytest.raises(DefinitionError, match="TestApp"):
        await handler(1)


@pytest.mark.anyio
async def test_map_returns_results_in_order_batched_together() -> None:
    batcher = Batcher(Pairs(), max_batch=4, max_wait=0.02)
    handle = LocalExecutor(batcher)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        got = await handle.map(range(10))
        assert [v for v, _ in got] == [2 * n for n in range(10)]
        assert max(size for _, size in got) > 1  # the calls were in flight together
        assert await handle.map([]) == []
        with pytest.raises(FunctionError, match="negative item"):  # not an exception group
            await handle.map([1, -1, 2])
        tg.cancel_scope.cancel()
    batcher.close()


class Flaky(Executor[int, int]):
    """Item 1 fails with a plain error; item 3, shielded from the cancellation that follows,
    then fails with a Shoal error: the task group holds both, the plain one first."""

    def __init__(self) -> None:
        self.failed = anyio.Event()

    async def __call__(self, item: int) -> int:
        if item == 1:
            self.failed.set()
            raise ValueError("plain")
        if item == 3:
            with anyio.CancelScope(shield=True):
                await self.failed.wait()
            raise ExecutorUnavailable("no executor")
        return item


@pytest.mark.anyio
async def test_map_raises_the_first_shoal_error_not_a_group() -> None:
    with pytest.raises(ExecutorUnavailable, match="no executor"):
        await Flaky().map([0, 1, 2, 3])
    with pytest.raises(ValueError, match="plain"):  # no Shoal error: the first one
        await Flaky().map([0, 1])
    assert await Flaky().map([0, 2, 4]) == [0, 2, 4]


def test_first_error_looks_into_nested_groups() -> None:
    plain, shoal = ValueError("a"), FunctionError("b")
    nested = ExceptionGroup("outer", [plain, ExceptionGroup("inner", [KeyError("c"), shoal])])
    assert first_error(nested) is shoal
    assert first_error(ExceptionGroup("x", [plain, KeyError("c")])) is plain


USER_MODULE = """
    from runtime import Executor, executor, function, uses


    @executor(name="lengths", max_batch=8)
    class Lengths:
        def setup(self) -> None:
            self.unit = 1

        def __call__(self, batch: list[str]) -> list[int]:
            return [len(text) * self.unit for text in batch]


    @function
    async def measure(
        event: dict[str, str], lengths: Executor[str, int] = uses(Lengths)
    ) -> dict[str, int]:
        one = await lengths(event["text"])
        many = await lengths.map(event["text"].split())
        return {"one": one, "words": sum(many)}
"""

WRONG_ITEM = """
    @function
    async def wrong_item(event: int, lengths: Executor[str, int] = uses(Lengths)) -> int:
        return await lengths(event)
"""

WRONG_HANDLE = """
    @function
    async def wrong_handle(event: str, lengths: Executor[str, str] = uses(Lengths)) -> str:
        return await lengths(event)
"""


def _mypy(tmp_path: Path, source: str) -> tuple[str, int]:
    (tmp_path / "user.py").write_text(textwrap.dedent(source))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\nignore_missing_imports = True\n")
    out, err, status = mypy_api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--follow-imports=silent",
            str(tmp_path / "user.py"),
        ]
    )
    return out + err, status


def test_mypy_strict_accepts_the_documented_pattern_and_refuses_wrong_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # mypy finds the runtime package from here
    out, status = _mypy(tmp_path, USER_MODULE)
    assert status == 0, out
    out, status = _mypy(
        tmp_path,
        textwrap.dedent(USER_MODULE) + textwrap.dedent(WRONG_ITEM) + textwrap.dedent(WRONG_HANDLE),
    )
    assert status == 1
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 2, out
    assert 'has incompatible type "int"; expected "str"' in errors[0]
    assert "uses" in errors[1] and "Lengths" in errors[1]
