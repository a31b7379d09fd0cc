"""The simulator's small replicated state machine: registers by key, with client sessions.

Commands (msgpack): ``[client, seq, op, key, a, b]`` with op ``"w"`` (write a)
or ``"c"`` (compare-and-set: if value == a, set b). Reads do not go through the
log: they use ReadIndex and read ``get()`` directly.

Exactly-once (Raft thesis §6.3): per client the last sequence number executed
and its result. A command with that sequence number again is a retry: it
returns the saved result without executing. An older one is a late duplicate:
refused. A client without a session starts one with whatever it sends (its
earlier numbers may have failed and never executed). The table is bounded:
past ``max_sessions`` the least recently used client is forgotten, and from
then on its retries are not deduplicated — the real store (issue 3) registers
sessions explicitly and refuses commands of forgotten ones instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

WRITE = "w"
CAS = "c"


@dataclass(frozen=True, slots=True)
class Applied:
    result: Any
    executed: bool  # False: answered from the session table (a retry)
    error: str = ""  # "stale": an older sequence number than the session's last


def encode_command(client: int, seq: int, op: str, key: str, a: Any = None, b: Any = None) -> bytes:
    data: bytes = msgpack.packb([client, seq, op, key, a, b])
    return data


def decode_command(data: bytes) -> tuple[int, int, str, str, Any, Any]:
    client, seq, op, key, a, b = msgpack.unpackb(data)
    return client, seq, op, key, a, b


class KVStore:
    def __init__(self, max_sessions: int = 10_000) -> None:
        self.data: dict[str, Any] = {}
        # client -> [last_seq, result, last_index]; insertion order = recency order.
        self.sessions: dict[int, list[Any]] = {}
        self.max_sessions = max_sessions

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def apply(self, index: int, data: bytes) -> Applied:
        client, seq, op, key, a, b = decode_command(data)
        sess = self.sessions.get(client)
        if sess is not None:
            last_seq, result, _ = sess
            if seq == last_seq:
                self._touch(client, sess, index)
                return Applied(result, executed=False)
            if seq < last_seq:
                return Applied(None, executed=False, error="stale")
        result = self._execute(op, key, a, b)
        self._touch(client, [seq, result, index], index)
        return Applied(result, executed=True)

    def _execute(self, op: str, key: str, a: Any, b: Any) -> Any:
        if op == WRITE:
            self.data[key] = a
            return None
        if op == CAS:
            if self.data.get(key) == a:
                self.data[key] = b
                return True
            return False
        raise ValueError(f"unknown command {op!r}")

    def _touch(self, client: int, sess: list[Any], index: int) -> None:
        sess[2] = index
        self.sessions.pop(client, None)
        self.sessions[client] = sess  # most recent last
        while len(self.sessions) > self.max_sessions:
            del self.sessions[next(iter(self.sessions))]

    def snapshot(self) -> bytes:
        data: bytes = msgpack.packb(
            [sorted(self.data.items()), [[c, *s] for c, s in self.sessions.items()]]
        )
        return data

    def restore(self, blob: bytes) -> None:
        items, sessions = msgpack.unpackb(blob, use_list=True, strict_map_key=False)
        self.data = {k: v for k, v in items}
        self.sessions = {c: [seq, res, idx] for c, seq, res, idx in sessions}
