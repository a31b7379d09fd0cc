"""The cluster map: coordctl map, node, policy, volume, replica, vip, session.

Sizes are given as "10GiB", "512MiB", "1T" (powers of 1024) or bytes; tables
show them the same way and times relative to now. ``-o json|yaml`` print the
API's records (bytes, ms since the epoch).
"""

from __future__ import annotations

import argparse
from typing import Any

from coord.client import PreconditionFailed

from .cmd_base import OK, SESSION, Ctx, Failed, Subparsers, group, leaf
from .config import UsageError
from .output import ago, parse_size, size


def size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    leaf(
        sub, common, "map", "the cluster map's counts: nodes, volumes by state, VIPs, ...", summary
    )
    n = group(sub, "node", "target nodes")
    leaf(n, common, "ls", "list target nodes", node_ls)
    for name, fn, what, write in (
        ("show", node_show, "one node: disks, sessions, VIPs", None),
        ("drain", node_drain, "take no new volumes, sessions or VIPs", SESSION),
        ("undrain", node_undrain, "take new work again", SESSION),
    ):
        leaf(n, common, name, what, fn, write).add_argument("node")
    p = group(sub, "policy", "disk policies")
    leaf(p, common, "ls", "list policies", policy_ls)
    leaf(p, common, "show", "one policy", policy_show).add_argument("name")
    pc = leaf(
        p, common, "create", "create a policy (--replace: or replace it)", policy_create, SESSION
    )
    pc.add_argument("name")
    pc.add_argument("--replicas", type=int, required=True, help="data replicas")
    pc.add_argument("--arbiter", action="store_true", help="add a metadata-only arbiter")
    pc.add_argument("--tier", help="disk tier (default standard)")
    pc.add_argument("--placement", choices=("scatter", "aggregate"))
    pc.add_argument("--max-heal-failures", type=int, metavar="N")
    how = pc.add_mutually_exclusive_group()
    how.add_argument("--replace", action="store_true", help="replace it if it exists")
    how.add_argument(
        "--prev-revision", type=int, metavar="R", help="replace it only if at revision R"
    )
    leaf(p, common, "delete", "delete an unused policy", policy_delete, SESSION).add_argument(
        "name"
    )
    v = group(sub, "volume", "volumes")
    vl = leaf(v, common, "ls", "list volumes", volume_ls)
    vl.add_argument("--state", choices=("ok", "degraded", "unwritable"))
    leaf(v, common, "show", "one volume and its replicas", volume_show).add_argument("name")
    vc = leaf(v, common, "create", "create a volume, placed by its policy", volume_create, SESSION)
    vc.add_argument("name")
    vc.add_argument("--size", type=size_arg, required=True, help="e.g. 10GiB")
    vc.add_argument("--policy", required=True)
    vc.add_argument("--iqn", help="default: derived from the name")
    vc.add_argument("--policy-revision", type=int, metavar="R", help="only if the policy is at R")
    vr = leaf(v, common, "resize", "grow a volume", volume_resize, SESSION)
    vr.add_argument("name")
    vr.add_argument("--size", type=size_arg, required=True, help="the new size, e.g. 20GiB")
    vd = leaf(v, common, "delete", "delete a volume", volume_delete, SESSION)
    vd.add_argument("name")
    vd.add_argument("--force", action="store_true", help="even with active sessions")
    r = group(sub, "replica", "replica failures and healing")
    ra = leaf(r, common, "accuse", "report a failed replica", replica_accuse, SESSION)
    ra.add_argument("volume")
    ra.add_argument("replica", type=int)
    ra.add_argument("--by", default="coordctl", help="who saw it fail (default coordctl)")
    rh = leaf(r, common, "heal", "report a heal's progress", replica_heal, SESSION)
    rh.add_argument("volume")
    rh.add_argument("replica", type=int)
    rh.add_argument("--result", choices=("started", "ok", "failed"), required=True)
    vp = group(sub, "vip", "virtual IPs (the portal addresses)")
    leaf(vp, common, "ls", "list VIPs", vip_ls)
    vpc = leaf(vp, common, "create", "create a VIP (given to a live node)", vip_create, SESSION)
    vpc.add_argument("address")
    vpc.add_argument("--port", type=int, help="default 3260")
    vm = leaf(vp, common, "move", "move a VIP (released by its holder first)", vip_move, SESSION)
    vm.add_argument("address")
    vm.add_argument("--to", metavar="NODE", help="default: the best other node")
    leaf(vp, common, "delete", "delete a VIP", vip_delete, SESSION).add_argument("address")
    s = group(sub, "session", "iSCSI sessions")
    sl = leaf(s, common, "ls", "list sessions", session_ls)
    sl.add_argument("--node")
    sl.add_argument("--volume")


def _title(doc: dict[str, Any], what: str) -> str:
    return f"{len(doc['items'])} {what} at revision {doc['revision']}"


def _said(ctx: Ctx, doc: dict[str, Any], text: str) -> int:
    ctx.out.doc(doc, lambda: ctx.out.line(f"{text} (revision {doc.get('revision', '?')})"))
    return OK


async def summary(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.map_summary()
    ctx.out.doc(doc)
    return OK


# ---- nodes -------------------------------------------------------------------------------


def _node_state(n: dict[str, Any]) -> str:
    state = "live" if n.get("live") else "down"
    return state + (", drained" if n.get("drained") else "")


async def node_ls(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.nodes()
    rows = []
    for n in doc["items"]:
        used = sum(d["used_bytes"] for d in n["disks"])
        total = sum(d["size_bytes"] for d in n["disks"])
        s = n["sessions"]
        rows.append(
            [
                n["id"],
                n["portal"],
                _node_state(n),
                f"{size(used)} / {size(total)} ({len(n['disks'])})",
                f"{s['active']} / {s['pending']}",
                ", ".join(n["vips"]) or None,
                n["rebuilds"],
                ago(n.get("since_ms")),
            ]
        )
    cols = ["NODE", "PORTAL", "STATE", "USED / SIZE (DISKS)", "SESSIONS ACT / PEND", "VIPS"]
    cols += ["REBUILDS", "SINCE"]
    ctx.out.doc(doc, lambda: ctx.out.table(cols, rows, title=_title(doc, "node(s)")))
    return OK


async def node_show(ctx: Ctx, args: argparse.Namespace) -> int:
    n = await ctx.client.node(args.node)
    if n is None:
        raise Failed(f"not found: node {args.node!r}")

    def render() -> None:
        s = n["sessions"]
        ctx.out.fields(
            [
                ("node", n["id"]),
                ("portal", n["portal"]),
                ("state", _node_state(n)),
                ("lease", n.get("lease")),
                ("ttl", f"{n['ttl_ms']} ms"),
                ("since", ago(n.get("since_ms"))),
                ("sessions", f"{s['active']} active, {s['pending']} pending"),
                ("vips", ", ".join(n["vips"]) or None),
                ("rebuilds", n["rebuilds"]),
                ("revision", n["revision"]),
            ]
        )
        ctx.out.table(
            ["DISK", "TIER", "SIZE", "USED"],
            [
                [d["id"], d.get("tier"), size(d["size_bytes"]), size(d["used_bytes"])]
                for d in n["disks"]
            ],
        )

    ctx.out.doc(n, render)
    return OK


async def node_drain(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.drain(args.node)
    text = "drained" if doc.get("changed") else "was already drained"
    return _said(ctx, doc, f"node {args.node} {text}")


async def node_undrain(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.undrain(args.node)
    text = "undrained" if doc.get("changed") else "was not drained"
    return _said(ctx, doc, f"node {args.node} {text}")


# ---- policies ----------------------------------------------------------------------------

_POLICY_COLS = ["NAME", "REPLICAS", "ARBITER", "TIER", "PLACEMENT", "MAX HEAL FAILURES", "REV"]


def _policy_row(p: dict[str, Any]) -> list[Any]:
    keys = ("name", "replicas", "arbiter", "tier", "placement", "max_heal_failures")
    return [p.get(k) for k in keys] + [p.get("mod_revision")]


async def policy_ls(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.policies()
    rows = [_policy_row(p) for p in doc["items"]]
    ctx.out.doc(doc, lambda: ctx.out.table(_POLICY_COLS, rows, title=_title(doc, "policies")))
    return OK


async def policy_show(ctx: Ctx, args: argparse.Namespace) -> int:
    p = await ctx.client.policy(args.name)
    if p is None:
        raise Failed(f"not found: policy {args.name!r}")
    ctx.out.doc(p)
    return OK


async def policy_create(ctx: Ctx, args: argparse.Namespace) -> int:
    prev = None if args.replace else (args.prev_revision if args.prev_revision is not None else 0)
    try:
        doc = await ctx.client.put_policy(
            args.name,
            replicas=args.replicas,
            arbiter=args.arbiter or None,
            tier=args.tier,
            placement=args.placement,
            max_heal_failures=args.max_heal_failures,
            prev_revision=prev,
        )
    except PreconditionFailed as e:
        if prev != 0:
            raise
        at = e.details.get("mod_revision")
        raise Failed(
            f"exists: policy {args.name!r} already exists (revision {at}); "
            f"--replace, or --prev-revision {at} to replace it only if unchanged"
        ) from e
    text = "created" if doc.get("created") else "replaced"
    return _said(ctx, doc, f"policy {args.name} {text}")


async def policy_delete(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.delete_policy(args.name)
    return _said(ctx, doc, f"policy {args.name} deleted")


# ---- volumes and replicas ----------------------------------------------------------------


def _replica_summary(v: dict[str, Any]) -> str:
    reps = [r for r in v["replicas"] if r["state"] != "retired"]
    healthy = sum(1 for r in reps if r["state"] == "healthy")
    return f"{healthy}/{len(reps)} healthy"


async def volume_ls(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.volumes(state=args.state)
    rows = [
        [
            v["name"],
            size(v["size_bytes"]),
            v["policy"],
            v["state"],
            _replica_summary(v),
            ", ".join(sorted({r["node"] for r in v["replicas"] if r["state"] != "retired"})),
            ago(v.get("created_ms")),
        ]
        for v in doc["items"]
    ]
    cols = ["NAME", "SIZE", "POLICY", "STATE", "REPLICAS", "NODES", "CREATED"]
    ctx.out.doc(doc, lambda: ctx.out.table(cols, rows, title=_title(doc, "volume(s)")))
    return OK


async def volume_show(ctx: Ctx, args: argparse.Namespace) -> int:
    v = await ctx.client.volume(args.name)
    if v is None:
        raise Failed(f"not found: volume {args.name!r}")

    def render() -> None:
        ctx.out.fields(
            [
                ("volume", v["name"]),
                ("iqn", v["iqn"]),
                ("size", f"{size(v['size_bytes'])} ({v['size_bytes']} bytes)"),
                ("policy", f"{v['policy']} (at revision {v.get('policy_revision')})"),
                ("state", v["state"]),
                ("write quorum", f"{v.get('quorum')} of {v.get('members')}"),
                ("io replicas", ", ".join(str(i) for i in v["io_replicas"]) or None),
                ("created", ago(v.get("created_ms"))),
                ("revision", v["revision"]),
            ]
        )
        ctx.out.table(
            ["REPLICA", "ROLE", "NODE", "DISK", "SIZE", "STATE", "HEAL FAILURES"],
            [
                [
                    r["id"],
                    r["role"],
                    r["node"],
                    r["disk"],
                    size(r["size_bytes"]),
                    r["state"],
                    r.get("heal_failures"),
                ]
                for r in v["replicas"]
            ],
        )

    ctx.out.doc(v, render)
    return OK


async def volume_create(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.create_volume(
        args.name, args.size, args.policy, iqn=args.iqn, policy_revision=args.policy_revision
    )
    where = ", ".join(f"{r['role']} on {r['node']}/{r['disk']}" for r in doc["replicas"])
    return _said(
        ctx, doc, f"volume {args.name} created, {size(args.size)}, iqn {doc['iqn']}: {where}"
    )


async def volume_resize(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.resize_volume(args.name, args.size)
    return _said(ctx, doc, f"volume {args.name} is now {size(doc.get('size_bytes', args.size))}")


async def volume_delete(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.delete_volume(args.name, force=args.force)
    return _said(ctx, doc, f"volume {args.name} deleted")


async def replica_accuse(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.accuse(args.volume, args.replica, args.by)
    text = f"replica {args.replica} of {args.volume}: {doc.get('state', 'accused')}"
    return _said(ctx, doc, text)


async def replica_heal(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.heal(args.volume, args.replica, args.result)
    text = f"replica {args.replica} of {args.volume}: {doc.get('state', args.result)}"
    return _said(ctx, doc, text)


# ---- VIPs and sessions -------------------------------------------------------------------


async def vip_ls(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.vips()
    rows = [
        [
            v["address"],
            v["port"],
            v["owner"],
            v["epoch"],
            ("releasing" + (f" to {v['target']}" if v.get("target") else ""))
            if v.get("releasing")
            else ("deleting" if v.get("deleting") else None),
            ago(v.get("since_ms")),
        ]
        for v in doc["items"]
    ]
    cols = ["ADDRESS", "PORT", "OWNER", "EPOCH", "MOVING", "SINCE"]
    ctx.out.doc(doc, lambda: ctx.out.table(cols, rows, title=_title(doc, "VIP(s)")))
    return OK


async def vip_create(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.create_vip(args.address, args.port)
    owner = doc.get("owner") or "no node yet"
    return _said(ctx, doc, f"VIP {doc['address']} created, held by {owner}, epoch {doc['epoch']}")


async def vip_move(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.move_vip(args.address, args.to)
    if not doc.get("changed", True):
        text = f"VIP {doc['address']} stays with {doc.get('owner')}"
    elif doc.get("releasing"):
        text = f"VIP {doc['address']} is being released by {doc.get('owner')}"
        text += f", then goes to {doc['target']}" if doc.get("target") else ""
    else:
        text = f"VIP {doc['address']} moved to {doc.get('owner')}, epoch {doc.get('epoch')}"
    return _said(ctx, doc, text)


async def vip_delete(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.delete_vip(args.address)
    text = "deleted" if doc.get("deleted") else "will be deleted once its holder releases it"
    return _said(ctx, doc, f"VIP {doc.get('address', args.address)} {text}")


async def session_ls(ctx: Ctx, args: argparse.Namespace) -> int:
    doc = await ctx.client.sessions(node=args.node, volume=args.volume)
    rows = [
        [s["volume"], s["initiator"], s["node"], s["state"], ago(s.get("since_ms"))]
        for s in doc["items"]
    ]
    cols = ["VOLUME", "INITIATOR", "NODE", "STATE", "SINCE"]
    ctx.out.doc(doc, lambda: ctx.out.table(cols, rows, title=_title(doc, "session(s)")))
    return OK
