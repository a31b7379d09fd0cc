"""Messages between Raft nodes: one frozen dataclass per kind, plus stable renderings.

Every message carries ``src``, ``dst`` and the sender's ``term``. The renderings
(``render(msg)``) are one line each and stable: scenario tests and simulator
traces compare them byte for byte, e.g. ``1->2 App t3 prev=4/2 c=4 [5/3]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import Entry, Index, NodeId, Snapshot, Term


@dataclass(frozen=True, slots=True)
class VoteRequest:
    src: NodeId
    dst: NodeId
    term: Term  # for a pre-vote: the term the sender *would* campaign in
    last_index: Index
    last_term: Term
    pre: bool = False
    # Sent after TimeoutNow: voters set aside their leader lease (Raft thesis §3.10).
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    src: NodeId
    dst: NodeId
    term: Term
    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    src: NodeId
    dst: NodeId
    term: Term
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...]
    commit: Index


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Answer to AppendEntries and InstallSnapshot.

    On success ``index`` is the last index known to match the leader's log. On
    rejection ``index`` is the rejected ``prev_index`` and (hint_index, hint_term)
    is the follower's best guess of where the logs may still agree: the largest
    index <= min(prev_index, last) whose term <= the rejected prev_term. The
    leader skips a whole term per round trip with it.
    """

    src: NodeId
    dst: NodeId
    term: Term
    index: Index
    reject: bool = False
    hint_index: Index = Index(0)
    hint_term: Term = Term(0)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    src: NodeId
    dst: NodeId
    term: Term
    commit: Index  # min(follower's match, leader's commit): never past what the follower holds
    read_seq: int = 0  # ReadIndex round being confirmed (0: none)


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    src: NodeId
    dst: NodeId
    term: Term
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: NodeId
    dst: NodeId
    term: Term
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: "campaign now, skipping PreVote"."""

    src: NodeId
    dst: NodeId
    term: Term


Message = (
    VoteRequest
    | VoteResponse
    | AppendEntries
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)

# Messages a leader sends to replicate: they may leave before the leader's own
# disk write finishes (Raft thesis §10.2.1). Everything else waits for persistence.
LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)


def _ents(entries: tuple[Entry, ...]) -> str:
    if not entries:
        return ""
    if len(entries) <= 3:
        return " [" + " ".join(f"{e.index}/{e.term}" for e in entries) + "]"
    return f" [{entries[0].index}/{entries[0].term}..{entries[-1].index}/{entries[-1].term}]"


def render(m: Message) -> str:
    """One stable line per message, for traces and scenario tests."""
    head = f"{m.src}->{m.dst}"
    match m:
        case VoteRequest():
            kind = "PreVote" if m.pre else "Vote"
            extra = " transfer" if m.transfer else ""
            return f"{head} {kind} t{m.term} last={m.last_index}/{m.last_term}{extra}"
        case VoteResponse():
            kind = "PreVoteResp" if m.pre else "VoteResp"
            return f"{head} {kind} t{m.term} {'granted' if m.granted else 'rejected'}"
        case AppendEntries():
            return (
                f"{head} App t{m.term} prev={m.prev_index}/{m.prev_term} c={m.commit}"
                f"{_ents(m.entries)}"
            )
        case AppendResponse():
            if m.reject:
                return (
                    f"{head} AppResp t{m.term} reject={m.index} hint={m.hint_index}/{m.hint_term}"
                )
            return f"{head} AppResp t{m.term} ok={m.index}"
        case Heartbeat():
            read = f" read={m.read_seq}" if m.read_seq else ""
            return f"{head} Hb t{m.term} c={m.commit}{read}"
        case HeartbeatResponse():
            read = f" read={m.read_seq}" if m.read_seq else ""
            return f"{head} HbResp t{m.term}{read}"
        case InstallSnapshot():
            meta = m.snapshot.meta
            return f"{head} Snap t{m.term} at={meta.index}/{meta.term}"
        case TimeoutNow():
            return f"{head} TimeoutNow t{m.term}"
