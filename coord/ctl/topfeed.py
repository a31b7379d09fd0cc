"""Keeps ``coordctl top``'s model current: each member's own status, the map, the events.

Three loops, none of which polls the map:
- every ``period_s``, each known member is asked for its own ``/v1/cluster``
  (a member that does not answer within ``ask_timeout_s`` is down, and its
  last answer stays with its age), and the leader for its leases' remaining
  time (the only figure that moves without a revision: heartbeats renew
  leases without writing);
- a ``MapCache`` follows ``/coord/map/`` by a watch;
- a watch on every key feeds the event stream.

``on_update`` is called after each change so the screen can redraw; it must
not block. The actions (transfer, drain, move) go through one ``Client``,
which finds the leader and retries exactly once under the hood.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from coord.client import Client, CoordError
from coord.mapcache import MapCache

from .topmodel import TopModel


class Feed:
    def __init__(
        self,
        endpoints: list[str],
        model: TopModel,
        on_update: Callable[[], None],
        *,
        period_s: float = 1.0,
        ask_timeout_s: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = [e.removeprefix("http://").rstrip("/") for e in endpoints]
        self.model = model
        self.on_update = on_update
        self.period_s = period_s
        self.ask_timeout_s = ask_timeout_s
        self.clock = clock
        self.client = Client(self.endpoints, timeout=3.0, attempts=3)
        for api in self.endpoints:
            model.asked(api)

    async def run(self) -> None:
        """Until cancelled."""
        async with self.client, asyncio.TaskGroup() as tg:
            tg.create_task(self._poll())
            tg.create_task(self._follow_map())
            tg.create_task(self._follow_events())

    # ---- members -----------------------------------------------------------------------

    async def _poll(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.period_s)

    async def poll_once(self) -> None:
        apis = sorted(self.model.members)
        answers = await asyncio.gather(*(self._get(api, "/v1/cluster") for api in apis))
        now = self.clock()
        for api, (doc, error) in zip(apis, answers, strict=True):
            if doc is not None:
                self.model.answered(api, doc, now)
            else:
                self.model.failed(api, error)
        leader = self.model.leader()
        if leader is not None:
            doc, error = await self._get(leader.api, "/v1/leases")
            if doc is not None:
                self.model.leases = {int(x["id"]): float(x["remaining"]) for x in doc["leases"]}
                self.model.leases_seen_at = now
            # A leader answers: the map copy, fed by its watch, is current.
            self.model.map_seen_at, self.model.map_error = now, None
        else:
            self.model.map_error = "no leader answers: the map may be stale"
        self.on_update()

    async def _get(self, api: str, path: str) -> tuple[dict[str, Any] | None, str]:
        try:
            async with self.client.session.get(
                f"http://{api}{path}", timeout=aiohttp.ClientTimeout(total=self.ask_timeout_s)
            ) as r:
                if r.status != 200:
                    return None, f"HTTP {r.status}"
                doc: dict[str, Any] = await r.json()
                return doc, ""
        except TimeoutError:
            return None, "no answer"
        except aiohttp.ClientConnectorError:
            return None, "refused"
        except (aiohttp.ClientError, ValueError) as e:
            return None, type(e).__name__

    # ---- map and events ------------------------------------------------------------------

    async def _follow_map(self) -> None:
        cache = MapCache(self.client, on_change=lambda _: self.on_update())
        delay = 0.5
        while True:
            try:
                await cache.start()  # lists, then follows by itself (resuming on failures)
                break
            except (CoordError, aiohttp.ClientError, TimeoutError) as e:
                self.model.map_error = f"cannot list the map: {e}"
                self.on_update()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.model.map = cache
        self.model.map_seen_at = self.clock()
        self.on_update()
        try:
            await asyncio.Event().wait()  # the cache's own task does the work
        finally:
            await cache.close()

    async def _follow_events(self) -> None:
        while True:
            with contextlib.suppress(CoordError):
                async for item in self.client.watch("", 0, progress_ms=5000):
                    if item.get("type") != "progress":
                        self.model.event(item)
                        self.on_update()
            await asyncio.sleep(1.0)

    # ---- actions ---------------------------------------------------------------------------

    async def transfer(self, to: int) -> str:
        await self.client.transfer(to)
        return f"leadership transferred to member {to}"

    async def drain(self, node: str, undrain: bool) -> str:
        if undrain:
            await self.client.undrain(node)
            return f"node {node} undrained: it takes VIPs and new logins again"
        doc = await self.client.drain(node)
        return f"node {node} drained at revision {doc.get('revision')}"

    async def move_vip(self, address: str) -> str:
        doc = await self.client.move_vip(address)
        return f"VIP {address} released for a move at revision {doc.get('revision')}"
