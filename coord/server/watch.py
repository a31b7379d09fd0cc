"""Watches: every change under a prefix, from a revision on, exactly once, in order.

A watcher is registered and its backlog read from the store's history in one
step of the event loop (no await between them). Changes are applied on the
same loop, so nothing can slip between the backlog and the live feed, and
nothing is delivered twice: every event is either in the backlog (revision <=
the store's revision at registration) or offered live (a later revision).

A watcher whose consumer falls too far behind is cut off with a clear error
naming the revision to resume from, rather than holding memory without bound.
Idle watchers get progress notifications carrying the current revision, so a
client knows how up to date it is even when nothing changes; and every batch
of events is followed at once by one, so a client that must see whole
revisions (one change may touch many keys) knows when it has one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from coord.store.mvcc import Event

from .node import Node


@dataclass
class WatchItem:
    kind: str  # "event" | "progress" | "overflow"
    revision: int
    event: Event | None = None


class Watcher:
    def __init__(self, prefix: str, max_pending: int) -> None:
        self.prefix = prefix
        self.max_pending = max_pending
        self.pending: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False

    def offer(self, events: list[Event]) -> None:
        if self.overflowed:
            return
        for ev in events:
            if ev.key.startswith(self.prefix):
                self.pending.append(ev)
        if len(self.pending) > self.max_pending:
            self.overflowed = True
        self.wake.set()

    def cut_off(self) -> None:
        """The node can no longer say what this watcher missed: it must resume."""
        self.overflowed = True
        self.wake.set()


async def watch(
    node: Node, prefix: str, start_revision: int, progress_s: float, max_pending: int = 10_000
) -> AsyncIterator[WatchItem]:
    """Events with revision >= start_revision (0: from now on), then progress notes.

    Raises coord.store.Compacted before yielding anything if the start is gone.
    """
    kv = node.sm.kv
    w = Watcher(prefix, max_pending)
    start = start_revision or kv.revision + 1
    backlog = list(kv.events_since(start, prefix))  # may raise Compacted
    node.watchers.append(w)  # same loop step as the backlog read: nothing falls between
    sent = kv.revision
    try:
        for ev in backlog:
            yield WatchItem("event", ev.revision, ev)
        if backlog:
            yield WatchItem("progress", sent)
        while True:
            try:
                await asyncio.wait_for(w.wake.wait(), progress_s)
            except TimeoutError:
                yield WatchItem("progress", max(sent, node.sm.kv.revision))
                continue
            w.wake.clear()
            if w.overflowed:
                last = w.pending[0].revision if w.pending else sent + 1
                yield WatchItem("overflow", last)
                return
            delivered = False
            while w.pending:
                ev = w.pending.popleft()
                if ev.revision >= start:  # a start in the future skips what comes before it
                    delivered = True
                    yield WatchItem("event", ev.revision, ev)
            # Nothing runs between the last check of ``pending`` and this read: every
            # change up to ``sent`` has been yielded. Saying so at once lets a client that
            # needs whole revisions (one change may touch many keys) use this one now.
            sent = node.sm.kv.revision
            if delivered:
                yield WatchItem("progress", sent)
    finally:
        node.watchers.remove(w)


def render(item: WatchItem) -> dict[str, Any]:
    if item.kind == "event" and item.event is not None:
        return item.event.to_dict()
    if item.kind == "progress":
        return {"type": "progress", "revision": item.revision}
    return {
        "type": "error",
        "error": {
            "code": "watcher_too_slow",
            "message": f"fell too far behind; resume with start_revision={item.revision}",
            "resume_revision": item.revision,
        },
    }
