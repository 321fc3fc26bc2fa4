"""The wire contract: subject, header and bucket names that clients and workers share.

These names are public: external clients in any language rely on them, so they change only
with a major version.
"""

from __future__ import annotations

import hashlib
import re

#: Durable events for function ``<name>`` are published to ``fn.<name>``.
EVENT_PREFIX = "fn"
#: Request/reply invocations go to ``fn.<name>.call``.
CALL_SUFFIX = "call"

# Headers.
MSG_ID = "Nats-Msg-Id"  # JetStream's de-duplication key, doubles as Shoal's request id
CONTENT_TYPE = "Content-Type"
REPLY_TO = "Shoal-Reply-To"  # where a durable event's result is published
REQUEST_ID = "Shoal-Request-Id"  # set on every answer
STATUS = "Shoal-Status"  # "ok" or "error" on every answer
PREWARM = "Shoal-Prewarm"  # on an empty message to an executor: start one, nothing to run
ITEMS = "Shoal-Items"  # on executor requests/answers carrying many items: format version
TRACEPARENT = "traceparent"  # W3C Trace Context, on requests and answers (runtime.wire.tracing)

JSON = "application/json"
MSGPACK = "application/msgpack"

# JetStream resources.
STREAM_PREFIX = "SHOAL_FN_"
CONSUMER = "workers"  # one durable pull consumer per function, shared by all its workers
RESULTS_BUCKET = "shoal_results"
FUNCTIONS_BUCKET = "shoal_functions"
CODE_BUCKET = "shoal_code"
WORKERS_BUCKET = "shoal_workers"
CONTROLLERS_BUCKET = "shoal_controllers"
PLACEMENT_BUCKET = "shoal_placement"  # the placing controller's lease and plan
CANCEL_BUCKET = "shoal_cancel"  # request ids asked to be cancelled
DATAPLANE_BUCKET = "shoal_dataplane"  # the cluster's calibrated cost model for intermediates
IDLE_HISTORY_BUCKET = "shoal_idle_history"  # functions' idle times (docs/keepalive.md)
REDRIVE = "Shoal-Redrive"  # on a re-driven dead letter: how many times it was re-driven

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_=-]{1,200}$")


def event_subject(name: str) -> str:
    return f"{EVENT_PREFIX}.{name}"


def call_subject(name: str) -> str:
    return f"{EVENT_PREFIX}.{name}.{CALL_SUFFIX}"


def executor_subject(name: str) -> str:
    """Handlers send items to executor ``name`` here; not for clients (``shoal.`` is internal)."""
    return f"shoal.ex.{name}"


def stream_name(name: str) -> str:
    # Stream names may not contain '-' reliably across tools; keep them upper-case tokens.
    return STREAM_PREFIX + name.replace("-", "_").upper()


def queue_group(name: str) -> str:
    return f"shoal.{name}"


def worker_stop_subject(worker_id: str) -> str:
    return f"shoal.worker.{worker_id}.stop"


def deployed_subject(name: str) -> str:
    """Where the owning controller announces that a deployed version is being served."""
    return f"shoal.deployed.{name}"


def result_key(request_id: str) -> str:
    """Map any request id to a valid KV key; ids that are already safe map to themselves."""
    if _KEY_RE.match(request_id):
        return request_id
    return "h-" + hashlib.sha256(request_id.encode()).hexdigest()


def reply_allowed(subject: str) -> bool:
    """Whether answers may go to ``subject``: never to system (``$``) or internal subjects.

    Workers publish answers with their own permissions, so a reply subject chosen by a
    client must not let it write where it may not (results, heartbeats, acks, dead letters).
    """
    return (
        0 < len(subject) <= 1024
        and not any(c.isspace() for c in subject)
        and "" not in subject.split(".")
        and not subject.startswith(("$", "shoal.", f"{EVENT_PREFIX}."))
    )
