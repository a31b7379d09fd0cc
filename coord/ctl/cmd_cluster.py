"""coordctl status, member list|add|promote|remove, leader transfer, snapshot save."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from coord.client import Client, CoordError, UnknownOutcome

from .cmd_base import OK, PLAIN, UNAVAILABLE, Ctx, Failed, Subparsers, group, leaf
from .config import UsageError, parse_endpoint
from .output import error, size


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    leaf(
        sub,
        common,
        "status",
        "the leader, the term and every member's role, indexes, lag and health",
        status,
        description="Ask every endpoint, and every member they name, for /v1/cluster and "
        "/healthz. A member that does not answer is shown as down. Exit 0 if a leader is "
        "known, 3 if no endpoint answered or none knows a leader.",
    )
    m = group(sub, "member", "cluster membership (add a learner, promote it, remove)")
    leaf(m, common, "list", "members as the leader sees them", member_list)
    add = leaf(m, common, "add", "add a member (a learner unless --voter)", member_add, PLAIN)
    add.add_argument("id", type=int, help="the new member's id (a positive integer)")
    add.add_argument("peer", help="its peer address HOST:PORT")
    add.add_argument("api", help="its API address HOST:PORT")
    add.add_argument("--voter", action="store_true", help="add as a voter straight away")
    pro = leaf(m, common, "promote", "make a caught-up learner a voter", member_promote, PLAIN)
    pro.add_argument("id", type=int)
    rm = leaf(m, common, "remove", "remove a member", member_remove, PLAIN)
    rm.add_argument("id", type=int)
    ld = group(sub, "leader", "leadership")
    tr = leaf(
        ld,
        common,
        "transfer",
        "hand leadership to another voter (default: the most caught-up one)",
        leader_transfer,
        PLAIN,
    )
    tr.add_argument("--to", type=int, metavar="ID", help="the voter to take over")
    sn = group(sub, "snapshot", "snapshots of the store")
    save = leaf(sn, common, "save", "save the whole store to a file (for restore)", snapshot_save)
    save.add_argument("file")


# ---- status ------------------------------------------------------------------------------


async def _probe(endpoint: str, timeout: float) -> dict[str, Any]:
    """One endpoint's own view (never forwarded): /v1/cluster and /healthz."""
    got: dict[str, Any] = {"endpoint": endpoint, "cluster": None, "health": "down", "error": None}
    async with Client([endpoint], timeout=timeout, attempts=1) as c:
        results = await asyncio.gather(c.cluster(), c.healthz(), return_exceptions=True)
    cluster, health = results
    if isinstance(cluster, dict):
        got["cluster"] = cluster
    elif isinstance(cluster, CoordError):
        got["error"] = _reason(cluster)
    elif isinstance(cluster, Exception):  # not a coord node, or a garbled answer: still a row
        got["error"] = f"{type(cluster).__name__}: {cluster}"
    if isinstance(health, dict) and health.get("ok"):
        got["health"] = "ok"
    elif isinstance(health, CoordError):
        got["health"] = "down" if health.status == 0 else "unhealthy"
        got["error"] = got["error"] or _reason(health)
    elif isinstance(health, Exception):
        got["health"] = "unhealthy"
    return got


def _reason(e: CoordError) -> str:
    if e.status == 0:  # the client's own: nothing came back
        return "no answer in time" if isinstance(e, UnknownOutcome) else "cannot connect"
    return e.message or e.code


async def status(ctx: Ctx, args: argparse.Namespace) -> int:
    timeout = min(ctx.timeout, 3.0)
    probes = {
        ep: p for ep, p in zip(ctx.endpoints, await _gather(ctx.endpoints, timeout), strict=True)
    }
    # Every member any answer names is asked too, so one endpoint shows the whole cluster.
    named = {
        m["api"]
        for p in probes.values()
        if p["cluster"]
        for m in p["cluster"]["members"]
        if m.get("api")
    }
    more = sorted(named - set(probes))
    probes.update(zip(more, await _gather(more, timeout), strict=True))
    views = [p["cluster"] for p in probes.values() if p["cluster"]]
    if not views:
        error(
            f"unavailable: no endpoint answered; tried {', '.join(ctx.endpoints)} "
            f"(from {ctx.source})"
        )
        return UNAVAILABLE
    leader = max(
        (v for v in views if v["role"] == "leader"),
        key=lambda v: v["term"],
        default=None,
    )
    ref = leader or max(views, key=lambda v: v["term"])
    by_api = {p["endpoint"]: p for p in probes.values()}
    rows: list[dict[str, Any]] = []
    for m in ref["members"]:
        p = by_api.pop(m["api"], None) if m.get("api") else None
        rows.append(_row(m, p, leader))
    for p in by_api.values():  # endpoints that are not (known) members
        rows.append(_row({"id": None, "api": p["endpoint"], "voter": None}, p, leader))
    doc = {
        "leader": ref["leader"],
        "leader_api": ref["leader_api"],
        "term": ref["term"],
        "revision": ref["revision"],
        "members": rows,
    }

    def render() -> None:
        if leader is not None:
            head = f"leader: node {leader['id']} at {leader['leader_api']}"
        else:
            head = "leader: none known"
        ctx.out.line(f"{head}, term {ref['term']}, revision {ref['revision']}")
        ctx.out.table(
            ["ID", "API", "ROLE", "VOTER", "TERM", "COMMIT", "APPLIED", "LAG", "HEALTH"],
            [
                [
                    r["id"],
                    r["api"],
                    r["role"],
                    r["voter"],
                    r["term"],
                    r["commit_index"],
                    r["applied_index"],
                    r["lag"],
                    r["health"] if not r["error"] else f"{r['health']}: {r['error']}",
                ]
                for r in rows
            ],
        )

    ctx.out.doc(doc, render)
    if leader is None:
        error("unavailable: no member knows a leader")
        return UNAVAILABLE
    return OK


async def _gather(endpoints: list[str], timeout: float) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_probe(e, timeout) for e in endpoints)))


def _row(
    m: dict[str, Any], p: dict[str, Any] | None, leader: dict[str, Any] | None
) -> dict[str, Any]:
    own = p["cluster"] if p else None
    lag = None
    if leader is not None and m.get("id") is not None:
        seen = next((x for x in leader["members"] if x["id"] == m["id"]), None)
        if m["id"] == leader["id"]:
            lag = 0
        elif seen is not None:
            lag = seen["lag"]
    return {
        "id": m.get("id"),
        "api": m.get("api"),
        "voter": m.get("voter"),
        "role": own["role"] if own else "down",
        "term": own["term"] if own else None,
        "leader": own["leader"] if own else None,
        "commit_index": own["commit_index"] if own else None,
        "applied_index": own["applied_index"] if own else None,
        "last_index": own["last_index"] if own else None,
        "lag": lag,
        "health": p["health"] if p else "down",
        "error": p["error"] if p else "not asked",
    }


# ---- membership and leadership -----------------------------------------------------------


async def leader_view(ctx: Ctx) -> dict[str, Any]:
    """/v1/cluster as the leader answers it (only the leader knows match indexes and lag)."""
    doc = await ctx.client.cluster()
    api = doc.get("leader_api")
    if doc["role"] == "leader" or not api:
        return doc
    async with Client([api], timeout=ctx.timeout, attempts=2) as c:
        try:
            view: dict[str, Any] = await c.cluster()
            return view
        except CoordError:
            return doc  # the follower's view (no lag) rather than nothing


async def member_list(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await leader_view(ctx)

    def render() -> None:
        ctx.out.line(f"leader: node {doc['leader']}, term {doc['term']}")
        ctx.out.table(
            ["ID", "PEER", "API", "ROLE", "MATCH", "LAG", "LAST CONTACT"],
            [
                [
                    m["id"],
                    m["peer"],
                    m["api"],
                    m["role"],
                    m["match_index"],
                    m["lag"],
                    None
                    if m["last_contact_ticks"] is None or m["id"] == doc["leader"]
                    else f"{m['last_contact_ticks']} ticks ago",
                ]
                for m in doc["members"]
            ],
        )

    ctx.out.doc(doc, render)
    return OK


def _member(doc: dict[str, Any], nid: int) -> dict[str, Any]:
    m: dict[str, Any] | None = next((m for m in doc["members"] if m["id"] == nid), None)
    if m is None:
        known = ", ".join(str(m["id"]) for m in doc["members"])
        raise Failed(f"not found: member {nid} (members: {known})")
    return m


async def member_add(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.id < 1:
        raise UsageError("member ids are positive integers")
    peer = parse_endpoint(args.peer, "the peer address")
    api = parse_endpoint(args.api, "the API address")
    doc = await ctx.client.cluster()
    if any(m["id"] == args.id for m in doc["members"]):
        raise Failed(f"exists: member {args.id} is already in the cluster")
    got = await ctx.client.add_member(args.id, peer, api, voter=args.voter)
    kind = "a learner (promote it once it has caught up)" if got.get("learner") else "a voter"
    ctx.out.doc(got, lambda: ctx.out.line(f"member {args.id} added as {kind}"))
    return OK


async def member_promote(ctx: Ctx, args: argparse.Namespace) -> int:
    m = _member(await leader_view(ctx), args.id)
    if m["voter"]:
        raise Failed(f"precondition failed: member {args.id} is already a voter")
    if m["match_index"] == 0:  # the leader refuses it for sure: say so at once
        raise Failed(
            f"precondition failed: learner {args.id} has no entry yet "
            f"({m['lag']} behind): is it running? promote it once it has caught up"
        )
    got = await ctx.client.promote_member(args.id)
    ctx.out.doc(got, lambda: ctx.out.line(f"member {args.id} is now a voter"))
    return OK


async def member_remove(ctx: Ctx, args: argparse.Namespace) -> int:
    _member(await ctx.client.cluster(), args.id)
    got = await ctx.client.remove_member(args.id)
    ctx.out.doc(got, lambda: ctx.out.line(f"member {args.id} removed"))
    return OK


async def leader_transfer(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await leader_view(ctx)
    current = doc["leader"]
    if args.to is None:
        others = [m for m in doc["members"] if m["voter"] and m["id"] != current]
        if not others:
            raise Failed("precondition failed: no other voter to hand leadership to")
        to = min(others, key=lambda m: (m["lag"] if m["lag"] is not None else 1 << 62, m["id"]))
        target = int(to["id"])
    else:
        target = args.to
        if not _member(doc, target)["voter"]:
            raise Failed(f"precondition failed: member {target} is a learner, not a voter")
    if target == current:
        ctx.out.doc({"leader": target}, lambda: ctx.out.line(f"node {target} is the leader"))
        return OK
    try:
        got = await ctx.client.transfer(target)
    except CoordError as e:
        if e.code != "timeout":
            raise
        raise Failed(
            f"timeout: node {target} did not take over in time; see `coordctl status`",
            UNAVAILABLE,
        ) from e
    ctx.out.doc(got, lambda: ctx.out.line(f"leadership moved from node {current} to {target}"))
    return OK


# ---- snapshot ----------------------------------------------------------------------------


async def snapshot_save(ctx: Ctx, args: argparse.Namespace) -> int:
    data, revision = await ctx.client.download_snapshot()
    path = Path(args.file)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise Failed(f"cannot write {path}: {e.strerror or e}") from e
    doc = {"file": str(path), "revision": revision, "bytes": len(data)}
    ctx.out.doc(
        doc,
        lambda: ctx.out.line(
            f"saved the store at revision {revision} to {path} ({size(len(data))})"
        ),
    )
    return OK
