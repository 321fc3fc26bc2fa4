"""``shoal deploy``, ``shoal rm`` and ``shoal status``: the deployed functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import nats.js.errors

from runtime import config
from runtime.wire import protocol
from runtime.wire.connection import kv, snapshot
from runtime.wire.spec import FunctionSpec

from ..adaptive import describe, summaries
from ..deploy import deploy_file
from ..keepalive import KeepAliveSettings
from ..remove import remove_function
from ..up import where
from .common import CliError, Commands, Exit, connected, table

if TYPE_CHECKING:
    import argparse


def register(commands: Commands) -> None:
    dep = commands.add("deploy", deploy, "deploy the @functions in Python files or folders")
    dep.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a .py file, or a folder: deployed as one bundle (see docs/bundles.md)",
    )
    dep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME.OPTION=VALUE",
        help="override an option, e.g. --set embed.min_workers=2 (value parsed as JSON)",
    )
    fuse = dep.add_mutually_exclusive_group()
    fuse.add_argument(
        "--fuse",
        dest="fuse",
        action="store_true",
        default=None,
        help="run handlers' executors inside the handler workers",
    )
    fuse.add_argument(
        "--split",
        dest="fuse",
        action="store_false",
        help="run executors in their own workers (the default)",
    )

    rm = commands.add("rm", rm_, "remove a function: drain its workers, delete its stream and code")
    rm.add_argument("function")
    rm.add_argument("--force", action="store_true", help="remove even with events queued")
    rm.add_argument("--purge", action="store_true", help="also delete its dead letters")

    st = commands.add("status", status, "functions, workers, load")
    st.add_argument("--json", action="store_true", help="one JSON object")


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--set NAME.OPTION=VALUE`` options by function name (values parsed as JSON if they are)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, option = key.rpartition(".")
        if not sep or not dot:
            raise CliError(Exit.USAGE, f"error: --set takes NAME.OPTION=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[option] = value
    return out


async def deploy(args: argparse.Namespace) -> None:
    overrides = parse_overrides(args.set)
    deployed: set[str] = set()
    async with connected(args, "shoal-deploy") as nc:
        for f in args.files:
            for spec in await deploy_file(nc, f, fuse=args.fuse, overrides=overrides):
                deployed.add(spec.name)
                print(f"deployed {spec.name} (version {spec.version}) {where(spec)}")
    unknown = set(overrides) - deployed
    if unknown:
        raise CliError(
            Exit.FAILED,
            f"error: --set names nothing these files define: {', '.join(sorted(unknown))}",
            "  (what they define is deployed; check the names with shoal status)",
        )


async def rm_(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-rm") as nc:
        removed = await remove_function(nc, args.function, force=args.force, purge=args.purge)
    print("\n".join(removed.lines()))


async def status(args: argparse.Namespace) -> None:
    async with connected(args, "shoal-status") as nc:
        js = nc.jetstream()
        specs = {
            k: FunctionSpec.from_bytes(v)
            for k, v in (await snapshot(await kv(js, protocol.FUNCTIONS_BUCKET))).items()
        }
        workers = [
            msgpack.unpackb(v)
            for v in (await snapshot(await kv(js, protocol.WORKERS_BUCKET))).values()
        ]
        controllers = await snapshot(await kv(js, protocol.CONTROLLERS_BUCKET))
        placed = (await snapshot(await kv(js, protocol.PLACEMENT_BUCKET))).get("plan")
        placement = msgpack.unpackb(placed, raw=False) if placed else {}
        hosts = hosts_of(controllers, placement)
        keepalive = await summaries(
            js, specs, KeepAliveSettings(bin_s=config.KEEPALIVE_BIN_S.get())
        )
        functions: list[dict[str, Any]] = []
        for name in sorted(specs):
            spec = specs[name]
            mine = [w for w in workers if w.get("function") == name]
            ready = [w for w in mine if w.get("state") == "ready"]
            backlog: int | None = None
            unacked: int | None = None
            if spec.kind == "function":
                try:
                    ci = await js.consumer_info(spec.stream, protocol.CONSUMER)
                    backlog, unacked = int(ci.num_pending or 0), int(ci.num_ack_pending or 0)
                except nats.js.errors.NotFoundError:
                    pass
            functions.append(
                {
                    "function": name,
                    "kind": spec.kind,
                    "version": spec.version,
                    "state": "warm" if ready else "cold",
                    "workers": len(ready),
                    "draining": len(mine) - len(ready),
                    "max_workers": spec.max_workers,
                    "in_flight": sum(int(w.get("inflight", 0)) for w in mine),
                    "backlog": backlog,
                    "unacked": unacked,
                    "subjects": list(spec.event_subjects),
                    "keepalive": keepalive[name],
                    "cold_starts_1h": keepalive[name]["cold_starts_1h"],
                }
            )
    if args.json:
        print(
            json.dumps(
                {
                    "functions": functions,
                    "controllers": len(controllers),
                    "workers": len(workers),
                    "hosts": hosts,
                    "placer": placement.get("leader") or None,
                    "unplaced": placement.get("unplaced") or {},
                }
            )
        )
        return
    rows = [
        (
            *("FUNCTION", "VERSION", "STATE", "WORKERS", "IN FLIGHT", "BACKLOG", "UNACKED"),
            *("KEEP-ALIVE", "COLD 1H", "SUBJECTS"),
        )
    ]
    for f in functions:
        draining = f" (+{f['draining']} draining)" if f["draining"] else ""
        rows.append(
            (
                f["function"],
                f["version"],
                f["state"],
                f"{f['workers']}/{f['max_workers']}{draining}",
                str(f["in_flight"]),
                "-" if f["backlog"] is None else str(f["backlog"]),
                "-" if f["unacked"] is None else str(f["unacked"]),
                describe(f["keepalive"]),
                str(f["cold_starts_1h"]),
                ", ".join(f["subjects"]),
            )
        )
    table(rows)
    if hosts:
        print()
        table(host_table(hosts))
    print(f"\ncontrollers: {len(controllers)}   workers: {len(workers)}")
    unplaced = placement.get("unplaced") or {}
    if unplaced:
        print("fit on no host: " + ", ".join(f"{f} {n}" for f, n in sorted(unplaced.items())))


def hosts_of(controllers: dict[str, bytes], placement: dict[str, Any]) -> list[dict[str, Any]]:
    """Each controller's host as its heartbeat announces it (docs/placement.md), with the
    workers the plan gives it and whether it places."""
    plan: dict[str, dict[str, int]] = placement.get("plan") or {}
    out = []
    for cid, raw in sorted(controllers.items()):
        info = msgpack.unpackb(raw, raw=False)
        host = str(info.get("host") or cid)
        out.append(
            {
                "host": host,
                "controller": cid,
                "places": placement.get("leader") == cid,
                "capacity": info.get("capacity") or {},
                "usage": info.get("usage") or {},
                "planned": {f: c[host] for f, c in sorted(plan.items()) if c.get(host)},
            }
        )
    return out


def host_table(hosts: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("HOST", "CONTROLLER", "CPU", "MEMORY MIB", "GPUS", "WORKERS", "PLANNED")
    ]
    for h in hosts:
        cap, use = h["capacity"], h["usage"]
        rows.append(
            (
                h["host"],
                h["controller"] + (" (places)" if h["places"] else ""),
                f"{cap.get('cpu', 0):g}",
                f"{use.get('memory_mb', 0)}/{cap.get('memory_mb', 0)}",
                f"{use.get('gpus', 0)}/{cap.get('gpus', 0)}",
                str(use.get("workers", 0)),
                ", ".join(f"{f}={n}" for f, n in h["planned"].items()) or "-",
            )
        )
    return rows
