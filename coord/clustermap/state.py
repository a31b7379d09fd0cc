"""The cluster map as the state machine holds it: records in the MVCC store, plus indexes.

The records live in the store (model.py), so revisions, watches, history and
snapshots cover the map like any key. This class keeps what answering fast
needs beside them — parsed records, sessions per node, VIPs per node, bytes
used per disk, rebuilds waiting — and rebuilds all of it from the keys after
a snapshot is restored. Every change goes through ``put_*``/``drop_*`` so the
indexes and the keys never disagree.

Liveness of a target node is its lease: ``live`` is true from registration
until the lease is revoked. The StateMachine calls ``lease_revoked`` inside
the revoke's own transaction, so the node's VIPs move (or start to be
released) at the very revision its liveness ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import model as m
from .model import Record
from .placement import Disk

if TYPE_CHECKING:
    from coord.store.mvcc import MVCC

MAX_REBUILDS_PER_NODE = 2  # rebuilds writing to one node at once (rebuild traffic is heavy)


class ClusterMap:
    def __init__(self, kv: MVCC) -> None:
        self.kv = kv
        self.nodes: dict[str, Record] = {}
        self.policies: dict[str, Record] = {}
        self.volumes: dict[str, Record] = {}
        self.vips: dict[str, Record] = {}
        self.sessions: dict[str, Record] = {}  # "volume/initiator" -> record
        self._clear_indexes()

    def _clear_indexes(self) -> None:
        self.by_lease: dict[int, str] = {}  # the lease of each live node
        self.node_sessions: dict[str, set[str]] = {}
        self.node_vips: dict[str, set[str]] = {}  # owner -> addresses (releasing included)
        self.used: dict[tuple[str, str], int] = {}  # (node, disk) -> bytes held by replicas
        self.rebuilds_on: dict[str, int] = {}  # node -> rebuilds writing to it
        self.policy_users: dict[str, set[str]] = {}
        self.iqns: dict[str, str] = {}
        self.pending: set[str] = set()  # session keys
        self.releasing: set[str] = set()  # VIP addresses
        self.rebuild_waiting: set[tuple[str, int]] = set()  # (volume, replica id)

    def reload(self, kv: MVCC) -> None:
        """After a snapshot replaced the store: parse every map key again."""
        self.kv = kv
        self.nodes, self.policies, self.volumes, self.vips, self.sessions = {}, {}, {}, {}, {}
        self._clear_indexes()
        for item in kv.range(m.PREFIX):
            rec = m.decode(item.value)
            key = item.key
            if key.startswith(m.NODES):
                self._index_node(rec)
            elif key.startswith(m.POLICIES):
                self.policies[rec["name"]] = rec
            elif key.startswith(m.VOLUMES):
                self._index_volume(rec, +1)
            elif key.startswith(m.VIPS):
                self._index_vip(rec, +1)
            elif key.startswith(m.SESSIONS):
                self._index_session(key[len(m.SESSIONS) :], rec, +1)

    # ---- writing (inside the store's open transaction) -----------------------------------

    def revision(self) -> int:
        """The revision the change being applied will carry (epochs are revisions)."""
        return self.kv.next_revision()

    def put_node(self, rec: Record) -> None:
        old = self.nodes.get(rec["id"])
        if old is not None and old.get("live"):
            self.by_lease.pop(old["lease"], None)
        self._index_node(rec)
        self.kv.put(m.NODES + rec["id"], m.encode(rec), 0)

    def drop_node(self, nid: str) -> None:
        old = self.nodes.pop(nid)
        if old.get("live"):
            self.by_lease.pop(old["lease"], None)
        self.kv.delete(m.NODES + nid)

    def put_policy(self, rec: Record) -> None:
        self.policies[rec["name"]] = rec
        self.kv.put(m.POLICIES + rec["name"], m.encode(rec), 0)

    def drop_policy(self, name: str) -> None:
        del self.policies[name]
        self.kv.delete(m.POLICIES + name)

    def put_volume(self, rec: Record) -> None:
        rec["state"] = m.volume_state(rec)
        old = self.volumes.get(rec["name"])
        if old is not None:
            self._index_volume(old, -1)
        self._index_volume(rec, +1)
        self.kv.put(m.VOLUMES + rec["name"], m.encode(rec), 0)

    def drop_volume(self, name: str) -> None:
        self._index_volume(self.volumes[name], -1)
        self.kv.delete(m.VOLUMES + name)

    def put_vip(self, rec: Record) -> None:
        old = self.vips.get(rec["address"])
        if old is not None:
            self._index_vip(old, -1)
        self._index_vip(rec, +1)
        self.kv.put(m.VIPS + rec["address"], m.encode(rec), 0)

    def drop_vip(self, address: str) -> None:
        self._index_vip(self.vips[address], -1)
        self.kv.delete(m.VIPS + address)

    def put_session(self, rec: Record) -> None:
        sid = m.session_id(rec["volume"], rec["initiator"])
        old = self.sessions.get(sid)
        if old is not None:
            self._index_session(sid, old, -1)
        self._index_session(sid, rec, +1)
        self.kv.put(m.SESSIONS + sid, m.encode(rec), 0)

    def drop_session(self, sid: str) -> None:
        self._index_session(sid, self.sessions[sid], -1)
        self.kv.delete(m.SESSIONS + sid)

    # ---- indexes -------------------------------------------------------------------------

    def _index_node(self, rec: Record) -> None:
        self.nodes[rec["id"]] = rec
        if rec.get("live"):
            self.by_lease[rec["lease"]] = rec["id"]

    def _index_volume(self, vol: Record, sign: int) -> None:
        name = vol["name"]
        if sign > 0:
            self.volumes[name] = vol
            self.policy_users.setdefault(vol["policy"], set()).add(name)
            self.iqns[vol["iqn"]] = name
        else:
            self.volumes.pop(name, None)
            users = self.policy_users.get(vol["policy"])
            if users is not None:
                users.discard(name)
                if not users:
                    del self.policy_users[vol["policy"]]
            self.iqns.pop(vol["iqn"], None)
        for r in vol["replicas"]:
            if m.holds_space(r):
                at = (r["node"], r["disk"])
                self.used[at] = self.used.get(at, 0) + sign * r["size_bytes"]
                if not self.used[at]:
                    del self.used[at]
            if r["state"] == m.REBUILDING:
                n = self.rebuilds_on.get(r["node"], 0) + sign
                if n:
                    self.rebuilds_on[r["node"]] = n
                else:
                    self.rebuilds_on.pop(r["node"], None)
            if r.get("rebuild") == "waiting":
                if sign > 0:
                    self.rebuild_waiting.add((name, r["id"]))
                else:
                    self.rebuild_waiting.discard((name, r["id"]))

    def _index_vip(self, rec: Record, sign: int) -> None:
        addr, owner = rec["address"], rec["owner"]
        if sign > 0:
            self.vips[addr] = rec
            if owner is not None:
                self.node_vips.setdefault(owner, set()).add(addr)
            if rec["releasing"]:
                self.releasing.add(addr)
        else:
            self.vips.pop(addr, None)
            if owner is not None:
                self.node_vips.get(owner, set()).discard(addr)
            self.releasing.discard(addr)

    def _index_session(self, sid: str, rec: Record, sign: int) -> None:
        node = rec["node"]
        if sign > 0:
            self.sessions[sid] = rec
            self.node_sessions.setdefault(node, set()).add(sid)
            if rec["state"] == m.PENDING:
                self.pending.add(sid)
        else:
            self.sessions.pop(sid, None)
            self.node_sessions.get(node, set()).discard(sid)
            self.pending.discard(sid)

    # ---- questions the operations ask ----------------------------------------------------

    def eligible(self) -> list[str]:
        """Nodes that may take new sessions and VIPs: live and not drained, by id."""
        return [nid for nid, n in sorted(self.nodes.items()) if n.get("live") and not n["drained"]]

    def least_sessions(self) -> str | None:
        """Least-active: fewest active plus pending sessions; ties go to the lowest id."""
        return _fewest(self.eligible(), self.node_sessions)

    def least_vips(self, prefer: str | None = None, exclude: str | None = None) -> str | None:
        """``prefer`` if it can take a VIP, else the eligible node (not ``exclude``) with
        the fewest; ties go to the lowest id."""
        eligible = [n for n in self.eligible() if n != exclude]
        if prefer is not None and prefer in eligible:
            return prefer
        return _fewest(eligible, self.node_vips)

    def free_disks(self, *, exclude_busy: bool = False) -> Iterator[Disk]:
        """Disks of live, undrained nodes with their free bytes (rebuild targets: not busy)."""
        for nid in self.eligible():
            if exclude_busy and self.rebuilds_on.get(nid, 0) >= MAX_REBUILDS_PER_NODE:
                continue
            for d in self.nodes[nid]["disks"]:
                used = self.used.get((nid, d["id"]), 0)
                yield Disk(nid, d["id"], d["tier"], d["size_bytes"] - used)

    def mod_revision(self, key: str) -> int:
        kv = self.kv.get(key)
        return kv.mod_revision if kv is not None else 0

    # ---- views for readers (API, controllers, agents) ------------------------------------

    def node_view(self, nid: str) -> Record:
        n = dict(self.nodes[nid])
        n["disks"] = [{**d, "used_bytes": self.used.get((nid, d["id"]), 0)} for d in n["disks"]]
        sids = self.node_sessions.get(nid, set())
        n["sessions"] = {
            "active": sum(1 for s in sids if self.sessions[s]["state"] == m.ACTIVE),
            "pending": sum(1 for s in sids if self.sessions[s]["state"] == m.PENDING),
        }
        n["vips"] = sorted(self.node_vips.get(nid, ()))
        n["rebuilds"] = self.rebuilds_on.get(nid, 0)
        return n

    def volume_view(self, name: str) -> Record:
        v = dict(self.volumes[name])
        v["io_replicas"] = [r["id"] for r in m.io_replicas(v)]
        return v

    def heartbeat(self, nid: str, lease: int) -> Record | None:
        """The answer to a heartbeat of ``nid`` on ``lease``, from this state (its
        revision): the VIPs the node may serve and those it must let go. None if that
        lease is not the node's current one (it must register again). The daemon and
        the simulator both answer with this, after the keepalive (target/vip.py)."""
        rec = self.nodes.get(nid)
        if rec is None or not rec.get("live") or rec["lease"] != lease:
            return None
        return {
            "node": nid,
            "lease": lease,
            "ttl_ms": rec["ttl_ms"],
            "revision": self.kv.revision,
            "vips": self.owned_vips(nid),
            "releasing": self.releasing_vips(nid),
        }

    def owned_vips(self, nid: str) -> list[Record]:
        """The VIPs ``nid`` may serve: owned and not being released, by address."""
        return [
            {"address": a, "port": self.vips[a]["port"], "epoch": self.vips[a]["epoch"]}
            for a in sorted(self.node_vips.get(nid, ()))
            if not self.vips[a]["releasing"]
        ]

    def releasing_vips(self, nid: str) -> list[Record]:
        return [
            {"address": a, "epoch": self.vips[a]["epoch"], "lease": self.vips[a]["release_lease"]}
            for a in sorted(self.node_vips.get(nid, ()))
            if self.vips[a]["releasing"]
        ]

    def summary(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for v in self.volumes.values():
            states[v["state"]] = states.get(v["state"], 0) + 1
        return {
            "nodes": len(self.nodes),
            "live_nodes": len(self.by_lease),
            "policies": len(self.policies),
            "volumes": len(self.volumes),
            "volume_states": dict(sorted(states.items())),
            "vips": len(self.vips),
            "unowned_vips": sum(1 for v in self.vips.values() if v["owner"] is None),
            "sessions": len(self.sessions),
            "pending_sessions": len(self.pending),
            "rebuilds_waiting": len(self.rebuild_waiting),
        }


def _fewest(nodes: list[str], held: dict[str, set[str]]) -> str | None:
    return min(nodes, key=lambda n: (len(held.get(n, ())), n), default=None)
