"""``shoal invoke``, ``shoal result`` and ``shoal cancel``: calls and their results."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

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

    res = commands.add("result", result, "print the stored result of a request id")
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


async def result(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-result") as nc:
        stored = await Client(nc).result(args.request_id)
    if stored is None:
        raise CliError(
            Exit.NOT_FOUND,
            f"error: no result stored for {args.request_id!r} (unknown, still running, or expired)",
        )
    body = {
        "request_id": stored.request_id,
        "function": stored.function,
        "ok": stored.ok,
        "result" if stored.ok else "error": stored.value,
        "finished_at": stored.finished_at,
    }
    # One JSON object either way: --json is accepted so every reading command takes it.
    print(json.dumps(body, default=repr))
    if not stored.ok:
        raise CliError(Exit.FUNCTION_ERROR)


async def cancel(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-cancel") as nc:
        await Client(nc).cancel(args.request_id)
    print(f"cancelled {args.request_id}")
