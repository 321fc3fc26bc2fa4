"""Options are declared once (runtime.wire.options); the decorators and the spec agree with it."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import pytest

from runtime import DefinitionError, executor, function, partitioned
from runtime.define.decorator import FUNCTION_OPTIONS
from runtime.define.definition import definition_of
from runtime.wire import spec as spec_module
from runtime.wire.options import (
    GROUPS,
    OPTIONS,
    Batching,
    Delivery,
    Partitioning,
    Resources,
    Scaling,
    fields_of,
)
from runtime.wire.spec import FunctionSpec

# What a bare spec encoded to before the options moved into groups: a spec's version hashes
# these bytes, so they must not change (workers and controllers of two releases agree).
DEFAULT_SPEC_BYTES = bytes.fromhex(
    "de001ba46e616d65a166a87375626a6563747390a774696d656f7574cb404e000000000000ab636f6e637572"
    "72656e637908ab6d696e5f776f726b65727300ab6d61785f776f726b65727304ac69646c655f74696d656f75"
    "74cb4072c00000000000a861636b5f77616974cb4024000000000000ab6d61785f64656c6976657205a77265"
    "747269657300a76261636b6f666693cb3ff0000000000000cb4014000000000000cb403e000000000000a475"
    "73657390a466757365c2a46b696e64a866756e6374696f6ea6656e67696e65a0a367707500a96d656d6f7279"
    "5f6d6200a96d61785f626174636801ab6d61785f776169745f6d73cb0000000000000000b16c6174656e6379"
    "5f7461726765745f6d73c0aa706172746974696f6e7300a76368616e6e656ca46175746fb0776f726b65725f"
    "6d656d6f72795f6d6200a66d6f64756c65a0a461747472a0a8636f64655f736861a0a5657874726180"
)


def test_an_unchanged_spec_encodes_to_the_same_bytes_and_version() -> None:
    # A bare spec was idle_timeout=300 then; "adaptive" is the default now.
    assert FunctionSpec(name="f", idle_timeout=300.0).to_bytes() == DEFAULT_SPEC_BYTES
    full = FunctionSpec(
        name="m",
        subjects=("a.b",),
        timeout=3,
        concurrency=2,
        min_workers=1,
        max_workers=5,
        idle_timeout=9,
        ack_wait=4,
        max_deliver=7,
        retries=2,
        backoff=(0.5, 2),
        uses=("x",),
        fuse=True,
        kind="executor",
        engine="torch",
        gpu=1,
        memory_mb=512,
        max_batch=16,
        max_wait_ms=2.5,
        latency_target_ms=40.0,
        channel="inline",
        worker_memory_mb=64,
        module="mod",
        attr="m",
        code_sha="abc",
        extra={"k": 1},
    )
    assert full.version == "06849d41954e"  # as computed before the groups
    assert FunctionSpec.from_bytes(full.to_bytes()) == full


def test_wire_order_names_every_field_once() -> None:
    order = spec_module._WIRE_ORDER
    assert sorted(order) == sorted(f.name for f in dataclasses.fields(FunctionSpec))
    assert len(set(order)) == len(order)


def test_from_bytes_ignores_fields_of_newer_versions_and_keys_stay_flat() -> None:
    d = msgpack.unpackb(FunctionSpec(name="f", max_batch=4).to_bytes())
    assert d["max_batch"] == 4 and "batching" not in d  # flat keys, as before
    d["from_the_future"] = {"x": 1}
    assert FunctionSpec.from_bytes(msgpack.packb(d)) == FunctionSpec(name="f", max_batch=4)


def test_groups_are_disjoint_and_the_spec_is_made_of_them() -> None:
    names = fields_of(*GROUPS)
    assert len(names) == len(set(names)) == len(OPTIONS)
    spec_fields = {f.name for f in dataclasses.fields(FunctionSpec)}
    assert OPTIONS <= spec_fields
    assert all(issubclass(FunctionSpec, g) for g in GROUPS)


def _hints(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(obj)


def _agrees(declared: Any, field: Any) -> bool:
    """A decorator's annotation against its group field's: equal, a Sequence for a tuple, or
    Optional where the decorator derives the value."""
    if declared == field:
        return True
    if typing.get_origin(field) is tuple:  # tuple[float, ...] is taken as Sequence[float]
        return declared == Sequence[typing.get_args(field)[0]]
    return declared == field | None


FIELD_TYPES = {k: v for g in GROUPS for k, v in _hints(g).items()}
FIELD_DEFAULTS = {f.name: f.default for g in GROUPS for f in dataclasses.fields(g)}


def _options_of(fn: Callable[..., Any], own: set[str]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn).parameters
    return {k: p for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in own}


def test_function_signature_is_the_delivery_and_scaling_groups() -> None:
    overloads = typing.get_overloads(function)
    assert len(overloads) == 2
    keyword = overloads[1]
    options = _options_of(keyword, {"name", "subjects", "uses", "fuse"})
    assert sorted(options) == sorted(FUNCTION_OPTIONS) == sorted(fields_of(Delivery, Scaling))
    hints = _hints(keyword)
    for k, p in options.items():
        assert _agrees(hints[k], FIELD_TYPES[k]), k
        default = tuple(p.default) if k == "backoff" else p.default
        assert default == FIELD_DEFAULTS[k], k
    # The implementation takes the same extra names as the overload shows.
    own = {k for k, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert own == {"name", "subjects", "uses", "fuse"}


@pytest.mark.parametrize(
    ("decorator", "own", "groups", "besides"),
    [
        (executor, {"name"}, (Batching, Resources), {"timeout", "min_workers", "max_workers"}),
        (
            partitioned,
            {"name", "subjects", "max_partitions"},
            (Delivery, Scaling),
            {"channel", "worker_memory_mb"},
        ),
    ],
)
def test_decorator_options_are_group_fields_with_their_types(
    decorator: Callable[..., Any], own: set[str], groups: tuple[type, ...], besides: set[str]
) -> None:
    options = _options_of(decorator, own)
    hints = _hints(decorator)
    for k in options:
        assert k in OPTIONS, f"{decorator.__name__}({k}=) is not declared in an option group"
        assert _agrees(hints[k], FIELD_TYPES[k]), k
    assert set(fields_of(*groups)) | besides <= set(options) | {"concurrency"}


@pytest.mark.parametrize(
    ("group", "values", "message"),
    [
        (Delivery, {"timeout": 0}, "timeout must be a positive number of seconds"),
        (Delivery, {"ack_wait": True}, "ack_wait must be a positive number of seconds"),
        (Delivery, {"retries": 5}, "set max_deliver=7 or more"),
        (Delivery, {"backoff": ()}, "backoff must be seconds >= 0"),
        (Scaling, {"concurrency": 0}, "concurrency must be an int >= 1"),
        (Scaling, {"min_workers": 5}, "max_workers must be an int >= max(1, min_workers)"),
        (Scaling, {"idle_timeout": -1}, 'idle_timeout must be "adaptive" or seconds >= 0'),
        (Scaling, {"idle_timeout": "sometimes"}, 'idle_timeout must be "adaptive" or seconds'),
        (Scaling, {"idle_timeout": True}, 'idle_timeout must be "adaptive" or seconds >= 0'),
        (Batching, {"max_batch": 0}, "max_batch must be an int >= 1"),
        (Batching, {"latency_target_ms": 0}, "latency_target_ms must be a positive number"),
        (Partitioning, {"partitions": 65}, "partitions must be an int in 0..64"),
        (Partitioning, {"channel": "pigeon"}, "channel must be one of auto, inline, object"),
        (Resources, {"engine": "tf"}, "engine must be one of torch, onnxruntime, custom"),
        (Resources, {"engine": "torch", "memory_mb": -1}, "memory_mb must be an int >= 0"),
    ],
)
def test_each_group_checks_its_own_fields(
    group: type, values: dict[str, Any], message: str
) -> None:
    check = next(getattr(group, m) for m in vars(group) if m.startswith("check_"))
    with pytest.raises(DefinitionError) as e:
        check(group(**values))
    assert message in str(e.value)
    # ...and so does a spec holding them (executor-only groups for executors).
    kind = "executor" if group in (Batching, Resources) else "function"
    engine = {"engine": "custom"} if kind == "executor" and "engine" not in values else {}
    with pytest.raises(DefinitionError) as e:
        FunctionSpec(name="f", kind=kind, **engine, **values).validate()
    assert message in str(e.value)


def test_a_misspelt_option_is_refused_with_the_name_meant() -> None:
    with pytest.raises(DefinitionError, match="did you mean timeout="):
        function(timeuot=3)
    with pytest.raises(DefinitionError, match="unknown option max_batch="):
        function(max_batch=3)  # an executor's option, not a function's
    with pytest.raises(TypeError):  # executor() and partitioned() refuse as Python does
        executor(concurrency=3)  # type: ignore[call-arg]


def test_adaptive_is_the_default_and_older_readers_see_its_fixed_window() -> None:
    @function
    def handler(event: object) -> object:
        return event

    @executor()
    class Model:
        def __call__(self, batch: list[int]) -> list[int]:
            return batch

    f, e = definition_of(handler).spec, definition_of(Model).spec
    assert f.idle_timeout == e.idle_timeout == "adaptive" and f.adaptive and e.adaptive
    assert (f.fixed_idle_s, e.fixed_idle_s) == (300.0, 600.0)
    assert FunctionSpec(name="p", partitions=2, max_workers=2).fixed_idle_s == 600.0
    assert FunctionSpec(name="n", idle_timeout=42).fixed_idle_s == 42.0
    for spec in (f, e):
        assert FunctionSpec.from_bytes(spec.to_bytes()) == spec
        # On the wire: the fixed window where a number always was, and a key at the end
        # that releases before "adaptive" drop (they run that fixed window).
        d = msgpack.unpackb(spec.to_bytes())
        assert d["idle_timeout"] == spec.fixed_idle_s and list(d)[-1] == "keepalive"
        del d["keepalive"]
        older = FunctionSpec.from_bytes(msgpack.packb(d))
        assert older.idle_timeout == spec.fixed_idle_s and not older.adaptive
        # Part of the version: adaptive and its fixed window are different specs.
        assert older.version != spec.version
    # A spec that holds the word itself (written by hand) reads as adaptive too.
    d = msgpack.unpackb(FunctionSpec(name="f", idle_timeout=300.0).to_bytes())
    d["idle_timeout"] = "adaptive"
    assert FunctionSpec.from_bytes(msgpack.packb(d)).adaptive
