"""The launch contract: what a controller and a launcher tell a worker through its environment.

Each side sets what it knows, as a :class:`LaunchEnv` turned into variables (``to_env``): the
controller its NATS URL, its id and the workers' own credentials; a launcher the function,
the worker id and how it started the worker (code folder, its own pid, the time); a container
launcher also passes on the controller's log level, heartbeat, results TTL and object store
settings (:meth:`LaunchEnv.inherited`), since a container inherits nothing. The worker reads
the whole back with :meth:`LaunchEnv.from_env`. A field left None is not set: the worker's
default applies (:mod:`runtime.config` declares the variables, their kinds and defaults).

The controller imports this module and :mod:`runtime.config`, never the worker's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime import config

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

# Each field and the variable that carries it.
_VARS: dict[str, config.Var[Any]] = {
    "function": config.FUNCTION,
    "worker_id": config.WORKER_ID,
    "nats_url": config.NATS_URL,
    "controller_id": config.CONTROLLER_ID,
    "host": config.HOST_NAME,
    "code_dir": config.CODE_DIR,
    "parent_pid": config.PARENT_PID,
    "spawned_at": config.SPAWNED_AT,
    "heartbeat": config.HEARTBEAT,
    "log_level": config.LOG_LEVEL,
    "results_ttl": config.RESULTS_TTL,
    "error_tracebacks": config.ERROR_TRACEBACKS,
    "log_format": config.LOG_FORMAT,
    "publish_logs": config.LOGS_PUBLISH,
    "otlp_endpoint": config.OTLP_ENDPOINT,
}
# The template process a process launcher forks workers from (runtime.worker.template), and
# the largest message on its socket (a fork request carries the worker's whole environment).
TEMPLATE_MODULE = "runtime.worker.template"
TEMPLATE_MESSAGE_MAX = 1 << 20


@dataclass(frozen=True)
class Preload:
    """An engine a template process imports beyond what every worker imports, so that the
    executors it forks find it imported: one template process per preload (handlers and fused
    functions are forked from the plain one, which stays free of engines).

    ``idle_threads`` is how many native threads importing it is known to leave running, each
    found idle when measured (forking copies no lock one of them holds but for a moment);
    a template whose import leaves more is not forked from (a thread the child lacks could
    hold a lock the child needs): its workers are spawned.
    """

    engine: str  # an executor's ``engine`` (runtime.wire.options.ENGINES)
    modules: tuple[str, ...]  # imported in this order
    idle_threads: int = 0


# onnxruntime's import starts one thread (a timer that wakes every few seconds, waiting on a
# condition the rest of the time); torch's starts none (its OpenMP pool starts at the first
# parallel operation, which the template never runs).
PRELOADS: dict[str, Preload] = {
    "onnxruntime": Preload("onnxruntime", ("onnxruntime",), idle_threads=1),
    "torch": Preload("torch", ("torch",)),
}


def preload_for(kind: str, engine: str) -> Preload | None:
    """What a worker of a function of ``kind`` with ``engine`` should find imported: its
    engine for an executor whose engine is one of :data:`PRELOADS`, else nothing."""
    return PRELOADS.get(engine) if kind == "executor" else None


# Variables passed on as they are: the worker's NATS identity, and the object store's.
CREDENTIALS = frozenset(config.NATS_AUTH_VARS)
STORAGE = frozenset(name for name in config.VARIABLES if name.startswith("SHOAL_S3_"))


@dataclass(frozen=True)
class LaunchEnv:
    """A worker's launch settings; None (or an empty mapping) means "not set here"."""

    function: str | None = None  # the function it serves (a worker needs it)
    worker_id: str | None = None
    nats_url: str | None = None  # the URL the controller is connected to
    controller_id: str | None = None
    host: str | None = None  # the controller's host, as placement names it
    code_dir: Path | None = None  # where it writes deployed code (the images set their own)
    parent_pid: int | None = None  # its parent (launcher or template): it drains without it
    spawned_at: float | None = None  # Unix time the launcher started it (cold-start phases)
    heartbeat: float | None = None  # seconds between its liveness reports
    log_level: str | None = None
    results_ttl: float | None = None
    error_tracebacks: bool | None = None  # answers carry the user's traceback
    log_format: str | None = None  # text | json
    publish_logs: bool | None = None  # to the SHOAL_LOGS stream
    otlp_endpoint: str | None = None  # where spans are exported (OTLP/HTTP)
    credentials: Mapping[str, str] = field(default_factory=dict)  # its own SHOAL_NATS_*
    storage: Mapping[str, str] = field(default_factory=dict)  # SHOAL_S3_*

    def __post_init__(self) -> None:
        for name, allowed in (("credentials", CREDENTIALS), ("storage", STORAGE)):
            unknown = set(getattr(self, name)) - allowed
            if unknown:
                raise ValueError(f"LaunchEnv.{name} takes {sorted(allowed)}, not {sorted(unknown)}")

    def to_env(self) -> dict[str, str]:
        """The variables that carry the fields that are set."""
        env: dict[str, str] = {}
        for name, var in _VARS.items():
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool):
                    env[var.name] = "1" if value else "0"
                else:
                    env[var.name] = repr(value) if isinstance(value, float) else str(value)
        return {**env, **self.credentials, **self.storage}

    @classmethod
    def from_env(cls, env: config.Env | None = None) -> LaunchEnv:
        """What ``env`` (by default this process's environment) sets of the contract, parsed;
        a value that cannot be used raises :class:`~runtime.config.ConfigError`."""
        values = {name: var.get(env) for name, var in _VARS.items() if var.is_set(env)}
        return cls(
            **values,
            credentials=_raw(CREDENTIALS, env),
            storage=_raw(STORAGE, env),
        )

    @classmethod
    def inherited(cls, env: config.Env | None = None) -> LaunchEnv:
        """What a controller passes on of its own settings to workers that inherit nothing
        (containers): log level and format, heartbeat, results TTL, tracebacks in answers, log
        publishing, the OTLP endpoint, the object store."""
        whole = cls.from_env(env)
        return cls(
            heartbeat=whole.heartbeat,
            log_level=whole.log_level,
            results_ttl=whole.results_ttl,
            error_tracebacks=whole.error_tracebacks,
            log_format=whole.log_format,
            publish_logs=whole.publish_logs,
            otlp_endpoint=whole.otlp_endpoint,
            storage=whole.storage,
        )


def _raw(names: frozenset[str], env: config.Env | None) -> dict[str, str]:
    return {
        var.name: raw
        for var in config.VARIABLES.values()
        if var.name in names and (raw := var.raw(env)) is not None
    }
