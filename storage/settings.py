"""Connection settings for the S3-compatible object store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["S3Settings"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

# Credential sources, most specific first. A pair is taken from one family only so that an
# access key from one system is never combined with a secret from another.
_CREDENTIAL_FAMILIES: tuple[tuple[str, str], ...] = (
    ("SHOAL_S3_ACCESS_KEY", "SHOAL_S3_SECRET_KEY"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
)


@dataclass(frozen=True)
class S3Settings:
    """Where the object store lives and how to talk to it.

    ``secret_key`` is excluded from ``repr`` so settings can be logged safely. An empty
    ``region`` lets the client discover each bucket's region (one extra request per bucket);
    the default matches MinIO, SeaweedFS and AWS ``us-east-1``. The three network knobs bound
    how long a call may take when the server is down: the client fails with
    :class:`~storage.errors.StorageUnavailable` instead of hanging.
    """

    endpoint: str = "127.0.0.1:9000"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    secure: bool = False
    region: str = "us-east-1"
    bucket: str = "shoal"
    intermediate_ttl_days: int = 1
    intermediate_prefix: str = "intermediates/"
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    max_retries: int = 2

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
        """Build settings from ``SHOAL_S3_*`` environment variables.

        Credentials come from ``SHOAL_S3_ACCESS_KEY``/``SHOAL_S3_SECRET_KEY``, else
        ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, else
        ``MINIO_ROOT_USER``/``MINIO_ROOT_PASSWORD``; each variable also has a ``*_FILE``
        variant naming a file that holds the value (Docker secrets). The endpoint may carry an
        ``http://`` or ``https://`` scheme, which sets ``secure`` unless ``SHOAL_S3_SECURE``
        says otherwise.
        """
        env = os.environ if environ is None else environ
        endpoint = env.get("SHOAL_S3_ENDPOINT", "").strip() or "127.0.0.1:9000"
        secure: bool | None = None
        for scheme, is_secure in (("https://", True), ("http://", False)):
            if endpoint.lower().startswith(scheme):
                endpoint, secure = endpoint[len(scheme) :].rstrip("/"), is_secure
        if "SHOAL_S3_SECURE" in env:
            secure = _parse_bool("SHOAL_S3_SECURE", env["SHOAL_S3_SECURE"])
        access_key, secret_key = _credentials(env)
        defaults = cls()
        return cls(
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=bool(secure),
            region=env.get("SHOAL_S3_REGION", defaults.region).strip(),
            bucket=env.get("SHOAL_S3_BUCKET", "").strip() or defaults.bucket,
            intermediate_ttl_days=_parse_int(
                env, "SHOAL_S3_INTERMEDIATE_TTL_DAYS", defaults.intermediate_ttl_days
            ),
            intermediate_prefix=env.get("SHOAL_S3_INTERMEDIATE_PREFIX", "").strip()
            or defaults.intermediate_prefix,
            connect_timeout=_parse_float(env, "SHOAL_S3_CONNECT_TIMEOUT", defaults.connect_timeout),
            read_timeout=_parse_float(env, "SHOAL_S3_READ_TIMEOUT", defaults.read_timeout),
            max_retries=_parse_int(env, "SHOAL_S3_MAX_RETRIES", defaults.max_retries),
        )


def _read_var(env: Mapping[str, str], name: str) -> str | None:
    """Value of ``name`` or of the file named by ``name_FILE``; setting both is an error."""
    direct = env.get(name)
    file_name = env.get(f"{name}_FILE")
    if direct is not None and file_name is not None:
        raise ValueError(f"set only one of {name} and {name}_FILE")
    if file_name is not None:
        try:
            # Secret files usually end with a newline that is not part of the secret.
            return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            # The message names the variable, never the file contents.
            raise ValueError(f"cannot read {name}_FILE: {exc.strerror}") from None
    return direct


def _credentials(env: Mapping[str, str]) -> tuple[str, str]:
    for access_name, secret_name in _CREDENTIAL_FAMILIES:
        access = _read_var(env, access_name)
        secret = _read_var(env, secret_name)
        if access is None and secret is None:
            continue
        if not access or not secret:
            raise ValueError(f"{access_name} and {secret_name} must be set together")
        return access, secret
    return "", ""  # anonymous access


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false, yes/no, on/off)")


def _parse_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _parse_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
