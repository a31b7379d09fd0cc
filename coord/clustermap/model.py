"""The cluster map's records, their keys in the store, and the checks on every field.

Each record is one key under ``/coord/map/`` whose value is canonical JSON
(sorted keys, no spaces): the same bytes on every replica, readable by any
watcher with a JSON parser, and carried by snapshots and watches like any
other key. Records are plain dicts; the functions here build and check them.

    /coord/map/nodes/{node}                 a target node (portal, disks, drained, liveness)
    /coord/map/policies/{name}              a disk policy
    /coord/map/volumes/{name}               a volume with its replicas
    /coord/map/vips/{address}               a virtual IP: owner, epoch, release in progress
    /coord/map/sessions/{volume}/{initiator} an iSCSI session: node, pending or active

Sizes are bytes (``size_bytes``); times are the proposing leader's wall clock
in ms and are for display only — every decision that depends on time is a
countdown on the leader's monotonic clock (controller.py).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

PREFIX = "/coord/map/"
NODES = PREFIX + "nodes/"
POLICIES = PREFIX + "policies/"
VOLUMES = PREFIX + "volumes/"
VIPS = PREFIX + "vips/"
SESSIONS = PREFIX + "sessions/"

Record = dict[str, Any]

# Replica states (the words). A replica is read and written only when healthy.
HEALTHY = "healthy"
ACCUSED = "accused"
HEALING = "healing"
REBUILDING = "rebuilding"
RETIRED = "retired"
REPLICA_STATES = (HEALTHY, ACCUSED, HEALING, REBUILDING, RETIRED)

PENDING = "pending"
ACTIVE = "active"

VOLUME_STATES = ("ok", "degraded", "unwritable")
HEAL_RESULTS = ("started", "ok", "failed")

SCATTER = "scatter"
AGGREGATE = "aggregate"

# An arbiter keeps metadata only: a small share of the volume, at least 1 MiB.
MIB = 1 << 20
GIB = 1 << 30


def arbiter_bytes(size_bytes: int) -> int:
    return max(MIB, size_bytes // 1024)


MAX_SIZE_BYTES = 1 << 50  # 1 PiB: anything larger is a typo
MAX_RETIRED_KEPT = 4  # retired replicas kept per volume for the record, newest last
MAX_DISKS = 64

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
_IQN = re.compile(
    r"(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[^\s/]*)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})\Z"
)


class Invalid(Exception):
    """A field that does not check out: answered as ``bad_request`` naming it."""


def encode(record: Record) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def decode(value: str) -> Record:
    doc = json.loads(value)
    if not isinstance(doc, dict):
        raise Invalid("a map record is a JSON object")
    return doc


# ---- field checks ------------------------------------------------------------------------


def name(doc: dict[str, Any], field: str, what: str) -> str:
    v = doc.get(field)
    if not isinstance(v, str) or not _NAME.match(v):
        raise Invalid(
            f"{what} {field!r} must be 1-63 characters of letters, digits, '.', '_', '-' "
            f"starting with a letter or digit (got {v!r})"
        )
    return v


def integer(doc: dict[str, Any], field: str, lo: int, hi: int, default: int | None = None) -> int:
    v = doc.get(field, default)
    if type(v) is not int or not lo <= v <= hi:
        raise Invalid(f"{field!r} must be an integer from {lo} to {hi} (got {v!r})")
    return v


def boolean(doc: dict[str, Any], field: str, default: bool | None = None) -> bool:
    v = doc.get(field, default)
    if type(v) is not bool:
        raise Invalid(f"{field!r} must be true or false (got {v!r})")
    return v


def address(v: Any, what: str = "address") -> str:
    """An IP address in canonical form."""
    if not isinstance(v, str):
        raise Invalid(f"{what} must be an IP address string (got {v!r})")
    try:
        return str(ipaddress.ip_address(v.strip("[]")))
    except ValueError as e:
        raise Invalid(f"{what} {v!r} is not an IP address") from e


def portal(v: Any) -> str:
    """``IP:PORT`` (IPv6 as ``[IP]:PORT``), canonical."""
    if not isinstance(v, str):
        raise Invalid(f"'portal' must be 'IP:PORT' (got {v!r})")
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(f"'portal' must be 'IP:PORT' with a port from 1 to 65535 (got {v!r})")
    ip = address(host, "the portal's address")
    return f"[{ip}]:{int(port)}" if ":" in ip else f"{ip}:{int(port)}"


def iqn(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 223 or not _IQN.match(v):
        raise Invalid(
            f"{v!r} is not an iSCSI name (iqn.YYYY-MM.reverse.domain[:suffix], eui.…, naa.…; "
            "at most 223 characters)"
        )
    return v


def initiator(v: Any) -> str:
    """An initiator's name. Initiators send what they like; take any printable name."""
    if (
        not isinstance(v, str)
        or not 0 < len(v) <= 223
        or any(c.isspace() or c == "/" or not c.isprintable() for c in v)
    ):
        raise Invalid(f"'initiator' must be 1-223 printable characters without '/' (got {v!r})")
    return v


def accuser(v: Any) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= 128:
        raise Invalid(f"'by' names the accuser in 1-128 characters (got {v!r:.80})")
    return v


def heal_result(v: Any) -> str:
    if v not in HEAL_RESULTS:
        raise Invalid(f"'result' is one of {', '.join(HEAL_RESULTS)} (got {v!r:.80})")
    return str(v)


def disks(v: Any) -> list[Record]:
    if not isinstance(v, list) or len(v) > MAX_DISKS:
        raise Invalid(f"'disks' must be a list of at most {MAX_DISKS} disks")
    out: list[Record] = []
    seen: set[str] = set()
    for d in v:
        if not isinstance(d, dict):
            raise Invalid("each disk is an object {id, size_bytes, tier}")
        did = name(d, "id", "disk")
        if did in seen:
            raise Invalid(f"disk {did!r} is listed twice")
        seen.add(did)
        out.append(
            {
                "id": did,
                "size_bytes": integer(d, "size_bytes", 1, MAX_SIZE_BYTES),
                "tier": name(d, "tier", "disk") if "tier" in d else "standard",
            }
        )
    return sorted(out, key=lambda d: d["id"])


def policy(doc: dict[str, Any]) -> Record:
    placement = doc.get("placement", SCATTER)
    if placement not in (SCATTER, AGGREGATE):
        raise Invalid(f"'placement' is {SCATTER!r} or {AGGREGATE!r} (got {placement!r})")
    rec = {
        "name": name(doc, "name", "policy"),
        "replicas": integer(doc, "replicas", 1, 5),
        "arbiter": boolean(doc, "arbiter", False),
        "tier": name(doc, "tier", "policy") if "tier" in doc else "standard",
        "placement": placement,
        "max_heal_failures": integer(doc, "max_heal_failures", 1, 100, 3),
    }
    return rec


# ---- derived facts -------------------------------------------------------------------------


def members(pol: Record) -> int:
    """Replicas that vote on a write: the data replicas and the arbiter."""
    return int(pol["replicas"]) + (1 if pol["arbiter"] else 0)


def write_quorum(pol: Record) -> int:
    return members(pol) // 2 + 1


def volume_state(vol: Record) -> str:
    """ok: every member healthy; degraded: some not, but a write still reaches a quorum
    and a read finds a healthy data replica; unwritable: not even that."""
    live = [r for r in vol["replicas"] if r["state"] != RETIRED and not r.get("replaces")]
    healthy = [r for r in live if r["state"] == HEALTHY]
    data_ok = any(r["role"] == "data" for r in healthy)
    if len(healthy) < vol["quorum"] or not data_ok:
        return "unwritable"
    return "ok" if len(healthy) == vol["members"] else "degraded"


def io_replicas(vol: Record) -> list[Record]:
    """The replicas the data path may read and write: healthy ones only."""
    return [r for r in vol["replicas"] if r["state"] == HEALTHY]


def holds_space(rep: Record) -> bool:
    return bool(rep["state"] != RETIRED)


def session_id(volume: str, init: str) -> str:
    """A session's id in the map (its key under SESSIONS): one per initiator and volume."""
    return f"{volume}/{init}"
