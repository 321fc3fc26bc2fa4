"""Wire-safe references to stored objects."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ObjectRef"]

_HEX = frozenset(string.hexdigits.lower())


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """Points at one stored object and pins its content.

    Messages between stages carry this instead of the payload. ``sha256`` (lowercase hex)
    and ``size`` describe the exact bytes written, so a reader holding the ref detects any
    later change to the object.
    """

    bucket: str
    key: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if not self.bucket or not self.key:
            raise ValueError("ObjectRef needs a bucket and a key")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"ObjectRef size must be a non-negative int, got {self.size!r}")
        if len(self.sha256) != 64 or not set(self.sha256) <= _HEX:
            raise ValueError("ObjectRef sha256 must be 64 lowercase hex characters")

    def to_wire(self) -> dict[str, Any]:
        """Plain ``str``/``int`` dict, safe for msgpack or JSON."""
        return {"bucket": self.bucket, "key": self.key, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ObjectRef:
        """Inverse of :meth:`to_wire`; unknown keys are ignored for forward compatibility."""
        try:
            bucket, key, size, sha256 = data["bucket"], data["key"], data["size"], data["sha256"]
        except KeyError as exc:
            raise ValueError(f"ObjectRef wire dict is missing {exc.args[0]!r}") from None
        if not isinstance(bucket, str) or not isinstance(key, str) or not isinstance(sha256, str):
            raise ValueError("ObjectRef bucket, key and sha256 must be strings")
        return cls(bucket=bucket, key=key, size=size, sha256=sha256)
