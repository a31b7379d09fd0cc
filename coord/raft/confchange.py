"""Membership changes: one server at a time (Raft thesis §4.1).

A CONFIG entry carries the *whole* new configuration, not a delta, so that a
node can take it into use the moment it lands in its log (the thesis rule:
a server uses the latest configuration in its log, committed or not) and can
drop it again if that entry is truncated. The change that produced it, with an
opaque ``context`` (the daemon puts the new member's address there), rides
along for the driver.

Single-server changes are safe because any majority of C_old and any majority
of C_new overlap when they differ by one voter. Adding a learner or promoting a
caught-up learner keeps that property; the leader enforces "one at a time" and
"an entry of its own term committed first" (the fix to the bug found in
single-server changes, Ongaro 2015).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from .errors import InvalidChange
from .types import ConfState, Entry, EntryKind, HardState, Index, NodeId, Term


class ChangeType(enum.IntEnum):
    ADD_LEARNER = 0  # join without a vote; catch up first
    PROMOTE = 1  # learner -> voter
    ADD_VOTER = 2  # straight to voter (fine for an empty cluster slot; prefer learner + promote)
    REMOVE = 3  # voter or learner leaves
    BOOTSTRAP = 4  # the initial configuration, entry 1 of a new cluster


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ChangeType
    node: NodeId
    context: bytes = b""


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after ``cc``, or InvalidChange saying why not."""
    voters, learners, n = set(conf.voters), set(conf.learners), cc.node
    if n <= 0:
        raise InvalidChange(f"bad node id {n}")
    match cc.type:
        case ChangeType.ADD_LEARNER:
            if n in voters or n in learners:
                raise InvalidChange(f"node {n} is already a member")
            learners.add(n)
        case ChangeType.ADD_VOTER:
            if n in voters:
                raise InvalidChange(f"node {n} is already a voter")
            learners.discard(n)
            voters.add(n)
        case ChangeType.PROMOTE:
            if n not in learners:
                raise InvalidChange(f"node {n} is not a learner")
            learners.discard(n)
            voters.add(n)
        case ChangeType.REMOVE:
            if n not in voters and n not in learners:
                raise InvalidChange(f"node {n} is not a member")
            if voters == {n}:
                raise InvalidChange("cannot remove the last voter")
            voters.discard(n)
            learners.discard(n)
        case ChangeType.BOOTSTRAP:
            raise InvalidChange("bootstrap is not a change")
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))


def encode(conf: ConfState, cc: ConfChange) -> bytes:
    data: bytes = msgpack.packb(
        [list(conf.voters), list(conf.learners), int(cc.type), int(cc.node), cc.context]
    )
    return data


def decode(data: bytes) -> tuple[ConfState, ConfChange]:
    voters, learners, kind, node, context = msgpack.unpackb(data)
    conf = ConfState(
        voters=tuple(NodeId(v) for v in voters), learners=tuple(NodeId(v) for v in learners)
    )
    return conf, ConfChange(ChangeType(kind), NodeId(node), bytes(context))


def bootstrap(voters: list[int] | tuple[int, ...], context: bytes = b"") -> tuple[Entry, HardState]:
    """The first entry and hard state of a brand-new cluster (every founder writes the same).

    The initial configuration is an ordinary CONFIG entry at index 1, committed
    from the start, so a node that joins later learns it from the log like any
    other change (or from a snapshot once the log is compacted).
    """
    conf = ConfState(voters=tuple(sorted(NodeId(v) for v in voters)))
    if not conf.voters:
        raise ValueError("a cluster needs at least one voter")
    entry = Entry(
        Index(1),
        Term(1),
        EntryKind.CONFIG,
        encode(conf, ConfChange(ChangeType.BOOTSTRAP, NodeId(0), context)),
    )
    return entry, HardState(term=Term(1), vote=NodeId(0), commit=Index(1))
