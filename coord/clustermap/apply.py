"""The cluster map's operations: each one validated, then applied as one revision.

Every handler first checks everything (fields, existence, capacity), and
only then changes records, so a refused operation changes nothing. What a
handler returns is the client's answer; the StateMachine adds ``revision``.

Reactions that keep the map whole happen inside the operation that causes
them, at the same revision, the same way on every replica:

- a node's lease *expires* (the leader's countdown ran out): its VIPs move to
  the live, undrained node with the fewest VIPs; its sessions end. Its agent
  stopped serving before that moment (target/vip.py states why).
- a node is drained, its lease is revoked by hand, or it registers again while
  its previous lease still runs: its VIPs are *released*, not moved. Its agent
  may still be serving them, so the VIP goes to a new owner only when that
  agent reports it let go (``map.vip_released``) or, failing that, when the
  leader has counted the old lease's full TTL (``map.vip_release_expired``).
- a node registers or is undrained, or a VIP is created: unowned VIPs are
  assigned at once.
- a replica fails to heal ``max_heal_failures`` times: a rebuild waits for the
  controller's ``map.rebuild_schedule``, which places it by the volume's policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import model as m
from .model import Invalid, Record
from .placement import Slot, Unplaceable, place, wanted
from .state import ClusterMap

Result = dict[str, Any]
DEFAULT_IQN_PREFIX = "iqn.2026-12.io.coord:"
MAX_REPORT = 10_000


class Host(Protocol):
    """What the map needs from the StateMachine around it."""

    leases: dict[int, tuple[Any, set[str]]]

    def grant_lease(self, lease_id: int, ttl: float) -> None: ...

    def revoke_lease(self, lease_id: int, reason: str) -> int: ...


@dataclass
class Ctx:
    index: int  # the log index of the command
    now_ms: int  # the proposing leader's wall clock (display only)
    host: Host


def error(code: str, message: str, **extra: Any) -> Result:
    return {"error": {"code": code, "message": message, **extra}}


class Refusal(Exception):
    """Raised by a check deep inside an operation: its ``result`` is the answer."""

    def __init__(self, result: Result) -> None:
        super().__init__(result["error"]["message"])
        self.result = result


Handler = Callable[[ClusterMap, dict[str, Any], Ctx], Result]
OPS: dict[str, Handler] = {}


def op(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        OPS["map." + name] = fn
        return fn

    return register


def apply(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    handler = OPS.get(cmd["op"])
    if handler is None:
        return error("bad_request", f"unknown map operation {cmd['op']!r}")
    try:
        return handler(cm, cmd, ctx)
    except Invalid as e:
        return error("bad_request", str(e))
    except Refusal as e:
        return e.result


# ---- target nodes --------------------------------------------------------------------------


@op("node_register")
def node_register(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """An agent (re)starts: record its node and give it a fresh liveness lease."""
    nid = m.name(cmd, "node", "node")
    portal = m.portal(cmd.get("portal"))
    disks = m.disks(cmd.get("disks", []))
    ttl_ms = m.integer(cmd, "ttl_ms", 200, 600_000)
    old = cm.nodes.get(nid)
    for other in sorted(cm.nodes.values(), key=lambda n: n["id"]):
        if other["id"] != nid and other["portal"] == portal:
            return error("exists", f"portal {portal} is already node {other['id']!r}'s")
    if old is not None:
        sizes = {d["id"]: d["size_bytes"] for d in disks}
        for d in old["disks"]:
            held = cm.used.get((nid, d["id"]), 0)
            if held and sizes.get(d["id"], 0) < held:
                what = (
                    "cannot leave the node"
                    if d["id"] not in sizes
                    else (f"cannot shrink below the {held} bytes they hold")
                )
                return error(
                    "in_use",
                    f"disk {d['id']!r} of node {nid!r} holds replicas "
                    f"({_holders(cm, nid, d['id'])}); it {what}",
                )
    lease = ctx.index
    while lease in ctx.host.leases:  # an explicit lease id took this number: next free one
        lease += 1
    if old is not None and old.get("live"):
        # The previous agent may still be serving: release, never move, its VIPs.
        _release_all(cm, nid, old["lease"], old["ttl_ms"], ctx)
        cm.by_lease.pop(old["lease"], None)  # this record is rewritten below, not by the hook
        ctx.host.revoke_lease(old["lease"], "replaced")
    ctx.host.grant_lease(lease, ttl_ms / 1000)
    rec = {
        "id": nid,
        "portal": portal,
        "disks": disks,
        "drained": bool(old["drained"]) if old is not None else False,
        "live": True,
        "lease": lease,
        "ttl_ms": ttl_ms,
        "since_ms": ctx.now_ms,
    }
    cm.put_node(rec)
    _assign_unowned(cm, ctx)
    return {"node": nid, "lease": lease, "ttl_ms": ttl_ms}


def lease_revoked(cm: ClusterMap, lease: int, reason: str, ctx: Ctx) -> None:
    """Called by the StateMachine inside every lease revoke (same revision)."""
    nid = cm.by_lease.get(lease)
    if nid is None:
        return
    node = cm.nodes[nid]
    cm.put_node({**node, "live": False, "since_ms": ctx.now_ms})
    if reason == "expired":
        # A full TTL passed on the leader's clock without a keepalive: the agent
        # stopped serving before now. Its VIPs move.
        for addr in sorted(cm.node_vips.get(nid, ())):
            vip = cm.vips[addr]
            if not vip["releasing"] or vip["release_lease"] == lease:
                _hand_over(cm, vip, ctx)
    else:
        # Revoked by hand: nobody counted a TTL, so the agent may still be serving.
        _release_all(cm, nid, lease, node["ttl_ms"], ctx)
    # Its sessions stop counting: their initiators log in again elsewhere (or, if
    # they are still there, the agent's next report under a new lease says so).
    for sid in sorted(cm.node_sessions.get(nid, ())):
        cm.drop_session(sid)


@op("node_update")
def node_update(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """Drain (no new sessions or VIPs; VIPs released) or undrain a node."""
    nid = m.name(cmd, "node", "node")
    drained = m.boolean(cmd, "drained")
    node = cm.nodes.get(nid)
    if node is None:
        return error("not_found", f"no node {nid!r}")
    if node["drained"] == drained:
        return {"node": nid, "drained": drained, "changed": False}
    cm.put_node({**node, "drained": drained})
    if drained and node.get("live"):
        _release_all(cm, nid, node["lease"], node["ttl_ms"], ctx)
    if not drained:
        _assign_unowned(cm, ctx)
    return {"node": nid, "drained": drained, "changed": True}


@op("node_delete")
def node_delete(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    nid = m.name(cmd, "node", "node")
    node = cm.nodes.get(nid)
    if node is None:
        return error("not_found", f"no node {nid!r}")
    if node.get("live"):
        return error("in_use", f"node {nid!r} is live: stop its agent (or let its lease expire)")
    held = sorted({d for (n, d) in cm.used if n == nid})
    if held:
        return error(
            "in_use",
            f"node {nid!r} holds replicas on {', '.join(held)} ({_holders(cm, nid, held[0])})",
        )
    if cm.node_vips.get(nid):
        return error("in_use", f"node {nid!r} still owns VIPs {sorted(cm.node_vips[nid])}")
    for sid in sorted(cm.node_sessions.get(nid, ())):
        cm.drop_session(sid)
    cm.drop_node(nid)
    return {"node": nid, "deleted": True}


def _holders(cm: ClusterMap, nid: str, disk: str) -> str:
    names = sorted(
        v["name"]
        for v in cm.volumes.values()
        if any(r["node"] == nid and r["disk"] == disk and m.holds_space(r) for r in v["replicas"])
    )
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return "volumes " + ", ".join(names[:3]) + more


# ---- policies ------------------------------------------------------------------------------


@op("policy_put")
def policy_put(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    rec = m.policy(cmd)
    if "prev_revision" in cmd:
        want = m.integer(cmd, "prev_revision", 0, 1 << 62)
        have = cm.mod_revision(m.POLICIES + rec["name"])
        if have != want:
            return error(
                "precondition_failed",
                f"policy {rec['name']!r} is at revision {have}, not {want}",
                mod_revision=have,
            )
    created = rec["name"] not in cm.policies
    cm.put_policy(rec)
    return {"policy": rec["name"], "created": created}


@op("policy_delete")
def policy_delete(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    name = m.name(cmd, "name", "policy")
    if name not in cm.policies:
        return error("not_found", f"no policy {name!r}")
    users = sorted(cm.policy_users.get(name, ()))
    if users:
        more = f" and {len(users) - 5} more" if len(users) > 5 else ""
        return error(
            "in_use",
            f"policy {name!r} is used by {len(users)} volume(s): {', '.join(users[:5])}{more}",
        )
    cm.drop_policy(name)
    return {"policy": name, "deleted": True}


# ---- volumes and replicas ------------------------------------------------------------------


@op("volume_create")
def volume_create(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    name = m.name(cmd, "name", "volume")
    size = m.integer(cmd, "size_bytes", m.MIB, m.MAX_SIZE_BYTES)
    pname = m.name(cmd, "policy", "volume")
    iqn = m.iqn(cmd["iqn"]) if cmd.get("iqn") is not None else DEFAULT_IQN_PREFIX + name.lower()
    if name in cm.volumes:
        return error("exists", f"volume {name!r} already exists")
    if iqn in cm.iqns:
        return error("exists", f"IQN {iqn} is already volume {cm.iqns[iqn]!r}'s")
    pol = cm.policies.get(pname)
    if pol is None:
        return error("not_found", f"no policy {pname!r}")
    pol_rev = cm.mod_revision(m.POLICIES + pname)
    if "policy_revision" in cmd:
        # The caller read the policy at some revision and means that version: if it
        # changed since, say so instead of creating from a policy it never saw.
        want = m.integer(cmd, "policy_revision", 0, 1 << 62)
        if want != pol_rev:
            return error(
                "precondition_failed",
                f"policy {pname!r} changed: it is at revision {pol_rev}, not {want}",
                mod_revision=pol_rev,
            )
    try:
        slots = place(pol, wanted(pol, size), cm.free_disks())
    except Unplaceable as e:
        return error("unplaceable", str(e))
    layout = {k: pol[k] for k in ("replicas", "arbiter", "tier", "placement", "max_heal_failures")}
    vol = {
        "name": name,
        "iqn": iqn,
        "size_bytes": size,
        "policy": pname,
        "policy_revision": pol_rev,
        "layout": layout,
        "members": m.members(pol),
        "quorum": m.write_quorum(pol),
        "replicas": [_replica(i + 1, s) for i, s in enumerate(slots)],
        "next_replica": len(slots) + 1,
        "created_ms": ctx.now_ms,
    }
    cm.put_volume(vol)
    return {"volume": name, "iqn": iqn, "replicas": vol["replicas"]}


def _replica(rid: int, s: Slot, state: str = m.HEALTHY) -> Record:
    return {
        "id": rid,
        "role": s.role,
        "node": s.node,
        "disk": s.disk,
        "size_bytes": s.size_bytes,
        "state": state,
        "heal_failures": 0,
    }


@op("volume_resize")
def volume_resize(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    name = m.name(cmd, "name", "volume")
    size = m.integer(cmd, "size_bytes", m.MIB, m.MAX_SIZE_BYTES)
    vol = cm.volumes.get(name)
    if vol is None:
        return error("not_found", f"no volume {name!r}")
    if size < vol["size_bytes"]:
        return error("bad_request", f"volumes only grow ({name!r} is {vol['size_bytes']} bytes)")
    replicas = []
    extra: dict[tuple[str, str], int] = {}
    for r in vol["replicas"]:
        r = dict(r)
        if m.holds_space(r):
            new = size if r["role"] == "data" else m.arbiter_bytes(size)
            at = (r["node"], r["disk"])
            extra[at] = extra.get(at, 0) + new - r["size_bytes"]
            r["size_bytes"] = new
        replicas.append(r)
    for (nid, did), more in sorted(extra.items()):
        disk = next((d for d in cm.nodes[nid]["disks"] if d["id"] == did), None)
        free = (disk["size_bytes"] if disk else 0) - cm.used.get((nid, did), 0)
        if more > free:
            return error(
                "unplaceable",
                f"disk {did!r} of node {nid!r} has {free} bytes free; growing {name!r} "
                f"needs {more} more there",
            )
    cm.put_volume({**vol, "size_bytes": size, "replicas": replicas})
    return {"volume": name, "size_bytes": size}


@op("volume_delete")
def volume_delete(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    name = m.name(cmd, "name", "volume")
    force = m.boolean(cmd, "force", False)
    if name not in cm.volumes:
        return error("not_found", f"no volume {name!r}")
    sids = sorted(s for s in cm.sessions if s.startswith(name + "/"))
    active = [s for s in sids if cm.sessions[s]["state"] == m.ACTIVE]
    if active and not force:
        return error(
            "in_use",
            f"volume {name!r} has {len(active)} active session(s) "
            f"(initiator {cm.sessions[active[0]]['initiator']} on node "
            f"{cm.sessions[active[0]]['node']}); log them out or delete with force",
        )
    for sid in sids:
        cm.drop_session(sid)
    cm.drop_volume(name)
    return {"volume": name, "deleted": True}


def _find_replica(cm: ClusterMap, cmd: dict[str, Any]) -> tuple[Record, int]:
    name = m.name(cmd, "volume", "replica")
    rid = m.integer(cmd, "replica", 1, 1 << 31)
    vol = cm.volumes.get(name)
    if vol is None:
        raise Refusal(error("not_found", f"no volume {name!r}"))
    for i, r in enumerate(vol["replicas"]):
        if r["id"] == rid:
            return vol, i
    raise Refusal(error("not_found", f"volume {name!r} has no replica {rid}"))


def _with_replicas(vol: Record, replicas: list[Record]) -> Record:
    return {**vol, "replicas": replicas}


@op("replica_accuse")
def replica_accuse(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """A writer saw this replica fail: nothing reads or writes it until it is healed."""
    vol, i = _find_replica(cm, cmd)
    by = m.accuser(cmd.get("by"))
    reps = [dict(r) for r in vol["replicas"]]
    r = reps[i]
    if r["state"] == m.RETIRED:
        return error("precondition_failed", f"replica {r['id']} of {vol['name']!r} is retired")
    if r["state"] in (m.ACCUSED, m.HEALING):
        return {"volume": vol["name"], "replica": r["id"], "state": r["state"], "changed": False}
    if r["state"] == m.REBUILDING:
        # The copy being rebuilt failed: drop it; the replica it replaces waits again.
        del reps[i]
        for o in reps:
            if o["id"] == r["replaces"]:
                o["rebuild"] = "waiting"
        cm.put_volume(_with_replicas(vol, reps))
        return {"volume": vol["name"], "replica": r["id"], "state": "dropped", "changed": True}
    r.update(state=m.ACCUSED, accused_by=by, accused_ms=ctx.now_ms)
    cm.put_volume(_with_replicas(vol, reps))
    state = cm.volumes[vol["name"]]["state"]
    return {
        "volume": vol["name"],
        "replica": r["id"],
        "state": m.ACCUSED,
        "volume_state": state,
        "changed": True,
    }


@op("replica_heal")
def replica_heal(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """A heal began (``result: started``), succeeded (``ok``) or failed (``failed``)."""
    vol, i = _find_replica(cm, cmd)
    result = m.heal_result(cmd.get("result"))
    reps = [dict(r) for r in vol["replicas"]]
    r = reps[i]
    if r["state"] not in (m.ACCUSED, m.HEALING):
        return error(
            "precondition_failed",
            f"replica {r['id']} of {vol['name']!r} is {r['state']}, not accused or healing",
        )
    if result == "started":
        r["state"] = m.HEALING
    elif result == "ok":
        r["state"], r["heal_failures"] = m.HEALTHY, 0
        for k in ("accused_by", "accused_ms", "rebuild"):
            r.pop(k, None)
        # A rebuild of this replica is no longer needed: drop the copy in progress.
        reps = [o for o in reps if o.get("replaces") != r["id"]]
    else:
        r["state"] = m.ACCUSED
        r["heal_failures"] += 1
        if r["heal_failures"] >= vol["layout"]["max_heal_failures"] and "rebuild" not in r:
            r["rebuild"] = "waiting"
    cm.put_volume(_with_replicas(vol, reps))
    return {
        "volume": vol["name"],
        "replica": r["id"],
        "state": r["state"],
        "heal_failures": r["heal_failures"],
        "rebuild": r.get("rebuild"),
    }


@op("rebuild_schedule")
def rebuild_schedule(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """Start every waiting rebuild that can be placed now (the leader's controller asks)."""
    started, still = [], 0
    for name, rid in sorted(cm.rebuild_waiting):
        slot = rebuild_slot(cm, name, rid)
        if slot is None:
            still += 1
            continue
        vol = cm.volumes[name]
        reps = [dict(r) for r in vol["replicas"]]
        for r in reps:
            if r["id"] == rid:
                r["rebuild"] = "running"
        new = _replica(vol["next_replica"], slot, m.REBUILDING)
        new["replaces"] = rid
        reps.append(new)
        cm.put_volume({**vol, "replicas": reps, "next_replica": vol["next_replica"] + 1})
        started.append({"volume": name, "replica": rid, "to": [slot.node, slot.disk]})
    return {"started": started, "waiting": still}


def rebuild_slot(cm: ClusterMap, name: str, rid: int) -> Slot | None:
    """Where a rebuild of replica ``rid`` of ``name`` would go now, if anywhere."""
    vol = cm.volumes[name]
    old = next(r for r in vol["replicas"] if r["id"] == rid)
    others = [r for r in vol["replicas"] if m.holds_space(r) and r["id"] != rid]
    layout = {**vol["layout"], "name": vol["policy"]}
    # Never beside the failed copy or on a disk of the others; scatter: not on their nodes.
    near = [*others, old]
    avoid_nodes = frozenset(r["node"] for r in near) if layout["placement"] == m.SCATTER else None
    try:
        (slot,) = place(
            layout,
            [(old["role"], old["size_bytes"])],
            cm.free_disks(exclude_busy=True),
            avoid_nodes=avoid_nodes or frozenset(),
            avoid_disks=frozenset((r["node"], r["disk"]) for r in near),
        )
    except Unplaceable:
        return None
    return slot


@op("rebuild_done")
def rebuild_done(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """The rebuilt copy is complete (``ok``: it replaces the retired one) or failed."""
    vol, i = _find_replica(cm, cmd)
    ok = m.boolean(cmd, "ok")
    reps = [dict(r) for r in vol["replicas"]]
    new = reps[i]
    if new["state"] != m.REBUILDING:
        return error(
            "precondition_failed", f"replica {new['id']} of {vol['name']!r} is not rebuilding"
        )
    old_id = new.pop("replaces")
    if ok:
        new["state"] = m.HEALTHY
        for r in reps:
            if r["id"] == old_id:
                r["state"] = m.RETIRED
                r.pop("rebuild", None)
                r["retired_ms"] = ctx.now_ms
        retired = [r["id"] for r in reps if r["state"] == m.RETIRED]
        drop = set(retired[: max(0, len(retired) - m.MAX_RETIRED_KEPT)])
        reps = [r for r in reps if r["id"] not in drop]
    else:
        del reps[i]
        for r in reps:
            if r["id"] == old_id:
                r["rebuild"] = "waiting"
    cm.put_volume(_with_replicas(vol, reps))
    return {"volume": vol["name"], "replica": new["id"], "ok": ok, "replaced": old_id}


# ---- VIPs ----------------------------------------------------------------------------------


def _set_vip(cm: ClusterMap, vip: Record, ctx: Ctx, **changes: Any) -> Record:
    """Every change of a VIP gets a new epoch: the revision it happens at."""
    new = {**vip, **changes, "epoch": cm.revision(), "since_ms": ctx.now_ms}
    cm.put_vip(new)
    return new


def _hand_over(cm: ClusterMap, vip: Record, ctx: Ctx) -> None:
    """Give a VIP whose holder has certainly stopped its next owner (the move's target if
    it can still take it, else the eligible node with the fewest VIPs), or none."""
    if vip.get("deleting"):
        cm.drop_vip(vip["address"])
        return
    owner = cm.least_vips(prefer=vip.get("target"))
    _set_vip(
        cm, vip, ctx, owner=owner, releasing=False, target=None, release_lease=0, release_ttl_ms=0
    )


def _release(cm: ClusterMap, vip: Record, lease: int, ttl_ms: int, ctx: Ctx, **more: Any) -> None:
    _set_vip(cm, vip, ctx, releasing=True, release_lease=lease, release_ttl_ms=ttl_ms, **more)


def _release_all(cm: ClusterMap, nid: str, lease: int, ttl_ms: int, ctx: Ctx) -> None:
    for addr in sorted(cm.node_vips.get(nid, ())):
        vip = cm.vips[addr]
        if not vip["releasing"]:  # one already on its way out keeps its own wait
            _release(cm, vip, lease, ttl_ms, ctx)


def _assign_unowned(cm: ClusterMap, ctx: Ctx) -> None:
    for addr in sorted(a for a, v in cm.vips.items() if v["owner"] is None):
        owner = cm.least_vips()
        if owner is None:
            return
        _set_vip(cm, cm.vips[addr], ctx, owner=owner)


@op("vip_create")
def vip_create(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    addr = m.address(cmd.get("address"), "'address'")
    port = m.integer(cmd, "port", 1, 65535, 3260)
    if addr in cm.vips:
        return error("exists", f"VIP {addr} already exists")
    vip = {
        "address": addr,
        "port": port,
        "owner": None,
        "releasing": False,
        "target": None,
        "release_lease": 0,
        "release_ttl_ms": 0,
    }
    vip = _set_vip(cm, vip, ctx, owner=cm.least_vips())
    return {"address": addr, "owner": vip["owner"], "epoch": vip["epoch"]}


@op("vip_move")
def vip_move(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """Move a VIP (to ``to``, or to the best other node): released first, then assigned."""
    addr = m.address(cmd.get("address"), "'address'")
    to = m.name(cmd, "to", "move") if cmd.get("to") is not None else None
    vip = cm.vips.get(addr)
    if vip is None:
        return error("not_found", f"no VIP {addr}")
    if to is not None and to not in cm.eligible():
        if to not in cm.nodes:
            return error("not_found", f"no node {to!r} to take VIP {addr}")
        return error(
            "not_eligible", f"node {to!r} is not live and undrained: it cannot take {addr}"
        )
    owner = vip["owner"]
    to = to or cm.least_vips(exclude=owner)
    if to is None:
        return error("no_live_node", f"no other live, undrained node can take VIP {addr}")
    if owner is None:
        _set_vip(cm, vip, ctx, owner=to)
    elif owner == to and not vip["releasing"]:
        return {"address": addr, "owner": owner, "epoch": vip["epoch"], "changed": False}
    elif vip["releasing"]:
        _set_vip(cm, vip, ctx, target=to)
    else:
        node = cm.nodes[owner]
        _release(cm, vip, node["lease"], node["ttl_ms"], ctx, target=to)
    vip = cm.vips[addr]
    return {
        "address": addr,
        "owner": vip["owner"],
        "releasing": vip["releasing"],
        "target": vip["target"],
        "epoch": vip["epoch"],
        "changed": True,
    }


@op("vip_delete")
def vip_delete(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    addr = m.address(cmd.get("address"), "'address'")
    vip = cm.vips.get(addr)
    if vip is None:
        return error("not_found", f"no VIP {addr}")
    if vip["owner"] is None:
        cm.drop_vip(addr)
        return {"address": addr, "deleted": True}
    # Its holder may be serving it: it goes once released (or its lease ran out).
    if vip["releasing"]:
        _set_vip(cm, vip, ctx, deleting=True)
    else:
        node = cm.nodes[vip["owner"]]
        _release(cm, vip, node["lease"], node["ttl_ms"], ctx, deleting=True)
    return {"address": addr, "deleted": False, "deleting": True}


@op("vip_released")
def vip_released(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """The holder's agent took the address down (for the epoch and lease it names)."""
    addr = m.address(cmd.get("address"), "'address'")
    epoch = m.integer(cmd, "epoch", 0, 1 << 62)
    lease = m.integer(cmd, "lease", 0, 1 << 62)
    vip = cm.vips.get(addr)
    if vip is None or not vip["releasing"] or vip["epoch"] != epoch:
        return error("precondition_failed", f"VIP {addr} is not being released at epoch {epoch}")
    if vip["release_lease"] != lease:
        # Only the agent that held it under that lease can vouch that it let go.
        return error(
            "precondition_failed", f"VIP {addr} is released under lease {vip['release_lease']}"
        )
    _hand_over(cm, vip, ctx)
    return _vip_answer(cm, addr)


@op("vip_release_expired")
def vip_release_expired(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """The leader counted the old lease's full TTL: the old holder has stopped."""
    addr = m.address(cmd.get("address"), "'address'")
    epoch = m.integer(cmd, "epoch", 0, 1 << 62)
    vip = cm.vips.get(addr)
    if vip is None or not vip["releasing"] or vip["epoch"] != epoch:
        return {"address": addr, "changed": False}
    _hand_over(cm, vip, ctx)
    return _vip_answer(cm, addr)


def _vip_answer(cm: ClusterMap, addr: str) -> Result:
    vip = cm.vips.get(addr)
    if vip is None:
        return {"address": addr, "deleted": True, "changed": True}
    return {"address": addr, "owner": vip["owner"], "epoch": vip["epoch"], "changed": True}


# ---- sessions ------------------------------------------------------------------------------


@op("session_assign")
def session_assign(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """Least-active: the live, undrained node with the fewest active plus pending sessions.

    The choice is recorded as a pending session, so the next login (and the
    next after it, in a herd) sees it counted and goes elsewhere.
    """
    volume = m.name(cmd, "volume", "session")
    init = m.initiator(cmd.get("initiator"))
    vol = cm.volumes.get(volume)
    if vol is None:
        return error("not_found", f"no volume {volume!r}")
    sid = m.session_id(volume, init)
    have = cm.sessions.get(sid)
    eligible = cm.eligible()
    if have is not None and have["node"] in eligible:
        node = have["node"]
        state = have["state"]
    else:
        node_ = cm.least_sessions()
        if node_ is None:
            return error("no_live_node", "no live, undrained target node to serve the volume")
        node, state = node_, m.PENDING
        cm.put_session(
            {
                "volume": volume,
                "initiator": init,
                "node": node,
                "state": m.PENDING,
                "since_ms": ctx.now_ms,
            }
        )
    return {
        "volume": volume,
        "iqn": vol["iqn"],
        "initiator": init,
        "node": node,
        "portal": cm.nodes[node]["portal"],
        "state": state,
    }


@op("sessions_report")
def sessions_report(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """A node's agent says which sessions tgtd really has: they replace the estimates.

    Reported sessions become active on this node; active ones it no longer
    reports have ended; pending ones stay until confirmed or expired (the
    initiator may not have logged in yet).
    """
    nid = m.name(cmd, "node", "report")
    lease = m.integer(cmd, "lease", 0, 1 << 62)
    rows = cmd.get("sessions")
    if not isinstance(rows, list) or len(rows) > MAX_REPORT:
        raise Invalid(f"'sessions' is a list of at most {MAX_REPORT} [volume, initiator] pairs")
    node = cm.nodes.get(nid)
    if node is None:
        return error("not_found", f"no node {nid!r}")
    if not node.get("live") or node["lease"] != lease:
        return error("stale_lease", f"node {nid!r} is not live under lease {lease}: register again")
    seen: dict[str, tuple[str, str]] = {}  # session id -> (volume, initiator)
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise Invalid("each session is a [volume, initiator] pair")
        volume = m.name({"volume": row[0]}, "volume", "session")
        init = m.initiator(row[1])
        seen[m.session_id(volume, init)] = (volume, init)
    added = ended = 0
    for sid, (volume, init) in sorted(seen.items()):
        if volume not in cm.volumes:
            continue  # deleted meanwhile: tgtd will drop it when the export goes
        have = cm.sessions.get(sid)
        if have is None or have["node"] != nid or have["state"] != m.ACTIVE:
            added += 1
            cm.put_session(
                {
                    "volume": volume,
                    "initiator": init,
                    "node": nid,
                    "state": m.ACTIVE,
                    "since_ms": ctx.now_ms,
                }
            )
    for sid in sorted(cm.node_sessions.get(nid, set()) - seen.keys()):
        if cm.sessions[sid]["state"] == m.ACTIVE:
            ended += 1
            cm.drop_session(sid)
    return {"node": nid, "active": len(seen), "added": added, "ended": ended}


@op("sessions_expire")
def sessions_expire(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    """Pending sessions never confirmed in time (the leader's countdown): forget them.

    Each is named with the revision the controller saw, so one assigned
    again since then is left alone.
    """
    rows = cmd.get("sessions")
    if not isinstance(rows, list) or len(rows) > MAX_REPORT:
        raise Invalid(f"'sessions' is a list of at most {MAX_REPORT} [session, mod_revision] pairs")
    expired = 0
    for row in rows:
        if not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], str):
            raise Invalid("each entry is a [session, mod_revision] pair")
        sid, rev = row
        have = cm.sessions.get(sid)
        if have is None or have["state"] != m.PENDING:
            continue
        if cm.mod_revision(m.SESSIONS + sid) != rev:
            continue
        cm.drop_session(sid)
        expired += 1
    return {"expired": expired}


@op("session_delete")
def session_delete(cm: ClusterMap, cmd: dict[str, Any], ctx: Ctx) -> Result:
    volume = m.name(cmd, "volume", "session")
    init = m.initiator(cmd.get("initiator"))
    sid = m.session_id(volume, init)
    if sid not in cm.sessions:
        return error("not_found", f"no session of {init} on {volume!r}")
    cm.drop_session(sid)
    return {"volume": volume, "initiator": init, "deleted": True}
