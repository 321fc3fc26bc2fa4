"""``shoal logs <function>``: the log lines and output of a function's workers, from the
``SHOAL_LOGS`` stream (any machine that reaches NATS with the controller's role)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from runtime.wire import logstream

from .common import CliError, Commands, Exit, connected

if TYPE_CHECKING:
    import argparse

    from nats.aio.msg import Msg

QUIET_END = 1.0  # seconds without a line after which a reading without --follow ends
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(commands: Commands) -> None:
    logs = commands.add("logs", show, "print a function's log lines and output (SHOAL_LOGS)")
    logs.add_argument("function")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--since", metavar="AGO", help="only lines this recent: 30s, 10m, 2h, 1d")
    logs.add_argument("--request", metavar="ID", help="only the lines of this request id")
    logs.add_argument("--json", action="store_true", help="one JSON object per line")


def seconds(text: str) -> float:
    m = _DURATION.match(text)
    if m is None:
        raise CliError(Exit.USAGE, f"error: --since {text!r}: say 30s, 10m, 2h or 1d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def line_text(line: dict[str, Any]) -> str:
    """A line as a person reads it: time, level, worker, request, message."""
    ts = line.get("ts")
    when = (
        datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]
        if isinstance(ts, int | float)
        else "--:--:--"
    )
    level = line.get("stream") or str(line.get("level", "")).lower()
    where = " ".join(str(x) for x in (line.get("worker"), line.get("request_id")) if x)
    text = f"{when} {level:<7} [{where}] {line.get('message', '')}"
    exc = line.get("exc")
    return f"{text}\n{exc}" if exc else text


async def show(args: argparse.Namespace) -> None:
    since = seconds(args.since) if args.since else None
    async with connected(args, "shoal-logs") as nc:
        js = nc.jetstream()
        try:
            info = await js.stream_info(logstream.STREAM)
        except NotFoundError:
            raise CliError(
                Exit.NOT_FOUND,
                f"error: no {logstream.STREAM} stream: no controller has run on this cluster",
            ) from None
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        if since is not None:
            start = datetime.fromtimestamp(time.time() - since, UTC)
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=start,
            )
        subject = logstream.function_subjects(args.function)
        sub = await js.subscribe(subject, ordered_consumer=True, config=config)
        try:
            await _print_lines(sub, args, empty=not info.state.messages)
        finally:
            await sub.unsubscribe()


async def _print_lines(sub: Any, args: argparse.Namespace, *, empty: bool) -> None:
    wait = None if args.follow else QUIET_END
    if empty and not args.follow:
        return
    while True:
        try:
            msg: Msg = await (sub.next_msg(timeout=wait) if wait else sub.next_msg(timeout=3600))
        except (NatsTimeout, TimeoutError):
            if args.follow:
                continue
            return
        for line in logstream.decode_lines(msg.data):
            if args.request and line.get("request_id") != args.request:
                continue
            print(json.dumps(line) if args.json else line_text(line), flush=True)
        if not args.follow and msg.metadata.num_pending == 0:
            return


__all__ = ["register", "seconds", "show"]
