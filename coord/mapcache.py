"""A copy of the cluster map kept current by a watch: for agents, controllers, tools.

    async with MapCache(client) as cache:          # lists /coord/map/, then follows
        rev = (await client.create_vip("127.0.10.1"))["revision"]
        await cache.wait_for(rev)                  # the copy now reflects that write
        owner = cache.vips["127.0.10.1"]["owner"]

It lists every key under ``/coord/map/`` (one revision), then watches from the
next revision with ``Client.watch``, which resumes across disconnects and
leader changes; when the history it needs was compacted, the watch re-lists
and the copy is rebuilt from that listing.

``revision`` is the revision the copy reflects, and it is never half of a
change: one operation can change many records at one revision (a node
registers and is given the unowned VIPs), and the watch delivers them one by
one, so a change is held back until the stream has moved past its revision
(the next change's first event, or a progress note). The dicts only ever
show whole revisions. ``progress_ms`` bounds how long the last change of a
burst waits for that note.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coord.clustermap.model import NODES, POLICIES, PREFIX, SESSIONS, VIPS, VOLUMES

if TYPE_CHECKING:
    from coord.client import Client

log = logging.getLogger("coord.mapcache")

Record = dict[str, Any]

KINDS = {
    NODES: "nodes",
    POLICIES: "policies",
    VOLUMES: "volumes",
    VIPS: "vips",
    SESSIONS: "sessions",  # keyed "volume/initiator"
}


class MapCache:
    def __init__(
        self,
        client: Client,
        *,
        progress_ms: int = 500,
        on_change: Callable[[MapCache], None] | None = None,
    ) -> None:
        self.client = client
        self.progress_ms = progress_ms
        self.on_change = on_change  # called after each revision the copy takes in
        self.nodes: dict[str, Record] = {}
        self.policies: dict[str, Record] = {}
        self.volumes: dict[str, Record] = {}
        self.vips: dict[str, Record] = {}
        self.sessions: dict[str, Record] = {}
        self.revision = 0
        # table name -> how many times it changed: a reader's index over one table (an
        # agent's IQN -> volume) is rebuilt when that table changes, not every revision
        self.generation: dict[str, int] = dict.fromkeys(KINDS.values(), 0)
        self.relists = 0  # listings after the first (compacted history, a failed watch)
        self._staged: list[dict[str, Any]] = []  # events of revision _staged_rev, not yet in
        self._staged_rev = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MapCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """List the map (so the copy is whole when this returns), then follow it."""
        listing = await self.client.range(PREFIX)
        self._load(listing["revision"], listing["items"])
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters = []

    async def wait_for(self, revision: int, timeout: float | None = None) -> None:
        """Until the copy reflects ``revision`` (a write's answer) or later.

        TimeoutError if it does not within ``timeout`` seconds.
        """
        if self.revision >= revision:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (revision, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # ---- following -------------------------------------------------------------------------

    async def _follow(self) -> None:
        from coord.client import CoordError

        while True:
            self._staged, self._staged_rev = [], 0  # the watch sends that revision again
            try:
                async for item in self.client.watch(
                    PREFIX, self.revision + 1, progress_ms=self.progress_ms
                ):
                    self.feed(item)
            except CoordError as e:
                # The re-listing after a compaction failed (no leader, say): start over.
                log.info("map cache: watch failed (%s); listing again", e)
                await asyncio.sleep(0.5)
                with contextlib.suppress(CoordError):
                    listing = await self.client.range(PREFIX)
                    self.relists += 1
                    self._load(listing["revision"], listing["items"])

    def feed(self, item: dict[str, Any]) -> None:
        """Take in one item of the watch: an event, a progress note or a re-listing."""
        kind = item.get("type")
        if kind == "relist":
            self.relists += 1
            self._load(item["revision"], item["items"])
            return
        if kind == "progress":
            # Every event up to this revision has come: the staged change is whole.
            self._commit()
            self._advance(item["revision"])
            return
        if kind not in ("put", "delete"):
            return
        rev = item["revision"]
        if rev != self._staged_rev:
            self._commit()  # the stream moved past the staged revision: it is whole
            # Nothing under the prefix changed between the two: the copy is current
            # up to the revision before this one.
            self._advance(rev - 1)
            self._staged_rev = rev
        self._staged.append(item)

    def _commit(self) -> None:
        if not self._staged:
            return
        for ev in self._staged:
            self._apply(ev)
        self._staged = []
        self._advance(self._staged_rev)

    def _apply(self, ev: dict[str, Any]) -> None:
        name, ident = _where(ev["key"])
        if not name:
            return
        table: dict[str, Record] = getattr(self, name)
        self.generation[name] += 1
        if ev["type"] == "delete":
            table.pop(ident, None)
            return
        rec = _parse(ev["key"], ev.get("kv", {}).get("value"))
        if rec is not None:
            table[ident] = rec

    def _load(self, revision: int, items: list[dict[str, Any]]) -> None:
        for t in (self.nodes, self.policies, self.volumes, self.vips, self.sessions):
            t.clear()
        for name in self.generation:
            self.generation[name] += 1
        self._staged, self._staged_rev = [], 0
        for kv in items:
            name, ident = _where(kv["key"])
            rec = _parse(kv["key"], kv.get("value"))
            if name and rec is not None:
                getattr(self, name)[ident] = rec
        self.revision = revision  # a linearizable listing: never behind what was seen
        self._changed()

    def _advance(self, revision: int) -> None:
        if revision > self.revision:
            self.revision = revision
            self._changed()

    def _changed(self) -> None:
        still = []
        for rev, fut in self._waiters:
            if rev <= self.revision:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((rev, fut))
        self._waiters = still
        if self.on_change is not None:
            self.on_change(self)


def _where(key: str) -> tuple[str, str]:
    """(the table a key belongs to, its id there), or ("", "") for a key of none."""
    for prefix, name in KINDS.items():
        if key.startswith(prefix):
            return name, key[len(prefix) :]
    return "", ""


def _parse(key: str, value: Any) -> Record | None:
    try:
        rec = json.loads(value)
    except (TypeError, ValueError):
        rec = None
    if not isinstance(rec, dict):
        log.warning("map cache: %s does not hold a record; skipped", key)
        return None
    return rec
