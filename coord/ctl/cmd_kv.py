"""coordctl kv get|put|del|ls|watch, txn, lease grant|keepalive|revoke|ls, lock."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from coord.client import CoordError

from .cmd_base import FAILED, OK, SESSION, Ctx, Failed, Subparsers, group, leaf
from .config import UsageError
from .output import cell, duration, error, within


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    kv = group(sub, "kv", "keys and values")
    get = leaf(kv, common, "get", "read a key (exit 1 if it is absent)", kv_get)
    get.add_argument("key")
    get.add_argument("--value-only", action="store_true", help="print the value alone")
    get.add_argument("--serializable", action="store_true", help="any node's copy, no ReadIndex")
    put = leaf(kv, common, "put", "write a key", kv_put, SESSION)
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value (default: read from stdin)")
    put.add_argument("--lease", type=int, default=0, metavar="ID", help="bind it to a lease")
    put.add_argument(
        "--prev-revision",
        type=int,
        metavar="R",
        help="only if the key's mod_revision is R (0: only if absent)",
    )
    d = leaf(
        kv, common, "del", "delete a key (or every key under it with --prefix)", kv_del, SESSION
    )
    d.add_argument("key")
    d.add_argument("--prefix", action="store_true", help="delete every key starting with KEY")
    ls = leaf(kv, common, "ls", "list the keys under a prefix", kv_ls)
    ls.add_argument("prefix", nargs="?", default="")
    ls.add_argument("--limit", type=int, default=0, metavar="N")
    ls.add_argument("--keys-only", action="store_true")
    ls.add_argument("--serializable", action="store_true")
    w = leaf(
        kv,
        common,
        "watch",
        "print changes under a prefix as they happen",
        kv_watch,
        description="Print every change under PREFIX once, in order. Ends after --count "
        "changes or --timeout seconds (exit 1 if --count changes did not come in time), "
        "else at Ctrl-C.",
    )
    w.add_argument("prefix", nargs="?", default="")
    w.add_argument("--rev", type=int, default=0, metavar="R", help="from revision R (default: now)")
    w.add_argument("--count", type=int, metavar="N", help="stop after N changes")
    w.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    w.add_argument("--progress", action="store_true", help="print progress notes too")
    t = leaf(
        sub,
        common,
        "txn",
        "a transaction: compare, then one branch, atomically",
        txn,
        SESSION,
        description='A JSON document, the body of POST /v1/txn: {"compare": [{"key", "target": '
        'value|version|create_revision|mod_revision|lease, "op": ==|!=|<|>, "value"}], '
        '"success": [{"op": put|delete|get|range, ...}], "failure": [...]}. Exit 0 whichever '
        "branch ran (the output says which).",
    )
    t.add_argument("file", nargs="?", default="-", help="the document (default: stdin)")
    le = group(sub, "lease", "leases")
    g = leaf(le, common, "grant", "grant a lease", lease_grant, SESSION)
    g.add_argument("ttl", type=int, help="seconds")
    k = leaf(le, common, "keepalive", "renew a lease (once, or --every S)", lease_keepalive)
    k.add_argument("id", type=int)
    k.add_argument("--every", type=float, metavar="S", help="renew every S seconds until Ctrl-C")
    k.add_argument("--count", type=int, metavar="N", help="with --every: stop after N renewals")
    r = leaf(le, common, "revoke", "revoke a lease (its keys are deleted)", lease_revoke, SESSION)
    r.add_argument("id", type=int)
    leaf(le, common, "ls", "list leases", lease_ls)
    lk = leaf(
        sub,
        common,
        "lock",
        "hold a lock: until COMMAND ends, or until Ctrl-C",
        lock,
        SESSION,
        description="Acquire lock NAME under a fresh lease (kept alive in the background), "
        "print the fencing token, then run COMMAND (with COORD_LOCK_TOKEN, COORD_LOCK_KEY "
        "and COORD_LOCK_LEASE in its environment) and exit with its status, or, without a "
        "command, hold the lock until Ctrl-C or SIGTERM. The lock is released (the lease "
        "revoked) on the way out. If the lease is lost while held, the command is "
        "terminated and coordctl exits 1: its token is stale.",
    )
    lk.add_argument("name")
    lk.add_argument("--ttl", type=int, default=10, metavar="S", help="the lease's TTL (10)")
    lk.add_argument("--wait", type=float, default=30, metavar="S", help="wait at most S (30)")
    lk.add_argument("command", nargs="*", help="after --: the command to run under the lock")


# ---- keys --------------------------------------------------------------------------------


def _kv_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [kv["key"], _short(kv["value"]), kv["version"], kv["mod_revision"], kv["lease"] or None]
        for kv in items
    ]


def _short(v: str, n: int = 60) -> str:
    return v if len(v) <= n else v[: n - 1] + "…"


async def kv_get(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.get(args.key, serializable=args.serializable)
    if doc is None:
        raise Failed(f"not found: key {args.key!r}")
    if args.value_only and not ctx.out.structured:
        sys.stdout.write(doc["value"] + "\n")
        return OK
    ctx.out.doc(doc)
    return OK


async def kv_put(ctx: Ctx, args: argparse.Namespace) -> int:
    value = args.value
    if value is None:
        if sys.stdin.isatty():
            raise UsageError("kv put KEY VALUE (or the value on stdin)")
        value = sys.stdin.read()
    rev = await ctx.client.put(args.key, value, lease=args.lease, prev_revision=args.prev_revision)
    doc = {"key": args.key, "revision": rev}
    ctx.out.doc(doc, lambda: ctx.out.line(f"OK: {args.key} written at revision {rev}"))
    return OK


async def kv_del(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.prefix:
        doc = await ctx.client.delete_prefix(args.key)
    else:
        doc = await ctx.client.delete(args.key)
    n = doc.get("deleted", 0)
    what = f"under {args.key!r}" if args.prefix else f"{args.key!r}"
    ctx.out.doc(
        doc,
        lambda: ctx.out.line(
            f"deleted {n} key{'s' * (n != 1)} {what} (revision {doc['revision']})"
        ),
    )
    return OK


async def kv_ls(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 (no limit) or more")
    doc = await ctx.client.range(args.prefix, serializable=args.serializable)
    items = doc["items"][: args.limit] if args.limit else doc["items"]
    doc = {**doc, "items": items}
    if args.keys_only and not ctx.out.structured:
        for kv in items:
            ctx.out.line(kv["key"])
        return OK
    ctx.out.doc(
        doc,
        lambda: ctx.out.table(
            ["KEY", "VALUE", "VERSION", "MOD REV", "LEASE"],
            _kv_rows(items),
            title=f"{len(items)} key(s) at revision {doc['revision']}",
        ),
    )
    return OK


def _event_text(ev: dict[str, Any]) -> str:
    if ev.get("type") == "progress":
        return f"progress: up to revision {ev['revision']}"
    if ev.get("type") == "relist":
        return f"relist at revision {ev['revision']}: {len(ev['items'])} key(s) (history compacted)"
    kind = str(ev.get("type", "?")).upper()
    if ev.get("kv") is not None:
        return f"{ev['revision']} {kind} {ev['key']} = {_short(ev['kv']['value'])}"
    return f"{ev['revision']} {kind} {ev['key']}"


async def kv_watch(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    await ctx.client.cluster()  # fail now (exit 3) if nothing answers; watches retry forever
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for ev in ctx.client.watch(args.prefix, start_revision=args.rev):
            kind = ev.get("type")
            if kind == "progress" and not args.progress:
                continue
            ctx.out.event(ev, _event_text(ev))
            if kind in ("progress", "relist"):
                continue
            seen += 1
            if args.count is not None and seen >= args.count:
                return

    try:
        await asyncio.wait_for(consume(), args.timeout)
    except TimeoutError:
        if args.count is not None:
            error(f"timeout: {seen} of {args.count} change(s) within {args.timeout:g} s")
            return FAILED
    return OK


async def txn(ctx: Ctx, args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror or e}") from e
    where = "stdin" if args.file == "-" else args.file
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{where} is not JSON: {e}") from e
    if not isinstance(doc, dict) or set(doc) - {"compare", "success", "failure"}:
        raise UsageError(f'{where}: want an object {{"compare", "success", "failure"}}')
    parts = {}
    for name in ("compare", "success", "failure"):
        v = doc.get(name, [])
        if not isinstance(v, list):
            raise UsageError(f"{where}: {name!r} must be a list")
        parts[name] = v
    got = await ctx.client.txn(parts["compare"], parts["success"], parts["failure"])

    def render() -> None:
        branch = "SUCCESS" if got.get("succeeded") else "FAILURE"
        ctx.out.line(f"{branch} (the {branch.lower()} branch ran), revision {got['revision']}")
        for i, r in enumerate(got.get("results", [])):
            ctx.out.line(f"  {i + 1}: {cell(r)}")

    ctx.out.doc(got, render)
    return OK


# ---- leases ------------------------------------------------------------------------------


async def lease_grant(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.ttl < 1:
        raise UsageError("the TTL is a positive number of seconds")
    lid = await ctx.client.grant(args.ttl)
    doc = {"id": lid, "ttl": args.ttl}
    ctx.out.doc(doc, lambda: ctx.out.line(f"lease {lid} granted, TTL {duration(args.ttl)}"))
    return OK


async def lease_keepalive(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.every is not None and not args.every > 0:
        raise UsageError("--every must be a positive number of seconds")
    n = 0
    while True:
        ttl = await ctx.client.keepalive(args.id)
        n += 1
        ctx.out.event({"id": args.id, "ttl": ttl}, f"lease {args.id} renewed, TTL {ttl} s")
        if args.every is None or (args.count is not None and n >= args.count):
            return OK
        await asyncio.sleep(args.every)


async def lease_revoke(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.revoke(args.id)
    ctx.out.doc(doc, lambda: ctx.out.line(f"lease {args.id} revoked"))
    return OK


async def lease_ls(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.leases()
    ctx.out.doc(
        doc,
        lambda: ctx.out.table(
            ["ID", "TTL", "KEYS", "EXPIRES"],
            [
                [x["id"], duration(x["ttl"]), x["keys"], within(x["remaining"])]
                for x in doc["leases"]
            ],
            title=f"{len(doc['leases'])} lease(s) at revision {doc['revision']}",
        ),
    )
    return OK


# ---- locks -------------------------------------------------------------------------------


async def lock(ctx: Ctx, args: argparse.Namespace) -> int:
    command = args.command
    if args.ttl < 1:
        raise UsageError("--ttl is a positive number of seconds")
    if not 0 < args.wait <= 3600:
        raise UsageError("--wait is a number of seconds, up to 3600")
    c = ctx.client
    lease = await c.grant(args.ttl)
    lost = asyncio.Event()

    async def keep() -> None:
        while True:
            await asyncio.sleep(max(0.2, args.ttl / 3))
            try:
                await c.keepalive(lease)
            except CoordError as e:
                if e.status == 404:  # lease_not_found: it expired, the lock is gone
                    lost.set()
                    return

    keeper = asyncio.get_running_loop().create_task(keep())
    key = None
    try:
        c.timeout = max(c.timeout, args.wait + 5)  # the server answers when the lock is ours
        try:
            got = await c.lock(args.name, lease, timeout=args.wait)
        finally:
            c.timeout = ctx.timeout
        key, token = got["key"], got["revision"]
        doc = {"name": args.name, "key": key, "revision": token, "lease": lease}
        held = f"lock {args.name!r} held: fencing token {token} (lease {lease})"
        if command:
            ctx.out.event(doc, held)
            return await _run_under(command, doc, lost)
        return await _hold(lost, lambda: ctx.out.event(doc, held + "; Ctrl-C releases it"))
    except CoordError as e:
        if e.code == "timeout":
            raise Failed(f"timeout: lock {args.name!r} not acquired within {args.wait:g} s") from e
        raise
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        with contextlib.suppress(CoordError):
            if key is not None:
                await c.unlock(args.name, key)
            await c.revoke(lease)


async def _hold(lost: asyncio.Event, announce: Callable[[], None]) -> int:
    """Until SIGINT or SIGTERM (handled from before the lock is announced), or the lease is lost."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        announce()
        waits = {loop.create_task(stop.wait()), loop.create_task(lost.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if lost.is_set():
        raise Failed("lock lost: its lease expired while held (the fencing token is stale)")
    return OK


async def _run_under(command: list[str], doc: dict[str, Any], lost: asyncio.Event) -> int:
    env = {
        **os.environ,
        "COORD_LOCK_TOKEN": str(doc["revision"]),
        "COORD_LOCK_KEY": doc["key"],
        "COORD_LOCK_LEASE": str(doc["lease"]),
    }
    try:
        proc = await asyncio.create_subprocess_exec(*command, env=env)
    except FileNotFoundError:
        error(f"cannot run {command[0]!r}: no such command")
        return 127
    except PermissionError:
        error(f"cannot run {command[0]!r}: permission denied")
        return 126
    loop = asyncio.get_running_loop()
    done = loop.create_task(proc.wait())
    gone = loop.create_task(lost.wait())
    await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not done.done():
        error("lock lost: its lease expired while held; stopping the command (token is stale)")
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(done), 5)
        except TimeoutError:
            proc.kill()
            await done
        return FAILED
    gone.cancel()
    rc = done.result()
    return rc if rc >= 0 else 128 - rc
