"""An async client for coord: endpoints, leader discovery, exactly-once retries, watches.

    async with Client(["127.0.0.1:7101", "127.0.0.1:7102"]) as c:
        rev = await c.put("config/a", "1")
        kv = await c.get("config/a")
        async with c.lease(ttl=5) as lease:        # kept alive in the background
            token = (await c.lock("db", lease))["revision"]
        async for ev in c.watch("config/", start_revision=rev):
            ...

Every write carries this client's session name and a sequence number. When
the outcome of an attempt is unknown (the connection broke after sending, the
node answered ``unknown_outcome``), the client retries *with the same
number*: the store applies it at most once and returns the original result.
A sequence number is reused only after a definite refusal (nothing was
applied). Errors are typed: NotFound, PreconditionFailed, Conflict (409:
exists, in use, unplaceable, stale lease), Unavailable, UnknownOutcome
(retries exhausted while the outcome was unknown), ...

The cluster map (target nodes, policies, volumes, VIPs, sessions) has a
method per route (``register_node``, ``create_volume``, ``assign_session``,
...); ``MapCache`` (coord/mapcache.py) keeps a copy of it current by a watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from .httpsent import Sent, sent_trace
from .mapcache import MapCache as MapCache  # a watch-fed copy of the cluster map


class CoordError(Exception):
    def __init__(
        self, code: str, message: str, status: int = 0, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}


class NotFound(CoordError):
    pass


class PreconditionFailed(CoordError):
    pass


class Unavailable(CoordError):
    pass


class UnknownOutcome(CoordError):
    pass


class Compacted(CoordError):
    pass


class Conflict(CoordError):
    """409: ``exists``, ``in_use``, ``unplaceable``, ``stale_lease`` (the cluster map),
    ``invalid_change`` (a membership or leadership change that makes no sense now)."""


ERRORS: dict[str, type[CoordError]] = {
    "not_found": NotFound,
    "precondition_failed": PreconditionFailed,
    "unavailable": Unavailable,
    "not_leader": Unavailable,
    "no_live_node": Unavailable,
    "unknown_outcome": UnknownOutcome,
    "compacted": Compacted,
    "exists": Conflict,
    "in_use": Conflict,
    "unplaceable": Conflict,
    "stale_lease": Conflict,
    "invalid_change": Conflict,
}

# Answers that certainly come from before the log: the sequence number is unused.
# Every other answer to a write may be the store's (the cluster map refuses with
# not_found, exists, bad_request, ... after the command went through the log,
# and the store keeps that answer under the number): a number is never reused
# after one of them. A number skipped that way costs nothing, except before the
# session's first write, where the store answers session_expired and the write
# goes again under a fresh session.
UNUSED_ERRORS = {"not_leader", "unavailable"}
# 5xx answers that are the store's final word (asking again gives the same).
FINAL_5XX = {"no_live_node"}


def _url(endpoint: str) -> str:
    return endpoint if endpoint.startswith("http") else f"http://{endpoint}"


class Client:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        client_id: str | None = None,
        timeout: float = 6.0,
        attempts: int = 8,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint")
        self.endpoints = [_url(e) for e in endpoints]
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.attempts = attempts
        self._current = 0
        self._seq = 0  # last sequence number the store has seen (or may have)
        self._session: aiohttp.ClientSession | None = None
        self._trace_configs = [sent_trace(), *trace_configs]  # extra ones: tools' tracing
        self._write_lock = asyncio.Lock()

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(trace_configs=self._trace_configs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with Client(...)`")
        return self._session

    # ---- the request loop -------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None, *, write: bool = False) -> Any:
        if write:
            async with self._write_lock:  # one write at a time per session: numbers in order
                return await self._write(method, path, body)
        return await self._attempts(method, path, body, {})

    async def _write(self, method: str, path: str, body: Any) -> Any:
        seq = self._seq + 1
        for _ in range(2):
            headers = {"X-Coord-Client": self.client_id, "X-Coord-Seq": str(seq)}
            try:
                result = await self._attempts(method, path, body, headers, write=True)
                self._seq = seq
                return result
            except CoordError as e:
                if e.code not in UNUSED_ERRORS or isinstance(e, UnknownOutcome):
                    self._seq = seq  # it reached the store (or may have): never reuse it
                if e.code == "session_expired":
                    # The store forgot this session: continue under a fresh one.
                    self.client_id, self._seq, seq = uuid.uuid4().hex, 0, 1
                    continue
                raise
        raise Unavailable("session_expired", "the store refused a fresh session")

    async def _attempts(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        write: bool = False,
    ) -> Any:
        unknown = False
        last: CoordError | None = None
        delay = 0.05
        for attempt in range(self.attempts):
            base = self.endpoints[self._current]
            mark = Sent()
            try:
                async with self.session.request(
                    method,
                    base + path,
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    trace_request_ctx=mark,
                ) as r:
                    doc = await r.json(content_type=None)
                    status = r.status
            except aiohttp.ClientConnectorError as e:
                if mark.sent:  # aiohttp's own second try failed to connect; the first went
                    unknown = unknown or write
                    last = UnknownOutcome("unknown_outcome", f"{base}: sent, then {e}")
                else:
                    last = Unavailable("unavailable", f"{base}: {e}")
                self._rotate()
            except (aiohttp.ClientError, TimeoutError) as e:
                # The request may have arrived: a write's outcome is now unknown.
                unknown = unknown or write
                last = UnknownOutcome("unknown_outcome", f"{base}: {type(e).__name__}")
                self._rotate()
            else:
                if 200 <= status < 300:
                    return doc
                err = (doc or {}).get("error", {}) if isinstance(doc, dict) else {}
                code = err.get("code", "internal")
                details = {k: v for k, v in err.items() if k not in ("code", "message")}
                e2 = ERRORS.get(code, CoordError)(code, err.get("message", ""), status, details)
                if code == "not_leader":
                    leader = err.get("leader")
                    if leader and _url(leader["api"]) in self.endpoints:
                        self._current = self.endpoints.index(_url(leader["api"]))
                    else:
                        self._rotate()
                    last = e2
                elif code == "unknown_outcome":
                    unknown = unknown or write
                    last = e2
                elif code == "unavailable" or (status >= 500 and code not in FINAL_5XX):
                    last = e2
                    self._rotate()
                else:
                    raise e2
            if attempt + 1 < self.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if unknown:
            raise UnknownOutcome(
                "unknown_outcome", f"gave up after {self.attempts} attempts: {last}"
            )
        assert last is not None
        raise last

    def _rotate(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    # ---- keys ----------------------------------------------------------------------------------

    async def put(
        self, key: str, value: str, *, lease: int = 0, prev_revision: int | None = None
    ) -> int:
        body: dict[str, Any] = {"value": value}
        if lease:
            body["lease"] = lease
        if prev_revision is not None:
            body["prev_revision"] = prev_revision
        doc = await self._call("PUT", f"/v1/kv/{_quote(key)}", body, write=True)
        return int(doc["revision"])

    async def get(self, key: str, *, serializable: bool = False) -> dict[str, Any] | None:
        q = "?consistency=serializable" if serializable else ""
        try:
            doc: dict[str, Any] = await self._call("GET", f"/v1/kv/{_quote(key)}{q}")
            return doc
        except NotFound:
            return None

    async def delete(self, key: str) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call("DELETE", f"/v1/kv/{_quote(key)}", write=True)
        return doc

    async def range(self, prefix: str, *, serializable: bool = False) -> dict[str, Any]:
        q = "&consistency=serializable" if serializable else ""
        doc: dict[str, Any] = await self._call("GET", f"/v1/kv?prefix={_quote(prefix)}{q}")
        return doc

    async def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        body = {"compare": compare, "success": success, "failure": failure or []}
        doc: dict[str, Any] = await self._call("POST", "/v1/txn", body, write=True)
        return doc

    async def compact(self, revision: int) -> dict[str, Any]:
        """Discard the store's history up to ``revision`` (not the keys: their changes)."""
        return await self._doc("POST", "/v1/compact", {"revision": revision}, True)

    # ---- watches ---------------------------------------------------------------------------

    async def watch(
        self,
        prefix: str = "",
        start_revision: int = 0,
        *,
        relist: bool = True,
        progress_ms: int = 5000,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events under ``prefix`` from ``start_revision``, across disconnects and failovers.

        Resumes where it left off (inside a change of many keys too: each event
        comes once). If that history was compacted and
        ``relist`` is set, yields ``{"type": "relist", "revision", "items"}``
        (the current contents) and continues from there; else raises Compacted.
        """
        next_rev = start_revision
        # One change can touch many keys: its events share a revision and come one
        # by one. ``delivered`` counts those of revision ``next_rev`` already
        # yielded, so a stream broken in the middle of a change resumes at that
        # revision and skips them, rather than skip the rest of the change.
        delivered = 0
        delay = 0.05
        while True:
            base = self.endpoints[self._current]
            query = f"prefix={_quote(prefix)}&start_revision={next_rev}&progress_ms={progress_ms}"
            url = f"{base}/v1/watch?{query}"
            skip = delivered
            try:
                async with self.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=None, sock_read=progress_ms / 1000 * 3)
                ) as r:
                    if r.status == 410:
                        err = (await r.json(content_type=None))["error"]
                        if not relist:
                            raise Compacted(err["code"], err["message"], 410, err)
                        listing = await self.range(prefix)
                        yield {
                            "type": "relist",
                            "revision": listing["revision"],
                            "items": listing["items"],
                        }
                        next_rev, delivered = listing["revision"] + 1, 0
                        continue
                    if r.status != 200:
                        raise Unavailable("unavailable", f"watch answered {r.status}")
                    delay = 0.05
                    async for line in r.content:
                        if not line.startswith(b"data: "):
                            continue
                        ev = json.loads(line[6:])
                        if ev.get("type") == "error":
                            resume = ev["error"].get("resume_revision")
                            if resume and resume > next_rev:
                                next_rev, delivered = resume, 0
                            break
                        if ev.get("type") == "progress":
                            if next_rev == 0 or (delivered and ev["revision"] >= next_rev):
                                # Everything up to here has come: nothing to skip.
                                next_rev, delivered = max(next_rev, ev["revision"]) + 1, 0
                            yield ev
                            continue
                        rev = ev["revision"]
                        if rev == next_rev and skip:
                            skip -= 1  # yielded before the stream broke
                            continue
                        if rev == next_rev:
                            delivered += 1
                        else:
                            next_rev, delivered = rev, 1
                        yield ev
            except (aiohttp.ClientError, TimeoutError, Unavailable):
                pass
            self._rotate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    # ---- leases, locks, elections ----------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        doc = await self._call("POST", "/v1/leases", {"ttl": ttl}, write=True)
        return int(doc["id"])

    async def keepalive(self, lease: int) -> int:
        doc = await self._call("POST", f"/v1/leases/{lease}/keepalive")
        return int(doc["ttl"])

    async def revoke(self, lease: int) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call("DELETE", f"/v1/leases/{lease}", write=True)
        return doc

    @contextlib.asynccontextmanager
    async def lease(self, ttl: int) -> AsyncIterator[int]:
        """A lease kept alive in the background (every ttl/3) and revoked on exit."""
        lease_id = await self.grant(ttl)

        async def keep() -> None:
            while True:
                await asyncio.sleep(max(0.2, ttl / 3))
                with contextlib.suppress(CoordError):
                    await self.keepalive(lease_id)

        task = asyncio.get_running_loop().create_task(keep())
        try:
            yield lease_id
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, CoordError):
                await task
            with contextlib.suppress(CoordError):
                await self.revoke(lease_id)

    async def lock(self, name: str, lease: int, timeout: float = 30) -> dict[str, Any]:
        """Hold a lock while ``lease`` lives; ``revision`` in the answer is the fencing token."""
        doc: dict[str, Any] = await self._call(
            "POST", f"/v1/locks/{_quote(name)}", {"lease": lease, "timeout": timeout}
        )
        return doc

    async def unlock(self, name: str, key: str) -> None:
        await self._call("DELETE", f"/v1/locks/{_quote(name)}?key={_quote(key)}")

    async def campaign(self, name: str, lease: int, value: str) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call(
            "POST", f"/v1/elections/{_quote(name)}/campaign", {"lease": lease, "value": value}
        )
        return doc

    async def leader_of(self, name: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = await self._call("GET", f"/v1/elections/{_quote(name)}")
            return doc
        except NotFound:
            return None

    async def resign(self, name: str, key: str) -> None:
        await self._call("POST", f"/v1/elections/{_quote(name)}/resign", {"key": key})

    # ---- the cluster map ---------------------------------------------------------------------
    # Reads are linearizable unless ``serializable``; lists are {"revision", "items"}.
    # Writes go through the exactly-once path; every answer carries its "revision".

    async def _doc(
        self, method: str, path: str, body: Any = None, write: bool = False
    ) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call(method, path, body, write=write)
        return doc

    async def _maybe(self, path: str, serializable: bool) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = await self._call("GET", path + _consistency(serializable, "?"))
            return doc
        except NotFound:
            return None

    async def map_summary(self, *, serializable: bool = False) -> dict[str, Any]:
        return await self._doc("GET", "/v1/map" + _consistency(serializable, "?"))

    async def register_node(
        self, node: str, portal: str, disks: list[dict[str, Any]], ttl_ms: int
    ) -> dict[str, Any]:
        """An agent starts: ``{"node", "lease", "ttl_ms", "revision"}``; heartbeat that lease."""
        body = {"portal": portal, "disks": disks, "ttl_ms": ttl_ms}
        return await self._doc("PUT", f"/v1/nodes/{_quote(node)}", body, True)

    async def heartbeat(self, node: str, lease: int) -> dict[str, Any]:
        """Keep the node's lease alive; the answer lists the VIPs it may serve now.

        Not a write in the log, so no sequence number: asking twice is harmless.
        Conflict ``stale_lease``: the lease is gone, register again.
        """
        return await self._doc("POST", f"/v1/nodes/{_quote(node)}/heartbeat", {"lease": lease})

    async def drain(self, node: str) -> dict[str, Any]:
        return await self._doc("POST", f"/v1/nodes/{_quote(node)}/drain", None, True)

    async def undrain(self, node: str) -> dict[str, Any]:
        path = f"/v1/nodes/{_quote(node)}/undrain"
        return await self._doc("POST", path, None, True)

    async def delete_node(self, node: str) -> dict[str, Any]:
        return await self._doc("DELETE", f"/v1/nodes/{_quote(node)}", None, True)

    async def nodes(self, *, serializable: bool = False) -> dict[str, Any]:
        return await self._doc("GET", "/v1/nodes" + _consistency(serializable, "?"))

    async def node(self, node: str, *, serializable: bool = False) -> dict[str, Any] | None:
        return await self._maybe(f"/v1/nodes/{_quote(node)}", serializable)

    async def report_sessions(
        self, node: str, lease: int, sessions: Sequence[tuple[str, str] | list[str]]
    ) -> dict[str, Any]:
        """The sessions the node's target really has, as [volume, initiator] pairs."""
        body = {"lease": lease, "sessions": [list(p) for p in sessions]}
        path = f"/v1/nodes/{_quote(node)}/sessions"
        return await self._doc("PUT", path, body, True)

    async def put_policy(
        self,
        name: str,
        *,
        replicas: int,
        arbiter: bool | None = None,
        tier: str | None = None,
        placement: str | None = None,
        max_heal_failures: int | None = None,
        prev_revision: int | None = None,
    ) -> dict[str, Any]:
        """Create or replace a policy (unset fields take the defaults: no arbiter,
        tier standard, scatter, 3 heal failures); ``prev_revision``: only if unchanged."""
        given = {
            "arbiter": arbiter,
            "tier": tier,
            "placement": placement,
            "max_heal_failures": max_heal_failures,
            "prev_revision": prev_revision,
        }
        body = {"replicas": replicas, **{k: v for k, v in given.items() if v is not None}}
        return await self._doc("PUT", f"/v1/policies/{_quote(name)}", body, True)

    async def policy(self, name: str, *, serializable: bool = False) -> dict[str, Any] | None:
        return await self._maybe(f"/v1/policies/{_quote(name)}", serializable)

    async def policies(self, *, serializable: bool = False) -> dict[str, Any]:
        path = "/v1/policies" + _consistency(serializable, "?")
        return await self._doc("GET", path)

    async def delete_policy(self, name: str) -> dict[str, Any]:
        path = f"/v1/policies/{_quote(name)}"
        return await self._doc("DELETE", path, None, True)

    async def create_volume(
        self,
        name: str,
        size_bytes: int,
        policy: str,
        *,
        iqn: str | None = None,
        policy_revision: int | None = None,
    ) -> dict[str, Any]:
        """Place a volume's replicas by its policy (Conflict ``unplaceable`` says what is
        missing); ``policy_revision``: only if the policy is still at that revision."""
        body: dict[str, Any] = {"name": name, "size_bytes": size_bytes, "policy": policy}
        if iqn is not None:
            body["iqn"] = iqn
        if policy_revision is not None:
            body["policy_revision"] = policy_revision
        return await self._doc("POST", "/v1/volumes", body, True)

    async def volume(self, name: str, *, serializable: bool = False) -> dict[str, Any] | None:
        return await self._maybe(f"/v1/volumes/{_quote(name)}", serializable)

    async def volumes(
        self, *, state: str | None = None, serializable: bool = False
    ) -> dict[str, Any]:
        q = f"?state={_quote(state)}" if state is not None else ""
        q += _consistency(serializable, "&" if q else "?")
        return await self._doc("GET", "/v1/volumes" + q)

    async def resize_volume(self, name: str, size_bytes: int) -> dict[str, Any]:
        path = f"/v1/volumes/{_quote(name)}"
        return await self._doc("PATCH", path, {"size_bytes": size_bytes}, True)

    async def delete_volume(self, name: str, *, force: bool = False) -> dict[str, Any]:
        path = f"/v1/volumes/{_quote(name)}" + ("?force=true" if force else "")
        return await self._doc("DELETE", path, None, True)

    async def accuse(self, volume: str, replica: int, by: str) -> dict[str, Any]:
        path = f"/v1/volumes/{_quote(volume)}/replicas/{replica}/accuse"
        return await self._doc("POST", path, {"by": by}, True)

    async def heal(self, volume: str, replica: int, result: str) -> dict[str, Any]:
        """``result``: "started", "ok" or "failed"."""
        path = f"/v1/volumes/{_quote(volume)}/replicas/{replica}/heal"
        return await self._doc("POST", path, {"result": result}, True)

    async def rebuilt(self, volume: str, replica: int, ok: bool) -> dict[str, Any]:
        path = f"/v1/volumes/{_quote(volume)}/replicas/{replica}/rebuilt"
        return await self._doc("POST", path, {"ok": ok}, True)

    async def create_vip(self, address: str, port: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"address": address}
        if port is not None:
            body["port"] = port
        return await self._doc("POST", "/v1/vips", body, True)

    async def vip(self, address: str, *, serializable: bool = False) -> dict[str, Any] | None:
        return await self._maybe(f"/v1/vips/{_quote(address)}", serializable)

    async def vips(self, *, serializable: bool = False) -> dict[str, Any]:
        return await self._doc("GET", "/v1/vips" + _consistency(serializable, "?"))

    async def move_vip(self, address: str, to: str | None = None) -> dict[str, Any]:
        body = {"to": to} if to is not None else {}
        path = f"/v1/vips/{_quote(address)}/move"
        return await self._doc("POST", path, body, True)

    async def vip_released(self, address: str, epoch: int, lease: int) -> dict[str, Any]:
        """The agent took the address down (the epoch and lease its heartbeat named)."""
        path = f"/v1/vips/{_quote(address)}/released"
        return await self._doc("POST", path, {"epoch": epoch, "lease": lease}, True)

    async def delete_vip(self, address: str) -> dict[str, Any]:
        return await self._doc("DELETE", f"/v1/vips/{_quote(address)}", None, True)

    async def assign_session(self, volume: str, initiator: str) -> dict[str, Any]:
        """An initiator logs in: the node and portal that serve it (least active)."""
        body = {"volume": volume, "initiator": initiator}
        return await self._doc("POST", "/v1/sessions", body, True)

    async def sessions(
        self,
        *,
        node: str | None = None,
        volume: str | None = None,
        serializable: bool = False,
    ) -> dict[str, Any]:
        q = "&".join(
            f"{k}={_quote(v)}" for k, v in (("node", node), ("volume", volume)) if v is not None
        )
        q = f"?{q}" if q else ""
        q += _consistency(serializable, "&" if q else "?")
        return await self._doc("GET", "/v1/sessions" + q)

    async def delete_session(self, volume: str, initiator: str) -> dict[str, Any]:
        path = f"/v1/sessions/{_quote(volume)}/{_quote(initiator)}"
        return await self._doc("DELETE", path, None, True)

    # ---- the pipelined channel -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """Many requests in flight over one connection to the leader (see Channel)."""
        ch = await _open_channel(self)
        try:
            yield ch
        finally:
            await ch.close()

    async def open_channel(self) -> Channel:
        """A channel to the leader that the caller keeps (and closes) itself."""
        return await _open_channel(self)

    # ---- cluster -------------------------------------------------------------------------------

    async def cluster(self) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call("GET", "/v1/cluster")
        return doc

    async def transfer(self, to: int) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call("POST", "/v1/cluster/transfer", {"to": to})
        return doc

    async def add_member(
        self, node: int, peer: str, api: str, *, voter: bool = False
    ) -> dict[str, Any]:
        """Add a member (a learner unless ``voter``; promote it once it has caught up).

        Membership changes are not deduplicated by session: a retry after an
        unknown outcome may be refused because the first attempt went through.
        """
        body = {"id": node, "peer": peer, "api": api, "voter": voter}
        return await self._doc("POST", "/v1/cluster/members", body)

    async def promote_member(self, node: int) -> dict[str, Any]:
        return await self._doc("POST", f"/v1/cluster/members/{node}/promote")

    async def remove_member(self, node: int) -> dict[str, Any]:
        return await self._doc("DELETE", f"/v1/cluster/members/{node}")

    async def healthz(self) -> dict[str, Any]:
        """This endpoint's own liveness (not forwarded): ``{"ok": true}``, else Unavailable."""
        return await self._doc("GET", "/healthz")

    async def leases(self, *, serializable: bool = False) -> dict[str, Any]:
        """``{"revision", "leases": [{"id", "ttl", "keys", "remaining"}]}`` (remaining: s)."""
        return await self._doc("GET", "/v1/leases" + _consistency(serializable, "?"))

    async def delete_prefix(self, prefix: str) -> dict[str, Any]:
        """Delete every key under ``prefix`` in one revision: ``{"revision", "deleted"}``."""
        path = f"/v1/kv?prefix={_quote(prefix)}"
        return await self._doc("DELETE", path, None, True)

    async def download_snapshot(self) -> tuple[bytes, int]:
        """The whole store as one file (``coord snapshot restore`` reads it) and its revision.

        Asked of the leader when one is known (its state is the newest), else of
        whichever endpoint answers.
        """
        with contextlib.suppress(CoordError):
            leader = (await self.cluster()).get("leader_api")
            if leader and _url(leader) in self.endpoints:
                self._current = self.endpoints.index(_url(leader))
        last: CoordError | None = None
        for _ in range(len(self.endpoints)):
            base = self.endpoints[self._current]
            try:
                async with self.session.get(
                    f"{base}/v1/snapshot", timeout=aiohttp.ClientTimeout(total=self.timeout * 5)
                ) as r:
                    data = await r.read()
                    if r.status == 200:
                        return data, int(r.headers.get("X-Coord-Revision", "0"))
                    last = Unavailable("unavailable", f"{base}: snapshot answered {r.status}")
            except (aiohttp.ClientError, TimeoutError) as e:
                last = Unavailable("unavailable", f"{base}: {type(e).__name__}: {e}")
            self._rotate()
        assert last is not None
        raise last


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="/")


def _consistency(serializable: bool, sep: str) -> str:
    return f"{sep}consistency=serializable" if serializable else ""


FRAME_BYTES = 1 << 20  # what the channel packs into one frame, at most (but one request)


class Channel:
    """Many requests in flight over one WebSocket (``Client.channel()``).

    Same operations and errors as the HTTP calls. Writes carry no session here:
    a pipelined client that needs exactly-once retries uses the HTTP calls.
    If the link breaks, writes in flight end UnknownOutcome and reads Unavailable.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next = 0
        self._waiting: dict[int, tuple[asyncio.Future[Any], bool]] = {}
        self._loop = asyncio.get_running_loop()
        self._reader = self._loop.create_task(self._read())
        # Requests made in one turn of the loop leave in one frame (a list).
        self._outbox: list[dict[str, Any]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def _read(self) -> None:
        import msgpack

        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                for doc in msgpack.unpackb(msg.data, raw=False):  # a frame: a list of answers
                    self._settle(doc)
        finally:
            for fut, write in self._waiting.values():
                if not fut.done():
                    cls = UnknownOutcome if write else Unavailable
                    fut.set_exception(cls(cls.__name__.lower(), "the channel closed"))
            self._waiting.clear()

    def _settle(self, doc: dict[str, Any]) -> None:
        got = self._waiting.pop(doc.get("id"), None)  # type: ignore[arg-type]
        if got is None or got[0].done():
            return
        fut = got[0]
        if 200 <= doc["status"] < 300:
            fut.set_result(doc["body"])
            return
        err = doc["body"].get("error", {})
        code = err.get("code", "internal")
        details = {k: v for k, v in err.items() if k not in ("code", "message")}
        fut.set_exception(
            ERRORS.get(code, CoordError)(code, err.get("message", ""), doc["status"], details)
        )

    async def request(self, op: str, *, write: bool = False, **args: Any) -> Any:
        if self._reader.done():  # nothing sent: a definite failure, even for a write
            raise Unavailable("unavailable", "the channel is closed")
        self._next += 1
        rid = self._next
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (fut, write)
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append({"id": rid, "op": op, **args})
        return await fut

    def _flush(self) -> None:
        import msgpack

        batch, self._outbox = self._outbox, []
        packer = msgpack.Packer(use_bin_type=True)
        frame: list[bytes] = []
        size = 0
        for req in batch:
            one = packer.pack(req)
            # A frame holds at most 1,024 requests and 1 MiB (the server refuses a
            # WebSocket message over its body limit, 2 MiB by default): a request
            # bigger than that travels alone.
            if frame and (len(frame) >= 1024 or size + len(one) > FRAME_BYTES):
                self._send_frame(packer, frame)
                frame, size = [], 0
            frame.append(one)
            size += len(one)
        if frame:
            self._send_frame(packer, frame)

    def _send_frame(self, packer: Any, items: list[bytes]) -> None:
        data = packer.pack_array_header(len(items)) + b"".join(items)
        # Tasks run in the order made, and each writes its frame before it first
        # waits: frames leave in order. A failed send closes the channel, and the
        # reader then ends every request still waiting.
        t = self._loop.create_task(self._send(data))
        self._sending.add(t)
        t.add_done_callback(self._sending.discard)

    async def _send(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            await self.ws.close()

    async def put(self, key: str, value: str, **kw: Any) -> int:
        return int((await self.request("put", write=True, key=key, value=value, **kw))["revision"])

    async def get(self, key: str, **kw: Any) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = await self.request("get", key=key, **kw)
            return doc
        except NotFound:
            return None

    async def delete(self, key: str) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request("delete", write=True, key=key)
        return doc

    async def txn(
        self, compare: list[Any], success: list[Any], failure: list[Any] | None = None
    ) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request(
            "txn", write=True, compare=compare, success=success, failure=failure or []
        )
        return doc

    async def assign_session(self, volume: str, initiator: str) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request(
            "session_assign", write=True, volume=volume, initiator=initiator
        )
        return doc

    async def heartbeat(self, node: str, lease: int) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request("node_heartbeat", node=node, lease=lease)
        return doc

    async def report_sessions(
        self, node: str, lease: int, sessions: Sequence[tuple[str, str] | list[str]]
    ) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request(
            "sessions_report",
            write=True,
            node=node,
            lease=lease,
            sessions=[list(p) for p in sessions],
        )
        return doc

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _open_channel(client: Client) -> Channel:
    """Connect to the leader's channel (following not_leader hints)."""
    for _ in range(len(client.endpoints) + 2):
        base = client.endpoints[client._current]
        try:
            ws = await client.session.ws_connect(f"{base}/v1/channel", max_msg_size=64 << 20)
        except aiohttp.ClientError:
            client._rotate()
            continue
        ch = Channel(ws)
        try:
            await ch.request(
                "get", key="\x00probe-leader"
            )  # NotFound on the leader, not_leader elsewhere
        except NotFound:
            return ch
        except Unavailable as e:
            await ch.close()
            leader = e.details.get("leader")
            if leader and _url(leader["api"]) in client.endpoints:
                client._current = client.endpoints.index(_url(leader["api"]))
            else:
                client._rotate()
            continue
        return ch
    raise Unavailable("unavailable", "no leader reachable for a channel")
