"""Connecting to NATS and creating Shoal's JetStream resources idempotently."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from runtime import config
from runtime.wire import protocol, replicas

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("shoal.nats")


@dataclass(frozen=True)
class NatsAuth:
    """Credentials and TLS for connecting to NATS; ``from_env`` reads ``SHOAL_NATS_*``.

    Secrets (the password) stay out of ``repr`` and of every log line and error message.
    Files are named by path and read by nats-py or ``ssl``; they are checked to exist up front
    so a typo fails at once instead of as endless reconnects.
    """

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    creds: Path | None = None  # a .creds file: user JWT + nkey seed (operator mode)
    nkey_seed: Path | None = None  # a file holding a user nkey seed ("SU...")
    tls_ca: Path | None = None  # CA bundle that signs the server's certificate
    tls_cert: Path | None = None  # client certificate (servers that verify clients)
    tls_key: Path | None = None
    inbox_prefix: str | None = None  # e.g. "_INBOX.app": replies only this user may read

    @classmethod
    def from_env(cls, env: config.Env | None = None) -> NatsAuth:
        """From ``env`` (default: this process's environment); a missing file or a half
        setting raises :class:`~runtime.config.ConfigError` naming the variable."""
        password = config.NATS_PASSWORD.get(env)
        password_file = config.NATS_PASSWORD_FILE.get(env)
        if password is None and password_file is not None:
            password = password_file.read_text().strip()
        auth = cls(
            user=config.NATS_USER.get(env),
            password=password,
            creds=config.NATS_CREDS.get(env),
            nkey_seed=config.NATS_NKEY_SEED.get(env),
            tls_ca=config.NATS_TLS_CA.get(env),
            tls_cert=config.NATS_TLS_CERT.get(env),
            tls_key=config.NATS_TLS_KEY.get(env),
            inbox_prefix=config.NATS_INBOX_PREFIX.get(env),
        )
        cert, key, user = config.NATS_TLS_CERT.name, config.NATS_TLS_KEY.name, config.NATS_USER.name
        if (auth.tls_cert is None) != (auth.tls_key is None):
            raise config.ConfigError(cert, f"{cert} and {key} go together")
        if auth.password is not None and auth.user is None:
            name = config.NATS_PASSWORD.name
            raise config.ConfigError(name, f"{name} needs {user}")
        return auth

    def ssl_context(self, url: str) -> ssl.SSLContext | None:
        """A verifying client context when TLS is asked for, else None.

        Without one nats-py still upgrades to TLS when the server requires it, verifying
        against the system's CAs.
        """
        if not (self.tls_ca or self.tls_cert or url.startswith("tls://")):
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
        if self.tls_cert is not None:
            ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        return ctx

    def options(self, url: str) -> dict[str, Any]:
        """nats-py connect options. A user given here wins over one in the URL."""
        opts: dict[str, Any] = {}
        if self.user is not None:
            opts["user"] = self.user
            opts["password"] = self.password or ""
        if self.creds is not None:
            opts["user_credentials"] = str(self.creds)
        if self.nkey_seed is not None:
            opts["nkeys_seed"] = str(self.nkey_seed)
        tls = self.ssl_context(url)
        if tls is not None:
            opts["tls"] = tls
        if self.inbox_prefix:
            opts["inbox_prefix"] = self.inbox_prefix
        return opts

    def describe(self, url: str) -> str:
        """Who is connecting, for error messages: names and paths, never secrets."""
        if self.creds is not None:
            return f"creds file {self.creds}"
        if self.nkey_seed is not None:
            return f"nkey seed file {self.nkey_seed}"
        user = self.user or urlsplit(url).username
        return f"user {user!r}" if user else "no credentials"


class NatsRefused(nats.errors.Error):
    """The server refused these credentials or this TLS setup: retrying cannot help."""


def servers(url: str) -> list[str]:
    """The server URLs in ``url``: one, or several separated by commas (a cluster)."""
    return [u.strip() for u in url.split(",") if u.strip()]


def passed_on(nc: NATS, fallback: str) -> str:
    """The server URLs to give a process this connection's owner starts (its workers): the
    server it is connected to first, then every other server it was configured with, so a
    worker can start while one of them is down (it learns the rest of a cluster from the
    server it reaches). ``fallback`` when the connection knows none."""
    discovered = {uri.geturl() for uri in nc.discovered_servers}
    first = [nc.connected_url.geturl()] if nc.connected_url else []
    urls = [*first, *(u.geturl() for u in nc.servers if u.geturl() not in discovered)]
    return ",".join(dict.fromkeys(urls)) or fallback


def redact(url: str) -> str:
    """``url`` (one or several, comma-separated) with any password replaced by ``***``."""
    if "," in url:
        return ",".join(redact(u) for u in servers(url))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _fatal(e: BaseException) -> bool:
    """Errors that no reconnect can fix: refused credentials, a failed TLS handshake."""
    if isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return False  # the server went away mid-handshake (a restart): try again
    if isinstance(e, NatsRefused | nats.errors.AuthorizationError | ssl.SSLError):
        return True
    text = str(e).lower()
    return any(s in text for s in ("authorization violation", "authentication expired"))


def _tls_only(nc: NATS, opts: dict[str, Any], refusal: str) -> Callable[[], None]:
    """If TLS was asked for, a check that ``nc`` uses it, also made before the password goes
    out: nats-py upgrades only when the server's INFO asks, so a server without TLS (or a
    downgrade by someone in between) would otherwise get it in clear."""

    def check() -> None:
        # nats-py has no public way to tell; a transport it does not expose passes.
        writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
        if "tls" in opts and writer is not None and writer.get_extra_info("ssl_object") is None:
            raise NatsRefused(refusal)

    password = opts.get("password")
    if "tls" in opts and isinstance(password, str):
        secret: str = password

        def checked_password() -> str:
            check()
            return secret

        opts["password"] = checked_password
    return check


async def connect(
    url: str | None = None,
    *,
    name: str,
    auth: NatsAuth | None = None,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    **options: Any,
) -> NATS:
    """Connect with Shoal's defaults: reconnect forever, credentials and TLS from the
    environment (:class:`NatsAuth`). Refused credentials or a failed TLS handshake raise
    :class:`NatsRefused` at once instead of being retried."""
    url = url or config.nats_url()
    auth = auth or NatsAuth.from_env()
    secrets = [s for s in (auth.password, *(urlsplit(u).password for u in servers(url))) if s]
    connecting = True

    async def on_error(e: Exception) -> None:
        text = str(e)
        for secret in secrets:  # belt and braces: no nats-py message is known to echo one
            text = text.replace(secret, "***")
        if connecting and isinstance(e, NatsRefused):
            raise e
        if connecting and _fatal(e):
            raise NatsRefused(
                f"NATS at {redact(url)} refused {name!r} ({auth.describe(url)}): {text}"
            ) from e
        log.warning("nats (%s): %s", name, text)
        if error_cb is not None:
            await error_cb(e)

    opts: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
        **auth.options(url),
        **options,
    }
    nc = NATS()
    check_tls = _tls_only(nc, opts, f"NATS at {redact(url)} offers no TLS: {name!r} refused")
    try:
        await nc.connect(servers=servers(url), **opts)
        check_tls()
    except NatsRefused as e:
        # A failed TLS upgrade has closed its socket, and asyncio would never finish closing
        # the stream around it; anything else has an open connection to close.
        if not isinstance(e.__cause__, ssl.SSLError):
            await nc.close()
        raise
    connecting = False
    return nc


async def drain_shielded(sub: Subscription) -> None:
    """``sub.drain()``, which no cancellation interrupts.

    A drain flushes the connection (a PING, then waiting for its PONG). Cancelled while it
    waits, nats-py leaves the cancelled wait in its queue of PONG waiters, and the PONG that
    then arrives kills the connection's read loop (``InvalidStateError`` in
    ``_process_pong``): every later request on that connection times out. The drain is
    bounded by nats-py's own flush timeout."""
    with anyio.CancelScope(shield=True):
        await sub.drain()  # type: ignore[no-untyped-call]


# Liveness entries vanish this long after the last heartbeat.
HEARTBEAT_TTL = 10.0
# Values kept per key, where one is not enough. A worker's last heartbeat carries its final
# counts and is followed by two deletes (its own, its controller's when it exits): with one
# value per key, a follower lagging behind would find the deletes only, and lose the counts.
HISTORY = {protocol.WORKERS_BUCKET: 3}


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Make stream ``config.name`` if it is missing, with the replicas
    :func:`runtime.wire.replicas.wanted`; an existing one keeps its settings."""
    try:
        await js.stream_info(str(config.name))
    except NotFoundError:
        await js.add_stream(replicas.stream(js, config))


async def kv(js: JetStreamContext, bucket: str) -> KeyValue:
    """Open one of Shoal's buckets, creating it with its standard settings if missing."""
    try:
        return await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        pass
    results_ttl = config.RESULTS_TTL.get()  # results are kept this long for look-up by id
    ttl = {
        protocol.RESULTS_BUCKET: results_ttl,
        protocol.WORKERS_BUCKET: HEARTBEAT_TTL,
        protocol.CONTROLLERS_BUCKET: HEARTBEAT_TTL,
        protocol.CANCEL_BUCKET: results_ttl,
    }.get(bucket)
    if bucket == protocol.RESULTS_BUCKET:
        return await _results_bucket(js, results_ttl)
    settings = KeyValueConfig(
        bucket=bucket,
        history=HISTORY.get(bucket, 1),
        ttl=ttl,
        storage=StorageType.FILE,
        replicas=replicas.wanted(js),
    )
    return await js.create_key_value(settings)


async def ensure_history(js: JetStreamContext, bucket: str) -> None:
    """Give ``bucket``, if made by an earlier release with less, the history it keeps now
    (:data:`HISTORY`). A controller does it when it starts (workers have no such right); one
    that cannot says so and goes on."""
    want = HISTORY.get(bucket, 1)
    try:
        info = await js.stream_info(f"KV_{bucket}")
        have = info.config.max_msgs_per_subject or 1
        if 0 < have < want:
            info.config.max_msgs_per_subject = want
            await js.update_stream(info.config)
            log.info("bucket %s now keeps %d values per key (was %d)", bucket, want, have)
    except Exception as e:  # everything works with less, but figures may come out short
        log.warning("could not raise the history of bucket %s to %d: %s", bucket, want, e)


# The marker JetStream leaves where a result expired (``Nats-Marker-Reason: MaxAge``).
MARKER_REASON = "Nats-Marker-Reason"
MARKER_AT_LEAST = 60.0  # seconds


async def _results_bucket(js: JetStreamContext, ttl: float) -> KeyValue:
    """The results bucket: a KV bucket whose expired entries leave a marker for as long again
    (``subject_delete_marker_ttl``), so that ``shoal result`` tells "expired" from "never
    seen" with no write of ours. The stream is nats-py's KV stream plus the marker; made here,
    not by ``create_key_value``, which asks the account's API level first (a request the
    worker role may not make)."""
    name = f"KV_{protocol.RESULTS_BUCKET}"
    stream = StreamConfig(
        name=name,
        subjects=[f"$KV.{protocol.RESULTS_BUCKET}.>"],
        allow_direct=True,
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        duplicate_window=min(ttl, 120.0),
        max_age=ttl,
        max_consumers=-1,
        max_msgs=-1,
        max_msgs_per_subject=1,
        num_replicas=replicas.wanted(js),
        storage=StorageType.FILE,
        # Markers live at least a minute, so that even short-lived results are seen go.
        subject_delete_marker_ttl=max(MARKER_AT_LEAST, ttl),
    )
    try:
        await js.add_stream(stream)
    except nats.js.errors.APIError as e:
        if "marker" not in str(e).lower() and "ttl" not in str(e).lower():
            raise
        # A server before 2.11 has no markers: results still work, "expired" reads "unknown".
        log.warning("results without expiry markers (nats-server 2.11+ has them): %s", e)
        stream.allow_msg_ttl = None
        stream.subject_delete_marker_ttl = None
        await js.add_stream(stream)
    return await js.key_value(protocol.RESULTS_BUCKET)


async def snapshot(bucket: KeyValue) -> dict[str, bytes]:
    """Every key's current value in ``bucket``, read once (deleted keys left out).

    The keys come from the bucket's stream (its subjects), each value from a direct read.
    Not a watch: nats-py's watcher can report "no more initial values" before the values it
    has already received (a race between its consumer-info check and its message handler),
    and a snapshot that silently misses keys would, for one, let unused-code pruning delete
    code that deployed functions still name.
    """
    prefix = f"$KV.{bucket._name}."
    info = await bucket._js.stream_info(bucket._stream, subjects_filter=f"{prefix}>")
    out: dict[str, bytes] = {}
    for subject in sorted(info.state.subjects or {}):
        key = subject[len(prefix) :]
        try:
            entry = await bucket.get(key)
        except (KeyNotFoundError, NotFoundError):  # deleted, purged or expired meanwhile
            continue
        if entry.value:
            out[key] = entry.value
    return out
