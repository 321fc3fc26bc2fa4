"""Connection settings for the S3-compatible object store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runtime import config

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["S3Settings"]

DEFAULT_ENDPOINT = "127.0.0.1:9000"  # where a storage user without SHOAL_S3_ENDPOINT looks


@dataclass(frozen=True)
class S3Settings:
    """Where the object store lives and how to talk to it.

    ``secret_key`` is excluded from ``repr`` so settings can be logged safely. An empty
    ``region`` lets the client discover each bucket's region (one extra request per bucket);
    the default matches MinIO, SeaweedFS and AWS ``us-east-1``. The three network knobs bound
    how long a call may take when the server is down: the client fails with
    :class:`~storage.errors.StorageUnavailable` instead of hanging.
    """

    endpoint: str = DEFAULT_ENDPOINT
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    secure: bool = False
    region: str = config.S3_REGION.default
    bucket: str = config.S3_BUCKET.default
    intermediate_ttl_days: int = config.S3_INTERMEDIATE_TTL_DAYS.default
    intermediate_prefix: str = config.S3_INTERMEDIATE_PREFIX.default
    connect_timeout: float = config.S3_CONNECT_TIMEOUT.default
    read_timeout: float = config.S3_READ_TIMEOUT.default
    max_retries: int = config.S3_MAX_RETRIES.default

    def __post_init__(self) -> None:
        if not self.endpoint or "/" in self.endpoint:
            raise ValueError(f"endpoint must be host[:port], no scheme or path: {self.endpoint!r}")
        if not 3 <= len(self.bucket) <= 63:
            raise ValueError(f"bucket name must be 3 to 63 characters: {self.bucket!r}")
        if bool(self.access_key) != bool(self.secret_key):
            raise ValueError("access_key and secret_key must be given together (or both empty)")
        if self.intermediate_ttl_days < 1:
            raise ValueError("intermediate_ttl_days must be >= 1")
        if not self.intermediate_prefix.endswith("/") or self.intermediate_prefix == "/":
            raise ValueError("intermediate_prefix must be a non-empty prefix ending with '/'")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Build settings from ``SHOAL_S3_*`` environment variables (:mod:`runtime.config`).

        Credentials come from ``SHOAL_S3_ACCESS_KEY``/``SHOAL_S3_SECRET_KEY``, else
        ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, else
        ``MINIO_ROOT_USER``/``MINIO_ROOT_PASSWORD``; each variable also has a ``*_FILE``
        variant naming a file that holds the value (Docker secrets). The endpoint may carry an
        ``http://`` or ``https://`` scheme, which sets ``secure`` unless ``SHOAL_S3_SECURE``
        says otherwise. A value that cannot be used raises
        :class:`~runtime.config.ConfigError` (a ValueError) naming its variable.
        """
        env = environ
        endpoint = config.S3_ENDPOINT.get(env) or DEFAULT_ENDPOINT
        secure: bool | None = None
        for scheme, is_secure in (("https://", True), ("http://", False)):
            if endpoint.lower().startswith(scheme):
                endpoint, secure = endpoint[len(scheme) :].rstrip("/"), is_secure
        explicit = config.S3_SECURE.get(env)
        if explicit is not None:
            secure = explicit
        access_key, secret_key = _credentials(env)
        return cls(
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=bool(secure),
            region=config.S3_REGION.get(env),
            bucket=config.S3_BUCKET.get(env),
            intermediate_ttl_days=config.S3_INTERMEDIATE_TTL_DAYS.get(env),
            intermediate_prefix=config.S3_INTERMEDIATE_PREFIX.get(env),
            connect_timeout=config.S3_CONNECT_TIMEOUT.get(env),
            read_timeout=config.S3_READ_TIMEOUT.get(env),
            max_retries=config.S3_MAX_RETRIES.get(env),
        )


def _credentials(env: config.Env | None) -> tuple[str, str]:
    """An access and secret key from one family of ``config.S3_CREDENTIALS``, the first set;
    ``("", "")`` for anonymous access."""
    for access_pair, secret_pair in config.S3_CREDENTIALS:
        access = _read_secret(access_pair, env)
        secret = _read_secret(secret_pair, env)
        if access is None and secret is None:
            continue
        if not access or not secret:
            both = f"{access_pair[0].name} and {secret_pair[0].name}"
            raise config.ConfigError(access_pair[0].name, f"{both} must be set together")
        return access, secret
    return "", ""


def _read_secret(pair: config.Secret, env: config.Env | None) -> str | None:
    """The value of a variable, or of the file its ``_FILE`` variant names (not both)."""
    value, file = pair
    direct, path = value.raw(env), file.raw(env)
    if direct is not None and path is not None:
        raise config.ConfigError(value.name, f"set only one of {value.name} and {file.name}")
    if path is None:
        return direct
    try:  # secret files usually end with a newline that is not part of the secret
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as e:  # the message names the variable, never the file's contents
        raise config.ConfigError(file.name, f"cannot read {file.name}: {e.strerror}") from None
