"""Hypothesis drives a LockstepCluster one event at a time and checks Raft's safety.

Every interleaving is hypothesis's choice: which node ticks, which node handles
its Ready, which in-flight message is delivered, dropped or duplicated (so
messages are reordered freely), who proposes, who crashes (possibly between
sending a leader's replication traffic and persisting it) and restarts from
what it persisted, who compacts its log, which links are cut. After every step
the RaftChecker (sim/checkers/raft.py) must have reported nothing, at most one
live node may lead any term, and the committed prefixes of live nodes agree.

An assertion inside the core counts as a violation too (the simulator calls it
"node-assertion"): the core asserts its own invariants, e.g. that it is never
told to commit past its log.

The last tests run the very same machine on deliberately broken cores from
sim/mutants.py and require hypothesis to catch them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from coord.raft import Config, NodeId, NotLeader, ProposalDropped, RaftNode, Ready, Role
from coord.raft.messages import AppendResponse
from sim.checkers.raft import RaftChecker
from sim.lockstep import LockstepCluster
from sim.mutants import TruncateOnAppend

# Short timeouts only make elections reachable in fewer steps, and small
# AppendEntries put more of them in flight at once (more to reorder, partial
# replication); safety depends on neither. PreVote and CheckQuorum stay on.
CONFIG: dict[str, object] = {"election_ticks": 4, "heartbeat_ticks": 2, "max_msg_entries": 2}
# The classic protocol without PreVote / CheckQuorum: more elections, more
# terms, more log conflicts; one entry per AppendEntries.
PLAIN: dict[str, object] = {
    **CONFIG,
    "pre_vote": False,
    "check_quorum": False,
    "max_msg_entries": 1,
}

SETTLE_ROUNDS = 10
FAULTS = ("drop", "duplicate", "partition", "crash", "compact")

SETTINGS = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class SafetyViolation(Exception):
    """A broken Raft guarantee (checker report, direct invariant, core assertion)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def _core(fn: Callable[..., Any], *args: Any) -> Any:
    """Call into a node; its own assertions are safety violations, not test bugs."""
    try:
        return fn(*args)
    except AssertionError as exc:
        raise SafetyViolation("node-assertion", str(exc) or repr(exc)) from exc


class RaftMachine(RuleBasedStateMachine):
    voters: ClassVar[tuple[int, ...]] = (1, 2, 3)
    node_class: ClassVar[type[RaftNode]] = RaftNode
    config: ClassVar[dict[str, object]] = CONFIG

    def __init__(self) -> None:
        super().__init__()
        self.cluster = LockstepCluster(
            list(self.voters), config=self.config, node_class=self.node_class
        )
        self.checker = RaftChecker(self._report)
        self.seen: dict[int, tuple[Role, int]] = {}  # node -> (role, term) last observed
        self.acked: dict[int, tuple[int, int]] = {}  # node -> (term, highest index acknowledged)
        self.proposed = 0
        self.faults: frozenset[str] = frozenset()
        cfg = Config(id=NodeId(1), **self.config)  # type: ignore[arg-type]
        self.election_ticks, self.heartbeat_ticks = cfg.election_ticks, cfg.heartbeat_ticks

    def _report(self, kind: str, nodes: tuple[int, ...], detail: str) -> None:
        raise SafetyViolation(kind, f"{detail} (nodes {nodes})")

    # ---- helpers ------------------------------------------------------------------

    def _live(self) -> list[int]:
        return sorted(self.cluster.nodes)

    def _dead(self) -> list[int]:
        return [v for v in self.voters if v not in self.cluster.nodes]

    def _node(self, nid: int) -> RaftNode:
        return self.cluster.nodes[NodeId(nid)]

    def _with_ready(self) -> list[int]:
        return [nid for nid in self._live() if self._node(nid).has_ready()]

    def _observe(self, nid: int) -> None:
        """Tell the checker about a node that has just become leader (of a new term)."""
        node = self._node(nid)
        now = (node.role, int(node.term))
        if now != self.seen.get(nid) and node.role is Role.LEADER:
            self.checker.on_leader(nid, node)
        self.seen[nid] = now

    def _take_ready(self, nid: int) -> Ready:
        node = self._node(nid)
        rd: Ready = _core(node.ready)
        self.checker.on_ready(nid, node, rd)
        self._observe(nid)
        return rd

    def _handle_ready(self, nid: int) -> None:
        """LockstepCluster.handle_ready, in the Ready contract's order, plus the checker."""
        c, key = self.cluster, NodeId(nid)
        rd = self._take_ready(nid)
        c.inbox.extend(rd.messages)
        c.storage[key].save(rd)
        self._note_acks(nid, rd)
        c.inbox.extend(rd.persisted_messages)
        if rd.snapshot is not None:
            c.applied[key] = []
            c.restored_data[key] = [d for d in rd.snapshot.data.split(b"|") if d]
        for e in rd.committed:
            self.checker.on_apply(nid, e)
        c.applied[key].extend(rd.committed)
        _core(self._node(nid).advance, rd)

    def _note_acks(self, nid: int, rd: Ready) -> None:
        """Persist before you acknowledge: a successful AppendResponse for index i
        promises the leader (who counts it toward commitment) that entries up to i
        are durable here, and stay here for the rest of the term."""
        node, store = self._node(nid), self.cluster.storage[NodeId(nid)]
        durable = (store.snapshot.meta.index if store.snapshot else 0) + len(store.entries)
        for m in rd.persisted_messages:
            if not isinstance(m, AppendResponse) or m.reject or m.term != node.term:
                continue
            if m.index > durable:
                raise SafetyViolation(
                    "ack-not-durable",
                    f"n{nid} acknowledges index {m.index} in term {m.term} "
                    f"but has only {durable} entries on disk",
                )
            term, index = self.acked.get(nid, (0, 0))
            self.acked[nid] = (int(m.term), max(index, m.index) if term == m.term else m.index)

    def _step(self, m: Any) -> None:
        c = self.cluster
        if (m.src, m.dst) in c.cut or m.dst not in c.nodes:
            return
        _core(c.nodes[m.dst].step, m)

    def _pick(self, data: st.DataObject, among: list[int]) -> int:
        return data.draw(st.sampled_from(among))

    def _msg_index(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.cluster.inbox) - 1), label="k")

    # ---- what may go wrong in this run ----------------------------------------------

    @initialize(faults=st.frozensets(st.sampled_from(FAULTS)))
    def choose_faults(self, faults: frozenset[str]) -> None:
        """Swarm testing: each run enables its own subset of fault kinds.

        A run without crashes spends its steps elsewhere and reaches deeper
        states than one where every kind of trouble competes for each step; and
        a failing run shrinks towards the fewest fault kinds that still break it.
        """
        self.faults = faults

    def _may(self, fault: str) -> bool:
        return fault in self.faults

    # ---- time ---------------------------------------------------------------------

    @precondition(lambda self: self.cluster.nodes)
    @rule(data=st.data(), to_timeout=st.booleans())
    def tick(self, data: st.DataObject, to_timeout: bool) -> None:
        """One tick, or enough for the node's next timeout to fire: a leader's
        heartbeat (and quorum check), anyone else's election."""
        node = self._node(self._pick(data, self._live()))
        if not to_timeout:
            _core(node.tick)
            return
        before = (node.role, node.term)
        n = self.heartbeat_ticks if node.role is Role.LEADER else 2 * self.election_ticks
        for _ in range(n):
            _core(node.tick)
            if (node.role, node.term) != before:
                break

    # ---- the Ready loop -----------------------------------------------------------

    @precondition(lambda self: self._with_ready())
    @rule(data=st.data())
    def handle_ready(self, data: st.DataObject) -> None:
        self._handle_ready(self._pick(data, self._with_ready()))

    @precondition(lambda self: self._with_ready())
    @rule()
    def handle_all_readies(self) -> None:
        for nid in self._live():
            for _ in range(10):
                if not self._node(nid).has_ready():
                    break
                self._handle_ready(nid)

    @precondition(lambda self: self.cluster.inbox or self._with_ready())
    @rule()
    def settle(self) -> None:
        """Rounds of (every Ready, then every message in flight) until quiet: a
        stretch of calm, fair weather between the adversarial steps."""
        for _ in range(SETTLE_ROUNDS):
            self.handle_all_readies()
            if not self.cluster.inbox:
                return
            self._deliver_in_order()

    # ---- the network --------------------------------------------------------------

    @precondition(lambda self: self.cluster.inbox)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Deliver the k-th message in flight: any order is possible."""
        self._step(self.cluster.inbox.pop(self._msg_index(data)))

    @precondition(lambda self: self.cluster.inbox)
    @rule(newest_first=st.booleans())
    def deliver_all_in_flight(self, newest_first: bool) -> None:
        """Deliver everything in flight now, in send order or newest first."""
        batch, self.cluster.inbox = self.cluster.inbox, []
        for m in reversed(batch) if newest_first else batch:
            self._step(m)

    def _deliver_in_order(self) -> None:
        batch, self.cluster.inbox = self.cluster.inbox, []
        for m in batch:
            self._step(m)

    @precondition(lambda self: self._may("drop") and self.cluster.inbox)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.cluster.inbox.pop(self._msg_index(data))

    @precondition(lambda self: self._may("duplicate") and self.cluster.inbox)
    @rule(data=st.data(), now=st.booleans())
    def duplicate(self, data: st.DataObject, now: bool) -> None:
        """The network copies the k-th message: deliver the copy ``now`` (the original
        stays in flight for later), or put it behind everything in flight."""
        m = self.cluster.inbox[self._msg_index(data)]
        if now:
            self._step(m)
        else:
            self.cluster.inbox.append(m)

    @precondition(lambda self: self._may("duplicate") and 0 < len(self.cluster.inbox) <= 16)
    @rule()
    def replay_in_flight(self) -> None:
        """The network repeats everything in flight: each copy lands after every original."""
        self.cluster.inbox.extend(list(self.cluster.inbox))

    @precondition(lambda self: self._may("partition"))
    @rule(data=st.data(), how=st.sampled_from(["heal", "cut", "isolate"]))
    def partition(self, data: st.DataObject, how: str) -> None:
        """Cut one direction of one link, or every link of a node; or heal them all."""
        cut = self.cluster.cut
        if how == "heal":
            cut.clear()
            return
        nid = self._pick(data, list(self.voters))
        if how == "cut":
            cut.add((nid, self._pick(data, [v for v in self.voters if v != nid])))
            return
        for other in self.voters:
            if other != nid:
                cut |= {(nid, other), (other, nid)}

    # ---- clients ------------------------------------------------------------------

    def _leaders(self) -> list[int]:
        return [nid for nid in self._live() if self._node(nid).role is Role.LEADER]

    @precondition(lambda self: self._leaders())
    @rule(data=st.data(), flush=st.booleans())
    def propose(self, data: st.DataObject, flush: bool) -> None:
        """A client write at a node that believes it leads (it may have been deposed);
        ``flush``: the leader then handles its Ready at once (sends the entry out)."""
        nid = self._pick(data, self._leaders())
        self.proposed += 1
        with contextlib.suppress(NotLeader, ProposalDropped):  # expected refusals
            _core(self._node(nid).propose, b"v%d" % self.proposed)
        if flush and self._node(nid).has_ready():
            self._handle_ready(nid)

    # ---- failures and maintenance -------------------------------------------------

    def _crash(self, nid: int) -> None:
        self.cluster.crash(nid)
        self.checker.forget_node(nid)
        self.seen.pop(nid, None)

    @precondition(lambda self: self._may("crash") and self.cluster.nodes)
    @rule(data=st.data(), mid_ready=st.booleans())
    def crash(self, data: st.DataObject, mid_ready: bool) -> None:
        """Crash a node; ``mid_ready``: after sending what the Ready allows before
        its disk write (a leader's replication traffic), but before that write."""
        ready = self._with_ready()
        if mid_ready and ready:
            nid = self._pick(data, ready)
            rd = self._take_ready(nid)
            self.cluster.inbox.extend(rd.messages)
        else:
            nid = self._pick(data, self._live())
        self._crash(nid)

    @precondition(lambda self: self._dead())
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """Come back with exactly what was persisted through handled Readys."""
        nid = self._pick(data, self._dead())
        _core(self.cluster.restart, nid)
        self._observe(nid)

    def _compactable(self) -> list[int]:
        return [n for n in self._live() if self._node(n).log.applied > self._node(n).log.offset]

    @precondition(lambda self: self._may("compact") and self._compactable())
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        _core(self.cluster.compact, self._pick(data, self._compactable()))

    # ---- safety -------------------------------------------------------------------

    @invariant()
    def safe(self) -> None:
        live = self._live()
        for nid in live:
            self._observe(nid)
        leaders: dict[int, int] = {}
        for nid in live:
            node = self._node(nid)
            term, acked = self.acked.get(nid, (0, 0))
            if node.term == term and node.log.last_index() < acked:
                raise SafetyViolation(
                    "acknowledged-entry-lost",
                    f"n{nid} acknowledged index {acked} in term {term}, "
                    f"now holds only {node.log.last_index()}",
                )
            if node.role is Role.LEADER:
                other = leaders.setdefault(int(node.term), nid)
                if other != nid:
                    raise SafetyViolation(
                        "election-safety", f"n{other} and n{nid} both lead term {node.term}"
                    )
        for i, a in enumerate(live):
            la = self._node(a).log
            for b in live[i + 1 :]:
                lb = self._node(b).log
                lo = max(la.offset, lb.offset, 1)
                for index in range(lo, min(la.committed, lb.committed) + 1):
                    ta, tb = la.term(index), lb.term(index)
                    if ta != tb:
                        raise SafetyViolation(
                            "committed-prefix",
                            f"committed index {index}: term {ta} on n{a}, {tb} on n{b}",
                        )


def _machine(
    voters: tuple[int, ...],
    node_class: type[RaftNode] = RaftNode,
    config: dict[str, object] = CONFIG,
) -> type[RaftMachine]:
    name = f"Raft{len(voters)}{node_class.__name__}"
    attrs = {"voters": voters, "node_class": node_class, "config": config}
    return type(name, (RaftMachine,), attrs)


Raft3 = _machine((1, 2, 3))
Raft3Plain = _machine((1, 2, 3), config=PLAIN)
Raft5 = _machine((1, 2, 3, 4, 5))

TestRaft3 = Raft3.TestCase
TestRaft3.settings = SETTINGS
TestRaft3Plain = Raft3Plain.TestCase
TestRaft3Plain.settings = SETTINGS
TestRaft5 = Raft5.TestCase
TestRaft5.settings = settings(SETTINGS, max_examples=60)


# ---- the machine bites --------------------------------------------------------------

MUTANT_SETTINGS = settings(
    SETTINGS,
    max_examples=1000,
    phases=[Phase.explicit, Phase.generate],  # finding it is the point: skip shrinking
    print_blob=False,
)


def test_truncate_on_append_mutant_is_caught() -> None:
    """A follower that cuts its log after any AppendEntries, so a stale, shorter one
    erases entries it acknowledged. Seen as ack-not-durable / acknowledged-entry-lost
    right away; through the RaftChecker or the core's own assertion only later (the
    leader must commit past the cut and tell the follower), which takes several times
    the budget."""
    with pytest.raises(SafetyViolation):
        run_state_machine_as_test(_machine((1, 2, 3), TruncateOnAppend), settings=MUTANT_SETTINGS)
