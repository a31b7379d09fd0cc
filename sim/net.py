"""Simulated network between hosts (a host = a node id; clients live on hosts).

Each directed link has its own delay distribution (the common one scaled by a
factor drawn per link), and a scenario may give one link parameters of its own
(``overrides``: a slow, lossy WAN path between two sites, say). Each message
gets an independent delay from it, so messages may overtake each other
(reordering) unless ``fifo`` is set, which delays a message until after the
previous one on the same link (as TCP would).
A message is lost with probability ``loss`` and duplicated with ``dup`` (the
copy gets its own delay). Blocked links are directed: (a, b) blocked means a's
messages do not reach b. A message is dropped if its link is blocked when it
is sent *or* when it would arrive: a partition also swallows what was in flight.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .loop import MS, Loop


@dataclass
class LinkParams:
    delay_min_us: int = 500
    delay_max_us: int = 5 * MS
    # With this probability a message is slow: its delay is multiplied by slow_factor.
    slow_p: float = 0.0
    slow_factor: int = 10
    # Each directed link's delays are scaled by its own factor, drawn once from
    # [1 - spread, 1 + spread]: some paths are simply longer than others.
    link_spread: float = 0.5
    loss: float = 0.0
    dup: float = 0.0
    fifo: bool = False

    def draw_delay(self, rng: random.Random, factor: float = 1.0) -> int:
        # random() arithmetic: several times cheaper than randint on this hot path.
        lo = self.delay_min_us
        d = int((lo + rng.random() * (self.delay_max_us - lo + 1)) * factor)
        if self.slow_p and rng.random() < self.slow_p:
            d *= self.slow_factor
        return d


class Network:
    LOCAL_DELAY_US = 50  # client and node on the same host

    def __init__(
        self,
        loop: Loop,
        rng: random.Random,
        params: LinkParams,
        deliver: Callable[[int, int, Any], None],
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.params = params
        self._deliver = deliver
        self.blocked: set[tuple[int, int]] = set()
        self._last_arrival: dict[tuple[int, int], int] = {}
        self._link_factor: dict[tuple[int, int], float] = {}
        self.overrides: dict[tuple[int, int], LinkParams] = {}  # (src, dst) -> its own
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    # ---- faults ----------------------------------------------------------------

    def heal(self) -> None:
        self.blocked = set()

    def partition(self, groups: list[list[int]], hosts: list[int]) -> None:
        """Only hosts in the same group talk. Hosts in no group are isolated."""
        where = {h: i for i, g in enumerate(groups) for h in g}
        self.blocked = {
            (a, b)
            for a in hosts
            for b in hosts
            if a != b and (a not in where or b not in where or where[a] != where[b])
        }

    def block(self, pairs: set[tuple[int, int]]) -> None:
        self.blocked = set(pairs)

    def reachable(self, a: int, b: int) -> bool:
        return a == b or (a, b) not in self.blocked

    # ---- traffic ---------------------------------------------------------------

    def send(self, src: int, dst: int, payload: Any) -> None:
        self.sent += 1
        if src == dst:
            self.loop.after(self.LOCAL_DELAY_US, self._arrive, src, dst, payload)
            return
        if (src, dst) in self.blocked:
            self.dropped += 1
            return
        p = self.overrides.get((src, dst)) or self.params
        rng = self.rng
        if p.loss and rng.random() < p.loss:
            self.dropped += 1
            return
        self._schedule(src, dst, payload, p)
        if p.dup and rng.random() < p.dup:
            self.duplicated += 1
            self._schedule(src, dst, payload, p)

    def _schedule(self, src: int, dst: int, payload: Any, p: LinkParams) -> None:
        link = (src, dst)
        factor = self._link_factor.get(link)
        if factor is None:
            spread = self.params.link_spread
            factor = self._link_factor[link] = 1.0 + self.rng.uniform(-spread, spread)
        t = self.loop.now + max(1, p.draw_delay(self.rng, factor))
        if p.fifo:
            t = max(t, self._last_arrival.get(link, 0) + 1)
            self._last_arrival[link] = t
        self.loop.at(t, self._arrive, src, dst, payload)

    def _arrive(self, src: int, dst: int, payload: Any) -> None:
        if (src, dst) in self.blocked:
            self.dropped += 1
            return
        self._deliver(src, dst, payload)
