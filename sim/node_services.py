"""What a simulated node does for lease holders and watchers (the daemon's rules).

Leases: the same LeaseClock as the daemon (coord/store/leases.py), fed with
the node's own drifting clock; a keepalive is answered only after a ReadIndex
round confirms the leader and the read point is applied, exactly as the
daemon's read barrier does. Expiry is proposed as a ``lease_revoke`` entry.

The cluster map: ``map.*`` commands from agents, initiators and the operator
are proposed like any write; an agent's heartbeat is answered exactly as the
daemon's ``node_heartbeat`` does (coord/server/node.py): a ReadIndex round,
then, on the applied read point, the LeaseClock keepalive and the answer
built from the map at that moment. The leader runs the same MapController as
the daemon, on its drifting clock, and proposes what it says is due.

Watches: a stream per watcher, numbered so the client notices loss and
reordering; the backlog is read and the watcher registered in one step (so
nothing falls between them); applied changes are offered as they happen;
progress every PROGRESS_TICKS; a snapshot that jumps past missing history
cuts every watcher off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coord.clustermap.controller import MapController
from coord.clustermap.model import PREFIX as MAP_PREFIX
from coord.raft import NotLeader, ProposalDropped, RaftError, Role
from coord.raft.proposals import Outcome, Resolved
from coord.store import Compacted, StateMachine, encode
from coord.store.leases import LeaseClock
from coord.store.mvcc import Event

from .services import LeaseRequest, MapRequest, WatchEvent, WatchMsg, WatchRequest
from .workload import ClientReply

if TYPE_CHECKING:
    from .node import SimNode

PROGRESS_TICKS = 10


@dataclass(frozen=True, slots=True)
class RevokeToken:
    lease: int


@dataclass(frozen=True, slots=True)
class TimerToken:
    """A command the map controller found due (it proposes again later if still due)."""

    op: str


@dataclass
class _Stream:
    client: int
    host: int
    stream: int
    prefix: str
    start: int  # a node behind the client's start must skip what comes before it
    seq: int = 0


def _rows(events: list[Event], prefix: str, start: int) -> tuple[WatchEvent, ...]:
    return tuple(
        (e.revision, e.type, e.key, e.kv.value if e.kv is not None else None)
        for e in events
        if e.key.startswith(prefix) and e.revision >= start
    )


class NodeServices:
    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.clock = LeaseClock()
        self.map_ctl = MapController()
        self.streams: dict[int, _Stream] = {}  # client -> its stream on this node
        # client -> the newest stream it asked for here: a duplicated or late
        # request for an older one is ignored (TCP would never deliver one).
        self.newest: dict[int, int] = {}
        self.ticks = 0

    def attach(self, sm: StateMachine) -> None:
        """A fresh state machine (start, restart): hook its callbacks."""
        self.clock = LeaseClock()
        self.map_ctl = MapController()
        self.streams, self.newest = {}, {}
        fleet = self.node.world.fleet
        if fleet is not None:
            fleet.map_checker.forget(self.node.id)  # a new process replays from scratch
        sm.on_lease = self._lease_applied
        sm.on_events = self._events_applied
        sm.on_gap = self._gap

    def local_s(self) -> float:
        """This node's monotonic clock, running at its own (drifting) rate."""
        n = self.node
        return n.world.loop.now / n.rate / 1e6

    # ---- leases -------------------------------------------------------------------

    def role_changed(self, role: Role) -> None:
        sm = self.node.sm
        if role is Role.LEADER:
            self.clock.lead(self.local_s(), [(i, t) for i, (t, _) in sorted(sm.leases.items())])
            self.map_ctl.lead(self.local_s())
        else:
            if self.clock.leading:
                self.clock.step_down()
            if self.map_ctl.leading:
                self.map_ctl.step_down()

    def _lease_applied(self, lease_id: int, ttl: float | None) -> None:
        w = self.node.world
        if ttl is not None:
            self.clock.granted(lease_id, ttl, self.local_s())
            return
        self.clock.revoked(lease_id)
        w.lease_checker.on_revoked(lease_id, w.loop.now)
        left = sorted(kv.key for kv in self.node.sm.kv.keys.values() if kv.lease == lease_id)
        if left:
            w.report("lease-keys-left", (self.node.id,), f"lease {lease_id} revoked, {left} remain")

    def on_request(self, req: LeaseRequest) -> None:
        if req.kind == "keepalive":
            self._read_first(req)
        elif req.kind == "grant":
            self._propose(req, {"op": "lease_grant", "id": 0, "ttl": req.ttl})
        else:
            self._propose(
                req, {"op": "put", "key": req.key, "value": req.value, "lease": req.lease}
            )

    def _read_first(self, req: LeaseRequest | MapRequest) -> None:
        """A keepalive or heartbeat: answered once a ReadIndex round confirms us."""
        node = self.node
        core = node.core
        assert core is not None
        try:
            core.read_index((req.client, req.req))
            node.track_read(req)
        except NotLeader as e:
            self.reply(req, "not_leader", leader=int(e.leader))
        except (ProposalDropped, RaftError):
            self.reply(req, "dropped")

    def _propose(self, req: LeaseRequest | MapRequest, cmd: dict[str, Any]) -> None:
        """Into the log, stamped with our clock; answered when its fate is known."""
        node = self.node
        core = node.core
        assert core is not None
        try:
            index = core.propose(encode({**cmd, "time_ms": node.world.loop.now // 1000}))
            node.tracker.add(index, core.term, req)
        except NotLeader as e:
            self.reply(req, "not_leader", leader=int(e.leader))
        except (ProposalDropped, RaftError):
            self.reply(req, "dropped")

    def keepalive_ready(self, req: LeaseRequest) -> None:
        """The read point is applied on a confirmed leader: restart the countdown."""
        got = self.node.sm.leases.get(req.lease)
        if got is None or not self.clock.keepalive(req.lease, got[0], self.local_s()):
            self.reply(req, "lease_not_found")
        else:
            self.reply(req, "ok", "keepalive")

    def answer(self, r: Resolved[Any], result: Any) -> None:
        token = r.token
        if isinstance(token, RevokeToken):
            if r.outcome is not Outcome.COMMITTED:
                self.clock.revoke_failed(token.lease)
            return
        if isinstance(token, TimerToken):
            return  # the controller proposes it again if it is still due
        if isinstance(token, MapRequest):
            if r.outcome is Outcome.COMMITTED:
                self.reply(token, "ok", result)  # the map's answer, refusals included
            else:
                self.reply(token, "rejected" if r.outcome is Outcome.REJECTED else "unknown")
            return
        req: LeaseRequest = token
        if r.outcome is Outcome.COMMITTED:
            err = result.get("error") if isinstance(result, dict) else None
            if err is not None:
                self.reply(req, err["code"])
            elif req.kind == "grant":
                self.reply(req, "ok", result["id"])
            else:
                self.reply(req, "ok", req.kind)
        else:
            self.reply(req, "rejected" if r.outcome is Outcome.REJECTED else "unknown")

    def reply(
        self, req: LeaseRequest | MapRequest, status: str, result: Any = None, leader: int = 0
    ) -> None:
        rep = ClientReply(req.client, req.req, status, result, leader)
        self.node.world.net.send(self.node.id, req.host, rep)

    def tick(self) -> None:
        node = self.node
        core = node.core
        assert core is not None
        for lease_id in self.clock.due(self.local_s()):
            node.world.trace(f"n{node.id} lease {lease_id} expired: revoking")
            cmd = {"op": "lease_revoke", "id": lease_id, "reason": "expired"}
            try:
                index = core.propose(encode(cmd))
                node.tracker.add(index, core.term, RevokeToken(lease_id))
            except RaftError:
                self.clock.revoke_failed(lease_id)
        if self.map_ctl.leading:
            self._map_timers()
        self.ticks += 1
        if self.ticks % PROGRESS_TICKS == 0:
            rev = node.sm.kv.revision
            for client in sorted(self.streams):
                self._send(self.streams[client], "progress", rev)

    # ---- the cluster map ----------------------------------------------------------

    def on_map(self, req: MapRequest) -> None:
        if req.kind == "heartbeat":
            self._read_first(req)
        elif req.kind == "list":
            # Serializable: what this node has applied, stamped with its revision.
            kv = self.node.sm.kv
            rows = [(x.key, x.value) for x in kv.range(MAP_PREFIX)]
            self.reply(req, "ok", {"revision": kv.revision, "kvs": rows})
        else:
            assert req.cmd is not None and str(req.cmd.get("op", "")).startswith("map.")
            self._propose(req, req.cmd)

    def heartbeat_ready(self, req: MapRequest) -> None:
        """The daemon's node_heartbeat, from the keepalive on: the read point is applied
        on a leader that has just confirmed itself."""
        sm = self.node.sm
        got = sm.leases.get(req.lease)
        if got is None:
            self.reply(req, "lease_not_found")
            return
        if not self.clock.keepalive(req.lease, got[0], self.local_s()):
            core = self.node.core
            if core is None or core.role is not Role.LEADER:
                self.reply(req, "not_leader", leader=int(core.leader) if core else 0)
            else:
                self.reply(req, "lease_not_found")  # its expiry is on its way
            return
        answer = sm.map.heartbeat(req.node, req.lease)
        if answer is None:
            self.reply(req, "stale_lease")
            return
        self.reply(req, "ok", answer)

    def _map_timers(self) -> None:
        node = self.node
        core = node.core
        assert core is not None
        for cmd in self.map_ctl.due(self.local_s(), node.sm.map):
            node.world.trace(f"n{node.id} map timer: {cmd['op']}")
            try:
                index = core.propose(encode({**cmd, "time_ms": node.world.loop.now // 1000}))
                node.tracker.add(index, core.term, TimerToken(cmd["op"]))
            except RaftError:
                pass  # proposed again once retry_s has passed, if still due

    # ---- watches ------------------------------------------------------------------

    def on_watch(self, req: WatchRequest) -> None:
        kv = self.node.sm.kv
        if req.stream <= self.newest.get(req.client, 0):
            return
        self.newest[req.client] = req.stream
        start = max(1, req.start)
        s = _Stream(req.client, req.host, req.stream, req.prefix, start)
        self.streams.pop(req.client, None)  # a client watches through one stream at a time
        try:
            backlog = list(kv.events_since(start, req.prefix))
        except Compacted as e:
            self._send(s, "compacted", max(e.compact_revision, kv.revision))
            return
        self.streams[req.client] = s
        if backlog:
            self._send(s, "events", kv.revision, _rows(backlog, req.prefix, start))

    def _events_applied(self, events: list[Event]) -> None:
        world = self.node.world
        world.watch_checker.on_events(self.node.id, events)
        if world.fleet is not None:
            world.fleet.map_checker.on_events(self.node.id, self.node.sm, events)
        for client in sorted(self.streams):
            s = self.streams[client]
            rows = _rows(events, s.prefix, s.start)
            if rows:
                self._send(s, "events", rows[-1][0], rows)

    def _gap(self, resume: int) -> None:
        for client in sorted(self.streams):
            self._send(self.streams[client], "cut", resume)
        self.streams = {}

    def _send(self, s: _Stream, kind: str, rev: int, rows: tuple[WatchEvent, ...] = ()) -> None:
        msg = WatchMsg(s.client, s.stream, s.seq, kind, rev, rows)
        s.seq += 1
        self.node.world.net.send(self.node.id, s.host, msg)
