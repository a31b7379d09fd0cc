"""The cluster map's HTTP routes: target nodes, disk policies, volumes, VIPs, sessions.

Reads answer from the map the state machine holds (coord/clustermap/state.py),
linearizable by default, ``?consistency=serializable`` for any node's own copy;
every answer carries the ``revision`` it reflects, and lists are ``{"revision",
"items"}``. Writes are map operations proposed through the log: their fields
are checked here with the same checks the state machine runs again when it
applies them, so bad input gets a precise 400 before anything is proposed.
Refusals that depend on the state (a missing policy, a full cluster, a
policy in use) come back from the state machine with its code: 404
``not_found``, 409 ``exists`` / ``in_use`` / ``unplaceable`` / ``stale_lease``,
412 ``precondition_failed``, 503 ``no_live_node``.

Every success is 200 (as for the store's routes), creations included; what
was created or changed is in the body. Writes take the exactly-once session
headers (``X-Coord-Client``, ``X-Coord-Seq``) like every write, and a follower
forwards them to the leader (api.py's middleware).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from coord.clustermap import model
from coord.clustermap.state import ClusterMap

from . import ops
from .node import Node
from .ops import BadRequest, NotFound, checked, raise_for


def add_routes(router: web.UrlDispatcher, node: Node) -> None:
    MapRoutes(node).add(router)


class MapRoutes:
    def __init__(self, node: Node) -> None:
        self.node = node

    def add(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/map", self.summary)
        r.add_get("/v1/nodes", self.node_list)
        r.add_get("/v1/nodes/{id}", self.node_get)
        r.add_put("/v1/nodes/{id}", self.node_register)
        r.add_delete("/v1/nodes/{id}", self.node_delete)
        r.add_post("/v1/nodes/{id}/heartbeat", self.node_heartbeat)
        r.add_post("/v1/nodes/{id}/drain", self.node_drain)
        r.add_post("/v1/nodes/{id}/undrain", self.node_undrain)
        r.add_put("/v1/nodes/{id}/sessions", self.sessions_report)
        r.add_get("/v1/policies", self.policy_list)
        r.add_get("/v1/policies/{name}", self.policy_get)
        r.add_put("/v1/policies/{name}", self.policy_put)
        r.add_delete("/v1/policies/{name}", self.policy_delete)
        r.add_get("/v1/volumes", self.volume_list)
        r.add_post("/v1/volumes", self.volume_create)
        r.add_get("/v1/volumes/{name}", self.volume_get)
        r.add_patch("/v1/volumes/{name}", self.volume_resize)
        r.add_delete("/v1/volumes/{name}", self.volume_delete)
        r.add_post("/v1/volumes/{name}/replicas/{id}/accuse", self.replica_accuse)
        r.add_post("/v1/volumes/{name}/replicas/{id}/heal", self.replica_heal)
        r.add_post("/v1/volumes/{name}/replicas/{id}/rebuilt", self.replica_rebuilt)
        r.add_get("/v1/vips", self.vip_list)
        r.add_post("/v1/vips", self.vip_create)
        r.add_get("/v1/vips/{address}", self.vip_get)
        r.add_delete("/v1/vips/{address}", self.vip_delete)
        r.add_post("/v1/vips/{address}/move", self.vip_move)
        r.add_post("/v1/vips/{address}/released", self.vip_released)
        r.add_get("/v1/sessions", self.session_list)
        r.add_post("/v1/sessions", self.session_assign)
        r.add_delete("/v1/sessions/{volume}/{initiator}", self.session_delete)

    # ---- helpers ---------------------------------------------------------------------------

    async def _read(self, request: web.Request) -> ClusterMap:
        await ops.read_view(self.node, request.query.get("consistency"))
        return self.node.sm.map

    def _answer(self, doc: dict[str, Any]) -> web.Response:
        return web.json_response({**doc, "revision": self.node.sm.kv.revision})

    def _items(self, items: list[Any]) -> web.Response:
        return web.json_response({"revision": self.node.sm.kv.revision, "items": items})

    def _missing(self, what: str) -> NotFound:
        return NotFound(f"no {what}", revision=self.node.sm.kv.revision)

    async def _write(self, request: web.Request, cmd: dict[str, Any]) -> web.Response:
        sess = self._session(request)
        return web.json_response(raise_for(await self.node.propose({**cmd, **sess})))

    @staticmethod
    def _session(request: web.Request) -> dict[str, Any]:
        return ops.session(
            {}, request.headers.get("X-Coord-Client"), request.headers.get("X-Coord-Seq")
        )

    # ---- summary and target nodes ----------------------------------------------------------

    async def summary(self, request: web.Request) -> web.Response:
        cm = await self._read(request)
        return self._answer(cm.summary())

    async def node_list(self, request: web.Request) -> web.Response:
        cm = await self._read(request)
        return self._items([cm.node_view(n) for n in sorted(cm.nodes)])

    async def node_get(self, request: web.Request) -> web.Response:
        nid = _node_id(request)
        cm = await self._read(request)
        if nid not in cm.nodes:
            raise self._missing(f"node {nid!r}")
        return self._answer(cm.node_view(nid))

    async def node_register(self, request: web.Request) -> web.Response:
        """An agent (re)starts: the answer holds the lease it keeps alive by heartbeats."""
        nid = _node_id(request)
        doc = await _body(request, "portal", "disks", "ttl_ms")
        cmd = {
            "op": "map.node_register",
            "node": nid,
            "portal": checked(model.portal, doc.get("portal")),
            "disks": checked(model.disks, doc.get("disks", [])),
            "ttl_ms": checked(model.integer, doc, "ttl_ms", 200, 600_000),
        }
        return await self._write(request, cmd)

    async def node_heartbeat(self, request: web.Request) -> web.Response:
        doc = await _body(request, "lease")
        return web.json_response(await ops.node_heartbeat(self.node, request.match_info["id"], doc))

    async def node_drain(self, request: web.Request) -> web.Response:
        await _body(request)
        cmd = {"op": "map.node_update", "node": _node_id(request), "drained": True}
        return await self._write(request, cmd)

    async def node_undrain(self, request: web.Request) -> web.Response:
        await _body(request)
        cmd = {"op": "map.node_update", "node": _node_id(request), "drained": False}
        return await self._write(request, cmd)

    async def node_delete(self, request: web.Request) -> web.Response:
        return await self._write(request, {"op": "map.node_delete", "node": _node_id(request)})

    async def sessions_report(self, request: web.Request) -> web.Response:
        doc = await _body(request, "lease", "sessions")
        result = await ops.sessions_report(
            self.node, request.match_info["id"], doc, self._session(request)
        )
        return web.json_response(result)

    # ---- policies --------------------------------------------------------------------------

    def _policy_view(self, cm: ClusterMap, name: str) -> dict[str, Any]:
        # mod_revision: what volume creation's policy_revision and PUT's prev_revision name
        return {**cm.policies[name], "mod_revision": cm.mod_revision(model.POLICIES + name)}

    async def policy_list(self, request: web.Request) -> web.Response:
        cm = await self._read(request)
        return self._items([self._policy_view(cm, n) for n in sorted(cm.policies)])

    async def policy_get(self, request: web.Request) -> web.Response:
        name = _path_name(request, "name", "policy")
        cm = await self._read(request)
        if name not in cm.policies:
            raise self._missing(f"policy {name!r}")
        return self._answer(self._policy_view(cm, name))

    async def policy_put(self, request: web.Request) -> web.Response:
        name = _path_name(request, "name", "policy")
        doc = await _body(
            request,
            "replicas",
            "arbiter",
            "tier",
            "placement",
            "max_heal_failures",
            "prev_revision",
        )
        fields = {k: v for k, v in doc.items() if k != "prev_revision"}
        cmd: dict[str, Any] = {
            "op": "map.policy_put",
            **checked(model.policy, {**fields, "name": name}),
        }
        if "prev_revision" in doc:
            cmd["prev_revision"] = checked(model.integer, doc, "prev_revision", 0, 1 << 62)
        return await self._write(request, cmd)

    async def policy_delete(self, request: web.Request) -> web.Response:
        name = _path_name(request, "name", "policy")
        return await self._write(request, {"op": "map.policy_delete", "name": name})

    # ---- volumes and replicas --------------------------------------------------------------

    async def volume_list(self, request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state is not None and state not in model.VOLUME_STATES:
            states = ", ".join(model.VOLUME_STATES)
            raise BadRequest(f"?state= is one of {states} (got {state!r})")
        cm = await self._read(request)
        return self._items(
            [
                cm.volume_view(n)
                for n in sorted(cm.volumes)
                if state is None or cm.volumes[n]["state"] == state
            ]
        )

    async def volume_get(self, request: web.Request) -> web.Response:
        name = _path_name(request, "name", "volume")
        cm = await self._read(request)
        if name not in cm.volumes:
            raise self._missing(f"volume {name!r}")
        return self._answer(cm.volume_view(name))

    async def volume_create(self, request: web.Request) -> web.Response:
        doc = await _body(request, "name", "size_bytes", "policy", "iqn", "policy_revision")
        cmd: dict[str, Any] = {
            "op": "map.volume_create",
            "name": checked(model.name, doc, "name", "volume"),
            "size_bytes": checked(
                model.integer, doc, "size_bytes", model.MIB, model.MAX_SIZE_BYTES
            ),
            "policy": checked(model.name, doc, "policy", "volume"),
        }
        if doc.get("iqn") is not None:
            cmd["iqn"] = checked(model.iqn, doc["iqn"])
        if doc.get("policy_revision") is not None:
            cmd["policy_revision"] = checked(model.integer, doc, "policy_revision", 0, 1 << 62)
        return await self._write(request, cmd)

    async def volume_resize(self, request: web.Request) -> web.Response:
        name = _path_name(request, "name", "volume")
        doc = await _body(request, "size_bytes")
        cmd = {
            "op": "map.volume_resize",
            "name": name,
            "size_bytes": checked(
                model.integer, doc, "size_bytes", model.MIB, model.MAX_SIZE_BYTES
            ),
        }
        return await self._write(request, cmd)

    async def volume_delete(self, request: web.Request) -> web.Response:
        name = _path_name(request, "name", "volume")
        force = request.query.get("force", "false")
        if force not in ("true", "false"):
            raise BadRequest(f"?force= is 'true' or 'false' (got {force!r})")
        cmd = {"op": "map.volume_delete", "name": name, "force": force == "true"}
        return await self._write(request, cmd)

    def _replica(self, request: web.Request, op: str) -> dict[str, Any]:
        rid = request.match_info["id"]
        if not rid.isdigit() or not 0 < int(rid) <= 1 << 31:
            raise BadRequest(f"replica ids are positive integers (got {rid!r})")
        name = _path_name(request, "name", "volume")
        return {"op": op, "volume": name, "replica": int(rid)}

    async def replica_accuse(self, request: web.Request) -> web.Response:
        """A writer saw this replica fail: nothing reads or writes it until it is healed."""
        cmd = self._replica(request, "map.replica_accuse")
        doc = await _body(request, "by")
        return await self._write(request, {**cmd, "by": checked(model.accuser, doc.get("by"))})

    async def replica_heal(self, request: web.Request) -> web.Response:
        cmd = self._replica(request, "map.replica_heal")
        doc = await _body(request, "result")
        result = checked(model.heal_result, doc.get("result"))
        return await self._write(request, {**cmd, "result": result})

    async def replica_rebuilt(self, request: web.Request) -> web.Response:
        cmd = self._replica(request, "map.rebuild_done")
        doc = await _body(request, "ok")
        return await self._write(request, {**cmd, "ok": checked(model.boolean, doc, "ok")})

    # ---- VIPs ------------------------------------------------------------------------------

    async def vip_list(self, request: web.Request) -> web.Response:
        cm = await self._read(request)
        return self._items([cm.vips[a] for a in sorted(cm.vips)])

    async def vip_get(self, request: web.Request) -> web.Response:
        addr = _path_address(request)
        cm = await self._read(request)
        if addr not in cm.vips:
            raise self._missing(f"VIP {addr}")
        return self._answer(cm.vips[addr])

    async def vip_create(self, request: web.Request) -> web.Response:
        doc = await _body(request, "address", "port")
        cmd = {
            "op": "map.vip_create",
            "address": checked(model.address, doc.get("address"), "'address'"),
            "port": checked(model.integer, doc, "port", 1, 65535, 3260),
        }
        return await self._write(request, cmd)

    async def vip_move(self, request: web.Request) -> web.Response:
        """Released by its holder first, then given to ``to`` (or the best other node)."""
        addr = _path_address(request)
        doc = await _body(request, "to")
        cmd: dict[str, Any] = {"op": "map.vip_move", "address": addr}
        if doc.get("to") is not None:
            cmd["to"] = checked(model.name, doc, "to", "move")
        return await self._write(request, cmd)

    async def vip_released(self, request: web.Request) -> web.Response:
        """The holder's agent took the address down (the epoch and lease it released under)."""
        addr = _path_address(request)
        doc = await _body(request, "epoch", "lease")
        cmd = {
            "op": "map.vip_released",
            "address": addr,
            "epoch": checked(model.integer, doc, "epoch", 0, 1 << 62),
            "lease": ops.map_lease(doc),
        }
        return await self._write(request, cmd)

    async def vip_delete(self, request: web.Request) -> web.Response:
        return await self._write(
            request, {"op": "map.vip_delete", "address": _path_address(request)}
        )

    # ---- sessions --------------------------------------------------------------------------

    async def session_list(self, request: web.Request) -> web.Response:
        want_node = request.query.get("node")
        want_volume = request.query.get("volume")
        if want_node is not None:
            checked(model.name, {"node": want_node}, "node", "?node=")
        if want_volume is not None:
            checked(model.name, {"volume": want_volume}, "volume", "?volume=")
        cm = await self._read(request)
        if want_node is not None:
            sids = sorted(cm.node_sessions.get(want_node, ()))
        else:
            sids = sorted(cm.sessions)
        return self._items(
            [
                cm.sessions[s]
                for s in sids
                if want_volume is None or cm.sessions[s]["volume"] == want_volume
            ]
        )

    async def session_assign(self, request: web.Request) -> web.Response:
        """An initiator logs in: which node (portal) serves it; least-active wins."""
        doc = await _body(request, "volume", "initiator")
        return web.json_response(await ops.session_assign(self.node, doc, self._session(request)))

    async def session_delete(self, request: web.Request) -> web.Response:
        cmd = {
            "op": "map.session_delete",
            "volume": _path_name(request, "volume", "session"),
            "initiator": checked(model.initiator, request.match_info["initiator"]),
        }
        return await self._write(request, cmd)


# ---- request parsing -----------------------------------------------------------------------


async def _body(request: web.Request, *allowed: str) -> dict[str, Any]:
    """The body's JSON object; fields not in ``allowed`` are refused."""
    return await ops.json_body(request, allowed)


def _path_name(request: web.Request, part: str, what: str) -> str:
    return checked(model.name, {part: request.match_info[part]}, part, what)


def _node_id(request: web.Request) -> str:
    return checked(model.name, {"node": request.match_info["id"]}, "node", "node")


def _path_address(request: web.Request) -> str:
    # Canonical form, as the records are keyed: "::0:1" finds "::1".
    return checked(model.address, request.match_info["address"], "the address")
