"""PySyncObj 0.3.17 on a simulated host: one SyncObj per node, driven by the virtual clock.

Nothing of PySyncObj is changed; everything it takes from its surroundings is:

- ``transportClass``: :class:`SimTransport` pickles each message (as PySyncObj's TCP
  transport does) and sends it through the simulator's network, so delays, loss,
  duplication, reordering (unless ``fifo``; PySyncObj expects TCP's order) and partitions
  are the scenario's. Every peer counts as connected. A connection dies with either of
  its processes: a message still on its way when its sender or its receiver crashes is
  dropped. (The link delay stands for everything between send() and the peer's read(),
  socket buffers included; a crashed machine's unsent buffers are gone. Raft must stay
  safe whatever messages are lost: a violation found with it is the implementation's.)
- ``autoTick=False``: the host calls ``doTick()`` every ``autoTickPeriod`` of virtual time
  (50 ms, PySyncObj's default) and right after each delivered message, as its own tick
  thread does when ``poll()`` returns with data.
- module globals of ``pysyncobj.syncobj``, swapped for the length of a run (see
  :func:`patched`): ``monotonicTime`` reads the virtual clock of the node being run (its
  drifting rate included), ``random`` draws from that node's seeded stream (election
  timeouts), ``createPoller`` gives a poller that never touches a file descriptor and
  ``createJournal`` hands a node its :class:`SimJournal`.
- nodes are :class:`PeerNode`: ids "1".."N" hashing to their number, so the sets of nodes
  PySyncObj iterates (who gets an append first, and so which random delay it draws) come
  out in the same order whatever PYTHONHASHSEED is.

The journal survives a crash by default (``journal = "kept"``): a process crash, the OS
still holding the writes PySyncObj never fsyncs. That is the kindest model for PySyncObj,
so a loss found under it is the protocol's, not the missing fsync's. ``journal = "lost"``
models a machine crash instead (the journal starts empty again).

The replicated object is a register per key: ``put``, ``cas`` and ``get`` are all
``@replicated`` (PySyncObj has no read that is linearizable without going through the
log). A client's write is acknowledged when PySyncObj calls back SUCCESS, which it does as
the node the client talks to applies the entry; the reply carries that entry's
(index, term), so the lost-write checkers can find it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pickle  # PySyncObj's own wire format; it never crosses a process boundary here
import random
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import pysyncobj.syncobj as pso
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.journal import Journal
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from coord.raft import Config, Entry, EntryKind, Index, NodeId, RaftNode, Role, Term

from ..history import OpKind
from ..node import SimNode
from ..workload import ClientReply, ClientRequest

if TYPE_CHECKING:
    from ..world import World

ROLES = {0: Role.FOLLOWER, 1: Role.CANDIDATE, 2: Role.LEADER}
KINDS = {0: EntryKind.NORMAL, 1: EntryKind.NOOP, 2: EntryKind.CONFIG, 3: EntryKind.NORMAL}
METHODS = ("cas", "get", "put")  # PySyncObj numbers @replicated methods in name order


def checker_entry(index: int, term: int, command: bytes) -> Entry:
    """A journal entry as the Raft checkers see it: what it does and a digest of its bytes.

    Equal digests mean equal entries, which is all the checkers compare; the padding of a
    30 KB write need not appear in a violation's text.
    """
    kind = KINDS.get(command[0], EntryKind.NORMAL)
    digest = hashlib.sha256(command).hexdigest()[:16]
    what = kind.name.lower()
    if command[0] == 0:
        call = pickle.loads(command[1:])
        if isinstance(call, tuple):
            name = METHODS[call[0]] if 0 <= call[0] < len(METHODS) else f"m{call[0]}"
            args = " ".join(f"+{len(a)}B" if isinstance(a, bytes) else repr(a) for a in call[1])
            what = f"{name} {args}"
    return Entry(Index(index), Term(term), kind, f"{what} #{digest}".encode())


@dataclass
class PySyncObjOptions:
    """The ``[pysyncobj]`` table of a scenario (coord ignores it)."""

    entry_bytes: int = 0  # padding carried by every write and CAS (PySyncObj batches by bytes)
    journal: str = "kept"  # kept: a crash is a process crash; lost: a machine crash
    conf: dict[str, Any] = field(default_factory=dict)  # SyncObjConf overrides

    def syncobj_conf(self, journal_key: str) -> Any:
        kw: dict[str, Any] = {
            "autoTick": False,
            "journalFile": journal_key,  # handed to our createJournal, never opened
            "useFork": False,
            # No log compaction: it would fold entries the checkers still read.
            "logCompactionMinEntries": 1 << 40,
            "logCompactionMinTime": 1 << 40,
            "pollerType": "sim",
        }
        for k, v in self.conf.items():
            if k in kw:
                raise ValueError(f"pysyncobj conf {k!r} is fixed by the simulator")
            kw[k] = v
        return SyncObjConf(**kw)


class PeerNode(Node):  # type: ignore[misc]
    """A node whose hash is its number: set iteration independent of PYTHONHASHSEED."""

    def __init__(self, nid: int) -> None:
        super().__init__(str(nid))

    def __hash__(self) -> int:
        return int(self.id)


class SimJournal(Journal):  # type: ignore[misc]
    """MemoryJournal's contract, owned by the host so that it can outlive a process."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, int, int]] = []
        self.commit = 0
        self.term = 0
        self.voted_for: Any = None
        self.appended: list[tuple[bytes, int, int]] = []  # since the host last looked

    def add(self, command: bytes, idx: int, term: int) -> None:
        self.entries.append((command, idx, term))
        self.appended.append((command, idx, term))

    def clear(self) -> None:
        self.entries = []

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        del self.entries[entryFrom:]

    def deleteEntriesTo(self, entryTo: int) -> None:
        self.entries = self.entries[entryTo:]

    def __getitem__(self, item: Any) -> Any:
        return self.entries[item]

    def __len__(self) -> int:
        return len(self.entries)

    def _destroy(self) -> None:
        pass

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self.commit = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self.commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self.term = term
        self.voted_for = votedForNodeId

    def getCurrentTerm(self) -> int:
        return self.term

    def getVotedForNodeId(self) -> Any:
        return self.voted_for

    # ---- for the host's eyes -----------------------------------------------------------

    def first_index(self) -> int:
        return self.entries[0][1] if self.entries else 1

    def last_index(self) -> int:
        return self.entries[-1][1] if self.entries else 0

    def at(self, index: int) -> tuple[bytes, int, int] | None:
        pos = index - self.first_index()
        if 0 <= pos < len(self.entries):
            return self.entries[pos]
        return None

    def term_at(self, index: int) -> int | None:
        e = self.at(index)
        return None if e is None else e[2]


class _NoPoller:
    """Nothing to poll: messages arrive as simulator events."""

    def subscribe(self, descr: Any, callback: Any, eventMask: Any) -> None:
        raise AssertionError("the simulated transport has no file descriptors")

    def unsubscribe(self, descr: Any) -> None:
        pass

    def poll(self, timeout: float) -> None:
        pass


class PeerKV(SyncObj):  # type: ignore[misc]
    """The replicated store: one register per key."""

    def __init__(self, self_node: PeerNode, others: list[PeerNode], conf: Any, transport: Any):
        self.data: dict[str, Any] = {}
        super().__init__(self_node, others, conf, nodeClass=PeerNode, transportClass=transport)

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: str, value: Any, pad: bytes) -> None:
        self.data[key] = value

    @replicated  # type: ignore[untyped-decorator]
    def cas(self, key: str, expected: Any, new: Any, pad: bytes) -> bool:
        if self.data.get(key) != expected:
            return False
        self.data[key] = new
        return True

    @replicated  # type: ignore[untyped-decorator]
    def get(self, key: str) -> Any:
        return self.data.get(key)


class SimTransport(Transport):  # type: ignore[misc]
    def __init__(self, host: PySyncObjHost, syncObj: Any, selfNode: Any, otherNodes: Any):
        super().__init__(syncObj, selfNode, otherNodes)
        self.host = host
        self.peers: dict[int, PeerNode] = {int(n.id): n for n in otherNodes}
        host.transport = self

    def connect_all(self) -> None:
        for nid in sorted(self.peers):
            self._onNodeConnected(self.peers[nid])

    def send(self, node: Any, message: Any) -> bool:
        self.host.send_peer(int(node.id), message)
        return True

    def deliver(self, src: int, message: Any) -> None:
        node = self.peers.get(src)
        if node is not None:
            self._onMessageReceived(node, message)


@dataclass(frozen=True, slots=True)
class PeerMsg:
    src: int
    src_incarnation: int  # the connection's two ends: a crash closes it
    dst_incarnation: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Appended:
    """The part of a Ready that RaftChecker.on_ready reads: entries just appended."""

    entries: tuple[Entry, ...]


# ---- what the checkers and the scenario runner read, in RaftNode's terms -----------------


class LogView:
    def __init__(self, host: PySyncObjHost) -> None:
        self.host = host

    @property
    def committed(self) -> Index:
        obj = self.host.obj
        commit = 0 if obj is None else int(obj.raftCommitIndex)
        return Index(min(commit, self.host.journal.last_index()))

    @property
    def applied(self) -> Index:
        obj = self.host.obj
        return Index(0 if obj is None else int(obj.raftLastApplied))

    @property
    def stabled(self) -> Index:
        # PySyncObj never fsyncs; under the "kept" model its journal survives anyway.
        return Index(self.host.journal.last_index())

    @property
    def offset(self) -> Index:
        return Index(self.host.journal.first_index() - 1)

    def last_index(self) -> Index:
        return Index(self.host.journal.last_index())

    def last_term(self) -> Term:
        return Term(self.host.journal.term_at(self.host.journal.last_index()) or 0)

    def term(self, index: int) -> Term | None:
        if index == 0:
            return None
        t = self.host.journal.term_at(index)
        return None if t is None else Term(t)

    def latest_conf(self) -> Any:
        raise NotImplementedError("pysyncobj engine: membership changes are not simulated")


@dataclass(frozen=True)
class _Conf:
    voters: tuple[int, ...]


@dataclass(frozen=True)
class _Progress:
    match: int


class CoreView:
    """A read-only RaftNode look-alike over a SyncObj: role, term, log, progress."""

    def __init__(self, host: PySyncObjHost) -> None:
        self.host = host
        self.log = LogView(host)

    @property
    def conf(self) -> _Conf:
        return _Conf(tuple(sorted(self.host.world.nodes)))  # no membership changes

    def _obj(self) -> Any:
        assert self.host.obj is not None
        return self.host.obj

    @property
    def role(self) -> Role:
        return ROLES[self._obj()._SyncObj__raftState]

    @property
    def term(self) -> Term:
        return Term(int(self._obj().raftCurrentTerm))

    @property
    def leader(self) -> NodeId:
        lead = self._obj()._getLeader()
        return NodeId(0 if lead is None else int(lead.id))

    @property
    def progress(self) -> dict[int, _Progress]:
        obj = self._obj()
        out = {self.host.id: _Progress(self.host.journal.last_index())}
        for node, match in obj._SyncObj__raftMatchIndex.items():
            out[int(node.id)] = _Progress(int(match))
        return out


# ---- the module-level state PySyncObj reads, swapped for the simulator's ------------------


class _Running:
    host: PySyncObjHost | None = None
    world: World | None = None


RUNNING = _Running()


def _monotonic() -> float:
    host = RUNNING.host
    if host is not None:
        return host.local_s()
    world = RUNNING.world
    assert world is not None, "PySyncObj ran outside a simulated run"
    return world.loop.now / 1e6


class _RandomShim:
    """Stands in for the ``random`` module inside pysyncobj.syncobj."""

    def random(self) -> float:
        host = RUNNING.host
        assert host is not None, "PySyncObj drew a random number outside a node's event"
        return host.rng.random()


def _create_poller(poller_type: str) -> _NoPoller:
    return _NoPoller()


def _create_journal(journal_file: Any) -> SimJournal:
    host = RUNNING.host
    assert host is not None and journal_file == host.journal_key
    return host.journal


class _TraceLogs(logging.Handler):
    """PySyncObj's log lines go to the run's trace (e.g. 'truncating already-applied')."""

    def emit(self, record: logging.LogRecord) -> None:
        world, host = RUNNING.world, RUNNING.host
        if world is not None:
            who = f"n{host.id} " if host is not None else ""
            world.trace(f"{who}pysyncobj {record.levelname}: {record.getMessage()}")


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Swap pysyncobj.syncobj's clock, randomness, poller and journal for a run's length."""
    saved = {
        name: getattr(pso, name)
        for name in ("monotonicTime", "random", "createPoller", "createJournal")
    }
    logger = logging.getLogger(pso.__name__)
    handler = _TraceLogs()
    old_propagate, old_level = logger.propagate, logger.level
    pso.monotonicTime = _monotonic
    pso.random = _RandomShim()
    pso.createPoller = _create_poller
    pso.createJournal = _create_journal
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(pso, name, value)
        logger.removeHandler(handler)
        logger.propagate, logger.level = old_propagate, old_level
        RUNNING.host = None
        RUNNING.world = None


# ---- the host ----------------------------------------------------------------------------


def _summary(msg: Any) -> str:
    """A short, deterministic line per PySyncObj message for the trace."""
    t = msg.get("type", "?")
    if t == "append_entries":
        if "prevLogIdx" in msg:
            ents = msg.get("entries", [])
            span = f"{ents[0][1]}..{ents[-1][1]}" if ents else "-"
            tx = f" tx={msg['transmission']}" if "transmission" in msg else ""
            return (
                f"append t{msg['term']} prev={msg['prevLogIdx']}/{msg['prevLogTerm']} "
                f"ents={span} commit={msg['commit_index']}{tx}"
            )
        return f"append-snapshot t{msg['term']} commit={msg['commit_index']}"
    if t == "next_node_idx":
        ok = "ok" if msg["success"] else "no"
        return f"next_idx {msg['next_node_idx']} {ok}{' reset' if msg['reset'] else ''}"
    if t == "request_vote":
        return f"vote? t{msg['term']} last={msg['last_log_index']}/{msg['last_log_term']}"
    if t == "response_vote":
        return f"vote! t{msg['term']}"
    if t == "apply_command":
        return f"forward req={msg.get('request_id')}"
    if t == "apply_command_response":
        if "error" in msg:
            return f"forwarded req={msg['request_id']} error={msg['error']}"
        return f"forwarded req={msg['request_id']} at {msg['log_idx']}/{msg['log_term']}"
    return str(t)


class PySyncObjHost(SimNode):
    """A simulated machine running one PySyncObj process (see the module docstring)."""

    def __init__(
        self, world: World, nid: int, cfg: Config, rng: random.Random, options: PySyncObjOptions
    ) -> None:
        super().__init__(world, nid, cfg, rng)
        self.options = options
        self.journal = SimJournal()
        self.journal_key = f"sim-journal-n{nid}"
        self.obj: PeerKV | None = None
        self.transport: SimTransport | None = None
        self.view = CoreView(self)
        self.applied_seen = 0
        self.pad = b"x" * options.entry_bytes
        self._roles_seen: tuple[Role, int] = (Role.FOLLOWER, 0)
        # Client requests already taken: the network may duplicate one, but the client's
        # connection to its server would not (coord has sessions for it; PySyncObj none).
        self._requests: set[tuple[int, int]] = set()

    def local_s(self) -> float:
        return self.world.loop.now * self.rate / 1e6

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """PySyncObj's globals now mean this node (its clock, its random stream)."""
        prev = RUNNING.host
        RUNNING.host, RUNNING.world = self, self.world
        try:
            yield
        except AssertionError:
            raise  # World.guard reports it as a broken invariant
        except Exception as e:
            # PySyncObj itself failed: say where, and end the run rather than the harness.
            tb = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}"
            self.world.report(
                "engine-exception", (self.id,), f"n{self.id}: PySyncObj raised {e!r} ({where})"
            )
            self.world.stopped = True
        finally:
            RUNNING.host = prev

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.alive, self.paused, self._held = True, False, []
        self.incarnation += 1
        self.role, self._term = Role.FOLLOWER, 0
        self._roles_seen = (Role.FOLLOWER, -1)
        self.journal.appended = list(self.journal.entries)  # replayed: the checkers see it
        ids = sorted(self.world.nodes)
        with self.running():
            self.obj = PeerKV(
                PeerNode(self.id),
                [PeerNode(n) for n in ids if n != self.id],
                self.options.syncobj_conf(self.journal_key),
                partial(SimTransport, self),
            )
            assert self.transport is not None
            self.transport.connect_all()
        self.core = cast(RaftNode, self.view)
        self.applied_seen = int(self.obj.raftLastApplied)
        self._observe()
        self._later(self.rng.randrange(1, self.world.tick_us), self._tick)

    def crash(self) -> tuple[int, bool]:
        self.alive = False
        self.core = None
        self.obj = None
        self.transport = None
        self.incarnation += 1
        self._held = []
        self.role, self._term = Role.FOLLOWER, 0
        lost = 0
        if self.options.journal == "lost":
            lost = len(self.journal.entries)
            self.journal = SimJournal()
        return lost, False

    # ---- events -------------------------------------------------------------------------

    def _tick(self) -> None:
        obj = self.obj
        assert obj is not None
        with self.running():
            obj.doTick(0.0)
        self._observe()
        self._schedule_tick()

    def _dispatch(self, payload: Any) -> None:
        if isinstance(payload, PeerMsg):
            self._on_peer(payload)
        elif isinstance(payload, ClientRequest):
            self._on_client(payload)
        # Leases, watches and the cluster map are coord's: not served here.

    def _on_peer(self, m: PeerMsg) -> None:
        src = self.world.nodes.get(m.src)
        if m.dst_incarnation != self.incarnation or src is None:
            return  # sent to a process that has died since: its connection is gone
        if src.incarnation != m.src_incarnation:
            return  # its sender crashed first: it was still in the dead machine's socket buffer
        obj, transport = self.obj, self.transport
        assert obj is not None and transport is not None
        msg = pickle.loads(m.data)
        with self.running():
            transport.deliver(m.src, msg)
            obj.doTick(0.0)  # PySyncObj's loop ticks as soon as poll() returns with data
        self._observe()

    def send_peer(self, dst: int, message: Any) -> None:
        world = self.world
        peer = world.nodes.get(dst)
        inc = peer.incarnation if peer is not None else 0
        world.trace(f"n{self.id}>n{dst} {_summary(message)}")
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        world.net.send(self.id, dst, PeerMsg(self.id, self.incarnation, inc, data))

    # ---- watching it, for the checkers --------------------------------------------------

    def _observe(self) -> None:
        obj = self.obj
        if obj is None:
            return
        world, journal = self.world, self.journal
        if journal.appended:
            fresh = [
                checker_entry(idx, term, cmd)
                for cmd, idx, term in journal.appended
                if journal.term_at(idx) == term
            ]
            journal.appended = []
            world.checker.on_ready(self.id, self.core, _Appended(tuple(fresh)))  # type: ignore[arg-type]
        else:
            world.checker.on_ready(self.id, self.core, _Appended(()))  # type: ignore[arg-type]
        role = ROLES[obj._SyncObj__raftState]
        term = int(obj.raftCurrentTerm)
        if (role, term) != self._roles_seen:
            self._roles_seen = (role, term)
            if role is Role.LEADER:
                world.checker.on_leader(self.id, self.core)  # type: ignore[arg-type]
            self.role, self._term = role, term
            world.role_changed(self.id, role, term)
        last = int(obj.raftLastApplied)
        for idx in range(self.applied_seen + 1, last + 1):
            e = journal.at(idx)
            if e is not None:
                world.checker.on_apply(self.id, checker_entry(idx, e[2], e[0]))
        self.applied_seen = last

    # ---- clients ------------------------------------------------------------------------

    def _on_client(self, req: ClientRequest) -> None:
        obj = self.obj
        assert obj is not None
        if (req.client, req.req) in self._requests:
            return
        self._requests.add((req.client, req.req))
        inc = self.incarnation

        def done(result: Any, err: Any) -> None:
            self._client_done(req, inc, result, err)

        with self.running():
            if req.kind is OpKind.READ:
                obj.get(req.key, callback=done)
            elif req.kind is OpKind.WRITE:
                obj.put(req.key, req.a, self.pad, callback=done)
            else:
                obj.cas(req.key, req.a, req.b, self.pad, callback=done)
        # The command waits in PySyncObj's queue for the next tick, as with its tick thread.

    def _client_done(self, req: ClientRequest, inc: int, result: Any, err: Any) -> None:
        obj = self.obj
        if inc != self.incarnation or obj is None:
            return
        if err == FAIL_REASON.SUCCESS:
            if req.kind is OpKind.READ:
                self._reply(req, "ok", result)
                return
            # Called back while applying, before raftLastApplied moves past the entry.
            index = int(obj.raftLastApplied) + 1
            term = self.journal.term_at(index) or 0
            value = bool(result) if req.kind is OpKind.CAS else None
            self._reply(req, "ok", value, log_pos=(index, term))
        elif err == FAIL_REASON.MISSING_LEADER:
            self._reply(req, "not_leader")
        elif err == FAIL_REASON.DISCARDED:
            self._reply(req, "rejected")  # another entry holds its place: never applied
        elif err in (FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME):
            self._reply(req, "unknown")
        else:  # QUEUE_FULL, NOT_LEADER (never appended), REQUEST_DENIED
            self._reply(req, "dropped")

    def _reply(
        self,
        req: Any,
        status: str,
        result: Any = None,
        leader: int = 0,
        log_pos: tuple[int, int] | None = None,
    ) -> None:
        if not leader and self.obj is not None:
            lead = self.obj._getLeader()
            leader = 0 if lead is None else int(lead.id)
        rep = ClientReply(req.client, req.req, status, result, leader, log_pos)
        self.world.net.send(self.id, req.host, rep)
