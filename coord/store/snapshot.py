"""The store's snapshot, taken in two steps so a large store does not stall the node.

``View.take(sm)`` runs on the event loop and only copies references: the
current values and the history as plain lists (C-speed copies: about 30 ms
per million keys), the small tables by value. Records are immutable (frozen
``KeyValue`` / ``Event``), so the lists stay a consistent picture of the
applied state while the node goes on applying. ``View.encode()`` then builds
the msgpack document, and may run in a thread: it packs rows a chunk at a
time, so the interpreter hands the event loop its turn between chunks and the
node keeps sending heartbeats (one ``msgpack.packb`` of a million rows holds
the interpreter for seconds: enough to lose leadership).

The bytes are one msgpack map, the same layout ``StateMachine.restore``
reads; keys come in the store's insertion order (restore sorts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from .mvcc import Event, KeyValue

if TYPE_CHECKING:
    from .machine import StateMachine

CHUNK = 2048  # rows per packb call: a few milliseconds of holding the interpreter


@dataclass(frozen=True)
class View:
    applied: int
    revision: int
    compact: int
    keys: list[KeyValue]
    history: list[Event]
    leases: list[tuple[int, float, list[str]]]
    sessions: list[list[Any]]
    members: list[list[Any]]

    @classmethod
    def take(cls, sm: StateMachine) -> View:
        kv = sm.kv
        return cls(
            applied=sm.applied_index,
            revision=kv.revision,
            compact=kv.compact_revision,
            # dict's own view: the sorted view would walk the key order in Python
            keys=list(dict.values(kv.keys)),
            history=list(kv.history),
            leases=[(i, ttl, list(keys)) for i, (ttl, keys) in sm.leases.items()],
            sessions=sm.sessions.dump(),
            members=[[i, m] for i, m in sorted(sm.members.items())],
        )

    def encode(self) -> bytes:
        p = msgpack.Packer(use_bin_type=True)
        out = [p.pack_map_header(8)]
        head: list[tuple[str, Any]] = [
            ("applied", self.applied),
            ("revision", self.revision),
            ("compact", self.compact),
        ]
        for name, value in head:
            out += [p.pack(name), p.pack(value)]
        out.append(p.pack("keys"))
        out += _rows(p, self.keys, kv_row)
        out.append(p.pack("history"))
        out += _rows(p, self.history, event_row)
        leases = [[i, ttl, sorted(keys)] for i, ttl, keys in sorted(self.leases)]
        tail: list[tuple[str, Any]] = [
            ("leases", leases),
            ("sessions", self.sessions),
            ("members", self.members),
        ]
        for name, value in tail:
            out += [p.pack(name), p.pack(value)]
        return b"".join(out)


def _rows(p: msgpack.Packer, items: list[Any], row: Any) -> list[bytes]:
    """One msgpack array of ``row(item)`` for each item, packed a chunk at a time."""
    out = [p.pack_array_header(len(items))]
    for start in range(0, len(items), CHUNK):
        chunk = [row(x) for x in items[start : start + CHUNK]]
        packed: bytes = p.pack(chunk)
        out.append(packed[len(p.pack_array_header(len(chunk))) :])  # the elements only
    return out


def kv_row(kv: KeyValue) -> list[Any]:
    return [kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease]


def event_row(e: Event) -> list[Any]:
    return [e.type, e.key, e.revision, _maybe_kv_row(e.kv), _maybe_kv_row(e.prev)]


def _maybe_kv_row(kv: KeyValue | None) -> list[Any] | None:
    return None if kv is None else kv_row(kv)
