"""Deploying functions: code and specs into NATS, streams and consumers into JetStream.

Deploying creates the function's stream before anything else, so events published from then
on are stored even while no controller or worker runs. Controllers pick the new version up
through their watch on the functions bucket; no restart, no image build.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, KeyNotFoundError, NotFoundError

from runtime.bundles.bundle import Bundle
from runtime.bundles.loader import definitions, import_module, unload
from runtime.bundles.store import prune_code, put_code
from runtime.errors import DeployError
from runtime.wire import deadletter, protocol, replicas
from runtime.wire.connection import kv

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext

    from runtime.define.decorator import Definition
    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.deploy")

DEDUPE_WINDOW = 120.0  # seconds during which a repeated Nats-Msg-Id is dropped


async def deploy_file(
    nc: NATS,
    path: Path,
    *,
    wait: float = 5.0,
    fuse: bool | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[FunctionSpec]:
    """Deploy every ``@function`` of a Python file, or of a folder shipped as one bundle;
    returns their specs.

    Waits up to ``wait`` seconds for a controller to announce that it serves the new
    versions, so a request sent right after deploy finds them. Without a controller the
    deploy still stands: events are stored and served once one runs. ``fuse`` overrides
    the handlers' ``fuse=`` option (run their executors in-process); ``overrides`` changes
    options per function or executor name, e.g. ``{"embed": {"min_workers": 2}}`` (names
    this code does not define are left to other deployments).
    """
    path = Path(path)
    bundle = Bundle.from_path(path)
    sha = bundle.digest
    specs = [
        dataclasses.replace(d.spec, module=module, attr=d.target.__name__, code_sha=sha)
        for module, d in inspect_bundle(path, bundle, sha)
    ]
    if fuse is not None:
        specs = [dataclasses.replace(s, fuse=fuse) if s.uses else s for s in specs]
    for name, changes in (overrides or {}).items():
        matching = [s for s in specs if s.name == name]
        if not matching:
            continue  # another deployment's function
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
                    f"{s.name} uses executor {used!r}, which is not defined in {path}: "
                    "define the executor in the same file or folder as its handler"
                )
    js = nc.jetstream()
    where = await put_code(nc, sha, bundle.to_zip())
    log.info("stored %s (%s) in %s", path, sha[:12], where)
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
    try:
        await prune_code(js)
    except Exception as e:  # the deploy stands; the next one tries again
        log.warning("removing unused code failed: %r", e)
    return specs


def inspect_bundle(path: Path, bundle: Bundle, sha: str) -> list[tuple[str, Definition]]:
    """Import every module of a bundle as workers will, privately, and collect what each
    defines: ``(module, definition)`` pairs."""
    nearby: set[str] = set()
    if path.is_file():  # modules beside a single file, for the hint if it imports one
        nearby = {p.stem for p in path.parent.glob("*.py")}
        nearby |= {p.parent.name for p in path.parent.glob("*/__init__.py")}
    files = bundle.modules()
    found: list[tuple[str, Definition]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-deploy-") as tmp:
        root = Path(tmp)
        bundle.write(root)
        try:
            for module, file in files.items():
                label = str(path / file) if path.is_dir() else str(path)
                imported = import_module(root, sha, module, label=label, nearby=nearby)
                found += [(module, d) for d in definitions(imported)]
        finally:
            unload(sha)
    if not found:
        raise DeployError(f"{path} defines no @function, @executor or @partitioned")
    modules_of: dict[str, list[str]] = {}
    for module, d in found:
        modules_of.setdefault(d.spec.name, []).append(module)
    for name, modules in modules_of.items():
        if len(modules) > 1:
            raise DeployError(
                f"function name {name!r} is defined {len(modules)} times in {path} "
                f"({', '.join(files[m] for m in modules)})"
            )
    return found


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
            info = await js.stream_info(spec.stream)
            await js.update_stream(replicas.kept(js, stream, info.config))
        except NotFoundError:
            await js.add_stream(replicas.stream(js, stream))
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
