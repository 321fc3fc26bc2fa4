"""@function validates what it is given when applied, with messages that say what to write."""

from __future__ import annotations

import pytest

from runtime import DefinitionError, InvalidPayload, ModelTooLarge, Plan, function, partitioned
from runtime.define.decorator import definition_of
from runtime.define.partitioned import check_plan
from runtime.wire.spec import FunctionSpec


def test_bare_and_called_forms() -> None:
    @function
    def echo(event):
        return event

    @function(name="orders", subjects=["orders.created"], timeout=30, concurrency=8)
    async def on_order(event):
        return event

    assert echo({"a": 1}) == {"a": 1}  # still a plain function for the author's own tests
    d = definition_of(echo)
    assert d is not None and d.spec.name == "echo" and d.spec.event_subjects == ["fn.echo"]
    o = definition_of(on_order)
    assert o is not None
    assert o.spec.event_subjects == ["fn.orders", "orders.created"]
    assert (o.spec.timeout, o.spec.concurrency) == (30, 8)


def test_class_with_setup() -> None:
    @function(name="model")
    class Model:
        def setup(self) -> None:
            self.w = 2

        def __call__(self, event: int) -> int:
            return event * self.w

    d = definition_of(Model)
    assert d is not None and d.is_class and not d.wants_ctx


def test_ctx_parameter_is_detected() -> None:
    @function
    def with_ctx(event, ctx=None):
        return ctx

    d = definition_of(with_ctx)
    assert d is not None and d.wants_ctx


def fresh():
    def handler(event):
        return event

    return handler


@pytest.mark.parametrize(
    ("apply", "hint"),
    [
        (lambda: function("echo"), "name='echo'"),
        (lambda: function(subjects="a.b"), "subjects=['a.b']"),
        (lambda: function(name="Bad Name")(fresh()), "lower-case"),
        (lambda: function(lambda e: e), "name="),
        (lambda: function(subjects=["fn.other"])(fresh()), "reserved"),
        (lambda: function(subjects=["a..b"])(fresh()), "not a valid NATS subject"),
        (lambda: function(subjects=["a.>.b"])(fresh()), "not a valid NATS subject"),
        (lambda: function(timeout=0)(fresh()), "timeout must be a positive"),
        (lambda: function(concurrency=0)(fresh()), "concurrency must be"),
        (lambda: function(min_workers=3, max_workers=2)(fresh()), "max_workers"),
        (lambda: function(42), "applies to a function or a class"),
    ],
)
def test_misuse_fails_when_applied(apply, hint: str) -> None:
    with pytest.raises(DefinitionError) as e:
        apply()
    assert hint in str(e.value)


def test_signature_and_shape_errors() -> None:
    with pytest.raises(DefinitionError, match="first parameter"):

        @function
        def no_args():
            return 1

    with pytest.raises(DefinitionError, match="required parameter 'extra'"):

        @function
        def two(event, extra):
            return 1

    with pytest.raises(DefinitionError, match="generator"):

        @function
        def gen(event):
            yield event

    with pytest.raises(DefinitionError, match="__call__"):

        @function
        class NoCall:
            def setup(self) -> None: ...

    with pytest.raises(DefinitionError, match="no arguments"):

        @function
        class NeedsArgs:
            def __init__(self, path: str) -> None: ...

            def __call__(self, event: object) -> object:
                return event

    def twice(event):
        return event

    function(twice)
    with pytest.raises(DefinitionError, match="already decorated"):
        function(twice)


# -- @partitioned ---------------------------------------------------------------------------


def _model(**methods):  # type: ignore[no-untyped-def]
    """A class with plan/shard/combine, minus or plus what a test says."""

    async def shard(self, request, shard):  # type: ignore[no-untyped-def]
        return None

    body = {
        "plan": lambda self, request: Plan(partitions=1),
        "shard": shard,
        "combine": lambda self, request, parts: parts,
        **methods,
    }
    return type("Model", (), {k: v for k, v in body.items() if v is not None})


def test_partitioned_spec_and_defaults() -> None:
    cls = partitioned(max_partitions=4, worker_memory_mb=64)(_model())
    spec = definition_of(cls).spec  # type: ignore[union-attr]
    assert (spec.name, spec.partitions, spec.worker_memory_mb, spec.channel) == (
        "model",
        4,
        64,
        "auto",
    )
    assert (spec.min_workers, spec.max_workers) == (0, 4)  # from zero, up to its width


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: partitioned(max_partitions=2)(_model(combine=None)), "combine"),
        (lambda: partitioned(max_partitions=2)(_model(shard=lambda s, r, sh: 1)), "async def"),
        (lambda: partitioned(max_partitions=0)(_model()), "max_partitions"),
        (lambda: partitioned(max_partitions=4, max_workers=2)(_model()), "max_workers=2"),
        (lambda: partitioned(max_partitions=2, channel="carrier-pigeon")(_model()), "channel"),
        (lambda: partitioned(max_partitions=2)(lambda e: e), "class"),
    ],
)
def test_partitioned_refuses_what_it_cannot_serve(make, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DefinitionError, match=message):
        make()


def test_check_plan_limits() -> None:
    spec = FunctionSpec(name="m", partitions=4, max_workers=4, worker_memory_mb=10)
    budget = 10 << 20
    assert check_plan(spec, Plan(2, model_bytes=15 << 20), budget).partitions == 2
    with pytest.raises(ModelTooLarge, match="use partitions=2 or more"):
        check_plan(spec, Plan(1, model_bytes=15 << 20), budget)
    with pytest.raises(ModelTooLarge, match="largest partition"):
        check_plan(spec, Plan(2, model_bytes=15 << 20, partition_bytes=12 << 20), budget)
    with pytest.raises(InvalidPayload, match="1 to 4 partitions"):
        check_plan(spec, Plan(5), budget)
    with pytest.raises(DefinitionError, match=r"runtime.Plan"):
        check_plan(spec, {"partitions": 2}, budget)
    assert check_plan(spec, Plan(1, model_bytes=1 << 40), 0).partitions == 1  # no budget
