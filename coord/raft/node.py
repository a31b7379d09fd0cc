"""RaftNode: one Raft participant as a pure state machine.

Theory of operation
-------------------
Input arrives through five doors: ``tick()`` (time), ``step(msg)`` (a peer),
``propose()`` / ``propose_conf_change()`` (a client write), ``read_index()``
(a client read) and ``transfer_leadership()``. Output leaves through one:
``ready()``, whose contract is in ready.py. The node imports no clock, socket or
global randomness: the simulator and the daemon drive the very same code.

``step`` first does what every role shares — compare terms (Raft Figure 2:
"if a message's term is newer, become follower"), answer votes — then hands
the message to the step function of the current role. Roles:

    FOLLOWER --timeout--> PRE_CANDIDATE --majority pre-votes--> CANDIDATE
    CANDIDATE --majority votes--> LEADER --newer term / lost quorum--> FOLLOWER

Safety rules the code relies on, each enforced at one place:

- Persist before you speak: every message other than a leader's replication
  traffic waits in ``_msgs_after`` until the driver has made the hard state and
  entries durable (``_send``).
- A leader counts its own log toward commitment only once durable
  (``advance``), and commits only entries of its own term (``_maybe_commit``,
  Raft §5.4.2 / Figure 8); it appends a no-op on election so that happens soon.
- PreVote (thesis §9.6) keeps a node that cannot win from raising terms;
  CheckQuorum (§6.2) makes a leader that stopped hearing from a majority step
  down within an election timeout; with CheckQuorum on, a node that heard
  from a leader within the minimum election timeout ignores vote requests
  (§4.2.3), so a returning node cannot depose a healthy leader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from . import confchange
from .confchange import ChangeType, ConfChange
from .errors import ConfChangeRejected, InvalidChange, NotLeader, ProposalDropped
from .log import RaftLog
from .messages import (
    LEADER_MESSAGES,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from .progress import Progress, ProgressState
from .quorum import VoteResult, committed_index, tally
from .ready import ReadState, Ready, SoftState
from .types import (
    NONE,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Index,
    NodeId,
    Rand,
    Restored,
    Role,
    Snapshot,
    Term,
)


@dataclass(frozen=True, slots=True)
class Config:
    id: NodeId
    # Ticks, never seconds: the driver decides how long a tick is.
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 256  # unacknowledged AppendEntries per follower
    max_msg_entries: int = 64
    max_msg_bytes: int = 1 << 20
    max_uncommitted_bytes: int = 64 << 20  # 0: unlimited
    # Committed entries handed out per Ready: a driver applies them before it does
    # anything else, so a burst of thousands would hold it (and its heartbeats) for long.
    max_committed_per_ready: int = 512
    # A learner may be promoted only when at most this many entries behind.
    learner_catchup_entries: int = 100

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("node id must be positive")
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")
        if self.max_inflight < 1 or self.max_msg_entries < 1 or self.max_committed_per_ready < 1:
            raise ValueError(
                "max_inflight, max_msg_entries and max_committed_per_ready must be >= 1"
            )


@dataclass(frozen=True, slots=True)
class PeerStatus:
    id: NodeId
    voter: bool
    match: Index
    next: Index
    state: str
    ticks_since_ack: int


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: Term
    vote: NodeId
    leader: NodeId
    commit: Index
    applied: Index
    last_index: Index
    conf: ConfState
    peers: tuple[PeerStatus, ...]  # leader only


class RaftNode:
    def __init__(self, config: Config, rng: Rand, restored: Restored | None = None) -> None:
        restored = restored or Restored()
        self.id = config.id
        self.cfg = config
        self._rng = rng
        self.log = RaftLog(restored)
        hs = restored.hard_state
        self.term = hs.term
        self.vote = hs.vote
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.progress: dict[NodeId, Progress] = {}
        self._votes: dict[NodeId, bool] = {}
        self._msgs: list[Message] = []  # may be sent at once
        self._msgs_after: list[Message] = []  # only after the Ready is durable
        self._read_states: list[ReadState] = []
        self._ticks = 0  # monotonic, for CheckQuorum bookkeeping
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._transferee = NONE
        # ReadIndex (thesis §6.4): rounds of heartbeats confirm leadership.
        self._read_seq = 0
        self._pending_reads: list[tuple[int, Index, list[object]]] = []
        self._reads_before_commit: list[object] = []  # until an entry of our term commits
        self._uncommitted_bytes = 0
        self._term_start = Index(0)  # index of this leader's no-op
        self._prev_hs = HardState(self.term, self.vote, self.log.committed)
        self._prev_ss = SoftState(Role.FOLLOWER, NONE)
        self._ready_out: Ready | None = None
        self._bcast_pending = False
        self._become_follower(self.term, NONE)

    # ---- queries -------------------------------------------------------------------

    @property
    def conf(self) -> ConfState:
        return self.log.latest_conf()[1]

    def is_voter(self) -> bool:
        return self.id in self.conf.voters

    def status(self) -> Status:
        peers = tuple(
            PeerStatus(
                id=nid,
                voter=nid in self.conf.voters,
                match=pr.match,
                next=pr.next,
                state=pr.state.value,
                ticks_since_ack=self._ticks - pr.last_ack_tick,
            )
            for nid, pr in sorted(self.progress.items())
        )
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader=self.leader,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            conf=self.conf,
            peers=peers,
        )

    # ---- time ----------------------------------------------------------------------

    def tick(self) -> None:
        self._ticks += 1
        match self.role:
            case Role.LEADER:
                self._tick_leader()
            case Role.FOLLOWER | Role.PRE_CANDIDATE | Role.CANDIDATE:
                self._tick_election()
            case _:
                assert_never(self.role)

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self.campaign()

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.cfg.election_ticks:
            self._election_elapsed = 0
            self._transferee = NONE  # a transfer that did not finish in time is abandoned
        if self.cfg.check_quorum and not self._quorum_active():
            # Thesis §6.2: a leader that cannot hear a majority steps down, so
            # clients stop waiting on it and its lease-holding followers move on.
            self._become_follower(self.term, NONE)
            return
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(0)

    def _quorum_active(self) -> bool:
        voters = self.conf.voters
        active = 0
        for v in voters:
            if v == self.id:
                active += 1
                continue
            pr = self.progress.get(v)
            if pr is not None and self._ticks - pr.last_ack_tick < self.cfg.election_ticks:
                active += 1
        return active >= len(voters) // 2 + 1

    # ---- elections -----------------------------------------------------------------

    def campaign(self, transfer: bool = False) -> None:
        """Start an election now (a timeout does this; tests and TimeoutNow too).

        ``transfer``: asked by the leader (TimeoutNow): skip PreVote, and ask
        voters to set their leader lease aside.
        """
        if self.role is Role.LEADER or not self.is_voter() or self.log.pending_snapshot:
            return
        self._campaign(pre=self.cfg.pre_vote and not transfer, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term = Term(self.term + 1)
        else:
            self._become_candidate()
            term = self.term
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for v in self.conf.voters:
            if v != self.id:
                self._send(VoteRequest(self.id, v, term, last_index, last_term, pre, transfer))
        self._record_vote(self.id, True)

    def _record_vote(self, voter: NodeId, granted: bool) -> None:
        self._votes.setdefault(voter, granted)
        match tally(self.conf.voters, self._votes):
            case VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)  # pre-vote won: the real election
                else:
                    self._become_leader()
            case VoteResult.LOST:
                self._become_follower(self.term, NONE)
            case VoteResult.PENDING:
                pass

    def _handle_vote_request(self, m: VoteRequest) -> None:
        # Thesis §9.6 / etcd: we may vote for m.src if we already did, or if we
        # have voted for nobody and know no leader; a pre-vote for a future term
        # commits us to nothing, so it only needs the log check.
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.leader == NONE)
            or (m.pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(VoteResponse(self.id, m.src, m.term, True, m.pre))
            if not m.pre:
                self._election_elapsed = 0
                self.vote = m.src
        else:
            self._send(VoteResponse(self.id, m.src, self.term, False, m.pre))

    def _reset(self, term: Term) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # Raft §5.2: a timeout drawn from [E, 2E) makes split votes rare.
        e = self.cfg.election_ticks
        self._randomized_timeout = e + self._rng.randrange(0, e)
        self._transferee = NONE
        self._votes = {}
        self.progress = {}
        self._pending_reads = []
        self._reads_before_commit = []

    def _become_follower(self, term: Term, leader: NodeId) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: a pre-vote that fails leaves no trace.
        self._votes = {}
        self.role = Role.PRE_CANDIDATE
        self.leader = NONE

    def _become_candidate(self) -> None:
        self._reset(Term(self.term + 1))
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE, self.role
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        last = self.log.last_index()
        for nid in self.conf.members():
            self.progress[nid] = Progress(last + 1, self.cfg.max_inflight, self._ticks)
        if self.id in self.progress:
            me = self.progress[self.id]
            me.match = self.log.stabled
            me.become_replicate()
        self._uncommitted_bytes = 0
        # Raft §8: a no-op of our term lets us commit (and so learn the commit
        # index, serve ReadIndex, change membership) without waiting for a client.
        self._term_start = Index(last + 1)
        self._append([Entry(Index(last + 1), self.term, EntryKind.NOOP)])

    # ---- input from peers ----------------------------------------------------------

    def step(self, m: Message) -> None:
        if m.dst != self.id:
            return
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader != NONE
                    and self._election_elapsed < self.cfg.election_ticks
                )
                if in_lease and not m.transfer:
                    return  # leader stickiness: we heard from a live leader recently
            if isinstance(m, VoteRequest) and m.pre:
                pass  # a pre-vote never changes our term
            elif isinstance(m, VoteResponse) and m.pre and m.granted:
                pass  # granted pre-votes carry the term we are about to campaign in
            elif isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            self._step_stale(m)
            return

        if isinstance(m, VoteRequest):
            self._handle_vote_request(m)
            return
        match self.role:
            case Role.FOLLOWER:
                self._step_follower(m)
            case Role.PRE_CANDIDATE | Role.CANDIDATE:
                self._step_candidate(m)
            case Role.LEADER:
                self._step_leader(m)
            case _:
                assert_never(self.role)

    def _step_stale(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat) and (
            self.cfg.check_quorum or self.cfg.pre_vote
        ):
            # A leader from an older term that cannot learn of the newer one
            # (PreVote kept us from telling it through a vote) hears it here.
            self._send(AppendResponse(self.id, m.src, self.term, Index(0)))
        elif isinstance(m, VoteRequest) and m.pre:
            # Tell a lagging pre-candidate our term, so it can catch up.
            self._send(VoteResponse(self.id, m.src, self.term, False, True))

    def _step_follower(self, m: Message) -> None:
        match m:
            case AppendEntries():
                self._election_elapsed = 0
                self.leader = m.src
                self._handle_append(m)
            case Heartbeat():
                self._election_elapsed = 0
                self.leader = m.src
                self._handle_heartbeat(m)
            case InstallSnapshot():
                self._election_elapsed = 0
                self.leader = m.src
                self._handle_snapshot(m)
            case TimeoutNow():
                self.campaign(transfer=True)
            case AppendResponse() | HeartbeatResponse() | VoteResponse() | VoteRequest():
                pass  # stale answers to a role we no longer have

    def _step_candidate(self, m: Message) -> None:
        match m:
            case AppendEntries():
                self._become_follower(m.term, m.src)
                self._handle_append(m)
            case Heartbeat():
                self._become_follower(m.term, m.src)
                self._handle_heartbeat(m)
            case InstallSnapshot():
                self._become_follower(m.term, m.src)
                self._handle_snapshot(m)
            case VoteResponse():
                # Older terms were dropped in step(); a rejection may carry our own term.
                if m.pre == (self.role is Role.PRE_CANDIDATE):
                    self._record_vote(m.src, m.granted)
            case AppendResponse() | HeartbeatResponse() | TimeoutNow() | VoteRequest():
                pass

    def _step_leader(self, m: Message) -> None:
        match m:
            case AppendResponse():
                self._handle_append_response(m)
            case HeartbeatResponse():
                self._handle_heartbeat_response(m)
            case AppendEntries() | Heartbeat() | InstallSnapshot():
                raise AssertionError(f"two leaders in term {self.term}: {self.id} and {m.src}")
            case VoteResponse() | TimeoutNow() | VoteRequest():
                pass

    # ---- follower handlers ---------------------------------------------------------

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_index < log.committed:
            # Everything up to our commit matches any leader's log; say so and
            # let the leader continue from there.
            self._send(AppendResponse(self.id, m.src, self.term, log.committed))
            return
        last_new = self._append_from_leader(m)
        if last_new is not None:
            self._send(AppendResponse(self.id, m.src, self.term, last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.prev_index, log.last_index()), m.prev_term
        )
        self._send(
            AppendResponse(self.id, m.src, self.term, m.prev_index, True, hint_index, hint_term)
        )

    def _append_from_leader(self, m: AppendEntries) -> Index | None:
        """Seam for sim/mutants.py: the Figure 2 receiver rules, in log.maybe_append."""
        return self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        # The leader sends min(our match, its commit): always within our log.
        self.log.commit_to(m.commit)
        self._send(HeartbeatResponse(self.id, m.src, self.term, m.read_seq))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        meta = m.snapshot.meta
        log = self.log
        if meta.index <= log.committed:
            self._send(AppendResponse(self.id, m.src, self.term, log.committed))
            return
        if log.match_term(meta.index, meta.term):
            # We already hold the entries the snapshot covers: just commit them.
            log.commit_to(meta.index)
        else:
            log.restore(m.snapshot)
        self._send(AppendResponse(self.id, m.src, self.term, log.committed))

    # ---- leader handlers -----------------------------------------------------------

    def _handle_append_response(self, m: AppendResponse) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.last_ack_tick = self._ticks
        if m.reject:
            probe = m.hint_index
            if m.hint_term > 0:
                probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease(m.index, probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.src, send_empty=True)
            return
        was_paused = pr.is_paused()
        # A probe answered with what we already knew still proves the logs agree there.
        if not pr.maybe_update(m.index) and not (
            pr.match == m.index and pr.state is ProgressState.PROBE
        ):
            return
        match pr.state:
            case ProgressState.PROBE:
                pr.become_replicate()
            case ProgressState.SNAPSHOT:
                if pr.match + 1 >= self.log.first_index():
                    pr.become_probe()
                    pr.become_replicate()
            case ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
        if self._maybe_commit():
            if self.role is not Role.LEADER:
                return  # the commit removed us from the configuration: we stepped down
        elif was_paused:
            self._maybe_send_append(m.src, send_empty=False)
        while self._maybe_send_append(m.src, send_empty=False):
            pass
        if m.src == self._transferee and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, m.src, self.term))

    def _handle_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.last_ack_tick = self._ticks
        pr.probe_sent = False  # the peer is alive: a lost probe is retried now
        if (
            pr.state is ProgressState.SNAPSHOT
            and self._ticks - pr.snapshot_tick >= self.cfg.election_ticks
        ):
            pr.become_probe()  # the snapshot was probably lost: start over
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first()
        if pr.match < self.log.last_index():
            # An empty append works as a probe if the last ones were lost.
            self._maybe_send_append(m.src, send_empty=True)
        if m.read_seq and m.read_seq > pr.read_ack:
            pr.read_ack = m.read_seq
            self._maybe_release_reads()

    def _maybe_commit(self) -> bool:
        match = {nid: pr.match for nid, pr in self.progress.items()}
        n = committed_index(self.conf.voters, match)
        if n <= self.log.committed or not self._can_commit_at(Index(n)):
            return False
        old = self.log.committed
        self.log.commit_to(n)
        self._on_commit(old)
        return True

    def _can_commit_at(self, index: Index) -> bool:
        """Raft §5.4.2: only an entry of the leader's own term is committed by counting
        replicas; earlier ones commit with it (seam for sim/mutants.py)."""
        return self.log.term(index) == self.term

    def _on_commit(self, old: Index) -> None:
        log = self.log
        lo = max(old + 1, self._term_start)
        for i in range(lo, log.committed + 1):
            self._uncommitted_bytes -= log.entry(i).size()
        self._uncommitted_bytes = max(0, self._uncommitted_bytes)
        if self._reads_before_commit and log.term(log.committed) == self.term:
            waiting, self._reads_before_commit = self._reads_before_commit, []
            self._start_read_round(waiting)
        conf_index, conf = log.latest_conf()
        if self.id not in conf.voters and conf_index <= log.committed:
            # Thesis §4.2.2: a leader removed from the configuration steps down
            # once the configuration without it is committed.
            self._become_follower(self.term, NONE)
            return
        self._maybe_release_reads()

    # ---- sending -------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if isinstance(m, LEADER_MESSAGES):
            self._msgs.append(m)
        else:
            self._msgs_after.append(m)

    def _maybe_send_append(self, to: NodeId, send_empty: bool) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        assert prev <= log.last_index(), f"next {pr.next} of {to} beyond our log"
        prev_term = log.term(prev)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        entries: tuple[Entry, ...] = ()
        if pr.next <= log.last_index():
            entries = log.slice(pr.next, self.cfg.max_msg_entries, self.cfg.max_msg_bytes)
        elif not send_empty:
            return False
        if not entries and not send_empty:
            return False
        self._send(
            AppendEntries(self.id, to, self.term, Index(prev), prev_term, entries, log.committed)
        )
        pr.sent_append(prev + len(entries), len(entries))
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self.log.snapshot
        assert snap is not None, "entries compacted without a snapshot"
        self._send(InstallSnapshot(self.id, to, self.term, snap))
        pr.become_snapshot(snap.meta.index, self._ticks)
        return True

    def _bcast_append(self) -> None:
        for nid in sorted(self.progress):
            if nid != self.id:
                self._maybe_send_append(nid, send_empty=False)

    def _bcast_heartbeat(self, read_seq: int) -> None:
        for nid, pr in sorted(self.progress.items()):
            if nid != self.id:
                commit = Index(min(pr.match, self.log.committed))
                self._send(Heartbeat(self.id, nid, self.term, commit, read_seq))

    # ---- client requests -----------------------------------------------------------

    def propose(self, data: bytes) -> Index:
        """Append a command; its index, or a RaftError if it was definitely not appended."""
        return self._propose(EntryKind.NORMAL, data)

    def _propose(self, kind: EntryKind, data: bytes) -> Index:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self._transferee != NONE:
            raise ProposalDropped(f"leadership transfer to {self._transferee} in progress")
        size = len(data) + 16
        limit = self.cfg.max_uncommitted_bytes
        if limit and self._uncommitted_bytes > 0 and self._uncommitted_bytes + size > limit:
            raise ProposalDropped("too much uncommitted data; retry later")
        index = Index(self.log.last_index() + 1)
        self._append([Entry(index, self.term, kind, data)])
        return index

    def _append(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._uncommitted_bytes += sum(e.size() for e in entries)
        # Replicate at the next ready(): everything proposed until then travels in
        # one AppendEntries per follower instead of one per proposal. Our own copy
        # counts once durable (see advance).
        self._bcast_pending = True

    def propose_conf_change(self, cc: ConfChange) -> Index:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        log = self.log
        if log.term(log.committed) != self.term:
            raise ConfChangeRejected("leader has not yet committed an entry of its term")
        conf_index, conf = log.latest_conf()
        if conf_index > log.committed:
            raise ConfChangeRejected(
                f"configuration change at index {conf_index} not committed yet"
            )
        new = confchange.apply_change(conf, cc)
        if cc.type is ChangeType.PROMOTE:
            pr = self.progress.get(cc.node)
            behind = log.last_index() - (pr.match if pr else 0)
            if pr is None or pr.match == 0 or behind > self.cfg.learner_catchup_entries:
                raise ConfChangeRejected(
                    f"learner {cc.node} has not caught up ({behind} entries behind)"
                )
        index = self._propose(EntryKind.CONFIG, confchange.encode(new, cc))
        self._sync_progress_with_conf()
        self._maybe_commit()  # the new majority may already hold everything
        return index

    def _sync_progress_with_conf(self) -> None:
        members = set(self.conf.members())
        for nid in sorted(members - set(self.progress)):
            pr = Progress(self.log.last_index() + 1, self.cfg.max_inflight, self._ticks)
            self.progress[nid] = pr
            self._maybe_send_append(nid, send_empty=True)
        for nid in sorted(set(self.progress) - members):
            if nid != self.id:
                del self.progress[nid]
        if self._transferee not in members:
            self._transferee = NONE

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to ``to`` (thesis §3.10): catch it up, then TimeoutNow."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if to == self.id:
            return
        if to not in self.conf.voters:
            raise InvalidChange(f"node {to} is not a voter")
        self._transferee = to
        self._election_elapsed = 0  # the transfer must finish within an election timeout
        pr = self.progress[to]
        if pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, to, self.term))
        else:
            self._maybe_send_append(to, send_empty=True)

    def read_index(self, context: object) -> None:
        """Linearizable read (thesis §6.4): a ReadState appears in a later Ready."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.conf.voters == (self.id,):
            self._read_states.append(ReadState(self.log.committed, context))
            return
        if self.log.term(self.log.committed) != self.term:
            # Until our no-op commits we do not know the commit index.
            self._reads_before_commit.append(context)
            return
        self._start_read_round([context])

    def _start_read_round(self, contexts: list[object]) -> None:
        self._read_seq += 1
        self._pending_reads.append((self._read_seq, self.log.committed, contexts))
        self._bcast_heartbeat(self._read_seq)

    def _maybe_release_reads(self) -> None:
        if not self._pending_reads:
            return
        acks = {nid: pr.read_ack for nid, pr in self.progress.items()}
        acks[self.id] = self._read_seq
        confirmed = committed_index(self.conf.voters, acks)
        while self._pending_reads and self._pending_reads[0][0] <= confirmed:
            _, index, contexts = self._pending_reads.pop(0)
            self._read_states.extend(ReadState(index, c) for c in contexts)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Fold the log up to ``index`` (applied) into a snapshot of the state machine."""
        return self.log.compact(index, data)

    # ---- the Ready contract --------------------------------------------------------

    def has_ready(self) -> bool:
        if self._ready_out is not None:
            return False
        log = self.log
        hs = self._prev_hs
        return bool(
            self._bcast_pending
            or self._msgs
            or self._msgs_after
            or self._read_states
            or log.pending_snapshot is not None
            or log.stabled < log.last_index()
            or (log.committed > log.applied and log.pending_snapshot is None)
            or hs.term != self.term
            or hs.vote != self.vote
            or hs.commit != log.committed
            or self._prev_ss.role is not self.role
            or self._prev_ss.leader != self.leader
        )

    def ready(self) -> Ready:
        assert self._ready_out is None, "ready() again before advance()"
        if self._bcast_pending:
            self._bcast_pending = False
            if self.role is Role.LEADER:
                self._bcast_append()
        log = self.log
        prev, prev_ss = self._prev_hs, self._prev_ss
        term_vote_changed = prev.term != self.term or prev.vote != self.vote
        hs = None
        if term_vote_changed or prev.commit != log.committed:
            hs = self._prev_hs = HardState(self.term, self.vote, log.committed)
        ss = None
        if prev_ss.role is not self.role or prev_ss.leader != self.leader:
            ss = self._prev_ss = SoftState(self.role, self.leader)
        entries = log.unstable()
        snap = log.pending_snapshot
        rd = Ready(
            soft_state=ss,
            hard_state=hs,
            snapshot=snap,
            entries=entries,
            messages=tuple(self._msgs),
            persisted_messages=tuple(self._msgs_after),
            committed=log.next_committed(self.cfg.max_committed_per_ready),
            read_states=tuple(self._read_states),
            must_sync=bool(entries) or snap is not None or term_vote_changed,
        )
        self._msgs, self._msgs_after, self._read_states = [], [], []
        self._ready_out = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied everything in ``rd``."""
        assert rd is self._ready_out, "advance() with a Ready that is not the outstanding one"
        self._ready_out = None
        log = self.log
        if rd.snapshot is not None:
            if log.pending_snapshot is rd.snapshot:
                log.snapshot_applied()
            else:
                log.applied = max(log.applied, rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed:
            log.applied_to(rd.committed[-1].index)
        # A leader's own copy counts toward a majority only now that it is durable.
        me = self.progress.get(self.id) if self.role is Role.LEADER else None
        if me is not None and me.maybe_update(log.stabled):
            self._maybe_commit()
