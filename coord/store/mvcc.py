"""The multi-version key-value map: current values, revisions, and recent history.

Theory of operation (after etcd's mvcc)
---------------------------------------
One global ``revision`` counts committed changes: a transaction that changes
anything gets the next revision, and every key it touches carries it as its
``mod_revision`` (a read-only transaction changes no revision). Per key:
``create_revision`` (when the current incarnation was created; a delete ends
an incarnation), ``version`` (puts since creation), and ``lease``.

History: every change is an Event (put or delete) kept in order, so a watcher
can resume from any revision after ``compact_revision``. Older history is
discarded by compaction (explicitly, or when more than ``max_history`` events
are kept); a watch from before it fails with Compacted, naming the
compaction point, and the watcher must re-list.

Invariants: revision >= compact_revision; history holds exactly the events
with revision in (compact_revision, revision], in order; every key's
mod_revision <= revision.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from sortedcontainers import SortedDict

PUT = "put"
DELETE = "delete"


class Compacted(Exception):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "value": self.value,
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
            "version": self.version,
            "lease": self.lease,
        }


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # PUT or DELETE
    key: str
    revision: int
    kv: KeyValue | None  # the new value (None for a delete)
    prev: KeyValue | None  # what it replaced or deleted

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"type": self.type, "key": self.key, "revision": self.revision}
        if self.kv is not None:
            d["kv"] = self.kv.to_dict()
        if self.prev is not None:
            d["prev_kv"] = self.prev.to_dict()
        return d


class MVCC:
    def __init__(self, max_history: int = 100_000) -> None:
        self.revision = 0
        self.compact_revision = 0
        self.keys: SortedDict = SortedDict()  # str -> KeyValue
        self.history: deque[Event] = deque()
        self.max_history = max_history
        self._pending: list[Event] = []  # changes of the transaction being applied

    # ---- reading --------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        kv: KeyValue | None = self.keys.get(key)
        return kv

    def range(self, prefix: str, limit: int = 0) -> list[KeyValue]:
        out: list[KeyValue] = []
        for k in self.keys.irange(minimum=prefix):
            if not k.startswith(prefix):
                break
            out.append(self.keys[k])
            if limit and len(out) >= limit:
                break
        return out

    def count(self) -> int:
        return len(self.keys)

    def events_since(self, start_revision: int, prefix: str = "") -> Iterator[Event]:
        """Events with revision >= start_revision (and key under prefix), oldest first."""
        if self.compact_revision and start_revision <= self.compact_revision:
            raise Compacted(self.compact_revision)
        for ev in self.history:
            if ev.revision >= start_revision and ev.key.startswith(prefix):
                yield ev

    # ---- changing (inside one transaction) --------------------------------------------

    def next_revision(self) -> int:
        return self.revision + 1

    def put(self, key: str, value: str, lease: int) -> KeyValue:
        rev = self.next_revision()
        prev = self.keys.get(key)
        if prev is None:
            kv = KeyValue(key, value, rev, rev, 1, lease)
        else:
            kv = KeyValue(key, value, prev.create_revision, rev, prev.version + 1, lease)
        self.keys[key] = kv
        self._pending.append(Event(PUT, key, rev, kv, prev))
        return kv

    def delete(self, key: str) -> KeyValue | None:
        prev: KeyValue | None = self.keys.pop(key, None)
        if prev is not None:
            self._pending.append(Event(DELETE, key, self.next_revision(), None, prev))
        return prev

    def finish(self) -> list[Event]:
        """End the transaction: if it changed anything, that is one new revision."""
        events, self._pending = self._pending, []
        if events:
            self.revision += 1
            self.history.extend(events)
            while len(self.history) > self.max_history:
                self._drop_oldest_revision()
        return events

    def compact(self, revision: int) -> None:
        """Forget history up to ``revision`` (watches from before it must re-list)."""
        revision = min(revision, self.revision)
        while self.history and self.history[0].revision <= revision:
            self.history.popleft()
        self.compact_revision = max(self.compact_revision, revision)

    def _drop_oldest_revision(self) -> None:
        # Whole revisions only: a watcher never sees half a transaction.
        oldest = self.history[0].revision
        while self.history and self.history[0].revision == oldest:
            self.history.popleft()
        self.compact_revision = max(self.compact_revision, oldest)
