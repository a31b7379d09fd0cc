"""The HTTP/JSON API (aiohttp). Keys and values are strings.

Every failure is a JSON body ``{"error": {"code", "message", ...}}`` with a
4xx/5xx status; bad input of any kind gets a 4xx, never a 500, and the node
keeps serving. Writes and linearizable reads need the leader: a follower
forwards them to it (once: a forwarded request is never forwarded again) and
relays the answer. If it cannot, it answers 421 ``not_leader`` with the
leader's API address in ``error.leader.api`` when it knows one, and 504
``unknown_outcome`` if the link broke after the request had gone out.
Serializable reads (``?consistency=serializable``) are answered by any node
from its own state, stamped with the revision they reflect.

Writes with ``X-Coord-Client`` (a session name) and ``X-Coord-Seq`` (1, 2, ...)
are applied at most once: a retry of a write whose outcome was unknown
returns the original result (``"retried": true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack
from aiohttp import web

from coord.httpsent import Sent, sent_trace
from coord.raft import ChangeType
from coord.store import Compacted, KeyValue

from . import mapapi, metrics, openapi, ops
from .config import Member, NodeConfig, parse_addr
from .node import Node, NodeError, NotLeaderError
from .ops import (
    BadRequest,
    Gone,
    NotFound,
    PreconditionFailed,
    RequestTimeout,
    integer,
    raise_for,
    string,
)
from .watch import render, watch

log = logging.getLogger("coord.api")

NODE = web.AppKey("node", Node)
CONFIG = web.AppKey("config", NodeConfig)

LOCKS = "coord/locks/"
ELECTIONS = "coord/elections/"


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


FORWARDED = "X-Coord-Forwarded"
HTTP = web.AppKey("http", aiohttp.ClientSession)
QUEUES = web.AppKey("queues", dict)  # lock/election queue key -> _Queued


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except NotLeaderError as e:
        leader = e.extra.get("leader")
        if leader is None or request.headers.get(FORWARDED):
            return web.json_response(e.body(), status=e.status)
        route = request.app[NODE].route(int(leader["id"]))
        return await _forward(request, f"{route.api[0]}:{route.api[1]}")
    except NodeError as e:
        return web.json_response(e.body(), status=e.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].max_body_bytes
        return _error(413, "too_large", f"request body over {limit} bytes", limit=limit)
    except web.HTTPException as e:
        if e.status >= 400:
            code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "bad_request")
            return _error(e.status, code, e.reason)
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return _error(500, "internal", "unexpected server error (logged)")


async def _forward(request: web.Request, leader_api: str) -> web.Response:
    """Relay a request to the leader and its answer back."""
    body = await request.read()
    headers = {FORWARDED: str(request.app[NODE].id)}
    for h in ("Content-Type", "X-Coord-Client", "X-Coord-Seq"):
        if h in request.headers:
            headers[h] = request.headers[h]
    timeout = aiohttp.ClientTimeout(total=request.app[CONFIG].request_timeout_s + 2)
    url = f"http://{leader_api}{request.path_qs}"
    mark = Sent()
    try:
        async with request.app[HTTP].request(
            request.method, url, data=body, headers=headers, timeout=timeout, trace_request_ctx=mark
        ) as r:
            payload = await r.read()
            return web.Response(status=r.status, body=payload, content_type=r.content_type)
    except aiohttp.ClientConnectorError as e:
        if not mark.sent:  # never sent: the request certainly did not reach the leader
            return _error(503, "unavailable", f"leader at {leader_api} unreachable: {e}")
        # aiohttp sent it, then its own second try could not connect (coord/httpsent.py)
        return _error(504, "unknown_outcome", f"sent to the leader at {leader_api}, then: {e}")
    except (aiohttp.ClientError, TimeoutError) as e:
        return _error(
            504, "unknown_outcome", f"link to the leader broke mid-request ({type(e).__name__})"
        )


# ---- request parsing -----------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any]:
    return await ops.json_body(request)


def _key(request: web.Request) -> str:
    return ops.key(request.app[CONFIG], request.match_info["key"])


def _query_int(request: web.Request, name: str, default: int = 0) -> int:
    v = request.query.get(name)
    if v is None:
        return default
    if not v.isdigit():
        raise BadRequest(f"query parameter {name!r} must be a non-negative integer")
    return int(v)


def _session(request: web.Request) -> dict[str, Any]:
    return ops.session(
        {}, request.headers.get("X-Coord-Client"), request.headers.get("X-Coord-Seq")
    )


# ---- keys ----------------------------------------------------------------------------------


async def kv_put(request: web.Request) -> web.Response:
    node = request.app[NODE]
    doc = await _body(request)
    return web.json_response(await ops.put(node, request.match_info["key"], doc, _session(request)))


async def kv_get(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response(
        await ops.get(node, request.match_info["key"], request.query.get("consistency"))
    )


async def kv_delete(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response(await ops.delete(node, request.match_info["key"], _session(request)))


async def kv_range(request: web.Request) -> web.Response:
    node = request.app[NODE]
    prefix = request.query.get("prefix", "")
    limit = _query_int(request, "limit")
    return web.json_response(
        await ops.range_(node, prefix, limit, request.query.get("consistency"))
    )


async def kv_delete_prefix(request: web.Request) -> web.Response:
    prefix = request.query.get("prefix")
    if prefix is None:
        raise BadRequest("DELETE /v1/kv needs ?prefix= (use an empty value for everything)")
    return web.json_response(await ops.delete_prefix(request.app[NODE], prefix, _session(request)))


async def txn(request: web.Request) -> web.Response:
    doc = await _body(request)
    return web.json_response(await ops.txn(request.app[NODE], doc, _session(request)))


async def compact(request: web.Request) -> web.Response:
    """Drop the history up to a revision: watches from before it get 410 and re-list."""
    doc = await _body(request)
    rev = integer(doc, "revision", required=True, minimum=1)
    cmd = {"op": "compact", "revision": rev}
    return web.json_response(raise_for(await request.app[NODE].propose(cmd)))


# ---- the pipelined channel ------------------------------------------------------------------

MAX_IN_FLIGHT = 4096  # per connection, and per frame


async def channel(request: web.Request) -> web.WebSocketResponse:
    """One WebSocket, many requests in flight: binary msgpack frames both ways.

    A frame holds one request or a list of them (a busy client sends whatever
    it has in one frame). A request is ``{"id": n, "op": "put"|"get"|"delete"|
    "range"|"txn"|"lease_grant"|"lease_keepalive"|"lease_revoke"|"session_assign"|
    "node_heartbeat"|"sessions_report", ...arguments, "client"?, "seq"?}``; answers
    come as frames holding a list of ``{"id": n, "status": 200|4xx|5xx, "body":
    result or {"error": ...}}``, in whatever order they finish. Same operations,
    checks and errors as the HTTP routes (coord/server/ops.py). Not forwarded: a follower answers
    ``not_leader`` with the leader's address and the client reconnects there.
    """
    node = request.app[NODE]
    cfg = request.app[CONFIG]
    ws = web.WebSocketResponse(max_msg_size=cfg.max_body_bytes, heartbeat=30)
    await ws.prepare(request)
    tasks: set[asyncio.Task[None]] = set()
    outbox: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    in_flight = 0  # requests not yet answered on this connection: backpressure
    room = asyncio.Event()

    async def flush() -> None:
        # Everything answered in one turn of the loop leaves in one frame (a list).
        batch = outbox[:]
        outbox.clear()
        if batch and not ws.closed:
            await ws.send_bytes(msgpack.packb(batch, use_bin_type=True))

    def answer(rid: Any, status: int, body: dict[str, Any]) -> None:
        if not outbox:
            loop.call_soon(lambda: loop.create_task(flush()))
        outbox.append({"id": rid, "status": status, "body": body})

    def answered() -> None:
        nonlocal in_flight
        in_flight -= 1
        room.set()

    def fail(rid: Any, e: BaseException) -> None:
        if isinstance(e, NodeError):
            answer(rid, e.status, e.body())
            return
        log.error("unexpected error on the channel", exc_info=e)
        answer(rid, 500, {"error": {"code": "internal", "message": "unexpected error (logged)"}})

    def write_done(rid: int, fut: asyncio.Future[dict[str, Any]]) -> None:
        answered()
        if fut.cancelled():
            return
        e = fut.exception()
        if e is not None:
            fail(rid, e)
            return
        try:
            answer(rid, 200, ops.raise_for(fut.result()))
        except NodeError as err:
            answer(rid, err.status, err.body())

    async def serve_one(rid: int, req: dict[str, Any]) -> None:
        try:
            answer(rid, 200, await ops.dispatch(node, req))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:
            fail(rid, e)
        finally:
            answered()

    def start(req: Any) -> None:
        """Begin one request: a plain write joins the leader's batch, the rest get a task."""
        nonlocal in_flight
        in_flight += 1
        rid: Any = None
        try:
            if not isinstance(req, dict):
                raise BadRequest("a request is a map")
            rid = req.get("id")
            if type(rid) is not int:
                raise BadRequest("a request needs an integer 'id'")
            cmd = ops.write_command(cfg, req)
            if cmd is None:
                t = loop.create_task(serve_one(rid, req))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                return
            fut = node.propose_soon(cmd)
        except Exception as e:
            answered()
            fail(rid, e)
            return
        fut.add_done_callback(functools.partial(write_done, rid))

    def requests(data: bytes) -> list[Any]:
        try:
            got = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise BadRequest(f"not a msgpack frame: {e}") from e
        if isinstance(got, list):
            if len(got) > MAX_IN_FLIGHT:
                raise BadRequest(f"at most {MAX_IN_FLIGHT} requests in one frame")
            return got
        return [got]

    try:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                try:
                    reqs = requests(msg.data)
                except BadRequest as e:
                    answer(None, e.status, e.body())
                    continue
                for req in reqs:
                    while in_flight >= MAX_IN_FLIGHT:
                        room.clear()
                        await room.wait()
                    start(req)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                answer(
                    None,
                    400,
                    {"error": {"code": "bad_request", "message": "binary msgpack frames only"}},
                )
            else:
                break
    finally:
        for t in list(tasks):
            t.cancel()  # the client is gone; proposals already made still run their course
    return ws


# ---- watches -------------------------------------------------------------------------------


async def watch_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``data:`` line per change, then progress notes."""
    node = request.app[NODE]
    prefix = request.query.get("prefix", "")
    start = _query_int(request, "start_revision")
    progress_ms = _query_int(request, "progress_ms", 5000) or 5000
    kv = node.sm.kv
    if start and kv.compact_revision and start <= kv.compact_revision:
        raise Gone(
            f"revision {start} is compacted; re-list, then watch from the list's revision + 1",
            compact_revision=kv.compact_revision,
        )
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    try:
        async for item in watch(node, prefix, start, progress_ms / 1000):
            payload = json.dumps(render(item), separators=(",", ":"))
            await resp.write(f"event: {item.kind}\ndata: {payload}\n\n".encode())
    except Compacted as e:  # compacted between the check above and the first read
        payload = json.dumps(
            {
                "type": "error",
                "error": {"code": "compacted", "compact_revision": e.compact_revision},
            }
        )
        await resp.write(f"event: error\ndata: {payload}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass
    return resp


# ---- leases, locks, elections ---------------------------------------------------------------


async def lease_grant(request: web.Request) -> web.Response:
    doc = await _body(request)
    return web.json_response(await ops.lease_grant(request.app[NODE], doc, _session(request)))


async def lease_keepalive(request: web.Request) -> web.Response:
    return web.json_response(await ops.lease_keepalive(request.app[NODE], request.match_info["id"]))


async def lease_revoke(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response(
        await ops.lease_revoke(node, request.match_info["id"], _session(request))
    )


async def lease_list(request: web.Request) -> web.Response:
    node = await ops.read_view(request.app[NODE], request.query.get("consistency"))
    items = [
        {"id": i, "ttl": ttl, "keys": len(keys), "remaining": node.lease_remaining(i)}
        for i, (ttl, keys) in sorted(node.sm.leases.items())
    ]
    return web.json_response({"revision": node.sm.kv.revision, "leases": items})


def _owners(node: Node, prefix: str) -> list[KeyValue]:
    return sorted(node.sm.range(prefix), key=lambda kv: kv.create_revision)


async def _queue_for(request: web.Request, prefix: str, lease: int, value: str) -> tuple[Node, str]:
    """Join the queue under ``prefix`` with a key bound to ``lease`` (idempotent)."""
    node = request.app[NODE]
    key = f"{prefix}{lease:016x}"
    cmd = {
        "op": "txn",
        "compare": [{"key": key, "target": "create_revision", "op": "==", "value": 0}],
        "success": [{"op": "put", "key": key, "value": value, "lease": lease}],
        "failure": [{"op": "get", "key": key}],
    }
    raise_for(await node.propose(cmd))
    return node, key


async def _wait_first(node: Node, prefix: str, key: str, timeout: float) -> KeyValue:
    """Wait until ``key`` has the lowest create revision under ``prefix`` (it holds the lock)."""
    deadline = time.monotonic() + timeout
    while True:
        await node.read_barrier()
        owners = _owners(node, prefix)
        mine = next((kv for kv in owners if kv.key == key), None)
        if mine is None:
            raise PreconditionFailed("our queue key is gone (its lease expired or was revoked)")
        if owners[0].key == key:
            return mine
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout(f"still queued as {key} after {timeout}s")
        # Sleep until something under the prefix changes (or a second passes).
        nudge = _Nudge(prefix)
        node.watchers.append(nudge)
        try:
            await asyncio.wait_for(nudge.changed.wait(), min(remaining, 1.0))
        except TimeoutError:
            pass
        finally:
            node.watchers.remove(nudge)


_leaving: set[asyncio.Task[None]] = set()


@dataclass
class _Queued:
    """The requests on this node waiting on one queue key (a retry with the same lease
    waits on the same key as the request it retries)."""

    waiting: int = 0
    granted: bool = False


async def _wait_or_leave(request: web.Request, prefix: str, key: str, timeout: float) -> KeyValue:
    """``_wait_first``, and if the wait fails (timeout, client gone), leave the queue.

    A key left behind would come to hold the lock for nobody until its lease ended.
    But not while another request still waits on the key, nor once one was granted
    it: a client's retry takes over its first attempt's place in the queue.
    """
    node = request.app[NODE]
    queues = request.app[QUEUES]
    q = queues.setdefault(key, _Queued())
    q.waiting += 1
    try:
        mine = await _wait_first(node, prefix, key, timeout)
        q.granted = True
        return mine
    except BaseException:
        if q.waiting == 1 and not q.granted:
            t = asyncio.get_running_loop().create_task(_leave(node, key))
            _leaving.add(t)
            t.add_done_callback(_leaving.discard)
        raise
    finally:
        q.waiting -= 1
        if not q.waiting:
            del queues[key]


async def _leave(node: Node, key: str) -> None:
    with contextlib.suppress(Exception):  # best effort: the lease ends it anyway
        await node.propose({"op": "delete", "key": key})


class _Nudge:
    """A watcher that only notices that something under a prefix changed."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.changed = asyncio.Event()

    def offer(self, events: list[Any]) -> None:
        if any(ev.key.startswith(self.prefix) for ev in events):
            self.changed.set()


async def lock_acquire(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    doc = await _body(request)
    lease = integer(doc, "lease", required=True, minimum=1)
    assert lease is not None
    raw_timeout = doc.get("timeout", 30)
    if (
        not isinstance(raw_timeout, int | float)
        or isinstance(raw_timeout, bool)
        or not 0 < raw_timeout <= 3600
    ):
        raise BadRequest("'timeout' is a number of seconds, up to 3600")
    timeout = float(raw_timeout)
    prefix = f"{LOCKS}{name}/"
    _, key = await _queue_for(request, prefix, lease, "")
    mine = await _wait_or_leave(request, prefix, key, timeout)
    # The fencing token: the create revision of our key. It only ever grows for a
    # given lock, so storage that saw a larger one can refuse the older holder.
    return web.json_response({"key": key, "revision": mine.create_revision, "lease": lease})


async def lock_release(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    key = request.query.get("key", "")
    if not key.startswith(f"{LOCKS}{name}/"):
        raise BadRequest(f"?key= must be the key returned when acquiring lock {name!r}")
    return web.json_response(
        raise_for(await request.app[NODE].propose({"op": "delete", "key": key}))
    )


async def election_campaign(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    cfg = request.app[CONFIG]
    doc = await _body(request)
    lease = integer(doc, "lease", required=True, minimum=1)
    assert lease is not None
    value = string(doc, "value", cfg.max_value_bytes) or ""
    prefix = f"{ELECTIONS}{name}/"
    _, key = await _queue_for(request, prefix, lease, value)
    mine = await _wait_or_leave(request, prefix, key, 30.0)
    return web.json_response({"key": key, "revision": mine.create_revision, "value": mine.value})


async def election_leader(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    node = await ops.read_view(request.app[NODE], request.query.get("consistency"))
    owners = _owners(node, f"{ELECTIONS}{name}/")
    if not owners:
        raise NotFound(f"election {name!r} has no leader")
    first = owners[0]
    return web.json_response(
        {"key": first.key, "revision": first.create_revision, "value": first.value}
    )


async def election_resign(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    doc = await _body(request)
    key = string(doc, "key", request.app[CONFIG].max_key_bytes) or ""
    if not key.startswith(f"{ELECTIONS}{name}/"):
        raise BadRequest(f"'key' must be the key returned by the campaign in {name!r}")
    return web.json_response(
        raise_for(await request.app[NODE].propose({"op": "delete", "key": key}))
    )


# ---- cluster -------------------------------------------------------------------------------


async def cluster(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].status())


async def member_add(request: web.Request) -> web.Response:
    doc = await _body(request)
    nid = integer(doc, "id", required=True, minimum=1)
    assert nid is not None
    try:
        member = Member(
            nid,
            parse_addr(string(doc, "peer", 256) or "", "peer"),
            parse_addr(string(doc, "api", 256) or "", "api"),
        )
    except ValueError as e:
        raise BadRequest(str(e)) from e
    kind = ChangeType.ADD_VOTER if doc.get("voter") is True else ChangeType.ADD_LEARNER
    result = await request.app[NODE].change_membership(kind, nid, member)
    return web.json_response({"id": nid, "learner": kind is ChangeType.ADD_LEARNER, **result})


def _member_id(request: web.Request) -> int:
    v = request.match_info["id"]
    if not v.isdigit():
        raise BadRequest("member ids are positive integers")
    return int(v)


async def member_promote(request: web.Request) -> web.Response:
    nid = _member_id(request)
    result = await request.app[NODE].change_membership(ChangeType.PROMOTE, nid, None)
    return web.json_response({"id": nid, **result})


async def member_remove(request: web.Request) -> web.Response:
    nid = _member_id(request)
    result = await request.app[NODE].change_membership(ChangeType.REMOVE, nid, None)
    return web.json_response({"id": nid, **result})


async def transfer(request: web.Request) -> web.Response:
    doc = await _body(request)
    to = integer(doc, "to", required=True, minimum=1)
    assert to is not None
    node = request.app[NODE]
    await node.transfer_leadership(to)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if node.core is not None and int(node.core.leader) == to:
            return web.json_response({"leader": to})
    raise RequestTimeout(f"node {to} did not take over within 3s")


async def snapshot_take(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE].snapshot_now())


async def snapshot_download(request: web.Request) -> web.Response:
    view, data = await request.app[NODE].encode_snapshot()
    headers = {"X-Coord-Revision": str(view.revision), "X-Coord-Index": str(view.applied)}
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


# ---- health, metrics, schema ---------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.failure:
        return _error(503, "unavailable", node.failure)
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    core = node.core
    if node.failure or core is None or not core.leader:
        return _error(503, "unavailable", node.failure or "no known leader")
    return web.json_response({"ok": True, "leader": int(core.leader)})


async def metrics_text(request: web.Request) -> web.Response:
    return web.Response(text=metrics.render(request.app[NODE]), content_type="text/plain")


async def openapi_doc(request: web.Request) -> web.Response:
    return web.json_response(openapi.DOCUMENT)


def relay_session() -> aiohttp.ClientSession:
    """The session a follower relays through (it marks what it sent: see _forward)."""
    return aiohttp.ClientSession(trace_configs=[sent_trace()])


def make_app(node: Node) -> web.Application:
    cfg = node.cfg
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[errors])
    app[NODE] = node
    app[CONFIG] = cfg
    app[QUEUES] = {}

    async def http_client(app: web.Application) -> Any:
        async with relay_session() as session:
            app[HTTP] = session
            yield

    app.cleanup_ctx.append(http_client)
    r = app.router
    r.add_put("/v1/kv/{key:.+}", kv_put)
    r.add_get("/v1/kv/{key:.+}", kv_get)
    r.add_delete("/v1/kv/{key:.+}", kv_delete)
    r.add_get("/v1/kv", kv_range)
    r.add_delete("/v1/kv", kv_delete_prefix)
    r.add_post("/v1/txn", txn)
    r.add_post("/v1/compact", compact)
    r.add_get("/v1/watch", watch_stream)
    r.add_get("/v1/channel", channel)
    r.add_post("/v1/leases", lease_grant)
    r.add_get("/v1/leases", lease_list)
    r.add_post("/v1/leases/{id}/keepalive", lease_keepalive)
    r.add_delete("/v1/leases/{id}", lease_revoke)
    r.add_post("/v1/locks/{name}", lock_acquire)
    r.add_delete("/v1/locks/{name}", lock_release)
    r.add_post("/v1/elections/{name}/campaign", election_campaign)
    r.add_get("/v1/elections/{name}", election_leader)
    r.add_post("/v1/elections/{name}/resign", election_resign)
    r.add_get("/v1/cluster", cluster)
    r.add_post("/v1/cluster/members", member_add)
    r.add_post("/v1/cluster/members/{id}/promote", member_promote)
    r.add_delete("/v1/cluster/members/{id}", member_remove)
    r.add_post("/v1/cluster/transfer", transfer)
    r.add_post("/v1/snapshot", snapshot_take)
    r.add_get("/v1/snapshot", snapshot_download)
    mapapi.add_routes(r, node)
    r.add_get("/v1/openapi.json", openapi_doc)
    r.add_get("/metrics", metrics_text)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    return app
