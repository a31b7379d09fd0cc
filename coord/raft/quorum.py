"""Majority arithmetic, kept apart so it can be tested on its own."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from .types import NodeId


def majority(n_voters: int) -> int:
    return n_voters // 2 + 1


def committed_index(voters: Iterable[NodeId], match: Mapping[NodeId, int]) -> int:
    """Largest index that a majority of ``voters`` hold (0 with no voters).

    Sorted descending, the value at position ``n // 2`` is held by at least
    ``n // 2 + 1`` voters: every voter before it holds at least as much.
    """
    values = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not values:
        return 0
    return values[len(values) // 2]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def tally(voters: Iterable[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON when a majority granted; LOST when a majority can no longer be reached."""
    vs = list(voters)
    need = majority(len(vs))
    granted = sum(1 for v in vs if votes.get(v) is True)
    rejected = sum(1 for v in vs if votes.get(v) is False)
    if granted >= need:
        return VoteResult.WON
    if len(vs) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
