"""User metadata as S3 carries it, including the checksum every write records."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CHECKSUM_META", "Headers", "metadata_from_headers", "user_metadata"]

Headers: TypeAlias = dict[str, str | list[str] | tuple[str]]  # minio's metadata type

CHECKSUM_META = "shoal-sha256"
"""Metadata name under which the SHA-256 of the content is recorded."""
_META_HEADER_PREFIX = "x-amz-meta-"


def user_metadata(metadata: Mapping[str, str] | None) -> Headers:
    """Validated user metadata as minio expects it (unprefixed, lowercased keys)."""
    out: Headers = {}
    for name, value in (metadata or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("metadata keys and values must be str")
        lowered = name.lower()
        # S3 carries user metadata in HTTP headers: ASCII only, no line breaks.
        if not name or not name.isascii() or not value.isascii() or "\n" in value or "\r" in value:
            raise ValueError(f"metadata {name!r} must be non-empty ASCII without line breaks")
        if lowered == CHECKSUM_META or lowered.startswith(_META_HEADER_PREFIX):
            raise ValueError(f"metadata name {name!r} is reserved")
        out[lowered] = value
    return out


def metadata_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """User metadata from response headers, without the ``x-amz-meta-`` prefix."""
    n = len(_META_HEADER_PREFIX)
    return {
        name[n:].lower(): value
        for name, value in headers.items()
        if name.lower().startswith(_META_HEADER_PREFIX)
    }
