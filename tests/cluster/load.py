"""Durable load over several functions and publishers, counted by request id.

Like tests/test_faults.py's ``Run``, over a cluster: each publisher has its own connection
(to its own host's node first) and retries a publish that timed out or failed with the same
``Nats-Msg-Id``, which JetStream de-duplicates. An event counts once JetStream acknowledged
it; it is lost if no answer ever came and no result was stored.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import anyio
import nats.errors

from runtime import Client, ResultNotFound

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

# The tests' example functions the load is spread over: tests/fns/load.py's "work" and
# tests/fns/basics.py's "ping" and "info".
FUNCTIONS = ("work", "ping", "info")
WINDOW = 100  # events published and not yet answered, at most (unless answers stall)


class Load:
    def __init__(self, answers: NATS, tag: str, n: int) -> None:
        self.nc = answers  # where answers arrive
        self.tag = tag
        self.n = n
        self.acked: set[str] = set()
        self.answers: Counter[str] = Counter()
        self.arrivals: dict[str, list[float]] = defaultdict(list)  # function -> monotonic
        self.progress = anyio.Event()
        self.retried = 0  # publishes sent again with the same id
        self.deduplicated = 0  # of those, ones JetStream had stored already (PubAck duplicate)
        self.stored_only = 0  # processed and stored, the answer lost in transit

    def request_id(self, i: int) -> str:
        return f"{self.tag}-{FUNCTIONS[i % len(FUNCTIONS)]}-{i}"

    async def start(self) -> None:
        async def on_answer(msg: Msg) -> None:
            rid = (msg.headers or {})["Shoal-Request-Id"]
            self.answers[rid] += 1
            self.arrivals[rid.split("-")[1]].append(time.monotonic())
            self.progress.set()
            self.progress = anyio.Event()

        await self.nc.subscribe(f"answers.{self.tag}", cb=on_answer)
        await self.nc.flush()

    async def publish(self, nc: NATS, indices: range) -> None:
        """Publish events ``indices`` over ``nc``, each until JetStream acknowledges it.

        At most :data:`WINDOW` events are unanswered at a time (a closed loop), so that
        publishing goes on while the answers come, and a fault mid-load meets both."""
        js = nc.jetstream()
        for i in indices:
            while len(self.acked) - len(self.answers) >= WINDOW:
                with anyio.move_on_after(5):  # answers lost in transit never come
                    await self.progress.wait()
                    continue
                break
            rid = self.request_id(i)
            function = FUNCTIONS[i % len(FUNCTIONS)]
            while True:
                try:
                    ack = await js.publish(
                        f"fn.{function}",
                        json.dumps({"i": i}).encode(),
                        headers={"Nats-Msg-Id": rid, "Shoal-Reply-To": f"answers.{self.tag}"},
                        timeout=2,
                    )
                    self.acked.add(rid)
                    self.deduplicated += bool(ack.duplicate)
                    break
                except Exception:
                    self.retried += 1
                    await anyio.sleep(0.2)  # its node is away: the same id again, shortly

    async def wait_answered(self, count: int, timeout: float = 120) -> None:
        with anyio.fail_after(timeout):
            while len(self.answers) < count:
                await self.progress.wait()

    async def finish(self, timeout: float = 180) -> None:
        """Wait for every acknowledged event's answer; those without one are looked up in
        the results bucket (answers are at most once: one sent while the subscriber was
        reconnecting is gone, though its result is stored)."""
        with anyio.move_on_after(timeout / 2):
            await self.wait_answered(self.n, timeout / 2)
        client = Client(self.nc)
        missing = [rid for rid in sorted(self.acked) if rid not in self.answers]
        with anyio.move_on_after(timeout / 2):
            for rid in missing:
                while True:
                    try:
                        await client.wait_result(rid, timeout=timeout / 2)
                        self.stored_only += 1
                        break
                    except ResultNotFound:
                        break  # lost: counted as such
                    except nats.errors.TimeoutError:
                        await anyio.sleep(0.2)  # the bucket's stream is electing a leader

    def longest_silence(self, function: str, since: float) -> float:
        """The longest time without an answer from ``function`` after ``since`` (monotonic),
        up to its last answer."""
        times = [since, *(t for t in self.arrivals[function] if t >= since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def report(self, fault: str) -> tuple[int, int, int]:
        """Prints and returns (lost, duplicated answers, answered or stored)."""
        answered = sum(1 for rid in self.acked if rid in self.answers)
        lost = len(self.acked) - answered - self.stored_only
        duplicated = sum(c - 1 for c in self.answers.values())
        print(
            f"\n[{fault}] sent {self.n} (acknowledged {len(self.acked)}; publishes retried "
            f"{self.retried}, found stored already {self.deduplicated}): answered {answered}, "
            f"processed with the answer lost in transit {self.stored_only}, lost {lost}, "
            f"duplicated answers {duplicated}"
        )
        return lost, duplicated, answered + self.stored_only
