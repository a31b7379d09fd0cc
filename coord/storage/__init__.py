"""Durable storage of a node: write-ahead log plus snapshot files (see wal.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from coord.raft import Entry, HardState, Ready, Restored, Snapshot

from .errors import CorruptStorage
from .snapshots import SnapshotStore
from .wal import WAL

__all__ = ["CorruptStorage", "Storage"]

log = logging.getLogger("coord.storage")


class Storage:
    """What the daemon's driver calls: open at start, persist each Ready, compact."""

    def __init__(self, directory: Path | str, segment_bytes: int = 16 << 20) -> None:
        self.dir = Path(directory)
        self.wal = WAL(self.dir / "wal", segment_bytes)
        self.snapshots = SnapshotStore(self.dir / "snap")
        self.hard_state = HardState()
        self.torn_cut = ""

    def open(self) -> Restored:
        got = self.wal.open()
        self.torn_cut = got.torn_cut
        snap: Snapshot | None = None
        if got.snapshot_at is not None:
            snap = self.snapshots.load(*got.snapshot_at)
        if got.entries and snap is not None and got.entries[0].index != snap.meta.index + 1:
            raise CorruptStorage(self.wal.dir, 0, "log entries do not follow the snapshot")
        if got.entries and snap is None and got.entries[0].index != 1:
            raise CorruptStorage(self.wal.dir, 0, "log entries do not start at 1")
        self.hard_state = got.hard_state
        last = got.entries[-1].index if got.entries else (snap.meta.index if snap else 0)
        if got.hard_state.commit > last:
            # The commit index is written with the entries it covers; more is damage.
            raise CorruptStorage(
                self.wal.dir, 0, f"commit {got.hard_state.commit} beyond log end {last}"
            )
        return Restored(got.hard_state, snap, tuple(got.entries))

    def persist(self, rd: Ready) -> None:
        """Step 2 of the Ready contract: snapshot, entries, hard state; fsync if asked."""
        if rd.snapshot is not None:
            self.snapshots.save(rd.snapshot)  # durable before the log points at it
            self.wal.mark_snapshot(rd.snapshot.meta.index, rd.snapshot.meta.term, replace=True)
        self.wal.append_entries(rd.entries)
        if rd.hard_state is not None:
            self.wal.set_hard_state(rd.hard_state)
            self.hard_state = rd.hard_state
        if rd.must_sync:
            self.wal.sync()

    def compact(self, snap: Snapshot, later: list[Entry]) -> None:
        """After the core compacted to ``snap``: save it, then drop the log it covers."""
        self.snapshots.save(snap)
        self.wal.compact(snap.meta.index, snap.meta.term, self.hard_state, later)

    def close(self) -> None:
        self.wal.close()
