"""The minio client, bounded so a dead server fails fast, and the mapping of its errors."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import MaxRetryError

from runtime import config

from .errors import (
    BucketError,
    ObjectNotFound,
    StorageAccessDenied,
    StorageError,
    StorageUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .settings import S3Settings

__all__ = ["NOT_FOUND_CODES", "build_client", "translate_errors"]

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchVersion"})
_BUCKET_CODES = frozenset(
    {"NoSuchBucket", "BucketAlreadyExists", "InvalidBucketName", "TooManyBuckets"}
)
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AuthorizationHeaderMalformed",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "XMinioServerNotInitialized",
    }
)


def build_client(settings: S3Settings, *, pool_maxsize: int = 16) -> Minio:
    """A ``Minio`` client whose HTTP pool fails fast instead of hanging.

    minio's default pool waits five minutes to connect or read and retries five times, so a
    dead server stalls callers for a long time; here every bound comes from ``settings``.
    """
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
        maxsize=pool_maxsize,
        cert_reqs="CERT_REQUIRED",
        ca_certs=config.SSL_CERT_FILE.get() or certifi.where(),
        retries=urllib3.Retry(
            total=settings.max_retries,
            backoff_factor=0.2,
            backoff_max=2.0,
            status_forcelist=(500, 502, 503, 504),
            # A server-chosen Retry-After could exceed any bound we promise callers.
            respect_retry_after_header=False,
        ),
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key or None,
        secret_key=settings.secret_key or None,
        secure=settings.secure,
        region=settings.region or None,
        http_client=http,
    )


@contextmanager
def translate_errors(endpoint: str, bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn minio and urllib3 exceptions into :class:`StorageError` subclasses.

    Messages name the endpoint, bucket and key but never the credentials.
    """
    try:
        yield
    except StorageError:
        raise
    except S3Error as exc:
        raise _from_s3_error(exc, bucket, key) from exc
    except ServerError as exc:
        if exc.status_code == 501:
            raise StorageError(
                f"operation not supported by the server: {exc}", bucket=bucket, key=key
            ) from exc
        raise StorageUnavailable(
            f"S3 server error {exc.status_code}", bucket=bucket, key=key
        ) from exc
    except InvalidResponseError as exc:
        raise StorageError(
            f"non-S3 response from {endpoint}: {exc}", bucket=bucket, key=key
        ) from exc
    except Urllib3HTTPError as exc:
        # After the retries are spent urllib3 wraps the real cause (refused, timed out).
        reason = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        raise StorageUnavailable(
            f"S3 endpoint {endpoint} unavailable: {type(reason).__name__}",
            bucket=bucket,
            key=key,
        ) from exc


def _from_s3_error(exc: S3Error, bucket: str, key: str | None) -> StorageError:
    code = exc.code or "Unknown"
    detail = f"{code}: {exc.message}" if exc.message else code
    if code in NOT_FOUND_CODES:
        return ObjectNotFound(f"no object {key!r} in bucket {bucket!r}", bucket=bucket, key=key)
    if code in _BUCKET_CODES:
        return BucketError(f"bucket {bucket!r}: {detail}", bucket=bucket, key=key)
    if code in _ACCESS_CODES:
        return StorageAccessDenied(f"access denied ({detail})", bucket=bucket, key=key)
    if code in _TRANSIENT_CODES:
        return StorageUnavailable(f"transient S3 error ({detail})", bucket=bucket, key=key)
    return StorageError(f"S3 error ({detail})", bucket=bucket, key=key)
