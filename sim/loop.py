"""Virtual time: a priority queue of events, in integer microseconds.

Ties are broken by scheduling order (a counter), never by comparing callbacks,
so the same seed always yields the same order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

US = 1
MS = 1000
S = 1_000_000


class Loop:
    def __init__(self) -> None:
        self.now = 0
        self._q: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events = 0

    def at(self, t: int, fn: Callable[..., None], *args: Any) -> None:
        assert t >= self.now, f"event in the past: {t} < {self.now}"
        heapq.heappush(self._q, (t, self._seq, fn, args))
        self._seq += 1

    def after(self, dt: int, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + dt, fn, *args)

    def run_until(self, t_end: int, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to and including ``t_end`` (or until ``stop()``); time ends at t_end."""
        q = self._q
        pop = heapq.heappop
        while q and q[0][0] <= t_end:
            t, _, fn, args = pop(q)
            self.now = t
            self.events += 1
            fn(*args)
            if stop is not None and stop():
                return
        self.now = max(self.now, t_end)


def fmt_time(us: int) -> str:
    return f"{us / S:8.3f}s"


def parse_duration(text: str | int | float) -> int:
    """'250ms', '3s', '1.5s', '2m' or a number of seconds -> microseconds."""
    if isinstance(text, int | float):
        return int(text * S)
    t = text.strip()
    for suffix, scale in (("ms", MS), ("us", US), ("s", S), ("m", 60 * S)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * scale)
    raise ValueError(f"bad duration {text!r} (use e.g. 250ms, 3s, 2m)")
