"""Text data segments: ``key=value\\0`` pairs (RFC 7143 §6.1, §6.2).

Login and Text PDUs carry their keys this way. Every pair, the last one too,
ends with one NUL; keys are 1 to 63 characters of letters, digits and
``. - + @ _``; values are UTF-8 and may be empty. Peers are held to hard
limits (pairs per segment, bytes per value), and a key may appear only once
in a negotiation (§6.2: "a key ... MUST NOT be offered more than once").
Only a SendTargets answer legitimately repeats keys (a TargetName, then its
TargetAddress lines, per target): :func:`parse_pairs` reads those.

The text of one request may be spread over several PDUs (the C bit); callers
join the data segments first, bounded, then parse the whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import TextError

MAX_KEY_BYTES = 63
# §6.1: a value is at most 255 bytes unless its key says otherwise; the
# largest any key allows is 8192 (binary values written in hex or base64).
MAX_VALUE_BYTES = 8192
MAX_PAIRS = 256

_KEY = re.compile(rb"[A-Za-z0-9.\-+@_]{1,%d}" % MAX_KEY_BYTES)


def parse_pairs(
    data: bytes, *, max_pairs: int = MAX_PAIRS, max_value_bytes: int = MAX_VALUE_BYTES
) -> list[tuple[str, str]]:
    """The pairs in order, repeated keys allowed. Raises :class:`TextError`."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise TextError("text data does not end with a NUL")
    records = data[:-1].split(b"\0")
    if len(records) > max_pairs:
        raise TextError(f"more than {max_pairs} key=value pairs")
    pairs: list[tuple[str, str]] = []
    for record in records:
        key, eq, value = record.partition(b"=")
        if not eq:
            raise TextError(f"no '=' in text record {record[:40]!r}")
        if not _KEY.fullmatch(key):
            raise TextError(f"invalid key {key[:70]!r}")
        if len(value) > max_value_bytes:
            raise TextError(f"value of {key.decode()} longer than {max_value_bytes} bytes")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TextError(f"value of {key.decode()} is not UTF-8") from e
        pairs.append((key.decode("ascii"), text))
    return pairs


def parse_text(
    data: bytes, *, max_pairs: int = MAX_PAIRS, max_value_bytes: int = MAX_VALUE_BYTES
) -> dict[str, str]:
    """The keys of a negotiation, in order; a repeated key is a :class:`TextError`."""
    keys: dict[str, str] = {}
    for key, value in parse_pairs(data, max_pairs=max_pairs, max_value_bytes=max_value_bytes):
        if key in keys:
            raise TextError(f"key {key} given twice")
        keys[key] = value
    return keys


def encode_text(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """``key=value\\0`` for each pair, in order. Raises :class:`TextError` on a bad pair."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = bytearray()
    for key, value in items:
        try:
            k = key.encode("ascii")
            v = value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TextError(f"key or value of {key!r} cannot be encoded") from e
        if not _KEY.fullmatch(k):
            raise TextError(f"invalid key {key!r}")
        if b"\0" in v or len(v) > MAX_VALUE_BYTES:
            raise TextError(f"invalid value for {key}")
        out += k + b"=" + v + b"\0"
    return bytes(out)
