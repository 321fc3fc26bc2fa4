"""@function validates what it is given when applied, with messages that say what to write."""

from __future__ import annotations

import pytest

from runtime import DefinitionError, function
from runtime.decorator import definition_of


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
