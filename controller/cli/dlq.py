"""``shoal dlq list`` and ``shoal dlq redrive``: dead letters."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from runtime.wire import deadletter

from .common import CliError, Commands, Exit, connected, table

if TYPE_CHECKING:
    import argparse


def register(commands: Commands) -> None:
    dlq = commands.group("dlq", "dead letters: list them, or re-drive them")
    dl = dlq.add("list", list_, "list dead letters")
    dl.add_argument("--function")
    dl.add_argument("--json", action="store_true", help="a JSON array")
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
