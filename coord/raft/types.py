"""Value types of the Raft core: ids, entries, hard state, configurations, snapshots.

All are immutable. Node ids are ints (never strings) so that iterating sets and
dicts of them does not depend on PYTHONHASHSEED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType, Protocol

NodeId = NewType("NodeId", int)
Term = NewType("Term", int)
Index = NewType("Index", int)

NONE = NodeId(0)  # "no node": no vote cast, no known leader


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"

    @property
    def letter(self) -> str:
        return _ROLE_LETTERS[self]


_ROLE_LETTERS = {
    Role.FOLLOWER: "F",
    Role.PRE_CANDIDATE: "P",
    Role.CANDIDATE: "C",
    Role.LEADER: "L",
}


class EntryKind(enum.IntEnum):
    NORMAL = 0  # client command, opaque to the core
    NOOP = 1  # appended by every new leader (Raft §8: commits earlier terms' entries)
    CONFIG = 2  # a full new configuration (see confchange.py)


@dataclass(frozen=True, slots=True)
class Entry:
    index: Index
    term: Term
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def __post_init__(self) -> None:
        if self.index < 1 or self.term < 0:
            raise ValueError(f"bad entry position {self.index}/{self.term}")

    def size(self) -> int:
        # What counts against message and uncommitted-size limits: the payload
        # plus a fixed header estimate, so empty entries are not free.
        return len(self.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before the node speaks (Raft Figure 2 "persistent state").

    ``commit`` is persisted too, though safety does not need it: it lets a
    restarted node re-apply what it knows to be committed without a leader.
    """

    term: Term = Term(0)
    vote: NodeId = NONE
    commit: Index = Index(0)


@dataclass(frozen=True, slots=True)
class ConfState:
    """A cluster configuration: who votes and who only listens (learners).

    Invariant: voters and learners are disjoint; both sorted tuples.
    """

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        if set(self.voters) & set(self.learners):
            raise ValueError("a node cannot be both voter and learner")
        if list(self.voters) != sorted(set(self.voters)):
            raise ValueError("voters must be sorted and unique")
        if list(self.learners) != sorted(set(self.learners)):
            raise ValueError("learners must be sorted and unique")

    def members(self) -> tuple[NodeId, ...]:
        return tuple(sorted(self.voters + self.learners))

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: Index
    term: Term
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Restored:
    """What a node finds on its disk at start-up: handed to RaftNode().

    ``entries`` start right after ``snapshot`` (or at index 1 without one) and
    are all durable.
    """

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = field(default_factory=tuple)


class Rand(Protocol):
    """The only randomness the core uses: handed in, so the simulator owns the seed."""

    def randrange(self, start: int, stop: int, /) -> int: ...
