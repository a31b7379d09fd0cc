"""The write-ahead log: what a node must find again after a crash.

Theory of operation
-------------------
The log is a directory of segments ``wal-<seq>.log`` (seq = 1, 2, ...), each
a header and records (codec.py). Three kinds of record:

    ["E", [[index, term, kind, data], ...]]  entries; overwrite from the first index
    ["H", [term, vote, commit]]              hard state
    ["S", [index, term, replace]]            a snapshot (snapshots.py) now covers the
                                             log up to index; ``replace``: it came
                                             from the leader and the whole log goes

Writes go to the newest segment; ``sync`` makes them durable (one fdatasync
per Ready: group commit). A segment past ``segment_bytes`` is closed and a new
one started (the old one is synced first, and the directory too).

Recovery replays segments in order. A torn last record of the *last* segment
(a crash mid-write) is cut off and logged. Any other damage — a bad record in
the middle, a torn earlier segment, a gap in the entries — refuses to start
with a message naming the file and the offset: acknowledged data may lie
beyond it, and silently dropping it would break Raft's promises.

Compaction: when a snapshot covers index i, segments holding only entries up
to i are deleted, and a fresh segment begins with the snapshot marker, the
hard state and the entries after i, so that replay never needs what was
deleted.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coord.raft import Entry, EntryKind, HardState, Index, NodeId, Term

from . import codec
from .errors import CorruptStorage

log = logging.getLogger("coord.storage")

SEGMENT = re.compile(r"^wal-(\d{16})\.log$")


@dataclass
class Replayed:
    hard_state: HardState = field(default_factory=HardState)
    snapshot_at: tuple[Index, Term] | None = None  # (index, term) the snapshot covers
    entries: list[Entry] = field(default_factory=list)
    torn_cut: str = ""  # where a torn tail was cut, if it was


def _entry_rec(e: Entry) -> list[Any]:
    return [int(e.index), int(e.term), int(e.kind), e.data]


def _entry(rec: Any) -> Entry:
    index, term, kind, data = rec
    return Entry(Index(index), Term(term), EntryKind(kind), bytes(data))


class WAL:
    def __init__(self, directory: Path, segment_bytes: int = 16 << 20) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._seq = 0
        self._size = 0
        self._dirty = False

    # ---- opening ------------------------------------------------------------------

    def open(self) -> Replayed:
        """Replay what is on disk (repairing a torn tail) and get ready to append."""
        self.dir.mkdir(parents=True, exist_ok=True)
        segments = self._segments()
        state = Replayed()
        for n, (_, path) in enumerate(segments):
            last = n == len(segments) - 1
            data = path.read_bytes()
            result = codec.scan(data)
            if result.ending is codec.Ending.CORRUPT or (
                result.ending is codec.Ending.TORN and not last
            ):
                raise CorruptStorage(path, result.valid_end, result.problem)
            for offset, rec in result.records:
                self._apply(state, rec, path, offset)
            if result.ending is codec.Ending.TORN:
                state.torn_cut = f"{path} at offset {result.valid_end}: {result.problem}"
                log.warning("cutting a torn record off %s", state.torn_cut)
                with open(path, "r+b") as f:
                    f.truncate(max(result.valid_end, len(codec.HEADER)))
                    if result.valid_end < len(codec.HEADER):
                        f.seek(0)
                        f.write(codec.HEADER)
                    f.flush()
                    os.fsync(f.fileno())
        if segments:
            self._seq, path = segments[-1]
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._size = path.stat().st_size
        else:
            self._start_segment(1)
        return state

    def _segments(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.iterdir():
            m = SEGMENT.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        out.sort()
        for (a, _), (b, path) in itertools.pairwise(out):
            if b != a + 1:
                raise CorruptStorage(path, 0, f"segment {a + 1} is missing before it")
        return out

    @staticmethod
    def _apply(state: Replayed, rec: Any, path: Path, offset: int) -> None:
        try:
            kind, body = rec
            if kind == "H":
                term, vote, commit = body
                state.hard_state = HardState(Term(term), NodeId(vote), Index(commit))
            elif kind == "S":
                index, term, replace = body
                state.snapshot_at = (Index(index), Term(term))
                state.entries = [] if replace else [e for e in state.entries if e.index > index]
            elif kind == "E":
                new = [_entry(r) for r in body]
                if not new:
                    return
                first = new[0].index
                base = state.snapshot_at[0] if state.snapshot_at else 0
                keep = first - base - 1
                if keep < 0 or keep > len(state.entries):
                    raise CorruptStorage(path, offset, f"entries from {first} leave a gap")
                del state.entries[keep:]
                state.entries.extend(new)
            else:
                raise CorruptStorage(path, offset, f"unknown record kind {kind!r}")
        except (TypeError, ValueError) as e:
            raise CorruptStorage(path, offset, f"malformed record: {e}") from e

    # ---- writing ------------------------------------------------------------------

    def append_entries(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        if entries:
            self._write(["E", [_entry_rec(e) for e in entries]])

    def set_hard_state(self, hs: HardState) -> None:
        self._write(["H", [int(hs.term), int(hs.vote), int(hs.commit)]])

    def mark_snapshot(self, index: int, term: int, replace: bool) -> None:
        self._write(["S", [int(index), int(term), bool(replace)]])

    def _write(self, rec: Any) -> None:
        assert self._fd is not None, "WAL not open"
        blob = codec.encode(rec)
        os.write(self._fd, blob)
        self._size += len(blob)
        self._dirty = True

    def sync(self) -> None:
        """Make everything written so far durable (then roll the segment if it is full)."""
        if self._fd is None or not self._dirty:
            return
        os.fdatasync(self._fd)
        self._dirty = False
        if self._size >= self.segment_bytes:
            self._start_segment(self._seq + 1)

    def _start_segment(self, seq: int) -> None:
        if self._fd is not None:
            os.fdatasync(self._fd)
            os.close(self._fd)
        path = self.dir / f"wal-{seq:016d}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(fd, codec.HEADER)
        os.fdatasync(fd)
        _fsync_dir(self.dir)
        self._fd, self._seq, self._size = fd, seq, len(codec.HEADER)

    def compact(self, index: int, term: int, hs: HardState, later: list[Entry]) -> None:
        """A snapshot now covers ``index``: start a fresh segment that stands on its own
        (marker, hard state, the entries after it), then delete every older one."""
        old = [p for _, p in self._segments()]
        self._start_segment(self._seq + 1)
        self.mark_snapshot(index, term, replace=False)
        self.set_hard_state(hs)
        self.append_entries(later)
        self.sync()
        for p in old:
            p.unlink()
        _fsync_dir(self.dir)

    def close(self) -> None:
        if self._fd is not None:
            if self._dirty:
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
