"""Raft messages on the wire: msgpack arrays, checked field by field.

Anything a peer sends is untrusted until it decodes into a well-formed
message: every field has its type and range checked here, so the core never
sees a string where it expects an index. ``decode`` raises WireError for
anything else; nothing is ever unpickled or evaluated.

Layout: ``[tag, src, dst, term, ...fields]`` with entries as
``[index, term, kind, data]`` and a snapshot as
``[index, term, voters, learners, data]``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from coord.raft import (
    ConfState,
    Entry,
    EntryKind,
    Index,
    Message,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from coord.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

MAX_U64 = (1 << 64) - 1


class WireError(ValueError):
    """Bytes that are not a message we know, with why."""


def _u(v: Any, what: str) -> int:
    if type(v) is not int or not 0 <= v <= MAX_U64:
        raise WireError(f"{what}: want an unsigned integer, got {type(v).__name__}")
    return v


def _b(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise WireError(f"{what}: want a boolean")
    return v


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise WireError(f"{what}: want bytes")
    return v


def _list(v: Any, what: str, n: int | None = None) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise WireError(f"{what}: want a list{'' if n is None else f' of {n}'}")
    return v


def _entry(v: Any) -> Entry:
    index, term, kind, data = _list(v, "entry", 4)
    try:
        k = EntryKind(_u(kind, "entry kind"))
    except ValueError as e:
        raise WireError(f"entry kind {kind} unknown") from e
    if _u(index, "entry index") < 1:
        raise WireError("entry index 0")
    return Entry(Index(index), Term(_u(term, "entry term")), k, _bytes(data, "entry data"))


def _snapshot(v: Any) -> Snapshot:
    index, term, voters, learners, data = _list(v, "snapshot", 5)
    try:
        conf = ConfState(
            tuple(NodeId(_u(x, "voter")) for x in _list(voters, "voters")),
            tuple(NodeId(_u(x, "learner")) for x in _list(learners, "learners")),
        )
    except ValueError as e:
        raise WireError(f"snapshot configuration: {e}") from e
    meta = SnapshotMeta(Index(_u(index, "snapshot index")), Term(_u(term, "snapshot term")), conf)
    return Snapshot(meta, _bytes(data, "snapshot data"))


def to_obj(m: Message) -> list[Any]:
    head = [int(m.src), int(m.dst), int(m.term)]
    match m:
        case VoteRequest():
            return ["V", *head, m.last_index, m.last_term, m.pre, m.transfer]
        case VoteResponse():
            return ["v", *head, m.granted, m.pre]
        case AppendEntries():
            ents = [[e.index, e.term, int(e.kind), e.data] for e in m.entries]
            return ["A", *head, m.prev_index, m.prev_term, ents, m.commit]
        case AppendResponse():
            return ["a", *head, m.index, m.reject, m.hint_index, m.hint_term]
        case Heartbeat():
            return ["H", *head, m.commit, m.read_seq]
        case HeartbeatResponse():
            return ["h", *head, m.read_seq]
        case InstallSnapshot():
            meta = m.snapshot.meta
            snap = [
                meta.index,
                meta.term,
                list(meta.conf.voters),
                list(meta.conf.learners),
                m.snapshot.data,
            ]
            return ["S", *head, snap]
        case TimeoutNow():
            return ["T", *head]


def from_obj(v: Any) -> Message:
    items = _list(v, "message")
    if len(items) < 4 or type(items[0]) is not str:
        raise WireError("message: want [tag, src, dst, term, ...]")
    tag, src, dst, term, *rest = items
    s, d, t = NodeId(_u(src, "src")), NodeId(_u(dst, "dst")), Term(_u(term, "term"))
    try:
        match tag:
            case "V":
                li, lt, pre, tr = rest
                return VoteRequest(
                    s,
                    d,
                    t,
                    Index(_u(li, "last index")),
                    Term(_u(lt, "last term")),
                    _b(pre, "pre"),
                    _b(tr, "transfer"),
                )
            case "v":
                granted, pre = rest
                return VoteResponse(s, d, t, _b(granted, "granted"), _b(pre, "pre"))
            case "A":
                pi, pt, ents, commit = rest
                entries = tuple(_entry(e) for e in _list(ents, "entries"))
                return AppendEntries(
                    s,
                    d,
                    t,
                    Index(_u(pi, "prev index")),
                    Term(_u(pt, "prev term")),
                    entries,
                    Index(_u(commit, "commit")),
                )
            case "a":
                idx, rej, hi, ht = rest
                return AppendResponse(
                    s,
                    d,
                    t,
                    Index(_u(idx, "index")),
                    _b(rej, "reject"),
                    Index(_u(hi, "hint index")),
                    Term(_u(ht, "hint term")),
                )
            case "H":
                commit, seq = rest
                return Heartbeat(s, d, t, Index(_u(commit, "commit")), _u(seq, "read seq"))
            case "h":
                (seq,) = rest
                return HeartbeatResponse(s, d, t, _u(seq, "read seq"))
            case "S":
                (snap,) = rest
                return InstallSnapshot(s, d, t, _snapshot(snap))
            case "T":
                if rest:
                    raise WireError("TimeoutNow takes no fields")
                return TimeoutNow(s, d, t)
    except ValueError as e:  # wrong number of fields to unpack, or a check above
        if isinstance(e, WireError):
            raise
        raise WireError(f"{tag!r}: {e}") from e
    raise WireError(f"unknown message tag {tag!r}")


def encode_batch(src: int, msgs: list[Message]) -> bytes:
    data: bytes = msgpack.packb([src, [to_obj(m) for m in msgs]], use_bin_type=True)
    return data


def decode_batch(data: bytes, max_messages: int = 100_000) -> tuple[int, list[Message]]:
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_array_len=max_messages, use_list=True
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise WireError(f"not msgpack: {e}") from e
    src, items = _list(obj, "batch", 2)
    return _u(src, "batch src"), [from_obj(m) for m in _list(items, "batch messages")]
