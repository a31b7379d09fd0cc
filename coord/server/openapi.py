"""The OpenAPI 3 document served at /v1/openapi.json (kept by hand, checked by a test)."""

from __future__ import annotations

from typing import Any

ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "leader": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "api": {"type": "string"}},
                },
            },
        }
    },
}
KV = {
    "type": "object",
    "properties": {
        k: {"type": "string" if k in ("key", "value") else "integer"}
        for k in ("key", "value", "create_revision", "mod_revision", "version", "lease", "revision")
    },
}


def op(
    summary: str,
    body: dict[str, Any] | None = None,
    ok: dict[str, Any] | None = None,
    /,
    **params: str,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {
                "description": "ok",
                "content": {"application/json": {"schema": ok or {"type": "object"}}},
            },
            "default": {"description": "error", "content": {"application/json": {"schema": ERROR}}},
        },
    }
    if body is not None:
        d["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        d["parameters"] = [
            {
                "name": n,
                "in": where.split(":")[0],
                "required": where.endswith(":required"),
                "schema": {"type": "string"},
            }
            for n, where in params.items()
        ]
    return d


SESSION = {"X-Coord-Client": "header", "X-Coord-Seq": "header"}


# ---- the cluster map (coord/server/mapapi.py) ----------------------------------------------


def obj(required: list[str] | None = None, /, **props: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        d["required"] = required
    return d


INT = {"type": "integer"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
REV = {"revision": INT}
DISK = obj(["id", "size_bytes"], id=STR, size_bytes=INT, tier=STR)
NODE = obj(
    id=STR,
    portal=STR,
    disks={"type": "array", "items": obj(**DISK["properties"], used_bytes=INT)},
    drained=BOOL,
    live=BOOL,
    lease=INT,
    ttl_ms=INT,
    since_ms=INT,
    sessions=obj(active=INT, pending=INT),
    vips={"type": "array", "items": STR},
    rebuilds=INT,
)
POLICY_FIELDS = {
    "replicas": INT,
    "arbiter": BOOL,
    "tier": STR,
    "placement": {"type": "string", "enum": ["scatter", "aggregate"]},
    "max_heal_failures": INT,
}
POLICY = obj(name=STR, **POLICY_FIELDS, mod_revision=INT)
REPLICA = obj(
    id=INT,
    role={"type": "string", "enum": ["data", "arbiter"]},
    node=STR,
    disk=STR,
    size_bytes=INT,
    state={"type": "string", "enum": ["healthy", "accused", "healing", "rebuilding", "retired"]},
    heal_failures=INT,
    rebuild={"type": "string", "enum": ["waiting", "running"]},
    replaces=INT,
)
VOLUME = obj(
    name=STR,
    iqn=STR,
    size_bytes=INT,
    policy=STR,
    policy_revision=INT,
    state={"type": "string", "enum": ["ok", "degraded", "unwritable"]},
    replicas={"type": "array", "items": REPLICA},
    io_replicas={"type": "array", "items": INT},
    members=INT,
    quorum=INT,
)
VIP = obj(
    address=STR,
    port=INT,
    owner={"type": "string", "nullable": True},
    epoch=INT,
    releasing=BOOL,
    target={"type": "string", "nullable": True},
    release_lease=INT,
)
SESSION_REC = obj(
    volume=STR,
    initiator=STR,
    node=STR,
    state={"type": "string", "enum": ["pending", "active"]},
    since_ms=INT,
)
VIP_LIST = {"type": "array", "items": obj(address=STR, port=INT, epoch=INT)}
HEARTBEAT = obj(
    node=STR,
    lease=INT,
    ttl_ms=INT,
    revision=INT,
    vips=VIP_LIST,
    releasing={"type": "array", "items": obj(address=STR, epoch=INT, lease=INT)},
)
ASSIGNED = obj(volume=STR, iqn=STR, initiator=STR, node=STR, portal=STR, state=STR, revision=INT)


def one(schema: dict[str, Any]) -> dict[str, Any]:
    return obj(**schema["properties"], **REV)


def items(schema: dict[str, Any]) -> dict[str, Any]:
    return obj(revision=INT, items={"type": "array", "items": schema})


def write(summary: str, body: dict[str, Any] | None = None, /, **params: str) -> dict[str, Any]:
    return op(summary, body, obj(**REV), **params, **SESSION)


NODE_ID = {"id": "path:required"}
REPLICA_PATH = {"name": "path:required", "id": "path:required"}
MAP_PATHS: dict[str, Any] = {
    "/v1/map": {"get": op("Counts of the cluster map.", None, obj(**REV), consistency="query")},
    "/v1/nodes": {"get": op("Target nodes.", None, items(NODE), consistency="query")},
    "/v1/nodes/{id}": {
        "get": op(
            "A target node (404 if unknown).", None, one(NODE), consistency="query", **NODE_ID
        ),
        "put": op(
            "Register a node's agent: a fresh liveness lease (409 exists: portal taken; "
            "409 in_use: a disk that holds replicas would go).",
            obj(
                ["portal", "ttl_ms"],
                portal=STR,
                disks={"type": "array", "items": DISK},
                ttl_ms=INT,
            ),
            obj(node=STR, lease=INT, ttl_ms=INT, revision=INT),
            **NODE_ID,
            **SESSION,
        ),
        "delete": write(
            "Forget a node that is not live and holds nothing (409 in_use).", **NODE_ID
        ),
    },
    "/v1/nodes/{id}/heartbeat": {
        "post": op(
            "Keep the node's lease alive; the VIPs it may serve (409 stale_lease: register again).",
            obj(["lease"], lease=INT),
            HEARTBEAT,
            **NODE_ID,
        )
    },
    "/v1/nodes/{id}/drain": {
        "post": write("No new sessions or VIPs; its VIPs are released.", **NODE_ID)
    },
    "/v1/nodes/{id}/undrain": {"post": write("Take sessions and VIPs again.", **NODE_ID)},
    "/v1/nodes/{id}/sessions": {
        "put": op(
            "The agent's report of the sessions its target has (409 stale_lease).",
            obj(
                ["lease", "sessions"],
                lease=INT,
                sessions={
                    "type": "array",
                    "items": {"type": "array", "items": STR, "minItems": 2, "maxItems": 2},
                },
            ),
            obj(node=STR, active=INT, added=INT, ended=INT, revision=INT),
            **NODE_ID,
            **SESSION,
        )
    },
    "/v1/policies": {"get": op("Disk policies.", None, items(POLICY), consistency="query")},
    "/v1/policies/{name}": {
        "get": op("A policy (404 if unknown).", None, one(POLICY), name="path:required"),
        "put": write(
            "Create or replace a policy (412 if prev_revision is not its mod_revision).",
            obj(["replicas"], **POLICY_FIELDS, prev_revision=INT),
            name="path:required",
        ),
        "delete": write("Delete a policy no volume uses (409 in_use).", name="path:required"),
    },
    "/v1/volumes": {
        "get": op(
            "Volumes, optionally of one state.",
            None,
            items(VOLUME),
            state="query",
            consistency="query",
        ),
        "post": write(
            "Create a volume, its replicas placed by the policy (404 no policy, 409 exists, "
            "409 unplaceable saying what is missing, 412 policy changed).",
            obj(
                ["name", "size_bytes", "policy"],
                name=STR,
                size_bytes=INT,
                policy=STR,
                iqn=STR,
                policy_revision=INT,
            ),
        ),
    },
    "/v1/volumes/{name}": {
        "get": op("A volume (404 if unknown).", None, one(VOLUME), name="path:required"),
        "patch": write(
            "Grow a volume (409 unplaceable if a disk lacks room).",
            obj(["size_bytes"], size_bytes=INT),
            name="path:required",
        ),
        "delete": write(
            "Delete a volume (409 in_use with active sessions unless force=true).",
            name="path:required",
            force="query",
        ),
    },
    "/v1/volumes/{name}/replicas/{id}/accuse": {
        "post": write("A writer saw this replica fail.", obj(["by"], by=STR), **REPLICA_PATH)
    },
    "/v1/volumes/{name}/replicas/{id}/heal": {
        "post": write(
            "A heal started, succeeded or failed (412 if not accused or healing).",
            obj(["result"], result={"type": "string", "enum": ["started", "ok", "failed"]}),
            **REPLICA_PATH,
        )
    },
    "/v1/volumes/{name}/replicas/{id}/rebuilt": {
        "post": write(
            "A rebuilt copy is complete (ok) or failed (412 if not rebuilding).",
            obj(["ok"], ok=BOOL),
            **REPLICA_PATH,
        )
    },
    "/v1/vips": {
        "get": op("Virtual IPs.", None, items(VIP), consistency="query"),
        "post": write(
            "Create a VIP, owned at once by the live node with the fewest (409 exists).",
            obj(["address"], address=STR, port=INT),
        ),
    },
    "/v1/vips/{address}": {
        "get": op("A VIP (404 if unknown).", None, one(VIP), address="path:required"),
        "delete": write("Delete a VIP (once its holder has released it).", address="path:required"),
    },
    "/v1/vips/{address}/move": {
        "post": write(
            "Release a VIP and give it to 'to' or the best other node (503 no_live_node).",
            obj(to=STR),
            address="path:required",
        )
    },
    "/v1/vips/{address}/released": {
        "post": write(
            "The holder's agent let go of the VIP (412 unless releasing at that epoch and lease).",
            obj(["epoch", "lease"], epoch=INT, lease=INT),
            address="path:required",
        )
    },
    "/v1/sessions": {
        "get": op(
            "iSCSI sessions, pending or active.",
            None,
            items(SESSION_REC),
            node="query",
            volume="query",
            consistency="query",
        ),
        "post": op(
            "An initiator logs in: the least-active live node serves it (404 no volume, "
            "503 no_live_node).",
            obj(["volume", "initiator"], volume=STR, initiator=STR),
            ASSIGNED,
            **SESSION,
        ),
    },
    "/v1/sessions/{volume}/{initiator}": {
        "delete": write(
            "Forget a session (404 if unknown).", volume="path:required", initiator="path:required"
        )
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "coord",
        "version": "1",
        "description": "Raft-replicated metadata store and cluster coordinator.",
    },
    "paths": {
        "/v1/kv/{key}": {
            "put": op(
                "Write a key (412 if prev_revision does not match).",
                {
                    "type": "object",
                    "required": ["value"],
                    "properties": {
                        "value": {"type": "string"},
                        "lease": {"type": "integer"},
                        "prev_revision": {"type": "integer"},
                    },
                },
                {"type": "object", "properties": {"revision": {"type": "integer"}}},
                key="path:required",
                **SESSION,
            ),
            "get": op(
                "Read a key (404 if absent).", None, KV, key="path:required", consistency="query"
            ),
            "delete": op("Delete a key.", key="path:required", **SESSION),
        },
        "/v1/kv": {
            "get": op(
                "List keys under a prefix.", prefix="query", limit="query", consistency="query"
            ),
            "delete": op("Delete every key under a prefix.", prefix="query:required", **SESSION),
        },
        "/v1/txn": {
            "post": op(
                "Compare, then run one branch atomically under one revision.",
                {
                    "type": "object",
                    "properties": {
                        k: {"type": "array", "items": {"type": "object"}}
                        for k in ("compare", "success", "failure")
                    },
                },
                **SESSION,
            )
        },
        "/v1/compact": {
            "post": op(
                "Discard the history up to a revision (watches from before it get 410).",
                {
                    "type": "object",
                    "required": ["revision"],
                    "properties": {"revision": {"type": "integer", "minimum": 1}},
                },
            )
        },
        "/v1/channel": {
            "get": op(
                "Pipelined channel: a WebSocket of msgpack requests and answers (see README)."
            )
        },
        "/v1/watch": {
            "get": op(
                "Server-sent events of changes from a revision.",
                prefix="query",
                start_revision="query",
                progress_ms="query",
            )
        },
        "/v1/leases": {
            "post": op(
                "Grant a lease.",
                {
                    "type": "object",
                    "required": ["ttl"],
                    "properties": {"ttl": {"type": "integer"}, "id": {"type": "integer"}},
                },
            ),
            "get": op("List leases."),
        },
        "/v1/leases/{id}/keepalive": {
            "post": op("Restart a lease's countdown (leader only).", id="path:required")
        },
        "/v1/leases/{id}": {
            "delete": op("Revoke a lease and delete its keys.", id="path:required")
        },
        "/v1/locks/{name}": {
            "post": op(
                "Acquire a lock held under a lease; the revision is a fencing token.",
                {
                    "type": "object",
                    "required": ["lease"],
                    "properties": {"lease": {"type": "integer"}, "timeout": {"type": "number"}},
                },
                name="path:required",
            ),
            "delete": op("Release a lock.", name="path:required", key="query:required"),
        },
        "/v1/elections/{name}/campaign": {
            "post": op(
                "Campaign; returns once elected.",
                {
                    "type": "object",
                    "required": ["lease"],
                    "properties": {"lease": {"type": "integer"}, "value": {"type": "string"}},
                },
                name="path:required",
            )
        },
        "/v1/elections/{name}": {
            "get": op("The current leader of an election.", name="path:required")
        },
        "/v1/elections/{name}/resign": {
            "post": op(
                "Resign.",
                {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
                name="path:required",
            )
        },
        "/v1/cluster": {"get": op("Leader, term, indexes and members.")},
        "/v1/cluster/members": {
            "post": op(
                "Add a member (a learner unless voter is true). 409 invalid_change: already "
                "a member; 503 unavailable: another change is not committed yet, retry.",
                {
                    "type": "object",
                    "required": ["id", "peer", "api"],
                    "properties": {
                        "id": {"type": "integer"},
                        "peer": {"type": "string"},
                        "api": {"type": "string"},
                        "voter": {"type": "boolean"},
                    },
                },
            )
        },
        "/v1/cluster/members/{id}/promote": {
            "post": op(
                "Promote a caught-up learner to voter (409 invalid_change: not a learner; "
                "503 unavailable: not caught up yet, retry).",
                id="path:required",
            )
        },
        "/v1/cluster/members/{id}": {
            "delete": op(
                "Remove a member (409 invalid_change: not a member, or the last voter).",
                id="path:required",
            )
        },
        "/v1/cluster/transfer": {
            "post": op(
                "Hand leadership to another voter (409 invalid_change: not a voter).",
                {"type": "object", "required": ["to"], "properties": {"to": {"type": "integer"}}},
            )
        },
        "/v1/snapshot": {
            "post": op("Snapshot now and compact the log."),
            "get": op("Download the store's current snapshot."),
        },
        **MAP_PATHS,
        "/metrics": {"get": op("Prometheus metrics.")},
        "/healthz": {"get": op("Process is serving.")},
        "/readyz": {"get": op("A leader is known.")},
    },
}
