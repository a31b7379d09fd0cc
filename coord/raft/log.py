"""The replicated log as one node holds it in memory.

Theory of operation
-------------------
The log is ``entries`` after a compaction point ``offset`` (the index of the
last entry folded into a snapshot; 0 for none). Three cursors walk it:

    offset <= applied <= committed <= last_index
    offset <= stabled <= last_index

``stabled`` is the last index the driver has made durable. Entries past it are
handed out in the next Ready for persistence. A truncation (a new leader's
conflicting entries) can move ``stabled`` backwards: the replaced entries were
durable, their replacements are not yet.

``applied`` never passes what is durable: committed entries are handed to the
driver in the same Ready that persists them, and the driver applies only after
persisting (see ready.py).

The configuration history lives here too, because it moves with the log: a
CONFIG entry takes effect when appended and is undone when truncated away.
"""

from __future__ import annotations

from . import confchange
from .types import ConfState, Entry, EntryKind, Index, Restored, Snapshot, SnapshotMeta, Term


class RaftLog:
    def __init__(self, restored: Restored) -> None:
        snap = restored.snapshot
        # Latest snapshot (durable, or in flight to disk): what we send laggards.
        self.snapshot: Snapshot | None = snap
        # Received from a leader, not yet persisted and applied by the driver.
        self.pending_snapshot: Snapshot | None = None
        self.offset = snap.meta.index if snap else Index(0)
        self.offset_term = snap.meta.term if snap else Term(0)
        self.entries: list[Entry] = []
        # (index, conf) for every configuration still in the log, oldest first;
        # the first element is the configuration at ``offset``.
        # Invariant: confs is non-empty and its indexes increase.
        self.confs: list[tuple[Index, ConfState]] = [
            (self.offset, snap.meta.conf if snap else ConfState())
        ]
        expected = self.offset + 1
        for e in restored.entries:
            if e.index != expected:
                raise ValueError(f"restored log is not contiguous at index {e.index}")
            expected += 1
        self._extend(list(restored.entries))
        self.stabled = self.last_index()
        self.committed = Index(max(self.offset, min(restored.hard_state.commit, self.last_index())))
        self.applied = self.offset

    # ---- reading ---------------------------------------------------------------

    def first_index(self) -> Index:
        return Index(self.offset + 1)

    def last_index(self) -> Index:
        return Index(self.offset + len(self.entries))

    def term(self, i: int) -> Term | None:
        """Term of entry ``i``; None when compacted away or not (yet) in the log."""
        if i == self.offset:
            return self.offset_term
        k = i - self.offset - 1
        if k < 0 or k >= len(self.entries):
            return None
        return self.entries[k].term

    def last_term(self) -> Term:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def entry(self, i: int) -> Entry:
        return self.entries[i - self.offset - 1]

    def match_term(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, max_count: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from ``lo`` on, at most ``max_count`` and about ``max_bytes`` (at least one)."""
        assert lo > self.offset, "slice below the compaction point"
        k = lo - self.offset - 1
        out = self.entries[k : k + max_count]
        size = 0
        for n, e in enumerate(out):
            size += e.size()
            if size > max_bytes and n > 0:
                return tuple(out[:n])
        return tuple(out)

    def unstable(self) -> tuple[Entry, ...]:
        return tuple(self.entries[self.stabled - self.offset :])

    def next_committed(self, limit: int) -> tuple[Entry, ...]:
        """Committed entries not yet handed out for applying: the first ``limit`` of them."""
        if self.pending_snapshot is not None or self.committed <= self.applied:
            return ()
        lo = self.applied - self.offset
        hi = min(self.committed - self.offset, lo + limit)
        return tuple(self.entries[lo:hi])

    def find_conflict(self, entries: tuple[Entry, ...]) -> Index:
        """First index where ``entries`` disagree with our log, or 0 if none.

        Entries at or below ``offset`` are compacted, hence committed, hence the
        same as the leader's (Log Matching): they never conflict.
        """
        for e in entries:
            if e.index <= self.offset:
                continue
            if self.term(e.index) != e.term:
                return e.index
        return Index(0)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[Index, Term]:
        """Largest i <= index whose term <= ``term`` (0 term when unknown: compacted).

        Used on both sides of a rejection so a lagging log catches up a term per
        round trip instead of an entry per round trip.
        """
        index = min(index, self.last_index())
        while index > 0:
            t = self.term(index)
            if t is None:
                return Index(index), Term(0)
            if t <= term:
                return Index(index), t
            index -= 1
        return Index(0), Term(0)

    def conf_at(self, i: int) -> ConfState:
        for idx, conf in reversed(self.confs):
            if idx <= i:
                return conf
        raise AssertionError(f"no configuration at or before {i} (offset {self.offset})")

    def latest_conf(self) -> tuple[Index, ConfState]:
        return self.confs[-1]

    # ---- writing ---------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Leader appending its own new entries right after ``last_index``."""
        assert entries[0].index == self.last_index() + 1
        self._extend(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> Index | None:
        """Follower side of AppendEntries (Raft Figure 2, receiver steps 2-5).

        Returns the last index now known to match the leader (``prev_index`` plus
        the entries sent, *not* our last index: what lies beyond may still differ),
        or None when ``prev`` does not match.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = Index(prev_index + len(entries))
        conflict = self.find_conflict(entries)
        if conflict:
            # Only a conflicting entry may cause truncation: a delayed, shorter
            # AppendEntries must never cut entries we already acknowledged.
            self.truncate_and_append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def truncate_and_append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        first = entries[0].index
        assert first > self.committed, f"truncating committed entry {first} <= {self.committed}"
        if first <= self.last_index():
            del self.entries[first - self.offset - 1 :]
            self.stabled = Index(min(self.stabled, first - 1))
            while self.confs[-1][0] >= first:
                self.confs.pop()
        self._extend(list(entries))

    def _extend(self, entries: list[Entry]) -> None:
        self.entries.extend(entries)
        for e in entries:
            if e.kind is EntryKind.CONFIG:
                conf, _ = confchange.decode(e.data)
                self.confs.append((e.index, conf))

    def commit_to(self, i: int) -> bool:
        if i <= self.committed:
            return False
        assert i <= self.last_index(), f"commit {i} beyond last index {self.last_index()}"
        self.committed = Index(i)
        return True

    def stable_to(self, i: int, t: int) -> None:
        # The entries just persisted may have been replaced meanwhile; then the
        # replacements are still unstable and go out in the next Ready.
        if i > self.stabled and self.term(i) == t:
            self.stabled = Index(i)

    def applied_to(self, i: int) -> None:
        assert self.applied <= i <= self.committed, (self.applied, i, self.committed)
        self.applied = Index(i)

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot from the leader (InstallSnapshot)."""
        meta = snap.meta
        self.entries = []
        self.offset, self.offset_term = meta.index, meta.term
        self.committed = self.stabled = meta.index
        self.confs = [(meta.index, meta.conf)]
        self.snapshot = snap
        self.pending_snapshot = snap

    def snapshot_applied(self) -> None:
        snap = self.pending_snapshot
        assert snap is not None
        self.applied = snap.meta.index
        self.pending_snapshot = None

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Fold entries up to ``index`` (already applied) into a snapshot."""
        assert self.offset < index <= self.applied, (self.offset, index, self.applied)
        assert index <= self.stabled
        term = self.term(index)
        assert term is not None
        meta = SnapshotMeta(Index(index), term, self.conf_at(index))
        del self.entries[: index - self.offset]
        self.offset, self.offset_term = Index(index), term
        while len(self.confs) > 1 and self.confs[1][0] <= index:
            self.confs.pop(0)
        self.confs[0] = (Index(index), meta.conf)
        self.snapshot = Snapshot(meta, data)
        return self.snapshot
