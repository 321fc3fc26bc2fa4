"""Which channel an intermediate takes, and whether compressing it pays.

Each channel is modelled as ``latency + bytes / bandwidth``, both measured on the running
cluster (:func:`fit`): ``inline`` is NATS (chunked at the server's max payload), ``object``
is a PUT and a GET on the object store plus a small NATS message carrying the reference.
The cheaper predicted time wins, per message. A model is kept for the cluster as a whole
and one per pair of hosts that has been measured (:func:`between` picks the one for a
message's source and destination host). Compression is decided per message too: a
sample is compressed, and the whole payload is compressed only when the time saved on the
wire exceeds the time spent compressing and decompressing.

The money side (what a run costs on a cloud's price list) is :class:`Prices`; it does not
steer the channel (on a self-hosted cluster messages and requests are free, time is not),
but benchmarks print it, as FSD-Inference's cost model does.
"""

from __future__ import annotations

import statistics
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

SAMPLE = 8 * 1024  # bytes compressed to estimate a payload's ratio and the compressor's speed
MIN_COMPRESS = 16 * 1024  # below this, compressing never pays for the bookkeeping
ZLIB_LEVEL = 1
DECOMPRESS_SPEEDUP = 4.0  # zlib inflates about this much faster than level 1 deflates


@dataclass(frozen=True)
class Link:
    """A channel's measured cost: ``latency_s + nbytes / bytes_per_s``."""

    latency_s: float
    bytes_per_s: float

    def seconds(self, nbytes: int) -> float:
        return self.latency_s + nbytes / self.bytes_per_s


# Used until a worker has measured its own cluster: loopback-ish NATS, a local S3 server.
DEFAULT_INLINE = Link(0.0004, 400e6)
DEFAULT_OBJECT = Link(0.006, 250e6)


@dataclass(frozen=True)
class CostModel:
    inline: Link = DEFAULT_INLINE
    object: Link | None = DEFAULT_OBJECT  # None: no object store configured
    calibrated: bool = False

    def choose(self, nbytes: int) -> str:
        """``"inline"`` or ``"object"``: the faster predicted path for ``nbytes``."""
        if self.object is None:
            return "inline"
        inline = self.inline.seconds(nbytes)
        via_object = self.object.seconds(nbytes) + self.inline.latency_s  # + the reference
        return "object" if via_object < inline else "inline"

    def seconds(self, channel: str, nbytes: int) -> float:
        if channel == "object" and self.object is not None:
            return self.object.seconds(nbytes) + self.inline.latency_s
        return self.inline.seconds(nbytes)

    def describe(self) -> dict[str, float | bool | None]:
        return {
            "calibrated": self.calibrated,
            "inline_latency_ms": round(self.inline.latency_s * 1e3, 3),
            "inline_mb_per_s": round(self.inline.bytes_per_s / 1e6, 1),
            "object_latency_ms": round(self.object.latency_s * 1e3, 3) if self.object else None,
            "object_mb_per_s": round(self.object.bytes_per_s / 1e6, 1) if self.object else None,
        }


Pair = tuple[str, str]  # (from host, to host)


def between(
    default: CostModel, pairs: Mapping[Pair, CostModel], src: str | None, dst: str | None
) -> CostModel:
    """The model for a message from host ``src`` to host ``dst``: the pair's own when it has
    been measured, else ``default`` (the cluster-wide one; also when a host is unknown)."""
    if src is None or dst is None:
        return default
    return pairs.get((src, dst), default)


def fit(samples: Sequence[tuple[int, float]]) -> Link:
    """Least-squares ``latency + bytes / bandwidth`` through (bytes, seconds) samples.

    Medians per size first, so one slow outlier does not tilt the line.
    """
    by_size: dict[int, list[float]] = {}
    for n, t in samples:
        by_size.setdefault(n, []).append(t)
    points = sorted((n, statistics.median(ts)) for n, ts in by_size.items())
    if len(points) < 2:
        raise ValueError("fit needs samples of at least two sizes")
    xs = [float(n) for n, _ in points]
    ys = [t for _, t in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    slope = max(slope, 1e-12)  # time never falls with size; keeps the bandwidth finite
    latency = max(my - slope * mx, min(ys) * 0.1, 1e-6)
    return Link(latency_s=latency, bytes_per_s=1.0 / slope)


def maybe_compress(body: bytes, link: Link) -> tuple[bytes, bool]:
    """``(payload, compressed)``: compress when the time saved on ``link`` exceeds its cost."""
    n = len(body)
    if n < MIN_COMPRESS:
        return body, False
    sample = body[:SAMPLE] if n <= 2 * SAMPLE else body[n // 2 : n // 2 + SAMPLE]
    start = time.perf_counter()
    packed = zlib.compress(sample, ZLIB_LEVEL)
    spent = max(time.perf_counter() - start, 1e-9)
    ratio = len(packed) / len(sample)
    speed = len(sample) / spent  # bytes per second this payload compresses at
    saved = n * (1 - ratio) / link.bytes_per_s
    cost = n / speed * (1 + 1 / DECOMPRESS_SPEEDUP)
    if saved <= cost:
        return body, False
    return zlib.compress(body, ZLIB_LEVEL), True


@dataclass(frozen=True)
class Prices:
    """A cloud price list (US dollars), defaults: AWS us-east-1 list prices, 2024.

    ``queue``: FSD-Inference's pub/sub channel (SNS fan-out into SQS), billed per publish of
    up to 64 KB, per SQS request and per GB out of SNS; ``object``: S3 requests. Compute is
    the same for both channels and is left out, as is storage (intermediates live seconds).
    """

    publish_per_million: float = 0.50  # SNS, per 64 KB chunk
    queue_request_per_million: float = 0.40  # SQS send/receive/delete, per 64 KB chunk
    queue_gb: float = 0.09  # SNS data out to SQS
    put_per_thousand: float = 0.005  # S3 PUT (and LIST)
    get_per_thousand: float = 0.0004  # S3 GET

    def queue_cost(self, messages: int, nbytes: int) -> float:
        chunks = messages + nbytes // (64 * 1024)
        return (
            chunks * self.publish_per_million / 1e6
            + chunks * 3 * self.queue_request_per_million / 1e6  # send, receive, delete
            + nbytes / 1e9 * self.queue_gb
        )

    def object_cost(self, objects: int) -> float:
        """One PUT and one GET per message; receivers are told by NATS, so no LIST polls."""
        return objects * (self.put_per_thousand + self.get_per_thousand) / 1e3
