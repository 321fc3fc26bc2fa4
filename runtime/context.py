"""The per-invocation context a handler may ask for with a ``ctx`` parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True)
class Context:
    """Facts about one invocation."""

    request_id: str
    function: str
    subject: str
    headers: Mapping[str, str]
    attempt: int  # 1 on first delivery, more after a redelivery
    durable: bool  # True for JetStream events, False for fn.<name>.call requests
