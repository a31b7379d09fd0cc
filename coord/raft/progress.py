"""What a leader knows about each follower's log, and how fast it may feed it.

Theory of operation (after etcd-io/raft's tracker)
---------------------------------------------------
A follower is in one of three states:

- PROBE: the leader does not know where the logs agree. It sends one
  AppendEntries and waits (``probe_sent``) for the answer or for the next
  heartbeat response, so a rejected or lost probe costs one round trip, not a
  flood.
- REPLICATE: the logs agree up to ``match``; the leader streams entries,
  advancing ``next`` optimistically as it sends. At most ``max_inflight``
  messages are unacknowledged at once (``Inflights``): flow control that bounds
  what a slow follower can make the leader buffer.
- SNAPSHOT: the follower needs entries the leader compacted; a snapshot is on
  its way and nothing else is sent until it is acknowledged (or given up on).

Invariant: match < next. ``next`` never moves backwards on a *success* reply
(a stale success must not undo progress: that is the PySyncObj bug this design
exists to avoid); it moves back only on a rejection that is not stale.
"""

from __future__ import annotations

import enum
from collections import deque

from .types import Index


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Last indexes of unacknowledged AppendEntries, oldest first, bounded."""

    __slots__ = ("_q", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        assert not self.full(), "inflights overflow"
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        """Acknowledgement up to ``index`` frees every message it covers."""
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()


class Progress:
    __slots__ = (
        "inflights",
        "last_ack_tick",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "read_ack",
        "snapshot_tick",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, now_tick: int) -> None:
        self.match = Index(0)
        self.next = Index(next_index)
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        self.snapshot_tick = 0
        self.inflights = Inflights(max_inflight)
        # Tick of the last message heard from this peer in the current term:
        # CheckQuorum counts peers heard from within an election timeout.
        self.last_ack_tick = now_tick
        # Highest ReadIndex round this peer has echoed in the current term.
        self.read_ack = 0

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, {self.state.value}"
            f"{' paused' if self.is_paused() else ''}, inflight={self.inflights.count()})"
        )

    def become_probe(self) -> None:
        # Coming back from a snapshot, start right after it: the follower either
        # installed it or will reject and the hint will correct us.
        if self.state is ProgressState.SNAPSHOT:
            self.next = Index(max(self.match + 1, self.pending_snapshot + 1))
        else:
            self.next = Index(self.match + 1)
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = Index(self.match + 1)
        self.probe_sent = False
        self.pending_snapshot = Index(0)
        self.inflights.reset()

    def become_snapshot(self, index: int, now_tick: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = Index(index)
        self.snapshot_tick = now_tick
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, n: int) -> bool:
        """A success reply: the follower matches us up to ``n``. True if that is news."""
        updated = False
        if self.match < n:
            self.match = Index(n)
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = Index(n + 1)
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A rejection of ``prev_index == rejected``. False if stale (ignore it)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # refers to something already acknowledged
            # Entries past match are in doubt: resend from the hint (never below match).
            self.next = Index(max(self.match + 1, min(rejected, hint + 1)))
            return True
        if self.next - 1 != rejected:
            return False  # answers an older probe
        self.next = Index(max(self.match + 1, min(rejected, hint + 1), 1))
        self.probe_sent = False
        return True

    def sent_append(self, last_index: int, count: int) -> None:
        """Bookkeeping after an AppendEntries of ``count`` entries ending at ``last_index``."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = Index(last_index + 1)
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        match self.state:
            case ProgressState.PROBE:
                return self.probe_sent
            case ProgressState.REPLICATE:
                return self.inflights.full()
            case ProgressState.SNAPSHOT:
                return True
