"""Every environment variable Shoal reads, declared once: name, kind, default, meaning, reader.

Nothing is read at import time. A component builds its typed settings when it starts, from
these variables: ``TICK.get()`` (this process's environment) or ``TICK.get(env)`` (another
mapping); ``ControllerSettings.from_env``, ``WorkerSettings.from_env`` (through
:class:`runtime.launch.LaunchEnv`), ``NatsAuth.from_env`` and ``S3Settings.from_env`` do. A
value that cannot be used raises :class:`ConfigError`, which names the variable, the value
(``***`` for a secret) and what was expected. An empty value counts as unset, except where a
variable says otherwise (``SHOAL_S3_REGION``, ``SHOAL_S3_SECURE``).

``python -m runtime.config`` prints the table of docs/configuration.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.config.var import (
    ADOPT,
    BOOL,
    CAPACITY,
    FILE,
    MOUNTS,
    PATH,
    SECONDS,
    STRIPPED,
    TEXT,
    VARIABLES,
    Adopt,
    ConfigError,
    Env,
    MissingFile,
    Mount,
    Var,
    choice,
    integer,
    markdown_table,
    matching,
    number,
    var,
)

__all__ = [
    "CAPACITY",
    "VARIABLES",
    "Adopt",
    "ConfigError",
    "Env",
    "MissingFile",
    "Mount",
    "Secret",
    "Var",
    "markdown_table",
    "nats_url",
    "worker_credentials",
]


def _optional(name: str, meaning: str, readers: str, **more: object) -> Var[str | None]:
    return var(name, TEXT, None, meaning, readers, **more)


# -- NATS: every process that connects (the shoal command, controllers, workers, Client) ----

ALL = "every process"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
NATS_URL = var(
    "SHOAL_NATS_URL",
    STRIPPED,
    DEFAULT_NATS_URL,
    "NATS server URL(s), comma-separated; `tls://` asks for TLS",
    ALL + " (the controller passes its own to workers)",
)
NATS_USER = _optional("SHOAL_NATS_USER", "user name; wins over a user in the URL", ALL)
NATS_PASSWORD = _optional("SHOAL_NATS_PASSWORD", "password, with a user", ALL, secret=True)


def _file(name: str, meaning: str) -> Var[Path | None]:
    return var(name, FILE, None, meaning, ALL)


NATS_PASSWORD_FILE = _file(
    "SHOAL_NATS_PASSWORD_FILE", "a file holding the password, if `SHOAL_NATS_PASSWORD` is unset"
)
NATS_CREDS = _file("SHOAL_NATS_CREDS", "a NATS `.creds` file (user JWT and nkey seed)")
NATS_NKEY_SEED = _file("SHOAL_NATS_NKEY_SEED", "a file holding a user nkey seed (`SU...`)")
NATS_TLS_CA = _file("SHOAL_NATS_TLS_CA", "the CA bundle (PEM) that signs the server's certificate")
NATS_TLS_CERT = _file("SHOAL_NATS_TLS_CERT", "a client certificate, for mutual TLS")
NATS_TLS_KEY = _file("SHOAL_NATS_TLS_KEY", "the client certificate's key")
NATS_INBOX_PREFIX = _optional(
    "SHOAL_NATS_INBOX_PREFIX", "where replies arrive, e.g. `_INBOX.shoal-client`", ALL
)
# The variables that carry a connection's identity (the TLS CA aside, which is no secret).
NATS_AUTH: tuple[Var[object], ...] = (
    NATS_USER,
    NATS_PASSWORD,
    NATS_PASSWORD_FILE,
    NATS_CREDS,
    NATS_NKEY_SEED,
    NATS_TLS_CERT,
    NATS_TLS_KEY,
)
NATS_AUTH_VARS = tuple(v.name for v in NATS_AUTH)
# The workers' own credentials, set on the controller: SHOAL_WORKER_NATS_X becomes their
# SHOAL_NATS_X. The files they name are the workers' paths, so they are not checked here.
WORKER_NATS = {
    v.name: _optional(
        v.name.replace("SHOAL_NATS_", "SHOAL_WORKER_NATS_"),
        f"the workers' `{v.name}` (none of the controller's own reach them)",
        "controller",
        secret=v.secret,
    )
    for v in NATS_AUTH
}


def nats_url(env: Env | None = None) -> str:
    return NATS_URL.get(env)


def worker_credentials(env: Env | None = None) -> dict[str, str]:
    """``SHOAL_WORKER_NATS_*`` as the workers' ``SHOAL_NATS_*``."""
    return {name: raw for name, v in WORKER_NATS.items() if (raw := v.raw(env)) is not None}


# -- the controller, and what it passes on to workers ---------------------------------------

RANDOM = "random per start"
BOTH = "controller, worker"
CONTROLLER_ID = _optional(
    "SHOAL_CONTROLLER_ID",
    "the controller's id (keep it stable to adopt containers); passed to its workers",
    BOTH,
    shown_default=RANDOM,
)
TICK = var("SHOAL_TICK", SECONDS, 0.5, "seconds between reconcile passes", "controller")
HEARTBEAT = var("SHOAL_HEARTBEAT", SECONDS, 1.0, "seconds between liveness reports", BOTH)
STALE_AFTER = var(
    "SHOAL_STALE_AFTER",
    SECONDS,
    3.5,
    "seconds of silence after which a worker is gone",
    "controller",
)
SPAWN_TIMEOUT = var(
    "SHOAL_SPAWN_TIMEOUT", SECONDS, 60.0, "seconds a new worker may take to report in", "controller"
)
KEEPALIVE_BIN_S = var(
    "SHOAL_KEEPALIVE_BIN_S",
    SECONDS,
    60.0,
    "bin width of the adaptive keep-alive's idle-time histograms; less runs the policy, "
    "its fallback windows included, on a compressed clock (docs/keepalive.md)",
    "controller, `shoal status`",
)
RESULTS_TTL = var(
    "SHOAL_RESULTS_TTL", SECONDS, 3600.0, "seconds results are kept (set as buckets are made)", ALL
)
LOG_LEVEL = var(
    "SHOAL_LOG_LEVEL",
    choice(*logging.getLevelNamesMapping(), upper=True, expected="DEBUG, INFO, WARNING or ERROR"),
    None,
    "log level; `shoal` passes its own to the workers it starts",
    "`shoal`, worker",
    shown_default="worker: `INFO`; `shoal`: `WARNING` (`INFO` with `-v`)",
)

REPLICAS = var(
    "SHOAL_REPLICAS",
    integer(1, "a whole number, 1 or more"),
    None,
    "copies JetStream keeps of each stream, KV bucket and object store Shoal makes; a "
    "controller raises existing ones to it as it starts (docs/cluster.md)",
    ALL,
    shown_default="the NATS cluster's servers, at most 3",
)

# -- what a worker tells about itself: errors, logs, traces ---------------------------------

ERROR_TRACEBACKS = var(
    "SHOAL_ERROR_TRACEBACKS",
    BOOL,
    True,
    "a failed invocation's answer and stored result carry the user's traceback; 0 for "
    "production (logs keep it)",
    "worker",
)
LOG_FORMAT = var(
    "SHOAL_LOG_FORMAT",
    choice("text", "json"),
    "text",
    "log lines as text, or one JSON object per line",
    "`shoal`, worker",
)
LOGS_PUBLISH = var(
    "SHOAL_LOGS",
    BOOL,
    True,
    "workers publish their log lines and output to the `SHOAL_LOGS` stream",
    "worker",
)
LOGS_MAX_AGE = var(
    "SHOAL_LOGS_MAX_AGE",
    SECONDS,
    3600.0,
    "seconds the `SHOAL_LOGS` stream keeps a line (set as the stream is made)",
    "controller",
)
LOGS_MAX_BYTES = var(
    "SHOAL_LOGS_MAX_BYTES",
    integer(1, "a whole number of bytes, 1 or more"),
    256 * 1024 * 1024,
    "bytes the `SHOAL_LOGS` stream keeps, oldest dropped first (set as the stream is made)",
    "controller",
)
OTLP_ENDPOINT = _optional(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OpenTelemetry's OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`): spans are exported "
    "there; unset: none are (trace context still travels)",
    "worker (launchers pass it on)",
)
OTEL_SERVICE_NAME = _optional(
    "OTEL_SERVICE_NAME",
    "the `service.name` of a worker's spans",
    "worker",
    shown_default="`shoal-<function>`",
)
METRICS_ADDR = var(
    "SHOAL_METRICS_ADDR",
    matching(
        r"(?i:off)|(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):\d{1,5}", "host:port (`[v6]:port`), or off"
    ),
    "127.0.0.1:9464",
    "where `/metrics` (Prometheus) and the status page are served; `off`: not at all",
    "controller (`shoal up`, `shoal controller`)",
)

# -- the shoal command -----------------------------------------------------------------------

DATA_DIR = var(
    "SHOAL_DATA_DIR",
    PATH,
    Path(".shoal"),
    "embedded NATS and S3 data, the workers' code cache",
    "`shoal up`, `shoal controller`",
)
LAUNCHER = var(
    "SHOAL_LAUNCHER",
    choice("process", "docker"),
    "process",
    "workers as local processes or as containers (docs/containers.md)",
    "`shoal controller`",
)
HOST_NAME = _optional(
    "SHOAL_HOST_NAME",
    "the host this controller starts workers on, as placement names it (one controller each);"
    " its workers get it from their controller",
    "`shoal controller`, workers",
    shown_default="the machine's host name",
)
HOST_CAPACITY = var(
    "SHOAL_CAPACITY",
    CAPACITY,
    None,
    "what this host offers workers, e.g. `cpu=8,memory=16g,gpus=1` (docs/placement.md);"
    " what it leaves out is read from the machine",
    "`shoal controller`",
    shown_default="the machine's CPUs, memory and GPUs",
)
PLACEMENT_LEASE = var(
    "SHOAL_PLACEMENT_LEASE",
    SECONDS,
    None,
    "seconds the placing controller's lease lasts unrenewed before another takes over",
    "controller",
    shown_default="`SHOAL_STALE_AFTER`",
)

WORKER_TEMPLATE = var(
    "SHOAL_WORKER_TEMPLATE",
    BOOL,
    True,
    "fork process workers from a template process that has imported Shoal (fast cold starts);"
    " 0: start each as a new interpreter",
    "`shoal up`, `shoal controller` (process launcher)",
)

# -- what a launcher tells a worker (runtime.launch.LaunchEnv) ------------------------------

LAUNCHED = "launchers set it, workers read it"
FUNCTION = _optional("SHOAL_FUNCTION", "the function a worker serves (required)", LAUNCHED)
WORKER_ID = _optional("SHOAL_WORKER_ID", "the worker's id", LAUNCHED, shown_default=RANDOM)
CODE_DIR = var(
    "SHOAL_CODE_DIR", PATH, Path(".shoal/code"), "where a worker writes deployed code", LAUNCHED
)
PARENT_PID = var(
    "SHOAL_PARENT_PID",
    integer(1, "a process id"),
    None,
    "the pid of the worker's launcher (or its template process): the worker drains when it goes"
    " away",
    LAUNCHED,
)
SPAWNED_AT = var(
    "SHOAL_SPAWNED_AT",
    number(0, above=False, expected="a Unix time in seconds"),
    None,
    "when the launcher started the worker (cold-start phases)",
    LAUNCHED,
)

# -- the container launcher -----------------------------------------------------------------

DOCKER = "`shoal controller --launcher docker`"
DOCKER_NETWORK = var(
    "SHOAL_DOCKER_NETWORK", STRIPPED, "host", "the workers' network, or auto", DOCKER
)
DOCKER_ADOPT: Var[Adopt] = var(
    "SHOAL_DOCKER_ADOPT",
    ADOPT,
    "mine",
    "worker containers it takes over at start",
    DOCKER,
)
DOCKER_STOP_ON_EXIT = var(
    "SHOAL_DOCKER_STOP_ON_EXIT", BOOL, True, "stop the workers when it stops", DOCKER
)
DOCKER_VOLUMES = var(
    "SHOAL_DOCKER_VOLUMES",
    MOUNTS,
    (),
    "mounts for every worker; `auto` as the source: the controller container's",
    DOCKER,
)
DOCKER_COMPOSE_PROJECT = _optional(
    "SHOAL_DOCKER_COMPOSE_PROJECT", "label workers as this compose project's, or auto", DOCKER
)
HANDLER_IMAGE = _optional(
    "SHOAL_HANDLER_IMAGE", "handler workers' image", DOCKER, shown_default="`shoal-handler`"
)
EXECUTOR_IMAGE = _optional(
    "SHOAL_EXECUTOR_IMAGE", "executor workers' image", DOCKER, shown_default="`shoal-executor`"
)
HOSTNAME = _optional("HOSTNAME", "the controller's container, if mountinfo names none", DOCKER)
# Per worker, from a launch request's env (the controller's worker_env): they override the
# launcher's settings and the function's spec.
REQUEST = "the container launcher, from a launch request"
IMAGE = _optional("SHOAL_IMAGE", "this worker's image", REQUEST)
KIND = var(
    "SHOAL_KIND",
    choice("function", "executor"),
    None,
    "the worker's kind (its image), without a spec lookup",
    REQUEST,
)
GPUS = var(
    "SHOAL_GPUS",
    integer(-1, "a whole number, -1 for all"),
    None,
    "GPUs to request",
    REQUEST,
    shown_default="the spec's `gpu`",
)
MEMORY_MB = var(
    "SHOAL_MEMORY_MB",
    integer(0, "a whole number of MiB, 0 or more"),
    None,
    "memory limit in MiB",
    REQUEST,
    shown_default="the spec's, plus headroom",
)
NANO_CPUS = var(
    "SHOAL_NANO_CPUS",
    integer(0, "a whole number, 0 or more"),
    None,
    "CPU limit, in 1e-9 CPUs",
    REQUEST,
)

# -- the object store (storage.S3Settings.from_env) -----------------------------------------

S3 = "storage (controller, workers)"
S3_ENDPOINT = var(
    "SHOAL_S3_ENDPOINT",
    matching(r"(?i:https?://)[^/\s]+/?|[^/\s]+", "a host[:port], maybe after http:// or https://"),
    None,
    "the S3 server for intermediates; unset: none (`shoal up` starts SeaweedFS)",
    S3 + ", `shoal up`",
    shown_default="- (storage alone: `127.0.0.1:9000`)",
)
Secret = tuple[Var[str | None], Var[str | None]]  # a value, and a file that holds it


def _secret(name: str, meaning: str, secret: bool = False) -> Secret:
    value = _optional(name, meaning, S3, secret=secret)
    return value, _optional(f"{name}_FILE", f"a file holding `{name}`", S3)


# Credential pairs, most specific first; a pair comes from one family only.
S3_CREDENTIALS: tuple[tuple[Secret, Secret], ...] = (
    (
        _secret("SHOAL_S3_ACCESS_KEY", "access key"),
        _secret("SHOAL_S3_SECRET_KEY", "its secret", True),
    ),
    (
        _secret("AWS_ACCESS_KEY_ID", "access key, without `SHOAL_S3_ACCESS_KEY`"),
        _secret("AWS_SECRET_ACCESS_KEY", "its secret", True),
    ),
    (
        _secret("MINIO_ROOT_USER", "access key, without the two above"),
        _secret("MINIO_ROOT_PASSWORD", "its secret", True),
    ),
)
(S3_ACCESS_KEY, _), (S3_SECRET_KEY, _) = S3_CREDENTIALS[0]
S3_SECURE = var(
    "SHOAL_S3_SECURE",
    BOOL,
    None,
    "HTTPS; wins over the endpoint's scheme (empty: false)",
    S3,
    shown_default="the endpoint's scheme, else false",
    keep_empty=True,
)
S3_REGION = var("SHOAL_S3_REGION", STRIPPED, "us-east-1", "region; empty: ask", S3, keep_empty=True)
S3_BUCKET = var(
    "SHOAL_S3_BUCKET",
    matching(".{3,63}", "a bucket name of 3 to 63 characters"),
    "shoal",
    "bucket",
    S3,
)
S3_INTERMEDIATE_TTL_DAYS = var(
    "SHOAL_S3_INTERMEDIATE_TTL_DAYS",
    integer(1, "a whole number of days, 1 or more"),
    1,
    "days after which a lifecycle rule deletes forgotten intermediates",
    S3,
)
S3_INTERMEDIATE_PREFIX = var(
    "SHOAL_S3_INTERMEDIATE_PREFIX",
    matching(r".*[^/].*/", "a prefix ending with /"),
    "intermediates/",
    "where intermediates are written",
    S3,
)
S3_CONNECT_TIMEOUT = var("SHOAL_S3_CONNECT_TIMEOUT", SECONDS, 2.0, "connect timeout (s)", S3)
S3_READ_TIMEOUT = var("SHOAL_S3_READ_TIMEOUT", SECONDS, 30.0, "read timeout (s)", S3)
S3_MAX_RETRIES = var(
    "SHOAL_S3_MAX_RETRIES",
    integer(0, "a whole number, 0 or more"),
    2,
    "retries of a failed request",
    S3,
)
S3_READY_TIMEOUT = var(
    "SHOAL_S3_READY_TIMEOUT",
    number(0, above=False, expected="a number of seconds"),
    60.0,
    "seconds to wait for the object store to store",
    "`python -m storage.ready`",
)
SSL_CERT_FILE = _optional("SSL_CERT_FILE", "CA bundle for https", S3, shown_default="certifi's")


# -- executors' models (runtime.models) ----------------------------------------------------

MODEL_CACHE = var(
    "SHOAL_MODEL_CACHE",
    PATH,
    None,  # ~/.cache/shoal/models: the home folder is looked up when it is used
    "a local folder for models prepared once: optimized onnxruntime graphs, memory-mappable"
    " torch weights (the example embed's ONNX export too)",
    "executor workers",
    shown_default="`~/.cache/shoal/models`",
)
MODEL_CACHE_ENABLED = var(
    "SHOAL_MODEL_CACHE_ENABLED",
    BOOL,
    True,
    "load models from that cache (prepared on first use); 0: prepare them at every start",
    "executor workers",
)

# -- partitioned models ---------------------------------------------------------------------

WORKER_MEMORY_MB = var(
    "SHOAL_WORKER_MEMORY_MB",
    integer(0, "a whole number of MiB, 0 or more"),
    0,
    "what one worker may hold of a partitioned model that does not say; 0: no limit",
    "deploy (planning partitions)",
)
