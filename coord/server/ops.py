"""The store's operations, once, for every way in: HTTP routes and the pipelined channel.

Each takes already-decoded arguments (a dict from JSON or msgpack), checks
every field at the boundary, and returns a result dict or raises a NodeError
carrying the code and HTTP status a client sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from coord.clustermap import model
from coord.clustermap.apply import MAX_REPORT
from coord.store.machine import COMPARE_OPS, COMPARE_TARGETS

from .config import NodeConfig
from .node import LeaseNotFound, Node, NodeError, StaleLease

T = TypeVar("T")


class BadRequest(NodeError):
    code = "bad_request"
    status = 400


class NotFound(NodeError):
    code = "not_found"
    status = 404


class PreconditionFailed(NodeError):
    code = "precondition_failed"
    status = 412


class Gone(NodeError):
    code = "compacted"
    status = 410


class RequestTimeout(NodeError):
    code = "timeout"
    status = 408


# Status for errors the store itself answers (the command went through the log).
STORE_STATUS = {
    "precondition_failed": 412,
    "lease_not_found": 404,
    "bad_request": 400,
    "session_expired": 409,
    "stale": 409,
    # the cluster map's refusals (coord/clustermap/apply.py)
    "not_found": 404,
    "exists": 409,
    "in_use": 409,
    "unplaceable": 409,
    "no_live_node": 503,
    "stale_lease": 409,
    "not_eligible": 409,
}


def string(doc: dict[str, Any], name: str, limit: int, required: bool = True) -> str | None:
    v = doc.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, str):
        raise BadRequest(f"{name!r} must be a string")
    if len(v.encode()) > limit:
        raise BadRequest(f"{name!r} is longer than {limit} bytes", limit=limit)
    return v


def integer(doc: dict[str, Any], name: str, required: bool = False, minimum: int = 0) -> int | None:
    v = doc.get(name)
    if v is None and not required:
        return None
    if type(v) is not int or v < minimum or v >= 1 << 63:
        raise BadRequest(f"{name!r} must be an integer >= {minimum}")
    return v


def key(cfg: NodeConfig, k: Any) -> str:
    if not isinstance(k, str) or not k or len(k.encode()) > cfg.max_key_bytes:
        raise BadRequest(f"keys are strings of 1 to {cfg.max_key_bytes} bytes")
    return k


def session(cmd: dict[str, Any], client: Any, seq: Any) -> dict[str, Any]:
    """Attach an exactly-once session (client name, sequence number) if given."""
    if client is None and seq is None:
        return cmd
    if isinstance(seq, str) and seq.isdigit():
        seq = int(seq)
    if (
        not isinstance(client, str)
        or not 0 < len(client) <= 128
        or type(seq) is not int
        or not 0 < seq < 1 << 63  # the log's integers are 64-bit
    ):
        raise BadRequest("a session is a client name (1-128 chars) with a sequence number >= 1")
    return {**cmd, "client": client, "seq": seq}


def raise_for(result: dict[str, Any]) -> dict[str, Any]:
    err = result.get("error")
    if err is not None:
        extra = {k: v for k, v in err.items() if k not in ("code", "message")}
        raise NodeError(
            err["message"], code=err["code"], status=STORE_STATUS.get(err["code"], 400), **extra
        )
    return result


async def read_view(node: Node, consistency: Any) -> Node:
    """Linearizable (ReadIndex) unless ``serializable`` is asked for."""
    if consistency in (None, "linearizable"):
        await node.read_barrier()
    elif consistency != "serializable":
        raise BadRequest("consistency is 'linearizable' or 'serializable'")
    return node


# ---- keys ----------------------------------------------------------------------------------


def put_command(
    cfg: NodeConfig, k: Any, doc: dict[str, Any], sess: dict[str, Any]
) -> dict[str, Any]:
    cmd: dict[str, Any] = {
        "op": "put",
        "key": key(cfg, k),
        "value": string(doc, "value", cfg.max_value_bytes),
    }
    lease = integer(doc, "lease")
    if lease:
        cmd["lease"] = lease
    prev = integer(doc, "prev_revision")
    if prev is not None:
        cmd["prev_revision"] = prev
    return {**cmd, **sess}


async def put(node: Node, k: Any, doc: dict[str, Any], sess: dict[str, Any]) -> dict[str, Any]:
    return raise_for(await node.propose(put_command(node.cfg, k, doc, sess)))


async def get(node: Node, k: Any, consistency: Any) -> dict[str, Any]:
    k = key(node.cfg, k)
    await read_view(node, consistency)
    kv = node.sm.get(k)
    if kv is None:
        raise NotFound(f"no key {k!r}", revision=node.sm.kv.revision)
    return {**kv.to_dict(), "revision": node.sm.kv.revision}


async def delete(node: Node, k: Any, sess: dict[str, Any]) -> dict[str, Any]:
    return raise_for(await node.propose(delete_command(node.cfg, k, sess)))


def delete_command(cfg: NodeConfig, k: Any, sess: dict[str, Any]) -> dict[str, Any]:
    return {"op": "delete", "key": key(cfg, k), **sess}


async def range_(node: Node, prefix: Any, limit: int, consistency: Any) -> dict[str, Any]:
    if not isinstance(prefix, str):
        raise BadRequest("'prefix' must be a string")
    await read_view(node, consistency)
    return {
        "revision": node.sm.kv.revision,
        "items": [kv.to_dict() for kv in node.sm.range(prefix, limit)],
    }


async def delete_prefix(node: Node, prefix: Any, sess: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(prefix, str):
        raise BadRequest("deleting a prefix needs 'prefix' (an empty one for everything)")
    return raise_for(await node.propose({"op": "delete", "prefix": prefix, **sess}))


def _txn_op(cfg: NodeConfig, o: Any) -> dict[str, Any]:
    if not isinstance(o, dict):
        raise BadRequest("transaction operations are objects")
    op = o.get("op")
    if op == "put":
        out: dict[str, Any] = {
            "op": "put",
            "key": key(cfg, o.get("key")),
            "value": string(o, "value", cfg.max_value_bytes),
        }
        lease = integer(o, "lease")
        if lease:
            out["lease"] = lease
        return out
    if op in ("delete", "get"):
        return {"op": op, "key": key(cfg, o.get("key"))}
    if op == "range":
        return {"op": "range", "prefix": string(o, "prefix", cfg.max_key_bytes)}
    raise BadRequest(f"unknown transaction operation {op!r} (put, delete, get, range)")


def _compare(cfg: NodeConfig, c: Any) -> dict[str, Any]:
    if not isinstance(c, dict):
        raise BadRequest("comparisons are objects")
    target = c.get("target", "value")
    op = c.get("op", "==")
    if target not in COMPARE_TARGETS:
        raise BadRequest(f"compare target is one of {sorted(COMPARE_TARGETS)}")
    if op not in COMPARE_OPS:
        raise BadRequest(f"compare op is one of {sorted(COMPARE_OPS)}")
    value = c.get("value")
    if target == "value":
        if value is not None and not isinstance(value, str):
            raise BadRequest("a value comparison compares with a string (or null: absent)")
    elif type(value) is not int or not -(1 << 63) <= value < 1 << 63:
        raise BadRequest(f"a {target} comparison compares with a 64-bit integer")
    return {"key": key(cfg, c.get("key")), "target": target, "op": op, "value": value}


async def txn(node: Node, doc: dict[str, Any], sess: dict[str, Any]) -> dict[str, Any]:
    return raise_for(await node.propose(txn_command(node.cfg, doc, sess)))


def txn_command(cfg: NodeConfig, doc: dict[str, Any], sess: dict[str, Any]) -> dict[str, Any]:
    parts: dict[str, list[Any]] = {}
    for name in ("compare", "success", "failure"):
        v = doc.get(name, [])
        if not isinstance(v, list) or len(v) > 128:
            raise BadRequest(f"{name!r} must be a list of at most 128 items")
        parts[name] = v
    cmd = {
        "op": "txn",
        "compare": [_compare(cfg, c) for c in parts["compare"]],
        "success": [_txn_op(cfg, o) for o in parts["success"]],
        "failure": [_txn_op(cfg, o) for o in parts["failure"]],
    }
    return {**cmd, **sess}


# ---- leases --------------------------------------------------------------------------------


async def lease_grant(node: Node, doc: dict[str, Any], sess: dict[str, Any]) -> dict[str, Any]:
    ttl = integer(doc, "ttl", required=True, minimum=1)
    return raise_for(
        await node.propose({"op": "lease_grant", "ttl": ttl, "id": integer(doc, "id") or 0, **sess})
    )


def lease_id(v: Any) -> int:
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if type(v) is not int or v < 1:
        raise BadRequest("lease ids are positive integers")
    return v


async def lease_keepalive(node: Node, lid: Any) -> dict[str, Any]:
    lid = lease_id(lid)
    return {"id": lid, "ttl": await node.lease_keepalive(lid)}


async def lease_revoke(node: Node, lid: Any, sess: dict[str, Any]) -> dict[str, Any]:
    return raise_for(await node.propose({"op": "lease_revoke", "id": lease_id(lid), **sess}))


# ---- the cluster map's hot path (agents and logins; the other routes: mapapi.py) -----------


def checked(check: Callable[..., T], *args: Any) -> T:
    """Run one of the map's field checks (coord/clustermap/model.py) at the boundary.

    The state machine runs the same checks again when it applies the command
    (the log is replayed forever); here they turn bad input into a 400 before
    anything is proposed.
    """
    try:
        return check(*args)
    except model.Invalid as e:
        raise BadRequest(str(e)) from e


def map_lease(doc: dict[str, Any]) -> int:
    v = doc.get("lease")
    if type(v) is not int or not 0 < v < 1 << 62:
        raise BadRequest(
            f"'lease' must be the positive integer the registration answered (got {v!r})"
        )
    return v


async def session_assign(node: Node, doc: dict[str, Any], sess: dict[str, Any]) -> dict[str, Any]:
    """An initiator logs in: the least-active live node serves it (recorded as pending)."""
    cmd = {
        "op": "map.session_assign",
        "volume": checked(model.name, doc, "volume", "session"),
        "initiator": checked(model.initiator, doc.get("initiator")),
    }
    return raise_for(await node.propose({**cmd, **sess}))


async def node_heartbeat(node: Node, nid: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """An agent's keepalive; the answer lists the VIPs it may serve (Node.node_heartbeat)."""
    name = checked(model.name, {"node": nid}, "node", "node")
    lease = map_lease(doc)
    try:
        return await node.node_heartbeat(name, lease)
    except LeaseNotFound as e:
        # Gone or expiring: for an agent that means the same thing as a lease
        # that is not its node's, so it gets the one answer it acts on.
        raise StaleLease(f"{e}: node {name!r} must register again") from e


async def sessions_report(
    node: Node, nid: Any, doc: dict[str, Any], sess: dict[str, Any]
) -> dict[str, Any]:
    """An agent's list of the sessions its target really has (replaces the estimates)."""
    name = checked(model.name, {"node": nid}, "node", "report")
    lease = map_lease(doc)
    rows = doc.get("sessions")
    if not isinstance(rows, list) or len(rows) > MAX_REPORT:
        raise BadRequest(f"'sessions' is a list of at most {MAX_REPORT} [volume, initiator] pairs")
    pairs = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise BadRequest(f"each session is a [volume, initiator] pair (got {row!r:.80})")
        volume = checked(model.name, {"volume": row[0]}, "volume", "session")
        pairs.append([volume, checked(model.initiator, row[1])])
    cmd = {"op": "map.sessions_report", "node": name, "lease": lease, "sessions": pairs}
    return raise_for(await node.propose({**cmd, **sess}))


# ---- the pipelined channel's dispatch ------------------------------------------------------


def write_command(cfg: NodeConfig, msg: dict[str, Any]) -> dict[str, Any] | None:
    """A channel request that is a plain write, as its store command; None for the rest.

    These go straight into the leader's batch without a task each (the channel's
    busiest path); every other request takes ``dispatch``.
    """
    op = msg.get("op")
    if op not in ("put", "delete", "txn") or (op == "delete" and "prefix" in msg):
        return None
    sess = session({}, msg.get("client"), msg.get("seq"))
    if op == "put":
        return put_command(cfg, msg.get("key"), msg, sess)
    if op == "delete":
        return delete_command(cfg, msg.get("key"), sess)
    return txn_command(cfg, msg, sess)


async def dispatch(node: Node, msg: dict[str, Any]) -> dict[str, Any]:
    """One channel request that is not a plain write (``write_command`` takes those):
    ``{"op", ...args, "client"?, "seq"?}`` -> its result."""
    op = msg.get("op")
    sess = session({}, msg.get("client"), msg.get("seq"))
    match op:
        case "get":
            return await get(node, msg.get("key"), msg.get("consistency"))
        case "delete":  # of a prefix
            return await delete_prefix(node, msg["prefix"], sess)
        case "range":
            limit = integer(msg, "limit") or 0
            return await range_(node, msg.get("prefix", ""), limit, msg.get("consistency"))
        case "lease_grant":
            return await lease_grant(node, msg, sess)
        case "lease_keepalive":
            return await lease_keepalive(node, msg.get("id"))
        case "lease_revoke":
            return await lease_revoke(node, msg.get("id"), sess)
        case "session_assign":
            return await session_assign(node, msg, sess)
        case "node_heartbeat":
            return await node_heartbeat(node, msg.get("node"), msg)
        case "sessions_report":
            return await sessions_report(node, msg.get("node"), msg, sess)
    raise BadRequest(f"unknown channel operation {op!r}")


async def json_body(request: web.Request, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The JSON object in a request's body (empty: ``{}``).

    With ``allowed``, any other field is a 400: a misspelt optional field would
    otherwise be ignored in silence (an ``arbitre: true`` policy without an arbiter).
    """
    raw = await request.read()
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from e
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    if allowed is not None:
        unknown = sorted(k for k in doc if k not in allowed)
        if unknown:
            known = ", ".join(allowed) if allowed else "none"
            raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))} (known: {known})")
    return doc
