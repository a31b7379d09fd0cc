"""Unit tests of the core's parts: log, quorum, progress, proposals, configuration."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coord.raft import (
    ChangeType,
    ConfChange,
    ConfChangeRejected,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Index,
    NodeId,
    NotLeader,
    RaftNode,
    Restored,
    Term,
    confchange,
)
from coord.raft.log import RaftLog
from coord.raft.progress import Inflights, Progress, ProgressState
from coord.raft.proposals import Outcome, ProposalTracker
from coord.raft.quorum import VoteResult, committed_index, tally


def ents(*terms: int, start: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(Index(start + k), Term(t)) for k, t in enumerate(terms))


def log_of(*terms: int, commit: int = 0) -> RaftLog:
    return RaftLog(Restored(HardState(commit=Index(commit)), None, ents(*terms)))


# ---- log --------------------------------------------------------------------------


def test_log_positions() -> None:
    log = log_of(1, 1, 2, 3)
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 4, 3)
    assert log.term(0) == 0 and log.term(3) == 2 and log.term(5) is None


def test_maybe_append_rejects_mismatched_prev() -> None:
    log = log_of(1, 1, 2)
    assert log.maybe_append(3, 1, 0, ents(2, start=4)) is None
    assert log.maybe_append(5, 2, 0, ()) is None  # beyond our log
    assert log.last_index() == 3


def test_maybe_append_returns_last_new_not_last_index() -> None:
    log = log_of(1, 1, 2, 2, 2)
    # A shorter, delayed message that matches must not cut entries 4-5: the
    # acknowledgement names only what the message covered.
    assert log.maybe_append(1, 1, 0, ents(1, 2, start=2)) == 3
    assert log.last_index() == 5


def test_maybe_append_truncates_only_at_first_conflict() -> None:
    log = log_of(1, 1, 2, 2, 2)
    assert log.maybe_append(2, 1, 0, ents(2, 3, start=3)) == 4
    assert [e.term for e in log.entries] == [1, 1, 2, 3]


def test_truncation_moves_stabled_back() -> None:
    log = log_of(1, 1, 2, 2)
    assert log.stabled == 4
    log.maybe_append(2, 1, 0, ents(3, start=3))
    assert log.stabled == 2 and [e.index for e in log.unstable()] == [3]


def test_truncating_committed_entries_is_refused() -> None:
    log = log_of(1, 1, 2, commit=3)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, ents(5, start=2))


def test_commit_is_bounded_by_what_the_message_covered() -> None:
    log = log_of(1, 1, 1, 1)
    log.maybe_append(1, 1, 4, ents(1, start=2))  # leader commit 4, message covers up to 2
    assert log.committed == 2


@pytest.mark.parametrize(
    ("terms", "index", "term", "want"),
    [
        ((1, 1, 2, 2, 3, 3), 6, 2, (4, 2)),  # skip the whole term-3 tail
        ((1, 1, 2, 2, 3, 3), 6, 3, (6, 3)),
        ((1, 1, 2, 2, 3, 3), 3, 1, (2, 1)),
        ((2, 2, 2), 3, 1, (0, 0)),
        ((1, 1), 9, 5, (2, 1)),  # past our log: start at our last index
    ],
)
def test_find_conflict_by_term(
    terms: tuple[int, ...], index: int, term: int, want: tuple[int, int]
) -> None:
    assert log_of(*terms).find_conflict_by_term(index, term) == want


def test_is_up_to_date() -> None:
    log = log_of(1, 2, 2)
    assert log.is_up_to_date(3, 2) and log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2) and not log.is_up_to_date(9, 1)


def test_stable_to_ignores_replaced_entries() -> None:
    log = log_of(1, 1)
    log.append([Entry(Index(3), Term(2))])
    log.stable_to(3, 1)  # a Ready for a different entry at 3
    assert log.stabled == 2
    log.stable_to(3, 2)
    assert log.stabled == 3


def test_compact_keeps_configuration_and_terms() -> None:
    entry, hs = confchange.bootstrap([1, 2, 3])
    log = RaftLog(Restored(hs, None, (entry, *ents(1, 2, 2, start=2))))
    log.commit_to(4)
    log.applied_to(4)
    snap = log.compact(3, b"state")
    assert snap.meta.index == 3 and snap.meta.term == 2
    assert snap.meta.conf.voters == (1, 2, 3)
    assert log.first_index() == 4 and log.term(3) == 2 and log.term(2) is None
    assert log.conf_at(3).voters == (1, 2, 3)


def test_config_follows_the_log_including_truncation() -> None:
    entry, hs = confchange.bootstrap([1, 2, 3])
    log = RaftLog(Restored(hs, None, (entry,)))
    new = confchange.apply_change(
        log.latest_conf()[1], ConfChange(ChangeType.ADD_LEARNER, NodeId(4))
    )
    cfg_entry = Entry(
        Index(2),
        Term(2),
        EntryKind.CONFIG,
        confchange.encode(new, ConfChange(ChangeType.ADD_LEARNER, NodeId(4))),
    )
    log.append([cfg_entry])
    assert log.latest_conf() == (2, ConfState((NodeId(1), NodeId(2), NodeId(3)), (NodeId(4),)))
    log.maybe_append(1, 1, 0, (Entry(Index(2), Term(3)),))  # the change is truncated away
    assert log.latest_conf()[1].learners == ()


# ---- quorum -----------------------------------------------------------------------


@given(st.lists(st.integers(0, 50), min_size=1, max_size=9))
def test_committed_index_is_held_by_a_majority(values: list[int]) -> None:
    voters = [NodeId(i + 1) for i in range(len(values))]
    match = dict(zip(voters, values, strict=True))
    c = committed_index(voters, match)
    need = len(values) // 2 + 1
    assert sum(1 for v in values if v >= c) >= need
    assert sum(1 for v in values if v >= c + 1) < need  # and it is the largest such


def test_tally() -> None:
    v = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)]
    assert tally(v, {NodeId(1): True, NodeId(2): True}) is VoteResult.PENDING
    assert tally(v, {NodeId(1): True, NodeId(2): True, NodeId(3): True}) is VoteResult.WON
    assert tally(v, {NodeId(1): True, NodeId(2): False, NodeId(3): False}) is VoteResult.LOST


# ---- progress -----------------------------------------------------------------------


def test_inflights_window() -> None:
    f = Inflights(3)
    for i in (5, 7, 9):
        f.add(i)
    assert f.full()
    f.free_le(7)
    assert f.count() == 1 and not f.full()


def test_success_never_moves_next_backwards() -> None:
    pr = Progress(10, 8, 0)
    pr.become_replicate()
    pr.match, pr.next = Index(20), Index(31)
    assert not pr.maybe_update(15)  # a stale, delayed success
    assert (pr.match, pr.next) == (20, 31)


def test_stale_rejections_are_ignored() -> None:
    pr = Progress(10, 8, 0)
    pr.become_replicate()
    pr.match = Index(20)
    assert not pr.maybe_decrease(18, 0)  # rejects something below match: stale
    pr.become_probe()
    assert pr.next == 21
    assert not pr.maybe_decrease(25, 3)  # answers another probe
    assert pr.maybe_decrease(20, 3) and pr.next == 21  # never below match + 1


def test_probe_pauses_until_answered() -> None:
    pr = Progress(5, 8, 0)
    assert pr.state is ProgressState.PROBE and not pr.is_paused()
    pr.sent_append(6, 2)
    assert pr.is_paused()
    pr.maybe_update(6)
    assert not pr.is_paused()


# ---- proposals ----------------------------------------------------------------------


def test_three_outcomes() -> None:
    t: ProposalTracker[str] = ProposalTracker()
    t.add(Index(5), Term(2), "a")
    t.add(Index(6), Term(2), "b")
    t.add(Index(7), Term(2), "c")
    got = t.applied(Entry(Index(5), Term(2)))
    assert got is not None and got.outcome is Outcome.COMMITTED
    got = t.applied(Entry(Index(6), Term(3)))  # someone else's entry won index 6
    assert got is not None and got.outcome is Outcome.REJECTED
    lost = t.leadership_lost()
    assert [(r.token, r.outcome) for r in lost] == [("c", Outcome.UNKNOWN)]
    assert t.applied(Entry(Index(9), Term(3))) is None


def test_leadership_regained_keeps_current_term() -> None:
    t: ProposalTracker[str] = ProposalTracker()
    t.add(Index(5), Term(2), "old")
    t.add(Index(8), Term(4), "new")
    assert [r.token for r in t.leadership_lost(keep_term=Term(4))] == ["old"]
    assert len(t) == 1
    assert t.leadership_lost(keep_term=Term(4)) == []  # nothing of another term is left
    t.add(Index(9), Term(4), "newer")
    got = t.applied(Entry(Index(8), Term(4)))
    assert got is not None and got.outcome is Outcome.COMMITTED
    assert [r.token for r in t.leadership_lost(keep_term=Term(5))] == ["newer"]
    assert len(t) == 0


# ---- configuration changes ----------------------------------------------------------


def test_conf_change_rules() -> None:
    conf = ConfState((NodeId(1), NodeId(2), NodeId(3)))
    with pytest.raises(ConfChangeRejected):
        confchange.apply_change(conf, ConfChange(ChangeType.ADD_LEARNER, NodeId(2)))
    with pytest.raises(ConfChangeRejected):
        confchange.apply_change(conf, ConfChange(ChangeType.PROMOTE, NodeId(4)))
    with pytest.raises(ConfChangeRejected):
        confchange.apply_change(ConfState((NodeId(1),)), ConfChange(ChangeType.REMOVE, NodeId(1)))
    new = confchange.apply_change(conf, ConfChange(ChangeType.REMOVE, NodeId(2)))
    assert new.voters == (1, 3)
    back, cc = confchange.decode(
        confchange.encode(new, ConfChange(ChangeType.REMOVE, NodeId(2), b"x"))
    )
    assert back == new and cc.context == b"x"


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        Config(id=NodeId(1), election_ticks=2, heartbeat_ticks=2)
    with pytest.raises(ValueError):
        Config(id=NodeId(0))


# ---- the node as a whole ------------------------------------------------------------


def single_node() -> RaftNode:
    entry, hs = confchange.bootstrap([1])
    return RaftNode(Config(id=NodeId(1)), random.Random(1), Restored(hs, None, (entry,)))


def test_single_node_commits_only_after_persisting() -> None:
    n = single_node()
    n.campaign()
    rd = n.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    assert [e.kind for e in rd.entries] == [EntryKind.NOOP]
    # Only the bootstrap configuration is committed; the no-op is not durable yet.
    assert [e.kind for e in rd.committed] == [EntryKind.CONFIG]
    n.advance(rd)
    rd = n.ready()
    assert [e.kind for e in rd.committed] == [EntryKind.NOOP]
    n.advance(rd)
    idx = n.propose(b"x")
    rd = n.ready()
    assert [e.index for e in rd.entries] == [idx] and rd.committed == ()
    n.advance(rd)
    assert [e.data for e in n.ready().committed] == [b"x"]


def test_ready_twice_without_advance_is_a_bug() -> None:
    n = single_node()
    n.campaign()
    n.ready()
    assert not n.has_ready()
    with pytest.raises(AssertionError):
        n.ready()


def test_follower_refuses_with_leader_hint() -> None:
    n = single_node()
    with pytest.raises(NotLeader):
        n.propose(b"x")
