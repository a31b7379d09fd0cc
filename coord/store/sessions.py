"""Client sessions: each retried write applies at most once (Raft thesis §6.3).

A client names itself (client id) and numbers its writes (seq). For each
client the table keeps the last sequence number applied and its result:

- seq == last: a retry of a write whose outcome the client did not learn.
  Answer the saved result; do not apply again.
- seq < last: a late duplicate of something already superseded: refused.
- seq > last: a new write: apply it, remember it.

A client with no session may start only at seq 1. Anything else means its
session was forgotten (evicted or expired), and with it the knowledge of
what was applied: refused as ``session_expired``, so the client starts over
under a new id rather than risk a second application. The client library
reuses a sequence number after a definite failure, so an ordinary client
never skips one.

The table is bounded (least recently used first out) and sessions idle for
longer than ``ttl_ms`` expire, by the leader's clock stamped in each entry —
the same decision on every replica.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

NEW = "new"
RETRY = "retry"
STALE = "stale"
EXPIRED = "session_expired"


class Sessions:
    def __init__(self, max_clients: int = 100_000, ttl_ms: int = 3_600_000) -> None:
        self.max_clients = max_clients
        self.ttl_ms = ttl_ms
        # client -> [last_seq, result, last_time_ms]; oldest use first
        self.table: OrderedDict[str, list[Any]] = OrderedDict()

    def check(self, client: str, seq: int, now_ms: int) -> tuple[str, Any]:
        self._expire(now_ms)
        s = self.table.get(client)
        if s is None:
            return (NEW, None) if seq == 1 else (EXPIRED, None)
        if seq == s[0]:
            self._touch(client, s, now_ms)
            return RETRY, s[1]
        if seq < s[0]:
            return STALE, None
        return NEW, None

    def record(self, client: str, seq: int, result: Any, now_ms: int) -> None:
        self._touch(client, [seq, result, now_ms], now_ms)
        while len(self.table) > self.max_clients:
            self.table.popitem(last=False)

    def _touch(self, client: str, s: list[Any], now_ms: int) -> None:
        s[2] = max(s[2], now_ms)
        self.table[client] = s
        self.table.move_to_end(client)

    def _expire(self, now_ms: int) -> None:
        while self.table:
            client, s = next(iter(self.table.items()))
            if now_ms - s[2] <= self.ttl_ms:
                break
            del self.table[client]

    def dump(self) -> list[list[Any]]:
        return [[c, *s] for c, s in self.table.items()]

    def load(self, rows: list[list[Any]]) -> None:
        self.table = OrderedDict((c, [seq, res, t]) for c, seq, res, t in rows)
