"""Simulated disk: an append-only record log with an fsync boundary.

Records are ("hs", HardState), ("ents", entries) — an append that overwrites
from its first index — and ("snap", Snapshot, replaces_log). Writes land in a
volatile tail; ``sync()`` makes everything written so far durable. A crash
keeps the durable part and a random prefix of the tail (writes reach the
platter in order), and may leave the next record torn: recovery detects it by
its checksum and cuts it off, as the real WAL must (issue 3).
"""

from __future__ import annotations

import random
from typing import Any

from coord.raft import Entry, HardState, Restored, Snapshot


class CorruptLog(Exception):
    pass


class SimDisk:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []
        self.durable = 0  # records[:durable] survive any crash
        self.torn_repairs = 0
        self.fsyncs = 0

    def write(self, rec: tuple[Any, ...]) -> None:
        self.records.append(rec)

    def sync(self, upto: int | None = None) -> None:
        """Everything written before the fsync started (``upto`` records) is now durable."""
        self.fsyncs += 1
        self.durable = max(self.durable, len(self.records) if upto is None else upto)

    def crash(self, rng: random.Random) -> tuple[int, bool]:
        """Lose the volatile tail but a random prefix; return (records lost, torn)."""
        tail = len(self.records) - self.durable
        keep = rng.randint(0, tail) if tail else 0
        lost = tail - keep
        torn = lost > 0 and rng.random() < 0.5
        del self.records[self.durable + keep :]
        if torn:
            # A partly written record: recovery finds a bad checksum at the end and cuts it.
            self.records.append(("torn",))
        self.durable = len(self.records)
        return lost, torn

    def recover(self) -> Restored:
        hs = HardState()
        snap: Snapshot | None = None
        entries: list[Entry] = []
        for n, rec in enumerate(self.records):
            kind = rec[0]
            if kind == "torn":
                if n != len(self.records) - 1:
                    raise CorruptLog(f"corrupt record {n} in the middle of the log")
                del self.records[n:]
                self.durable = len(self.records)
                self.torn_repairs += 1
                break
            if kind == "hs":
                hs = rec[1]
            elif kind == "snap":
                snap = rec[1]
                idx = snap.meta.index
                entries = [] if rec[2] else [e for e in entries if e.index > idx]
            elif kind == "ents":
                first = rec[1][0].index
                base = snap.meta.index if snap else 0
                del entries[max(0, first - base - 1) :]
                if first != base + len(entries) + 1:
                    raise CorruptLog(f"gap before entry {first} in record {n}")
                entries.extend(rec[1])
        if entries and snap and entries[0].index != snap.meta.index + 1:
            raise CorruptLog("entries do not follow the snapshot")
        return Restored(hs, snap, tuple(entries))

    def compact(self, snap: Snapshot) -> None:
        """Atomically replace the log by snapshot + later entries + hard state (durable)."""
        state = self.recover()
        later = tuple(e for e in state.entries if e.index > snap.meta.index)
        recs: list[tuple[Any, ...]] = [("snap", snap, True)]
        if later:
            recs.append(("ents", later))
        recs.append(("hs", state.hard_state))
        self.records = recs
        self.durable = len(recs)
