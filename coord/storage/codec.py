"""Framing of write-ahead-log records: length, checksum, msgpack payload.

A segment file is a header (magic, version) followed by records:

    +----------------+----------------+---------------------+
    | length: u32 LE | crc32: u32 LE  | payload: msgpack    |
    +----------------+----------------+---------------------+

The checksum covers the payload. ``scan`` reads a buffer and tells apart the
three endings a file can have: clean; *torn* — the last record is incomplete
or fails its checksum and nothing valid follows (a crash mid-write: cut it
off); and *corrupt* — a bad record with valid data after it, or garbage where
a header belongs (never cut: refuse to start, naming file and offset).
Decoding never unpickles and never trusts a length: a record larger than the
hard limit is corruption, not an allocation.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

MAGIC = b"COORDWAL"
VERSION = 1
HEADER = MAGIC + struct.pack("<I", VERSION)
FRAME = struct.Struct("<II")
MAX_RECORD = 64 << 20  # no record is this big; a length beyond it means damage


class Ending(enum.Enum):
    CLEAN = "clean"
    TORN = "torn"
    CORRUPT = "corrupt"


@dataclass(frozen=True, slots=True)
class Scan:
    records: list[tuple[int, Any]]  # (offset, decoded payload)
    ending: Ending
    valid_end: int  # offset just past the last good record
    problem: str = ""  # what is wrong at valid_end, if not clean


def encode(payload: Any) -> bytes:
    body: bytes = msgpack.packb(payload, use_bin_type=True)
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def scan(buf: bytes | memoryview) -> Scan:
    """Decode every record of a segment image; classify how it ends."""
    view = memoryview(buf)
    if len(view) < len(HEADER):
        if bytes(view) == HEADER[: len(view)]:
            return Scan([], Ending.TORN, 0, "segment header incomplete")
        return Scan([], Ending.CORRUPT, 0, "not a coord WAL segment (bad header)")
    if bytes(view[: len(HEADER)]) != HEADER:
        return Scan([], Ending.CORRUPT, 0, "not a coord WAL segment (bad magic or version)")
    records: list[tuple[int, Any]] = []
    pos = len(HEADER)
    end = len(view)
    while pos < end:
        if end - pos < FRAME.size:
            return Scan(records, Ending.TORN, pos, "record frame cut short")
        length, crc = FRAME.unpack_from(view, pos)
        body_start = pos + FRAME.size
        if length > MAX_RECORD:
            return _bad(records, view, pos, f"record length {length} beyond the limit")
        if body_start + length > end:
            # A crash mid-write, or a damaged length field in front of good records:
            # only the first may be cut off.
            return _bad(records, view, pos, f"record cut short ({length} bytes announced)")
        body = view[body_start : body_start + length]
        if zlib.crc32(body) != crc:
            return _bad(records, view, pos, "checksum mismatch")
        try:
            payload = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            return _bad(records, view, pos, f"undecodable record ({e})")
        records.append((pos, payload))
        pos = body_start + length
    return Scan(records, Ending.CLEAN, pos)


def _bad(records: list[tuple[int, Any]], view: memoryview, pos: int, why: str) -> Scan:
    """A bad record is a torn tail only if nothing valid follows it."""
    if _valid_record_after(view, pos + 1):
        return Scan(records, Ending.CORRUPT, pos, why)
    return Scan(records, Ending.TORN, pos, why)


def _valid_record_after(view: memoryview, start: int) -> bool:
    """Do intact records (frame + matching checksum) run from somewhere past ``start``
    to the end of the file (the last of them may be cut short)?

    A torn write leaves garbage only at the very end; intact records further on mean
    the damage is in the middle: acknowledged data may follow. They must run to the
    end: a partial record's body can itself hold bytes that look like a record (a
    value a client wrote), and that alone must not turn a torn tail into a refusal.
    """
    end = len(view)
    for pos in range(start, end - FRAME.size + 1):
        if _record_at(view, pos) and _records_to_end(view, pos):
            return True
    return False


def _record_at(view: memoryview, pos: int) -> int:
    """The size of an intact record at ``pos``, or 0."""
    length: int
    crc: int
    length, crc = FRAME.unpack_from(view, pos)
    whole = 0 < length <= MAX_RECORD and pos + FRAME.size + length <= len(view)
    if whole and zlib.crc32(view[pos + FRAME.size : pos + FRAME.size + length]) == crc:
        return FRAME.size + length
    return 0


def _records_to_end(view: memoryview, pos: int) -> bool:
    end = len(view)
    while pos < end:
        size = _record_at(view, pos)
        if not size:
            # Only a record cut short by the end of the file may follow.
            if end - pos < FRAME.size:
                return True
            length: int = FRAME.unpack_from(view, pos)[0]
            return 0 < length <= MAX_RECORD and pos + FRAME.size + length > end
        pos += size
    return True
