"""Writes waiting for the next Ready, packed into as few log entries as fit.

Under load the driver finds many commands proposed since its last turn (while
it waited on an fsync, say). One entry per command costs the leader per entry:
a core call, a log record, a slice of every AppendEntries, a tracker slot, and
on every replica a decode. A batch entry (``{"op": "batch", "cmds": [...]}``,
coord/store/machine.py) carries them all, and the state machine applies its
commands one after the other as if they were consecutive entries.

The outcome of the entry is the outcome of each command in it: all committed,
or all rejected, or all unknown. Nobody waits longer for it: the driver packs
whatever is waiting when it runs, so a lone write still goes at once, alone.

Daemon and simulator share this (pure: no clock, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack

from .machine import BATCHABLE, encode

T = TypeVar("T")

_packer = msgpack.Packer(use_bin_type=True)
_HEAD = _packer.pack("op") + _packer.pack("batch") + _packer.pack("cmds")


@dataclass(slots=True)
class Packed(Generic[T]):
    """One log entry's bytes and who waits for each of its commands."""

    data: bytes
    tokens: list[T]
    batched: bool

    def results(self, result: Any) -> list[Any]:
        """Each command's result, in order, from the entry's."""
        if not self.batched:
            return [result]
        got = result.get("results") if isinstance(result, dict) else None
        if isinstance(got, list) and len(got) == len(self.tokens):
            return got
        return [result] * len(self.tokens)  # the batch itself was refused: the same for all


class Batcher(Generic[T]):
    def __init__(self, max_cmds: int = 512, max_bytes: int = 1 << 20) -> None:
        self.max_cmds = max_cmds
        self.max_bytes = max_bytes
        self._items: list[tuple[dict[str, Any], T]] = []

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def batchable(cmd: dict[str, Any]) -> bool:
        return cmd.get("op") in BATCHABLE

    def add(self, cmd: dict[str, Any], token: T) -> None:
        """Queue a BATCHABLE command (stamped with the time when it is taken)."""
        self._items.append((cmd, token))

    def drop(self) -> list[T]:
        """Forget everything waiting (nothing of it was proposed): who waited."""
        items, self._items = self._items, []
        return [t for _, t in items]

    def take(self, time_ms: int, keep: Any = None) -> list[Packed[T]]:
        """Everything waiting, as entries; ``keep(token)`` false drops a command."""
        items, self._items = self._items, []
        if keep is not None:
            items = [(c, t) for c, t in items if keep(t)]
        if len(items) == 1:
            cmd, token = items[0]
            return [Packed(encode({**cmd, "time_ms": time_ms}), [token], False)]
        out: list[Packed[T]] = []
        chunk: list[tuple[bytes, dict[str, Any], T]] = []
        size = 0
        for cmd, token in items:
            data = encode(cmd)
            if chunk and (len(chunk) >= self.max_cmds or size + len(data) > self.max_bytes):
                out.append(self._pack(chunk, time_ms))
                chunk, size = [], 0
            chunk.append((data, cmd, token))
            size += len(data)
        if chunk:
            out.append(self._pack(chunk, time_ms))
        return out

    @staticmethod
    def _pack(chunk: list[tuple[bytes, dict[str, Any], T]], time_ms: int) -> Packed[T]:
        if len(chunk) == 1:
            _, cmd, token = chunk[0]
            return Packed(encode({**cmd, "time_ms": time_ms}), [token], False)
        # The commands are encoded once; the entry is a map around them, built by hand.
        head = _packer.pack_map_header(3) + _HEAD + _packer.pack_array_header(len(chunk))
        tail = _packer.pack("time_ms") + _packer.pack(time_ms)
        data = head + b"".join(d for d, _, _ in chunk) + tail
        return Packed(data, [t for _, _, t in chunk], True)
