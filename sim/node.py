"""A simulated host running one RaftNode: the simulator's driver of the Ready contract.

It does what the daemon's driver does, with simulated parts: writes a Ready to
the SimDisk, waits a drawn fsync latency before sending what must follow
persistence, applies committed entries to the KV store, answers clients, and
compacts the log into snapshots. Crash and pause are modelled here: a crash
drops everything not durable (SimDisk.crash) and every event scheduled for the
old incarnation; a pause holds events until resumed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from coord.raft import (
    Config,
    EntryKind,
    Message,
    NotLeader,
    ProposalDropped,
    RaftError,
    RaftNode,
    Ready,
    Role,
    Snapshot,
)
from coord.raft.proposals import Outcome, ProposalTracker, Resolved
from coord.store import StateMachine, encode
from coord.store.batch import Batcher, Packed

from .disk import SimDisk
from .history import OpKind
from .node_services import NodeServices
from .services import LeaseRequest, MapRequest, WatchRequest
from .workload import ClientReply, ClientRequest

if TYPE_CHECKING:
    from .world import World

Token = Any  # ClientRequest | LeaseRequest | MapRequest | RevokeToken | TimerToken
ReadRequest = ClientRequest | LeaseRequest | MapRequest


class SimNode:
    def __init__(self, world: World, nid: int, cfg: Config, rng: random.Random) -> None:
        self.world = world
        self.id = nid
        self.cfg = cfg
        self.rng = rng
        self.disk = SimDisk()
        self.core: RaftNode | None = None
        self.sm = StateMachine()
        self.alive = False
        self.paused = False
        self.incarnation = 0
        self.rate = 1.0  # local clock speed relative to real time (drift)
        self.node_class: type[RaftNode] = RaftNode
        self._held: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._persisting: Ready | None = None
        self.tracker: ProposalTracker[Token] = ProposalTracker()
        # Writes that came while a Ready was being persisted: one entry when it is done,
        # as the daemon does (coord/store/batch.py).
        self.batcher: Batcher[ClientRequest] = Batcher()
        # (client, req) -> (term we led in, request): awaiting a ReadState
        self._reads: dict[tuple[int, int], tuple[int, ReadRequest]] = {}
        self._reads_ready: list[tuple[int, ReadRequest]] = []  # (index, request)
        self._snap_pending: tuple[int, bytes] | None = None  # (index, data) to compact at
        self.snapshots_installed = 0
        self.role = Role.FOLLOWER
        self._term = 0
        self.svc = NodeServices(self)

    # ---- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        restored = self.disk.recover()
        self.core = self.node_class(self.cfg, self.rng, restored)
        self.sm = StateMachine()
        self.svc.attach(self.sm)
        if restored.snapshot is not None:
            self.sm.restore(restored.snapshot.data)
        self.tracker = ProposalTracker()
        self.batcher = Batcher()
        self._reads, self._reads_ready, self._snap_pending = {}, [], None
        self._persisting = None
        self.role, self._term = Role.FOLLOWER, 0
        self.alive, self.paused, self._held = True, False, []
        self.incarnation += 1
        # A process starts at an arbitrary moment: its ticks are not in phase with others'.
        self._later(self.rng.randrange(1, self.world.tick_us), self._tick)
        self.pump()

    def crash(self) -> tuple[int, bool]:
        self.alive = False
        self.core = None
        self.incarnation += 1
        self._held = []
        self.role, self._term = Role.FOLLOWER, 0
        return self.disk.crash(self.rng)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        held, self._held = self._held, []
        for fn, args in held:
            if not self.alive or self.paused:
                break
            fn(*args)
        self._schedule_tick()

    # ---- events -------------------------------------------------------------------

    def _later(self, dt: int, fn: Callable[..., None], *args: Any) -> None:
        self.world.loop.after(dt, self._event, self.incarnation, fn, args)

    def _event(self, inc: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if inc != self.incarnation or not self.alive:
            return
        if self.paused:
            if fn != self._tick:  # a paused process misses ticks; it does not queue them
                self._held.append((fn, args))
            return
        self.world.guard(self.id, fn, *args)

    def receive(self, payload: Any) -> None:
        """Network delivery (already past partitions and loss)."""
        if not self.alive:
            return
        if self.paused:
            self._held.append((self._dispatch, (payload,)))
            return
        self.world.guard(self.id, self._dispatch, payload)

    def _dispatch(self, payload: Any) -> None:
        if isinstance(payload, ClientRequest):
            self._on_client(payload)
        elif isinstance(payload, LeaseRequest):
            self.svc.on_request(payload)
            self.pump()
        elif isinstance(payload, MapRequest):
            self.svc.on_map(payload)
            self.pump()
        elif isinstance(payload, WatchRequest):
            self.svc.on_watch(payload)
        else:
            self._on_raft(payload)

    def _schedule_tick(self) -> None:
        self._later(int(self.world.tick_us * self.rate), self._tick)

    def _tick(self) -> None:
        assert self.core is not None
        self.core.tick()
        self.svc.tick()
        self.pump()
        self._schedule_tick()

    def _on_raft(self, m: Message) -> None:
        assert self.core is not None
        self.core.step(m)
        self.pump()

    # ---- the Ready loop -------------------------------------------------------------

    def pump(self) -> None:
        core = self.core
        assert core is not None
        world = self.world
        while self._persisting is None:
            self._propose_batch()
            if not core.has_ready():
                break
            rd = core.ready()
            world.checker.on_ready(self.id, core, rd)
            self._note_role()
            for m in rd.messages:
                world.send_raft(self.id, m)
            disk = self.disk
            if rd.snapshot is not None:
                disk.write(("snap", rd.snapshot, True))
            if rd.entries:
                disk.write(("ents", rd.entries))
            if rd.hard_state is not None:
                disk.write(("hs", rd.hard_state))
            if rd.must_sync:
                self._persisting = rd
                self._later(world.draw_fsync_us(), self._fsync_done, rd, len(disk.records))
                return
            self._persisted(rd)

    def _fsync_done(self, rd: Ready, upto: int) -> None:
        self.disk.sync(upto)
        self._persisted(rd)
        self.pump()

    def _persisted(self, rd: Ready) -> None:
        core = self.core
        assert core is not None
        world = self.world
        self._persisting = None
        for m in rd.persisted_messages:
            world.send_raft(self.id, m)
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        for e in rd.committed:
            world.checker.on_apply(self.id, e)
            result: Any = None
            if e.kind is EntryKind.NORMAL:
                result = self.sm.apply(e.index, e.data)
                self._executed(e.index, e.data, result)
            resolved = self.tracker.applied(e)
            if resolved is not None:
                self._answer(resolved, result)
        for rs in rd.read_states:
            got = self._reads.pop(rs.context, None)  # type: ignore[call-overload]
            if got is not None:
                self._reads_ready.append((rs.index, got[1]))
        # Proposals and reads made while leading an earlier term (or before we
        # stepped down) may still commit, or not: unknown; reads just fail.
        current = core.term if core.role is Role.LEADER else None
        if len(self.tracker):
            for r in self.tracker.leadership_lost(keep_term=current):
                self._answer(r, None)
        if self._reads:
            for ctx, (term, req) in list(self._reads.items()):
                if term != current:
                    del self._reads[ctx]
                    self._reply(req, "not_leader", leader=int(core.leader))
        applied = rd.committed[-1].index if rd.committed else core.log.applied
        core.advance(rd)
        self._serve_reads(max(applied, core.log.applied))
        self._maybe_compact()

    def _executed(self, index: int, data: bytes, result: dict[str, Any]) -> None:
        """Tell the exactly-once checker which session writes took effect here."""
        world = self.world
        cmd = msgpack.unpackb(data, raw=False)
        pairs = [(cmd, result)]
        if cmd.get("op") == "batch":
            pairs = list(zip(cmd["cmds"], result.get("results", []), strict=False))
        for c, res in pairs:
            if res.get("retried"):
                world.dedup_entries.add(index)
            elif "error" not in res and "client" in c:  # lease traffic has no session
                world.checker.on_executed(self.id, c["client"], c["seq"], index)

    def _note_role(self) -> None:
        core = self.core
        assert core is not None
        if core.role is self.role and core.term == self._term:
            return
        if core.role is Role.LEADER:
            self.world.checker.on_leader(self.id, core)
        if core.role is not self.role:
            self.svc.role_changed(core.role)
        self.role, self._term = core.role, core.term
        self.world.role_changed(self.id, core.role, core.term)

    def _install_snapshot(self, snap: Snapshot) -> None:
        self.sm.restore(snap.data)
        self.snapshots_installed += 1
        for r in self.tracker.snapshot_applied(snap.meta.index):
            self._answer(r, None)
        self.world.trace(f"n{self.id} installed snapshot at {snap.meta.index}/{snap.meta.term}")

    def _maybe_compact(self) -> None:
        core = self.core
        assert core is not None
        every, keep = self.world.snapshot_every, self.world.snapshot_keep
        if not every:
            return
        applied = core.log.applied
        if self._snap_pending is None and applied - core.log.offset >= every:
            # Take the state now; fold the log later, so followers a little
            # behind still get entries rather than a whole snapshot.
            self._snap_pending = (applied, self.sm.snapshot())
        if self._snap_pending is not None and applied >= self._snap_pending[0] + keep:
            index, data = self._snap_pending
            self._snap_pending = None
            if index > core.log.offset:
                snap = core.compact(index, data)
                self.disk.compact(snap)

    # ---- clients --------------------------------------------------------------------

    def _on_client(self, req: ClientRequest) -> None:
        core = self.core
        assert core is not None
        try:
            if req.kind is OpKind.READ:
                core.read_index((req.client, req.req))
                self._reads[(req.client, req.req)] = (core.term, req)
            elif self._persisting is not None and core.role is Role.LEADER:
                self.batcher.add(self._command(req), req)  # proposed once persisted
                return
            else:
                now = self.world.loop.now // 1000
                index = core.propose(encode({**self._command(req), "time_ms": now}))
                self.tracker.add(index, core.term, req)
        except NotLeader as e:
            self._reply(req, "not_leader", leader=int(e.leader))
        except ProposalDropped:
            self._reply(req, "dropped")
        except RaftError:
            self._reply(req, "dropped")
        self.pump()

    def _command(self, req: ClientRequest) -> dict[str, Any]:
        """The client's operation as a store command, with its session (time comes later)."""
        envelope = {"client": req.session, "seq": req.seq}
        if req.kind is OpKind.WRITE:
            return {"op": "put", "key": req.key, "value": str(req.a), **envelope}
        expected = None if req.a is None else str(req.a)
        return {
            "op": "txn",
            "compare": [{"key": req.key, "target": "value", "op": "==", "value": expected}],
            "success": [{"op": "put", "key": req.key, "value": str(req.b)}],
            **envelope,
        }

    def _propose_batch(self) -> None:
        if not len(self.batcher):
            return
        core = self.core
        assert core is not None
        for packed in self.batcher.take(self.world.loop.now // 1000):
            try:
                index = core.propose(packed.data)
            except NotLeader as e:
                for req in packed.tokens:
                    self._reply(req, "not_leader", leader=int(e.leader))
                continue
            except RaftError:
                for req in packed.tokens:
                    self._reply(req, "dropped")
                continue
            if packed.batched:
                self.world.batched_writes += len(packed.tokens)
            token: Token = packed.tokens[0] if not packed.batched else packed
            self.tracker.add(index, core.term, token)

    def track_read(self, req: LeaseRequest | MapRequest) -> None:
        core = self.core
        assert core is not None
        self._reads[(req.client, req.req)] = (core.term, req)

    def _answer(self, r: Resolved[Token], result: Any) -> None:
        req = r.token
        if isinstance(req, Packed):
            for one, res in zip(req.tokens, req.results(result), strict=True):
                self._answer(Resolved(one, r.outcome, r.index, r.term), res)
            return
        if not isinstance(req, ClientRequest):
            self.svc.answer(r, result)
            return
        match r.outcome:
            case Outcome.COMMITTED:
                err = result.get("error") if isinstance(result, dict) else None
                if err is not None:
                    code = err["code"]
                    self._reply(req, "expired" if code == "session_expired" else code)
                else:
                    value = result.get("succeeded") if req.kind is OpKind.CAS else None
                    self._reply(req, "ok", value, log_pos=(int(r.index), int(r.term)))
            case Outcome.REJECTED:
                self._reply(req, "rejected")
            case Outcome.UNKNOWN:
                self._reply(req, "unknown")

    def _serve_reads(self, applied: int) -> None:
        if not self._reads_ready:
            return
        keep = []
        for index, req in self._reads_ready:
            if index > applied:
                keep.append((index, req))
            elif isinstance(req, LeaseRequest):
                self.svc.keepalive_ready(req)
            elif isinstance(req, MapRequest):
                self.svc.heartbeat_ready(req)
            else:
                kv = self.sm.get(req.key)
                self._reply(req, "ok", None if kv is None else int(kv.value))
        self._reads_ready = keep

    def _reply(
        self,
        req: ReadRequest,
        status: str,
        result: Any = None,
        leader: int = 0,
        log_pos: tuple[int, int] | None = None,
    ) -> None:
        rep = ClientReply(req.client, req.req, status, result, leader, log_pos)
        self.world.net.send(self.id, req.host, rep)
