"""Deliberately broken Raft cores: proof that the simulator's checkers bite.

Each mutant changes one decision at a seam the real core exposes, the way a
plausible bug would. tests/test_mutants.py requires the simulator to flag each
one within a bounded number of seeds; ``python -m sim run ... --engine NAME``
runs a scenario on one.
"""

from __future__ import annotations

from coord.raft import Index, Message, RaftNode, ReadState, Role
from coord.raft.messages import AppendEntries, VoteResponse


class CommitByCounting(RaftNode):
    """Commits any entry a majority holds, whatever its term: the Figure 8 mistake."""

    def _can_commit_at(self, index: Index) -> bool:
        return True


class VoteBeforePersist(RaftNode):
    """Sends a vote grant before the vote is durable: a crash forgets it, and the
    node may vote again in the same term."""

    def _send(self, m: Message) -> None:
        if isinstance(m, VoteResponse) and m.granted and not m.pre:
            self._msgs.append(m)
        else:
            super()._send(m)


class TruncateOnAppend(RaftNode):
    """Cuts its log after every AppendEntries, even one that conflicts with nothing:
    a delayed, shorter message then erases entries it already acknowledged."""

    def _append_from_leader(self, m: AppendEntries) -> Index | None:
        last_new = super()._append_from_leader(m)
        log = self.log
        if last_new is not None and log.committed <= last_new < log.last_index():
            del log.entries[last_new - log.offset :]
            log.stabled = Index(min(log.stabled, last_new))
            while log.confs[-1][0] > last_new:
                log.confs.pop()
        return last_new


class ReadWithoutQuorum(RaftNode):
    """Serves ReadIndex from its own commit index without confirming leadership:
    a deposed leader that does not know it yet answers with stale data."""

    def read_index(self, context: object) -> None:
        if self.role is Role.LEADER:
            self._read_states.append(ReadState(self.log.committed, context))
            return
        super().read_index(context)


MUTANTS: dict[str, type[RaftNode]] = {
    "commit-by-counting": CommitByCounting,
    "vote-before-persist": VoteBeforePersist,
    "truncate-on-append": TruncateOnAppend,
    "read-without-quorum": ReadWithoutQuorum,
}
