"""A running coord node: the Raft core, its disk, its peers and its state machine.

This is the daemon's driver of the Ready contract (coord/raft/ready.py), the
asyncio twin of the simulator's sim/node.py: one task takes each Ready, sends
what may go at once, persists the rest in a single-thread executor (so an
fsync never stalls the event loop, and writes stay in order), then sends what
had to wait, applies committed entries and answers clients. Inputs — peer
messages, ticks, client requests — only step the core and wake that task.

Clients see three outcomes (coord.raft.proposals): a result, a refusal that
guarantees nothing happened (NotLeaderError, Refused), or UnknownOutcome.

Leases are counted down here, on the leader, by its monotonic clock; a new
leader starts every countdown afresh (expiry only ever moves later) and an
expired lease is revoked through the log like any write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from coord.clustermap.controller import MapController
from coord.raft import (
    ChangeType,
    ConfChange,
    Config,
    EntryKind,
    Index,
    InvalidChange,
    NodeId,
    NotLeader,
    RaftError,
    RaftNode,
    Ready,
    Restored,
    Role,
    confchange,
)
from coord.raft.proposals import Outcome, ProposalTracker
from coord.storage import Storage
from coord.store import StateMachine, encode
from coord.store.batch import Batcher, Packed
from coord.store.leases import LeaseClock
from coord.store.mvcc import Event
from coord.store.snapshot import View
from coord.transport import Transport

from .config import Member, NodeConfig, parse_addr

log = logging.getLogger("coord.node")


class NodeError(Exception):
    """An answer for the client: a code, an HTTP status, a message, details."""

    code = "internal"
    status = 500

    def __init__(self, message: str, *, code: str = "", status: int = 0, **extra: Any) -> None:
        super().__init__(message)
        if code:
            self.code = code
        if status:
            self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self), **self.extra}}


class NotLeaderError(NodeError):
    """Definitely not applied; ``leader`` says where to go instead (if known)."""

    code = "not_leader"
    status = 421


class Refused(NodeError):
    """The leader refused before appending: definitely not applied."""

    code = "unavailable"
    status = 503


class Invalid(NodeError):
    """A membership or leadership change that makes no sense now: asking again cannot help."""

    code = "invalid_change"
    status = 409


class UnknownOutcome(NodeError):
    """Appended, then leadership was lost or time ran out: it may still apply."""

    code = "unknown_outcome"
    status = 504


class Unavailable(NodeError):
    code = "unavailable"
    status = 503


Waiter = asyncio.Future[dict[str, Any]]


class Histogram:
    """A Prometheus histogram: cumulative bucket counts, sum and count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # observations <= each bound
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, b in enumerate(self.bounds):
            if value <= b:
                self.counts[i] += 1


GC_THRESHOLDS = (50_000, 20, 100)

# Seconds: from a fast NVMe fdatasync to a struggling disk.
FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class _ReadBatch:
    waiters: list[asyncio.Future[None]]
    index: int | None = None  # known once the leader confirmed itself


class Node:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.storage = Storage(cfg.data_dir / f"node-{cfg.id}")
        self.sm = StateMachine()
        self.members: dict[int, Member] = {m.id: m for m in cfg.members}
        self.core: RaftNode | None = None
        self.transport: Transport | None = None
        self.tracker: ProposalTracker[Packed[Waiter]] = ProposalTracker()
        # Writes proposed since the Ready loop last ran: one entry at its next turn.
        self.batcher: Batcher[Waiter] = Batcher()
        self._wake = asyncio.Event()
        self._disk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"disk-{cfg.id}")
        # Snapshots are encoded here, never in the disk thread: fsyncs must not wait on one.
        self._snapper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"snap{cfg.id}")
        self._tasks: list[asyncio.Task[None]] = []
        self._read_waiters: list[asyncio.Future[None]] = []
        self._read_batches: dict[int, _ReadBatch] = {}
        self._read_seq = 0
        # (deadline, future) in the order requests came; all share one timeout.
        self._deadlines: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self.leases = LeaseClock()
        self.map_ctl = MapController(pending_ttl_s=cfg.pending_session_ttl_s)
        self._role = Role.FOLLOWER
        self._term = 0
        self._snap_pending: tuple[int, bytes] | None = None
        self._durable = 0  # the last log index on disk here (set as Readys are persisted)
        self._snap_encoding: tuple[int, asyncio.Future[bytes]] | None = None
        self.stopped = asyncio.Event()
        self.failure: str = ""
        self.watchers: list[Any] = []  # the watch hub registers itself here
        self.metrics = {
            "leader_changes": 0,
            "proposals_committed": 0,
            "proposals_rejected": 0,
            "proposals_unknown": 0,
            "batched_writes": 0,
            "fsync_seconds": [],
        }
        self.fsync_hist = Histogram(FSYNC_BUCKETS)
        self.sm.on_lease = self._lease_applied
        self.sm.on_events = self._events_applied
        self.sm.on_gap = self._watch_gap

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        # Every write allocates a few objects that live (a key, a history event), and
        # CPython's default (700, 10, 10) then runs a young collection every few
        # hundred writes: a third of the leader's time under load. Collect less often;
        # reference counting frees nearly all garbage anyway (the consensus benchmark:
        # +25% at 512 proposals in flight, +45% at 4096).
        gc.set_threshold(*GC_THRESHOLDS)
        restored = await asyncio.get_running_loop().run_in_executor(self._disk, self._open)
        cfg = self.cfg
        raft_cfg = Config(
            id=NodeId(cfg.id),
            election_ticks=cfg.election_ticks,
            heartbeat_ticks=cfg.heartbeat_ticks,
        )
        self.core = RaftNode(raft_cfg, random.Random(), restored)
        self._durable = int(self.core.log.last_index())  # all of it was read from disk
        if restored.snapshot is not None:
            self.sm.restore(restored.snapshot.data)
            self._members_from_store()
            # What a large store restored lives long: keep the cyclic collector's full
            # passes from walking it (a pass over a million records stalls the loop for
            # a good part of an election timeout).
            gc.freeze()
        for e in restored.entries:
            if e.kind is EntryKind.CONFIG:
                self._note_config(e.data)
        me = cfg.me  # where we listen is ours to say: never what a snapshot recorded
        self.transport = Transport(
            self.id,
            me.peer,
            {m.id: self.route(m.id).peer for m in self.members.values()},
            cfg.secret,
            self._on_message,
        )
        await self.transport.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(), name=f"pump-{self.id}"),
            loop.create_task(self._ticker(), name=f"tick-{self.id}"),
        ]
        self._wake.set()
        log.info(
            "node %d started: term %d, %d entries after restart",
            self.id,
            self.core.term,
            len(restored.entries),
        )

    def _open(self) -> Any:
        restored = self.storage.open()
        if self.storage.torn_cut:
            log.warning("node %d: repaired a torn write: %s", self.id, self.storage.torn_cut)
        if not restored.entries and restored.snapshot is None and not self.cfg.join:
            # A founder's first start: write the initial configuration, durably.
            # Every founder writes the same entry: the voters and their addresses.
            members = {str(m.id): m.context() for m in self.cfg.members}
            entry, hs = confchange.bootstrap(
                [m.id for m in self.cfg.members], json.dumps(members, sort_keys=True).encode()
            )
            self.storage.wal.append_entries([entry])
            self.storage.wal.set_hard_state(hs)
            self.storage.wal.sync()
            self.storage.hard_state = hs
            restored = Restored(hs, None, (entry,))
        return restored

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.transport is not None:
            await self.transport.close()
        self._fail_everything(Unavailable("node is shutting down"))
        await asyncio.get_running_loop().run_in_executor(self._disk, self.storage.close)
        self._disk.shutdown(wait=True)
        self._snapper.shutdown(wait=False, cancel_futures=True)
        self.stopped.set()

    def _crash(self, why: str) -> None:
        """A broken invariant or a failed disk: stop serving (etcd's inoperable rule)."""
        log.critical("node %d stops: %s", self.id, why)
        self.failure = why
        self.stopped.set()
        for t in self._tasks:
            t.cancel()
        # Nobody will answer these now (the ticker that sweeps deadlines is gone too).
        self._fail_everything(Unavailable(f"node stopped: {why}"))

    # ---- inputs -----------------------------------------------------------------------

    def _on_message(self, m: Any) -> None:
        core = self.core
        if core is None or self.failure:
            return
        try:
            core.step(m)
        except AssertionError as e:
            self._crash(f"broken invariant on a message from {m.src}: {e}")
            return
        self._wake.set()

    async def _ticker(self) -> None:
        core = self.core
        assert core is not None
        period = self.cfg.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > 5 * period:
                next_at = loop.time()  # a stall: do not fire a burst of ticks to catch up
            try:
                core.tick()
            except AssertionError as e:
                self._crash(f"broken invariant on tick: {e}")
                return
            self._expire_leases()
            self._map_timers()
            self._expire_waits()
            self._wake.set()

    # ---- the Ready loop -----------------------------------------------------------------

    async def _pump(self) -> None:
        core = self.core
        assert core is not None
        loop = asyncio.get_running_loop()
        transport = self.transport
        assert transport is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._start_reads()
                self._propose_batch()
                while core.has_ready():
                    rd = core.ready()
                    self._note_role()
                    for m in rd.messages:
                        transport.send(m)
                    for e in rd.entries:
                        if e.kind is EntryKind.CONFIG:
                            self._note_config(e.data)
                    # Committed entries this node already holds durably (from earlier
                    # Readys) are applied while the disk thread writes this one: the
                    # loop's apply work and the fsync overlap instead of taking turns.
                    early = (
                        rd.snapshot is None
                        and bool(rd.committed)
                        and rd.committed[-1].index <= self._durable
                        # entries this Ready rewrites (a conflict) are not on disk yet
                        and (not rd.entries or rd.committed[-1].index < rd.entries[0].index)
                    )
                    if rd.must_sync:
                        wrote = loop.run_in_executor(self._disk, self._persist_timed, rd)
                        if early:
                            self._apply(rd)
                        self._record_fsync(await wrote)
                    elif rd.hard_state is not None:
                        # Only the commit index moved: a small unsynced write, no thread hop.
                        self.storage.persist(rd)
                    if rd.entries:
                        self._durable = int(rd.entries[-1].index)
                    elif rd.snapshot is not None:
                        self._durable = int(rd.snapshot.meta.index)  # at least that far
                    for m in rd.persisted_messages:
                        transport.send(m)
                    if not early or not rd.must_sync:
                        self._apply(rd)
                    core.advance(rd)
                    self._after_apply()
                    await self._maybe_compact()
                    if rd.committed:
                        # Let ticks, peers and clients in between batches of applying
                        # (the core hands out at most max_committed_per_ready at a time).
                        await asyncio.sleep(0)
                    # What was proposed while we persisted goes into the next Ready.
                    self._propose_batch()
            except asyncio.CancelledError:
                raise
            except AssertionError as e:
                self._crash(f"broken invariant: {e}")
                return
            except OSError as e:
                self._crash(f"storage failed: {e}")
                return

    def _persist_timed(self, rd: Ready) -> float:
        """In the disk thread: make ``rd`` durable; how long it took."""
        started = time.perf_counter()
        self.storage.persist(rd)
        return time.perf_counter() - started

    def _record_fsync(self, seconds: float) -> None:
        # Prometheus counts only ever grow: the histogram is kept whole, apart from
        # the recent samples (benchmarks read medians from those).
        self.fsync_hist.observe(seconds)
        samples: list[float] = self.metrics["fsync_seconds"]  # type: ignore[assignment]
        samples.append(seconds)
        if len(samples) > 4096:
            del samples[:2048]

    def _note_role(self) -> None:
        core = self.core
        assert core is not None
        if core.role is self._role and core.term == self._term:
            return
        if core.role is Role.LEADER:
            self.metrics["leader_changes"] += 1  # type: ignore[operator]
            # A new leader restarts every lease's countdown: never expire early.
            self.leases.lead(time.monotonic(), [(i, t) for i, (t, _) in self.sm.leases.items()])
            self.map_ctl.lead(time.monotonic())
        self._role, self._term = core.role, core.term

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.sm.restore(rd.snapshot.data)
            self._members_from_store()
            log.info("node %d: installed a snapshot at %d", self.id, rd.snapshot.meta.index)
            for r in self.tracker.snapshot_applied(rd.snapshot.meta.index):
                self._resolve(r.token, Outcome.UNKNOWN, None)
        for e in rd.committed:
            result: dict[str, Any] | None = None
            if e.kind is EntryKind.NORMAL:
                result = self.sm.apply(e.index, e.data)
            elif e.kind is EntryKind.CONFIG:
                self._store_config(e.data)
                result = {"index": int(e.index)}
            self.sm.applied_index = int(e.index)
            got = self.tracker.applied(e)
            if got is not None:
                self._resolve(got.token, got.outcome, result)
        for rs in rd.read_states:
            batch = self._read_batches.get(rs.context)  # type: ignore[call-overload]
            if batch is not None:
                batch.index = int(rs.index)

    def _after_apply(self) -> None:
        core = self.core
        assert core is not None
        current = core.term if core.role is Role.LEADER else None
        if len(self.tracker):
            for r in self.tracker.leadership_lost(keep_term=current):
                self._resolve(r.token, Outcome.UNKNOWN, None)
        applied = core.log.applied
        for ctx, batch in list(self._read_batches.items()):
            if batch.index is not None and batch.index <= applied:
                del self._read_batches[ctx]
                for f in batch.waiters:
                    if not f.done():
                        f.set_result(None)
            elif batch.index is None and core.role is not Role.LEADER:
                del self._read_batches[ctx]
                for f in batch.waiters:
                    if not f.done():
                        f.set_exception(self._not_leader())
        if core.role is not Role.LEADER and self.leases.leading:
            self.leases.step_down()
        if core.role is not Role.LEADER and self.map_ctl.leading:
            self.map_ctl.step_down()

    def _resolve(self, packed: Packed[Waiter], outcome: Outcome, result: Any) -> None:
        key = f"proposals_{outcome.value}"
        self.metrics[key] += len(packed.tokens)  # type: ignore[operator]
        if outcome is Outcome.COMMITTED:
            for fut, res in zip(packed.tokens, packed.results(result), strict=True):
                if not fut.done():
                    fut.set_result(res or {})
            return
        if outcome is Outcome.REJECTED:
            err: NodeError = Refused("another leader's entry took this place in the log")
        else:
            err = UnknownOutcome("leadership changed before the write was known to commit")
        for fut in packed.tokens:
            if not fut.done():
                fut.set_exception(err)

    def _fail_everything(self, err: NodeError) -> None:
        for fut in self.batcher.drop():  # never proposed: nothing happened
            if not fut.done():
                fut.set_exception(err)
        for r in self.tracker.leadership_lost():
            for fut in r.token.tokens:
                if not fut.done():
                    fut.set_exception(UnknownOutcome(str(err)))
        for batch in self._read_batches.values():
            for f in batch.waiters:
                if not f.done():
                    f.set_exception(err)
        self._read_batches = {}
        for f in self._read_waiters:
            if not f.done():
                f.set_exception(err)
        self._read_waiters = []

    # ---- snapshots ----------------------------------------------------------------------

    async def _maybe_compact(self) -> None:
        """Every ``snapshot_every`` entries: a snapshot, encoded in a thread while the node
        goes on (see coord/store/snapshot.py); the log is cut ``snapshot_keep`` entries
        after it, so followers a little behind still catch up from the log."""
        core = self.core
        assert core is not None
        applied = core.log.applied
        every, keep = self.cfg.snapshot_every, self.cfg.snapshot_keep
        idle = self._snap_pending is None and self._snap_encoding is None
        if idle and applied - core.log.offset >= every:
            view = View.take(self.sm)
            loop = asyncio.get_running_loop()
            self._snap_encoding = (view.applied, loop.run_in_executor(self._snapper, view.encode))
        if self._snap_encoding is not None and self._snap_encoding[1].done():
            index, encoding = self._snap_encoding
            self._snap_encoding = None
            failed = encoding.exception()
            if failed is None:
                self._snap_pending = (index, encoding.result())
            else:  # the log stays whole; the next Ready tries again
                log.error("node %d: snapshot at %d failed: %r", self.id, index, failed)
        if self._snap_pending is not None and applied >= self._snap_pending[0] + keep:
            index, data = self._snap_pending
            self._snap_pending = None
            if index <= core.log.offset:
                return
            snap = core.compact(index, data)
            later = list(core.log.entries)
            await asyncio.get_running_loop().run_in_executor(
                self._disk, self.storage.compact, snap, later
            )
            log.info("node %d: snapshot at %d/%d", self.id, snap.meta.index, snap.meta.term)

    async def encode_snapshot(self) -> tuple[View, bytes]:
        """The store as applied now, encoded off the event loop."""
        view = View.take(self.sm)
        data = await asyncio.get_running_loop().run_in_executor(self._snapper, view.encode)
        return view, data

    async def snapshot_now(self) -> dict[str, Any]:
        """Take and persist a snapshot of everything applied (``coord snapshot save``)."""
        core = self.core
        assert core is not None
        if core.log.applied <= core.log.offset:
            return {"index": int(core.log.offset), "taken": False}
        view, data = await self.encode_snapshot()
        if view.applied <= core.log.offset:  # a newer one was installed meanwhile
            return {"index": int(core.log.offset), "taken": False}
        snap = core.compact(view.applied, data)
        later = list(core.log.entries)
        await asyncio.get_running_loop().run_in_executor(
            self._disk, self.storage.compact, snap, later
        )
        return {"index": int(snap.meta.index), "term": int(snap.meta.term), "taken": True}

    # ---- membership ---------------------------------------------------------------------

    def _note_config(self, data: bytes) -> None:
        """A configuration entry reached the log: learn addresses, tell the transport."""
        conf, cc = confchange.decode(data)
        if cc.context:
            try:
                extra = json.loads(cc.context)
            except ValueError:
                extra = {}
            if cc.type is ChangeType.BOOTSTRAP:
                for ident, ctx in extra.items():
                    self._learn_member(int(ident), ctx)
            elif cc.type in (ChangeType.ADD_LEARNER, ChangeType.ADD_VOTER):
                self._learn_member(int(cc.node), extra)
        if self.transport is not None:
            for nid in conf.members():
                if int(nid) in self.members:
                    self.transport.set_peer(int(nid), self.route(int(nid)).peer)

    def _learn_member(self, nid: int, ctx: dict[str, Any]) -> None:
        try:
            self.members[nid] = Member(
                nid, parse_addr(ctx["peer"], "peer"), parse_addr(ctx["api"], "api")
            )
        except (KeyError, TypeError, ValueError):
            log.warning("node %d: configuration entry for %d has no usable addresses", self.id, nid)

    def _store_config(self, data: bytes) -> None:
        """Committed configuration: remember member addresses in the state machine (snapshots)."""
        conf, _ = confchange.decode(data)
        self.sm.members = {
            m.id: m.context() for m in self.members.values() if m.id in conf.members()
        }

    def route(self, nid: int) -> Member:
        """Where this node reaches member ``nid``: its recorded addresses, or ``--dial``'s."""
        return self.cfg.dial.get(nid) or self.members[nid]

    def _members_from_store(self) -> None:
        for nid, ctx in self.sm.members.items():
            self._learn_member(int(nid), ctx)
        if self.transport is not None:
            for nid in self.members:
                self.transport.set_peer(nid, self.route(nid).peer)

    async def change_membership(
        self, kind: ChangeType, node: int, member: Member | None
    ) -> dict[str, Any]:
        core = self._core()
        if member is not None:
            self.members[member.id] = member
        context = json.dumps(member.context()).encode() if member is not None else b""
        try:
            index = core.propose_conf_change(ConfChange(kind, NodeId(node), context))
        except NotLeader as e:
            raise self._not_leader(e.leader) from e
        except InvalidChange as e:
            raise Invalid(str(e)) from e
        except RaftError as e:
            raise Refused(str(e)) from e
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.tracker.add(index, core.term, Packed(b"", [fut], False))
        self._wake.set()
        return await self._await_outcome(fut)

    async def transfer_leadership(self, to: int) -> None:
        core = self._core()
        try:
            core.transfer_leadership(NodeId(to))
        except NotLeader as e:
            raise self._not_leader(e.leader) from e
        except InvalidChange as e:
            raise Invalid(str(e)) from e
        except RaftError as e:
            raise Refused(str(e)) from e
        self._wake.set()

    # ---- client requests ----------------------------------------------------------------

    def _core(self) -> RaftNode:
        if self.core is None or self.failure:
            raise Unavailable(self.failure or "node is starting")
        return self.core

    def _not_leader(self, hint: int | None = None) -> NotLeaderError:
        core = self.core
        leader = hint if hint else (int(core.leader) if core is not None else 0)
        m = self.members.get(leader)
        extra: dict[str, Any] = {}
        if m is not None:
            extra["leader"] = {"id": m.id, "api": f"{m.api[0]}:{m.api[1]}"}
        return NotLeaderError("this node is not the leader", **extra)

    async def propose(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Replicate a store command; its result, or NotLeaderError / Refused / UnknownOutcome."""
        if Batcher.batchable(cmd):
            return await self.propose_soon(cmd)
        core = self._core()
        fut: Waiter = asyncio.get_running_loop().create_future()
        cmd["time_ms"] = int(time.time() * 1000)
        try:
            index = core.propose(encode(cmd))
        except NotLeader as e:
            raise self._not_leader(e.leader) from e
        except RaftError as e:
            raise Refused(str(e)) from e
        self.tracker.add(index, core.term, Packed(b"", [fut], False))
        self._wake.set()
        return await self._await_outcome(fut)

    def propose_soon(self, cmd: dict[str, Any]) -> Waiter:
        """A batchable write, proposed at the Ready loop's next turn with whatever else
        came meanwhile: the future of its result (errors as for ``propose``)."""
        core = self._core()
        if core.role is not Role.LEADER:
            raise self._not_leader()
        fut: Waiter = asyncio.get_running_loop().create_future()
        self.batcher.add(cmd, fut)
        self._wake.set()
        self._expire_later(fut)
        return fut

    def _propose_batch(self) -> None:
        """Propose the writes waiting in the batcher; each fails alone if it cannot go."""
        core = self.core
        if not len(self.batcher) or core is None:
            return
        now = int(time.time() * 1000)
        # A write whose caller stopped waiting (deadline passed) is not proposed.
        for packed in self.batcher.take(now, keep=lambda f: not f.done()):
            try:
                index = core.propose(packed.data)
            except NotLeader as e:
                self._refuse(packed, self._not_leader(e.leader))
                continue
            except RaftError as e:
                self._refuse(packed, Refused(str(e)))
                continue
            self.tracker.add(index, core.term, Packed(b"", packed.tokens, packed.batched))
            if packed.batched:
                self.metrics["batched_writes"] += len(packed.tokens)  # type: ignore[operator]

    @staticmethod
    def _refuse(packed: Packed[Waiter], err: NodeError) -> None:
        for fut in packed.tokens:
            if not fut.done():
                fut.set_exception(err)

    async def _await_outcome(self, fut: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        self._expire_later(fut)
        return await fut

    def _expire_later(self, fut: asyncio.Future[Any]) -> None:
        # No timer per request: the ticker sweeps deadlines (see _expire_waits).
        self._deadlines.append((time.monotonic() + self.cfg.request_timeout_s, fut))

    async def read_barrier(self) -> None:
        """Wait until a linearizable read may be served here (ReadIndex, batched)."""
        core = self._core()
        if core.role is not Role.LEADER:
            raise self._not_leader()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._read_waiters.append(fut)
        self._wake.set()
        self._expire_later(fut)
        await fut

    def _expire_waits(self) -> None:
        """Requests past their deadline: a write's outcome is unknown, a read failed."""
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, fut = deadlines.popleft()
            if not fut.done():
                if fut in self._read_set():
                    fut.set_exception(Unavailable("could not confirm leadership in time"))
                else:
                    fut.set_exception(
                        UnknownOutcome(f"not committed within {self.cfg.request_timeout_s}s")
                    )

    def _read_set(self) -> set[asyncio.Future[Any]]:
        waiting: set[asyncio.Future[Any]] = set(self._read_waiters)
        for batch in self._read_batches.values():
            waiting.update(batch.waiters)
        return waiting

    def _start_reads(self) -> None:
        """All reads that arrived since the last round share one heartbeat round."""
        if not self._read_waiters:
            return
        core = self.core
        assert core is not None
        waiters, self._read_waiters = self._read_waiters, []
        self._read_seq += 1
        try:
            core.read_index(self._read_seq)
        except NotLeader as e:
            err = self._not_leader(e.leader)
            for f in waiters:
                if not f.done():
                    f.set_exception(err)
            return
        self._read_batches[self._read_seq] = _ReadBatch(waiters)

    # ---- leases -------------------------------------------------------------------------

    def _lease_applied(self, lease_id: int, ttl: float | None) -> None:
        if ttl is None:
            self.leases.revoked(lease_id)
        else:
            self.leases.granted(lease_id, ttl, time.monotonic())

    async def lease_keepalive(self, lease_id: int) -> float:
        """Restart a lease's countdown; only a leader that has just confirmed itself may."""
        await self.read_barrier()
        got = self.sm.leases.get(lease_id)
        if got is None:
            raise LeaseNotFound(f"lease {lease_id} does not exist")
        if not self.leases.keepalive(lease_id, got[0], time.monotonic()):
            if not self.is_leader:
                raise self._not_leader()
            raise LeaseNotFound(f"lease {lease_id} has expired")
        return got[0]

    def lease_remaining(self, lease_id: int) -> float | None:
        return self.leases.remaining(lease_id, time.monotonic())

    def _expire_leases(self) -> None:
        for lease_id in self.leases.due(time.monotonic()):
            asyncio.get_running_loop().create_task(self._revoke_expired(lease_id))

    async def _revoke_expired(self, lease_id: int) -> None:
        try:
            await self.propose({"op": "lease_revoke", "id": lease_id, "reason": "expired"})
            log.info("node %d: lease %d expired and was revoked", self.id, lease_id)
        except NodeError as e:
            self.leases.revoke_failed(lease_id)  # retried on a later tick while we lead
            log.info("node %d: revoking expired lease %d: %s", self.id, lease_id, e)

    # ---- the cluster map's timers and heartbeats -----------------------------------------

    def _map_timers(self) -> None:
        for cmd in self.map_ctl.due(time.monotonic(), self.sm.map):
            asyncio.get_running_loop().create_task(self._propose_timer(cmd))

    async def _propose_timer(self, cmd: dict[str, Any]) -> None:
        try:
            result = await self.propose(cmd)
            log.info("node %d: %s -> %s", self.id, cmd["op"], result)
        except NodeError as e:  # proposed again on a later tick if still due
            log.info("node %d: %s: %s", self.id, cmd["op"], e)

    async def node_heartbeat(self, node: str, lease: int) -> dict[str, Any]:
        """A target node's agent: keep its lease alive and learn the VIPs it may serve.

        The answer is computed after the keepalive restarted the countdown, on
        a leader that has just confirmed itself, from the state applied at that
        moment (its ``revision``): the agent's VIP rule rests on exactly this
        order (target/vip.py).
        """
        await self.lease_keepalive(lease)
        answer = self.sm.map.heartbeat(node, lease)
        if answer is None:
            raise StaleLease(f"lease {lease} is not node {node!r}'s: register again")
        return answer

    # ---- watches ------------------------------------------------------------------------

    def _events_applied(self, events: list[Event]) -> None:
        for w in list(self.watchers):
            w.offer(events)

    def _watch_gap(self, resume_revision: int) -> None:
        # A snapshot jumped past history we no longer have: each watcher is cut
        # off with the revision to resume from (where it will learn to re-list).
        for w in list(self.watchers):
            w.cut_off()

    # ---- looking ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        core = self._core()
        st = core.status()
        leader = self.members.get(int(st.leader))
        peers = {p.id: p for p in st.peers}
        members = []
        for nid in sorted(set(st.conf.members()) | {NodeId(self.id)}):
            m = self.members.get(int(nid))
            p = peers.get(nid)
            members.append(
                {
                    "id": int(nid),
                    "peer": f"{m.peer[0]}:{m.peer[1]}" if m else None,
                    "api": f"{m.api[0]}:{m.api[1]}" if m else None,
                    "address": f"{m.peer[0]}:{m.peer[1]}" if m else None,  # = peer
                    "voter": nid in st.conf.voters,
                    "role": "leader"
                    if nid == st.leader
                    else ("voter" if nid in st.conf.voters else "learner"),
                    "match_index": int(p.match) if p else None,
                    "lag": int(st.last_index - p.match) if p else None,
                    "last_contact_ticks": p.ticks_since_ack if p else None,
                    "last_contact_ms": p.ticks_since_ack * self.cfg.tick_ms if p else None,
                }
            )
        return {
            "id": self.id,
            "leader": int(st.leader) or None,
            "leader_api": f"{leader.api[0]}:{leader.api[1]}" if leader else None,
            "role": st.role.value,
            "term": int(st.term),
            "commit_index": int(st.commit),
            "applied_index": int(st.applied),
            "last_index": int(st.last_index),
            "revision": self.sm.kv.revision,
            "members": members,
        }

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.role is Role.LEADER

    def applied_index(self) -> Index:
        return self._core().log.applied


class LeaseNotFound(NodeError):
    code = "lease_not_found"
    status = 404


class StaleLease(NodeError):
    """The agent's lease is not its node's current one: it must register again."""

    code = "stale_lease"
    status = 409
