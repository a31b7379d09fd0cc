"""Expected outcomes that a caller must handle: one tree, all ``RaftError``.

A proposal refused with any of these was *definitely not appended*: it can
never be applied. Broken invariants are assertions, not members of this tree.
"""

from __future__ import annotations

from .types import NONE, NodeId


class RaftError(Exception):
    """Base of every expected refusal from the core."""


class NotLeader(RaftError):
    """This node cannot accept the request; ``leader`` is its best guess (NONE: unknown)."""

    def __init__(self, leader: NodeId = NONE) -> None:
        super().__init__(f"not leader (leader hint: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader refused to append (leadership transfer under way, too much uncommitted)."""


class ConfChangeRejected(RaftError):
    """A membership change that would be unsafe now: asking again later may succeed."""


class InvalidChange(ConfChangeRejected):
    """A change that makes no sense in this configuration (adding a member twice,
    removing the last voter, handing leadership to a learner): asking again cannot help."""


class Compacted(RaftError):
    """The requested log position was discarded by a snapshot."""
