"""Deploying functions: code and specs into NATS, streams and consumers into JetStream.

Deploying creates the function's stream before anything else, so events published from then
on are stored even while no controller or worker runs. Controllers pick the new version up
through their watch on the functions bucket; no restart, no image build.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, KeyNotFoundError, NotFoundError

from runtime import deadletter, protocol
from runtime.errors import DeployError
from runtime.loader import code_sha, definitions, import_file
from runtime.nats_util import kv
from runtime.spec import FunctionSpec

log = logging.getLogger("shoal.deploy")

MAX_SOURCE = 900 * 1024  # a KV value must fit one NATS message (1 MiB by default)
DEDUPE_WINDOW = 120.0  # seconds during which a repeated Nats-Msg-Id is dropped


async def deploy_file(
    nc: NATS,
    path: Path,
    *,
    wait: float = 5.0,
    fuse: bool | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[FunctionSpec]:
    """Deploy every ``@function`` in a Python file; returns their specs.

    Waits up to ``wait`` seconds for a controller to announce that it serves the new
    versions, so a request sent right after deploy finds them. Without a controller the
    deploy still stands: events are stored and served once one runs. ``fuse`` overrides
    the handlers' ``fuse=`` option (run their executors in-process); ``overrides`` changes
    options per function or executor name, e.g. ``{"embed": {"min_workers": 2}}`` (names
    this file does not define are left to other files).
    """
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise DeployError(f"{path} is not a Python file")
    source = path.read_bytes()
    if len(source) > MAX_SOURCE:
        raise DeployError(
            f"{path} is {len(source)} bytes; deployed sources are limited to {MAX_SOURCE}: "
            "move data into storage/ and load it in setup()"
        )
    module = import_file(path)
    found = definitions(module)
    if not found:
        raise DeployError(f"{path} defines no @function")
    sha = code_sha(source)
    js = nc.jetstream()
    code = await kv(js, protocol.CODE_BUCKET)
    await code.put(sha, source)
    specs = [
        dataclasses.replace(d.spec, module=module.__name__, attr=d.target.__name__, code_sha=sha)
        for d in found
    ]
    if fuse is not None:
        specs = [dataclasses.replace(s, fuse=fuse) if s.uses else s for s in specs]
    for name, changes in (overrides or {}).items():
        matching = [s for s in specs if s.name == name]
        if not matching:
            continue  # another file's function
        try:
            changed = dataclasses.replace(matching[0], **changes).validate()
        except TypeError as e:
            raise DeployError(f"bad override for {name!r}: {e}") from None
        specs = [changed if s.name == name else s for s in specs]
    # Executors first: a handler's workers look up the executors it uses.
    specs.sort(key=lambda s: s.kind != "executor")
    here = {s.name for s in specs}
    for s in specs:
        for used in s.uses:
            if used not in here:
                raise DeployError(
                    f"{s.name} uses executor {used!r}, which is not defined in {path.name}: "
                    "a deployed file is one module, so define the executor beside its handler"
                )
    announced = await nc.subscribe("shoal.deployed.*")
    try:
        waiting = {}
        for spec in specs:
            if await deploy_spec(js, spec):
                waiting[spec.name] = spec.version
        with anyio.move_on_after(wait):
            async for msg in announced.messages:
                name = msg.subject.rsplit(".", 1)[-1]
                if waiting.get(name) == msg.data.decode():
                    del waiting[name]
                if not waiting:
                    break
        if waiting:
            log.warning(
                "no controller announced %s yet; events are stored until one runs",
                ", ".join(sorted(waiting)),
            )
    finally:
        await announced.unsubscribe()
    return specs


async def deploy_spec(js: JetStreamContext, spec: FunctionSpec) -> bool:
    """Create or update a function's stream and consumer, then publish its spec.

    Returns False when that exact version was already deployed.
    """
    spec.validate()
    if spec.kind == "function":  # executors take requests from handlers, not events
        await ensure_stream(js, spec)
        await deadletter.ensure_stream(js)
    functions = await kv(js, protocol.FUNCTIONS_BUCKET)
    try:
        if (await functions.get(spec.name)).value == spec.to_bytes():
            return False
    except KeyNotFoundError:
        pass
    await functions.put(spec.name, spec.to_bytes())
    log.info("deployed %s (version %s) on %s", spec.name, spec.version, spec.event_subjects)
    return True


async def ensure_stream(js: JetStreamContext, spec: FunctionSpec) -> None:
    stream = StreamConfig(
        name=spec.stream,
        subjects=spec.event_subjects,
        retention=RetentionPolicy.WORK_QUEUE,  # an event leaves the stream once processed
        storage=StorageType.FILE,
        duplicate_window=DEDUPE_WINDOW,
    )
    try:
        try:
            await js.stream_info(spec.stream)
            await js.update_stream(stream)
        except NotFoundError:
            await js.add_stream(stream)
    except BadRequestError as e:
        raise DeployError(
            f"cannot create the stream for {spec.name} on {spec.event_subjects}: {e.description}"
            " (is one of these subjects already a trigger of another function?)"
        ) from None
    consumer = ConsumerConfig(
        durable_name=protocol.CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=spec.ack_wait,
        max_deliver=spec.max_deliver,
        max_waiting=4096,  # outstanding pull requests, one per worker at a time or so
    )
    try:
        await js.add_consumer(spec.stream, consumer)
    except BadRequestError as e:
        raise DeployError(
            f"cannot configure the consumer of {spec.name}: {e.description}"
        ) from None
