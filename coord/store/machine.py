"""The replicated state machine: commands in, results out, the same on every node.

A command is a msgpack map written into a log entry by the leader:

    {"op": "put", "key": k, "value": v, "lease": id?, "prev_revision": r?}
    {"op": "delete", "key": k}            or {"op": "delete", "prefix": p}
    {"op": "txn", "compare": [...], "success": [...], "failure": [...]}
    {"op": "lease_grant", "id": id (0: the entry's index), "ttl": seconds}
    {"op": "lease_revoke", "id": id}
    {"op": "compact", "revision": r}
    {"op": "map.<operation>", ...}        the cluster map (coord/clustermap/apply.py)
    {"op": "batch", "cmds": [cmd, ...]}   several puts, deletes and transactions in one
                                          entry, applied in order, each under its own
                                          revision and session: ``{"results": [...]}``

plus an envelope: "time_ms" (the leader's clock when it proposed; used for
session expiry, so every replica decides alike), and for exactly-once writes
"client" and "seq" (sessions.py). Results are maps: ``{"revision": ...}`` and
so on, or ``{"error": {"code": ..., "message": ...}}``. A malformed command is
answered with an error, never an exception: the log is replayed forever.

Lease *expiry* is not decided here: the leader counts down each lease by its
own clock and proposes a revoke when one runs out (daemon); a new leader
starts every countdown afresh, so expiry only ever comes later, never early.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from coord.clustermap import apply as map_ops
from coord.clustermap.model import PREFIX as MAP_PREFIX
from coord.clustermap.state import ClusterMap

from . import sessions as sess
from .mvcc import MVCC, Event, KeyValue
from .snapshot import View

Result = dict[str, Any]

# Keys under this prefix belong to the cluster map: changed only by its own
# validated operations ("map.*", coord/clustermap), never by plain puts,
# deletes or transactions; read like any key.
RESERVED = MAP_PREFIX

COMPARE_TARGETS = {"value", "version", "create_revision", "mod_revision", "lease"}
COMPARE_OPS = {"==", "=", "!=", "<", ">"}

# What a batch entry may hold: commands whose effect does not depend on the entry's
# index (a lease grant's id and the map's records may), so that applying a batch is
# applying its commands one after the other as consecutive entries.
BATCHABLE = frozenset({"put", "delete", "txn"})


class BadCommand(Exception):
    pass


def error(code: str, message: str, **extra: Any) -> Result:
    return {"error": {"code": code, "message": message, **extra}}


def _str(d: dict[str, Any], name: str) -> str:
    v = d.get(name)
    if type(v) is not str:
        raise BadCommand(f"{name!r} must be a string")
    return v


def _int(d: dict[str, Any], name: str, default: int | None = None) -> int:
    v = d.get(name, default)
    if type(v) is not int or v < 0:
        raise BadCommand(f"{name!r} must be a non-negative integer")
    return v


class StateMachine:
    def __init__(self, max_history: int = 100_000) -> None:
        self.kv = MVCC(max_history)
        # id -> (ttl seconds, keys); node liveness leases may have fractional TTLs
        self.leases: dict[int, tuple[float, set[str]]] = {}
        self.map = ClusterMap(self.kv)
        self.sessions = sess.Sessions()
        self.applied_index = 0
        self.now_ms = 0  # the time stamped on the command being applied (the leader's clock)
        # member id -> {"peer": addr, "api": addr}: kept by the daemon, carried in snapshots
        self.members: dict[int, dict[str, str]] = {}
        # Called with the events of each applied change (the daemon feeds watches).
        self.on_events: Callable[[list[Event]], None] | None = None
        # Called with (lease id, ttl) when granted and (id, None) when revoked.
        self.on_lease: Callable[[int, float | None], None] | None = None
        # Called when a restored snapshot skips changes its history no longer
        # holds, with the first revision a watcher may have missed.
        self.on_gap: Callable[[int], None] | None = None

    # ---- applying -----------------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> Result:
        self.applied_index = index
        try:
            cmd = msgpack.unpackb(data, raw=False)
            if not isinstance(cmd, dict):
                raise BadCommand("a command is a map")
            if cmd.get("op") == "batch":
                return self._batch(index, cmd)
            return self._apply_enveloped(index, cmd)
        except BadCommand as e:
            return error("bad_request", str(e))
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            return error("bad_request", f"undecodable command: {e}")

    def _batch(self, index: int, batch: dict[str, Any]) -> Result:
        """Each command as if it had its own entry: own revision, session and result."""
        cmds = batch.get("cmds")
        now = batch.get("time_ms", 0)
        if not isinstance(cmds, list) or not cmds or type(now) is not int:
            raise BadCommand("a batch is a non-empty list 'cmds' with an integer 'time_ms'")
        results: list[Result] = []
        for cmd in cmds:
            try:
                if not isinstance(cmd, dict) or cmd.get("op") not in BATCHABLE:
                    raise BadCommand(f"a batch holds only {', '.join(sorted(BATCHABLE))}")
                cmd["time_ms"] = now
                results.append(self._apply_enveloped(index, cmd))
            except BadCommand as e:
                results.append(error("bad_request", str(e)))
        return {"results": results}

    def _apply_enveloped(self, index: int, cmd: dict[str, Any]) -> Result:
        now = cmd.get("time_ms", 0)
        if type(now) is not int:
            raise BadCommand("'time_ms' must be an integer")
        self.now_ms = now
        client = cmd.get("client")
        if client is None:
            return self._apply(index, cmd)
        if type(client) is not str or not client:
            raise BadCommand("'client' must be a non-empty string")
        seq = _int(cmd, "seq")
        verdict, saved = self.sessions.check(client, seq, now)
        if verdict == sess.RETRY:
            return dict(saved, retried=True)
        if verdict == sess.STALE:
            return error("stale", f"sequence {seq} is older than this client's last write")
        if verdict == sess.EXPIRED:
            return error("session_expired", f"no session for client {client!r}: start a new one")
        result = self._apply(index, cmd)
        self.sessions.record(client, seq, result, now)
        return result

    def _apply(self, index: int, cmd: dict[str, Any]) -> Result:
        op = cmd.get("op")
        if op == "txn":
            return self._txn(cmd)
        if op in ("put", "delete"):
            # A transaction of one operation, without the transaction's bookkeeping.
            refusal = self._check(cmd, set())
            if refusal is not None:
                return refusal
            result = self._run(cmd)
            self._finish()
            return result
        if op == "lease_grant":
            return self._lease_grant(index, cmd)
        if op == "lease_revoke":
            reason = cmd.get("reason", "")
            if type(reason) is not str:
                raise BadCommand("'reason' must be a string")
            return self._lease_revoke(_int(cmd, "id"), reason)
        if isinstance(op, str) and op.startswith("map."):
            ctx = map_ops.Ctx(index, self.now_ms, self)
            result = map_ops.apply(self.map, cmd, ctx)
            self._finish()
            if "error" not in result:
                result["revision"] = self.kv.revision
            return result
        if op == "compact":
            rev = _int(cmd, "revision")
            if rev > self.kv.revision:
                return error(
                    "bad_request", f"cannot compact the future ({rev} > {self.kv.revision})"
                )
            self.kv.compact(rev)
            return {"revision": self.kv.revision, "compact_revision": self.kv.compact_revision}
        raise BadCommand(f"unknown op {op!r}")

    def _txn(self, cmd: dict[str, Any]) -> Result:
        """Compare, then run one branch atomically under one revision.

        Every op of the branch is checked against the state before the
        transaction before any runs (as etcd does), and a key may be changed
        only once per transaction: so either all apply or none does.
        """
        compares = cmd.get("compare", [])
        if not isinstance(compares, list) or not all(isinstance(c, dict) for c in compares):
            raise BadCommand("'compare' must be a list of maps")
        branches = {}
        for branch in ("success", "failure"):
            ops = cmd.get(branch, [])
            if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
                raise BadCommand(f"{branch!r} must be a list of maps")
            branches[branch] = ops
        ok = all(self._compare(c) for c in compares)
        ops = branches["success" if ok else "failure"]
        changed: set[str] = set()
        for o in ops:
            refusal = self._check(o, changed)
            if refusal is not None:
                if compares:
                    refusal["error"]["succeeded"] = ok
                return refusal
        results = [self._run(o) for o in ops]
        self._finish()
        return {"succeeded": ok, "revision": self.kv.revision, "results": results}

    def _check(self, o: dict[str, Any], changed: set[str]) -> Result | None:
        """Why ``o`` cannot run in the current state, or None if it can."""
        op = o.get("op")
        if op == "put":
            key, _ = _str(o, "key"), _str(o, "value")
            if key.startswith(RESERVED):
                return error("bad_request", f"keys under {RESERVED} are the cluster map's")
            lease = _int(o, "lease", 0)
            if "prev_revision" in o:
                prev = self.kv.get(key)
                have = prev.mod_revision if prev else 0
                if have != _int(o, "prev_revision"):
                    return error(
                        "precondition_failed",
                        f"{key!r} is at revision {have}, not {o['prev_revision']}",
                        mod_revision=have,
                    )
            if lease and lease not in self.leases:
                return error("lease_not_found", f"lease {lease} does not exist")
            keys = [key]
        elif op == "delete":
            keys = self._deletable(o)
            if "prefix" not in o and keys[0].startswith(RESERVED):
                return error("bad_request", f"keys under {RESERVED} are the cluster map's")
        elif op == "get":
            _str(o, "key")
            return None
        elif op == "range":
            _str(o, "prefix")
            return None
        else:
            raise BadCommand(f"unknown operation {op!r}")
        if changed & set(keys):
            raise BadCommand(
                f"a transaction may change {sorted(changed & set(keys))[0]!r} only once"
            )
        changed.update(keys)
        return None

    def _run(self, o: dict[str, Any]) -> Result:
        """Run a checked operation inside the open transaction."""
        op = o["op"]
        if op == "put":
            self._put(o["key"], o["value"], o.get("lease", 0))
            return {"revision": self.kv.next_revision()}
        if op == "delete":
            keys = self._deletable(o)
            deleted = sum(1 for k in keys if self._delete(k))
            return {
                "revision": self.kv.next_revision() if deleted else self.kv.revision,
                "deleted": deleted,
            }
        if op == "get":
            kv = self.kv.get(o["key"])
            return {"kv": kv.to_dict() if kv else None}
        return {"kvs": [kv.to_dict() for kv in self.kv.range(o["prefix"])]}

    def _deletable(self, o: dict[str, Any]) -> list[str]:
        """The keys a delete names; a prefix delete passes over the map's keys."""
        if "prefix" not in o:
            return [_str(o, "key")]
        return [
            kv.key for kv in self.kv.range(_str(o, "prefix")) if not kv.key.startswith(RESERVED)
        ]

    def _compare(self, c: dict[str, Any]) -> bool:
        key = _str(c, "key")
        target = c.get("target", "value")
        op = c.get("op", "==")
        if target not in COMPARE_TARGETS or op not in COMPARE_OPS:
            raise BadCommand(f"bad compare {target!r} {op!r}")
        kv = self.kv.get(key)
        # A missing key: no value, and 0 for every number (as in etcd).
        have: Any = (
            (kv.value if kv else None) if target == "value" else (getattr(kv, target) if kv else 0)
        )
        want: Any = c.get("value")
        if op in ("==", "="):
            return bool(have == want)
        if op == "!=":
            return bool(have != want)
        if have is None or type(want) is not type(have):
            return False
        return bool(have < want if op == "<" else have > want)

    def _put(self, key: str, value: str, lease: int) -> None:
        prev = self.kv.get(key)
        if prev is not None and prev.lease and prev.lease != lease and prev.lease in self.leases:
            self.leases[prev.lease][1].discard(key)
        self.kv.put(key, value, lease)
        if lease:
            self.leases[lease][1].add(key)

    def _delete(self, key: str) -> bool:
        prev = self.kv.delete(key)
        if prev is not None and prev.lease in self.leases:
            self.leases[prev.lease][1].discard(key)
        return prev is not None

    def _finish(self) -> list[Event]:
        events = self.kv.finish()
        if events and self.on_events is not None:
            self.on_events(events)
        return events

    def _lease_grant(self, index: int, cmd: dict[str, Any]) -> Result:
        lease_id = _int(cmd, "id", 0) or index
        ttl = _int(cmd, "ttl")
        if ttl < 1:
            return error("bad_request", "ttl must be at least 1 second")
        if lease_id in self.leases:
            return error("bad_request", f"lease {lease_id} already exists")
        self.grant_lease(lease_id, ttl)
        return {"id": lease_id, "ttl": ttl}

    def grant_lease(self, lease_id: int, ttl: float) -> None:
        self.leases[lease_id] = (ttl, set())
        if self.on_lease is not None:
            self.on_lease(lease_id, ttl)

    def _lease_revoke(self, lease_id: int, reason: str = "") -> Result:
        if lease_id not in self.leases:
            return error("lease_not_found", f"lease {lease_id} does not exist")
        deleted = self.revoke_lease(lease_id, reason)
        self._finish()
        return {"revision": self.kv.revision, "deleted": deleted}

    def revoke_lease(self, lease_id: int, reason: str) -> int:
        """Inside the open transaction: drop the lease, its keys, and (if it is a target
        node's) the node's liveness. ``reason`` "expired" only from the leader's countdown."""
        got = self.leases.pop(lease_id)
        deleted = 0
        for key in sorted(got[1]):
            prev = self.kv.delete(key)
            deleted += prev is not None
        ctx = map_ops.Ctx(self.applied_index, self.now_ms, self)
        map_ops.lease_revoked(self.map, lease_id, reason, ctx)
        if self.on_lease is not None:
            self.on_lease(lease_id, None)
        return deleted

    # ---- reading ------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        return self.kv.get(key)

    def range(self, prefix: str, limit: int = 0) -> list[KeyValue]:
        return self.kv.range(prefix, limit)

    # ---- snapshots ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """All of the store at ``applied_index`` (see snapshot.py to take it off the loop)."""
        return View.take(self).encode()

    def restore(self, data: bytes) -> None:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
        kv = MVCC(self.kv.max_history)
        kv.revision, kv.compact_revision = doc["revision"], doc["compact"]
        # One bulk load (one sort) rather than a million sorted inserts.
        kv.keys.update((row[0], KeyValue(*row)) for row in doc["keys"])
        kv.history.extend(_event_from_row(r) for r in doc["history"])
        before = self.kv.revision
        self.kv = kv
        self.map.reload(kv)
        self.leases = {i: (ttl, set(keys)) for i, ttl, keys in doc["leases"]}
        self.sessions.load(doc["sessions"])
        self.applied_index = doc["applied"]
        self.members = {int(i): dict(m) for i, m in doc.get("members", [])}
        self._bridge(before)

    def _bridge(self, before: int) -> None:
        """After a snapshot replaced the store: tell watchers what they missed.

        A follower that installs a leader's snapshot jumps from revision
        ``before`` to the snapshot's; watchers must still see every change in
        between, exactly once: from the snapshot's history when it reaches
        back far enough, else they are told of the gap and must re-list.
        """
        kv = self.kv
        if kv.revision <= before:
            return
        if kv.compact_revision <= before:
            missed = [e for e in kv.history if e.revision > before]
            if missed and self.on_events is not None:
                self.on_events(missed)
        elif self.on_gap is not None:
            self.on_gap(before + 1)


def _kv_from(row: list[Any] | None) -> KeyValue | None:
    return None if row is None else KeyValue(*row)


def _event_from_row(r: list[Any]) -> Event:
    return Event(r[0], r[1], r[2], _kv_from(r[3]), _kv_from(r[4]))


def encode(cmd: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(cmd, use_bin_type=True)
    return data
