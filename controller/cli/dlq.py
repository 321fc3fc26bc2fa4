"""``shoal dlq list``, ``shoal dlq show`` and ``shoal dlq redrive``: dead letters."""

from __future__ import annotations

import base64
import json
import sys
from typing import TYPE_CHECKING, Any

from runtime.wire import codec, deadletter, protocol
from runtime.wire.connection import kv
from runtime.wire.results import ResultStore

from .common import CliError, Commands, Exit, connected, table

if TYPE_CHECKING:
    import argparse

    from nats.aio.client import Client as NATS


def register(commands: Commands) -> None:
    dlq = commands.group("dlq", "dead letters: list them, show one whole, or re-drive them")
    dl = dlq.add("list", list_, "list dead letters")
    dl.add_argument("--function")
    dl.add_argument("--json", action="store_true", help="a JSON array")
    ds = dlq.add("show", show, "print one dead letter whole: headers, event, error, traceback")
    ds.add_argument("seq", type=int, help="its sequence, as `shoal dlq list` shows it")
    ds.add_argument("--json", action="store_true", help="one JSON object")
    dr = dlq.add("redrive", redrive, "publish dead letters again and drop them")
    dr.add_argument("--function")
    dr.add_argument("--seq", type=int, action="append", help="only these (repeatable)")


async def list_(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-dlq") as nc:
        letters = await deadletter.list_dead(nc.jetstream(), args.function)
    if args.json:
        keys = ("seq", "function", "subject", "request_id", "deliveries", "code", "reason")
        print(json.dumps([{k: getattr(d, k) for k in keys} for d in letters]))
        return
    rows = [("SEQ", "FUNCTION", "REQUEST ID", "DELIVERIES", "ERROR", "REASON")]
    for d in letters:
        rows.append(
            (str(d.seq), d.function, d.request_id or "-", str(d.deliveries), d.code, d.reason[:80])
        )
    table(rows)


async def show(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-dlq") as nc:
        letter = await deadletter.get_dead(nc.jetstream(), args.seq)
        if letter is None:
            raise CliError(Exit.NOT_FOUND, f"error: no dead letter {args.seq}")
        error = await _stored_error(nc, letter.request_id)
    whole = _whole(letter, error)
    if args.json:
        print(json.dumps(whole, default=repr))
        return
    _print(whole)


async def _stored_error(nc: NATS, request_id: str | None) -> dict[str, Any] | None:
    """The error its request's stored result holds (with the traceback), while it is kept."""
    if not request_id:
        return None
    stored = await ResultStore(nc, await kv(nc.jetstream(), protocol.RESULTS_BUCKET)).get(
        request_id
    )
    if stored is None or stored.ok or not isinstance(stored.value, dict):
        return None
    return stored.value


def _whole(letter: deadletter.DeadLetter, error: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": letter.seq,
        "function": letter.function,
        "subject": letter.subject,
        "request_id": letter.request_id,
        "deliveries": letter.deliveries,
        "code": letter.code,
        "reason": letter.reason,
        "headers": letter.headers,
    }
    content_type = letter.headers.get(protocol.CONTENT_TYPE)
    try:
        out["event"], _ = codec.decode(letter.data, content_type)
    except Exception:  # not an event Shoal can read: its bytes, as they are
        out["event_base64"] = base64.b64encode(letter.data).decode()
    if error is not None:
        out["error"] = error
    return out


def _print(whole: dict[str, Any]) -> None:
    print(f"dead letter {whole['seq']} of {whole['function']}")
    for key in ("subject", "request_id", "deliveries", "code", "reason"):
        print(f"  {key.replace('_', ' '):<11} {whole[key]}")
    print("  headers:")
    for name, value in sorted(whole["headers"].items()):
        print(f"    {name}: {value}")
    if "event" in whole:
        print("  event:")
        text = json.dumps(whole["event"], indent=2, default=repr)
        print("\n".join("    " + line for line in text.splitlines()))
    else:
        print(f"  event (not decodable, base64): {whole['event_base64']}")
    tb = (whole.get("error") or {}).get("traceback")
    if tb:
        print("  traceback (from its stored result):")
        print("\n".join("    " + line for line in tb.splitlines()))
    sys.stdout.flush()


async def redrive(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-dlq") as nc:
        js = nc.jetstream()
        letters = await deadletter.list_dead(js, args.function)
        chosen = [d for d in letters if not args.seq or d.seq in args.seq]
        missing = set(args.seq or ()) - {d.seq for d in chosen}
        if missing:
            raise CliError(
                Exit.NOT_FOUND, f"error: no dead letter {', '.join(map(str, sorted(missing)))}"
            )
        for d in chosen:
            await deadletter.redrive(js, d)
    print(f"re-drove {len(chosen)} dead letter(s)")
