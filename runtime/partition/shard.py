"""What a partition of a partitioned model sees: its place in the run, and its peers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from runtime.errors import ShoalError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.partition.channels import Sent
    from runtime.partition.dataplane import DataPlane
    from runtime.partition.mailbox import Mailbox


class Shard:
    """Partition ``index`` of ``count`` in one run of a partitioned model.

    ``send``/``recv`` move one intermediate between two partitions (a pipeline of layer
    stages); ``exchange`` is one step of row partitions within a layer: every partition sends
    every other one its data, or an explicit "nothing for you", and moves on once it has heard
    from every source. There is no barrier: a fast partition's messages for later steps wait
    in its peers' mailboxes until they get there.
    """

    def __init__(
        self,
        plane: DataPlane,
        box: Mailbox,
        *,
        run: str,
        index: int,
        count: int,
        roster: list[str],
        channel: str,
        request_id: str,
    ) -> None:
        self._plane = plane
        self._box = box
        self._run = run
        self._roster = roster
        self._channel = channel
        self.index = index
        self.count = count
        self.request_id = request_id
        self.sent_bytes = 0  # payload bytes this partition sent its peers (after encoding)
        self.sent_messages = 0
        self.sent_objects = 0  # of those, how many went through the object store

    def __repr__(self) -> str:
        return f"Shard({self.index} of {self.count}, run {self._run})"

    async def send(self, step: int, target: int, value: Any) -> None:
        """Send ``value`` (numpy arrays, dicts, lists, scalars; None: nothing) to ``target``."""
        self._check(step, target, "target")
        sent = await self._plane.send(
            self._roster[target], self._run, step, self.index, target, value, self._channel
        )
        self._count(sent)

    async def recv(self, step: int, source: int) -> Any:
        """What ``source`` sent for ``step`` (None if it sent nothing), waiting until it comes."""
        self._check(step, source, "source")
        return await self._plane.receive(self._box, step, source)

    async def exchange(self, step: int, outgoing: Mapping[int, Any]) -> dict[int, Any]:
        """Send ``outgoing[q]`` to every other partition q (missing or None: "nothing for you")
        and return what every other partition sent for ``step``, leaving out the empty ones."""
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        for q in outgoing:
            if not isinstance(q, int) or not 0 <= q < self.count or q == self.index:
                raise ValueError(
                    f"exchange: {q!r} is not another partition (0..{self.count - 1}, "
                    f"not {self.index})"
                )
        peers = [q for q in range(self.count) if q != self.index]
        received: dict[int, Any] = {}
        try:
            async with anyio.create_task_group() as tg:
                for q in peers:
                    tg.start_soon(self.send, step, q, outgoing.get(q))
                for q in peers:
                    value = await self.recv(step, q)
                    if value is not None:
                        received[q] = value
        except BaseExceptionGroup as group:
            raise _first(group) from None
        return received

    def stats(self) -> dict[str, int]:
        return {
            "sent_bytes": self.sent_bytes,
            "sent_messages": self.sent_messages,
            "sent_objects": self.sent_objects,
        }

    def _count(self, sent: Sent) -> None:
        self.sent_bytes += sent.nbytes
        self.sent_messages += sent.messages
        self.sent_objects += sent.objects

    def _check(self, step: int, peer: int, what: str) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if isinstance(peer, bool) or not isinstance(peer, int) or not 0 <= peer < self.count:
            raise ValueError(f"{what} must be a partition in 0..{self.count - 1}, got {peer!r}")
        if peer == self.index:
            raise ValueError(f"partition {self.index} cannot {what} itself")


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error to report from a failed exchange: a Shoal error if there is one."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[Any]) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    return next((e for e in leaves if isinstance(e, ShoalError)), leaves[0])
