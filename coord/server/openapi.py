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
                "Add a member (a learner unless voter is true).",
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
            "post": op("Promote a caught-up learner to voter.", id="path:required")
        },
        "/v1/cluster/members/{id}": {"delete": op("Remove a member.", id="path:required")},
        "/v1/cluster/transfer": {
            "post": op(
                "Hand leadership to another voter.",
                {"type": "object", "required": ["to"], "properties": {"to": {"type": "integer"}}},
            )
        },
        "/v1/snapshot": {
            "post": op("Snapshot now and compact the log."),
            "get": op("Download the store's current snapshot."),
        },
        "/metrics": {"get": op("Prometheus metrics.")},
        "/healthz": {"get": op("Process is serving.")},
        "/readyz": {"get": op("A leader is known.")},
    },
}
