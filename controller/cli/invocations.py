"""``shoal invoke``, ``shoal result`` and ``shoal cancel``: calls and their results."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from controller import lookup
from runtime.client import Client
from runtime.errors import FunctionNotFound, ResultNotFound, ShoalError, WorkerUnavailable

from .common import CliError, Commands, Exit, connected

if TYPE_CHECKING:
    import argparse


def register(commands: Commands) -> None:
    inv = commands.add("invoke", invoke, "invoke a function and print its result")
    inv.add_argument("function")
    inv.add_argument("event", help="the event, as JSON")
    inv.add_argument("--durable", action="store_true", help="publish to fn.<name>, wait on result")
    inv.add_argument("--id", help="request id (Nats-Msg-Id)")
    inv.add_argument("--timeout", type=float, default=60.0)

    res = commands.add(
        "result",
        result,
        "print a request's result, or where it stands: queued, running, expired or unknown",
    )
    res.add_argument("request_id")
    res.add_argument("--json", action="store_true", help="one JSON object")

    commands.add("cancel", cancel, "cancel a queued or running invocation").add_argument(
        "request_id"
    )


async def invoke(args: argparse.Namespace) -> None:
    try:
        event = json.loads(args.event)
    except json.JSONDecodeError as e:
        raise CliError(Exit.USAGE, f"error: the event must be JSON: {e}") from None
    async with connected(args, "shoal-invoke") as nc:
        client = Client(nc)
        if args.durable:
            rid = await client.publish(args.function, event, request_id=args.id)
            try:
                answer = await client.wait_result(rid, timeout=args.timeout)
            except ResultNotFound:
                raise CliError(
                    Exit.FAILED,
                    f"error: no answer within {args.timeout:g}s; the event is stored",
                    f"  look it up later: shoal result {rid}",
                ) from None
            print(json.dumps(answer.value if answer.ok else {"error": answer.value}, default=repr))
            print(f"request id: {rid}", file=sys.stderr)
            if not answer.ok:
                raise CliError(error_exit(answer.value))
            return
        try:
            value = await client.call(
                args.function, event, timeout=args.timeout, request_id=args.id
            )
        except ShoalError as e:
            print(json.dumps({"error": e.to_wire()}))
            raise CliError(error_exit(e.to_wire())) from None
        print(json.dumps(value))


def error_exit(wire: Any) -> Exit:
    """Not found (3), nothing answered (6), or the function's own error (1)."""
    code = wire.get("code") if isinstance(wire, dict) else None
    if code == FunctionNotFound.code:
        return Exit.NOT_FOUND
    if code == WorkerUnavailable.code:
        return Exit.FAILED
    return Exit.FUNCTION_ERROR


# What `shoal result` says of a request that has no result (yet, or any more).
NOT_DONE = {
    lookup.QUEUED: "queued: stored in {function}'s stream, not yet delivered to a worker",
    lookup.RUNNING: "running on {where}",
    lookup.EXPIRED: "expired: it ran, but its result is kept SHOAL_RESULTS_TTL seconds only",
    lookup.UNKNOWN: "unknown: never seen here, or its result expired long ago",
}


async def result(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-result") as nc:
        found = await lookup.request_state(nc, args.request_id)
    stored = found.result
    if stored is None:
        # One JSON object on stdout, the state in words on stderr; not found: exit 3.
        print(json.dumps(found.to_json()))
        where = (
            f"worker {found.worker} of {found.function}"
            if found.worker
            else f"{found.function} ({found.detail})"
        )
        line = NOT_DONE[found.state].format(function=found.function, where=where)
        if found.dead_letter is not None:
            line += f"; its dead letter: shoal dlq show {found.dead_letter}"
        print(f"{args.request_id}: {line}", file=sys.stderr)
        if found.state in (lookup.UNKNOWN, lookup.EXPIRED):
            raise CliError(Exit.NOT_FOUND)
        return
    body = {
        "request_id": stored.request_id,
        "state": found.state,
        "function": stored.function,
        "ok": stored.ok,
        "result" if stored.ok else "error": stored.value,
        "finished_at": stored.finished_at,
    }
    # One JSON object either way: --json is accepted so every reading command takes it.
    print(json.dumps(body, default=repr))
    if not stored.ok:
        _print_traceback(stored.value)
        raise CliError(Exit.FUNCTION_ERROR)


def _print_traceback(wire: Any) -> None:
    """A failed request's traceback, as the function raised it, for a person to read."""
    tb = wire.get("traceback") if isinstance(wire, dict) else None
    if isinstance(tb, str) and tb:
        print(tb, file=sys.stderr)


async def cancel(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-cancel") as nc:
        await Client(nc).cancel(args.request_id)
    print(f"cancelled {args.request_id}")
