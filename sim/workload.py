"""Simulated clients: each runs one operation at a time and records it in the history.

A client lives on a host (a node's machine), so partitions cut it off exactly
as they cut off its host. It sends each request to the node it believes leads,
follows NotLeader hints, and gives up on a request after ``timeout_us``.

Outcomes: "ok" -> ok; "not_leader", "dropped", "rejected" -> fail (the node
says it was not and will not be applied); "unknown" or a timeout -> info.
With ``retry_unknown`` set, an unknown write is retried with the *same*
(client, seq) on another node — the exactly-once path: the op ends ok if any
attempt succeeds, fail only if every attempt definitely failed, else info.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .history import History, Op, OpKind, Outcome
from .loop import MS, Loop


@dataclass(frozen=True, slots=True)
class ClientRequest:
    client: int
    host: int
    req: int  # unique per attempt, so late replies to older attempts are ignored
    session: str  # the client's session id in the store
    seq: int  # exactly-once sequence number (same across retries of one op)
    kind: OpKind
    key: str
    a: Any = None
    b: Any = None


@dataclass(frozen=True, slots=True)
class ClientReply:
    client: int
    req: int
    status: str  # ok | not_leader | dropped | rejected | unknown | stale | expired
    result: Any = None
    leader: int = 0
    log_pos: tuple[int, int] | None = None


@dataclass
class WorkloadParams:
    clients: int = 5
    keys: int = 3
    read_p: float = 0.4
    cas_p: float = 0.2
    think_min_us: int = 20 * MS
    think_max_us: int = 200 * MS
    timeout_us: int = 1500 * MS
    retry_unknown: int = 0  # how many times to retry an unknown write
    hosts: list[int] = field(default_factory=list)  # where clients live; [] = spread over nodes
    lease_holders: int = 2  # clients keeping leases alive (and walking away from them)
    lease_ttl_s: int = 2
    watchers: int = 2  # clients watching the store, resuming across failures


class Client:
    def __init__(
        self,
        cid: int,
        host: int,
        nodes: Callable[[], list[int]],
        loop: Loop,
        rng: random.Random,
        history: History,
        params: WorkloadParams,
        send: Callable[[int, int, Any], None],
        trace: Callable[[str], None],
    ) -> None:
        self.id = cid
        self.host = host
        self._nodes = nodes
        self.loop = loop
        self.rng = rng
        self.history = history
        self.p = params
        self._send = send
        self._trace = trace
        self.target = host
        self.seq = 0
        self.epoch = 0  # a new session after the store forgot ours
        self.reuse_seq = False  # the last write definitely failed: its number is free
        self.req = 0
        self.op: Op | None = None
        self.attempts_left = 0
        self.any_unknown = False
        self.stopped = False
        self._counter = 0
        self._recent: dict[str, list[Any]] = {}  # per key, values seen lately: CAS expectations

    def start(self) -> None:
        self._schedule_next()

    def stop(self) -> None:
        self.stopped = True

    def _schedule_next(self) -> None:
        if not self.stopped:
            self.loop.after(self.rng.randint(self.p.think_min_us, self.p.think_max_us), self._begin)

    def _begin(self) -> None:
        if self.stopped:
            return
        rng, p = self.rng, self.p
        key = f"k{rng.randrange(p.keys)}"
        r = rng.random()
        a: Any = None
        b: Any = None
        value: Any = None
        if r < p.read_p:
            kind, value = OpKind.READ, None
        else:
            self._counter += 1
            new = self.id * 1_000_000 + self._counter  # unique: observations identify writes
            if r < p.read_p + p.cas_p:
                # Expect a value that may well be there: the last one we saw, or absent.
                expected = rng.choice([None, *self._recent.get(key, [])])
                kind, value, a, b = OpKind.CAS, (expected, new), expected, new
            else:
                kind, value, a = OpKind.WRITE, new, new
            if not self.reuse_seq:
                self.seq += 1
        self.op = self.history.invoke(self.id, kind, key, value, self.loop.now)
        self._trace(f"c{self.id} invoke {self.op.render()}")
        self.attempts_left = p.retry_unknown
        self.any_unknown = False
        self._attempt(a, b)

    def _attempt(self, a: Any, b: Any) -> None:
        op = self.op
        assert op is not None
        self.req += 1
        op.nodes.append(self.target)
        session = f"c{self.id}.{self.epoch}"
        req = ClientRequest(self.id, self.host, self.req, session, self.seq, op.kind, op.key, a, b)
        self._send(self.host, self.target, req)
        self.loop.after(self.p.timeout_us, self._timeout, self.req, a, b)

    def _timeout(self, req: int, a: Any, b: Any) -> None:
        if self.op is None or req != self.req:
            return
        self._unknown(a, b, "timeout")

    def on_reply(self, rep: ClientReply) -> None:
        op = self.op
        if op is None or rep.req != self.req:
            return  # a late or duplicated reply to an attempt we gave up on
        a, b = op.value if op.kind is OpKind.CAS else (op.value, None)
        if rep.leader:
            self.target = rep.leader
        match rep.status:
            case "ok":
                op.log_pos = rep.log_pos
                if op.kind is OpKind.READ and rep.result is not None:
                    self._remember(op.key, rep.result)
                elif op.kind is OpKind.WRITE:
                    self._remember(op.key, op.value)
                self._finish(Outcome.OK, rep.result)
            case "not_leader" | "dropped" | "rejected" | "stale" | "expired":
                if not rep.leader and rep.status == "not_leader":
                    self._pick_other()
                if rep.status == "expired":
                    # The store has no session for us (our first write never applied,
                    # or it forgot us): start a new one.
                    self.epoch, self.seq = self.epoch + 1, 1
                if self.any_unknown:
                    # An earlier attempt may have been applied: this one's refusal says nothing.
                    self._retry_or_info(a, b, rep.status)
                else:
                    self._finish(Outcome.FAIL, None, rep.status)
            case "unknown":
                self._unknown(a, b, "unknown")
            case _:
                raise AssertionError(f"bad reply status {rep.status}")

    def _unknown(self, a: Any, b: Any, why: str) -> None:
        self.any_unknown = True
        self._pick_other()
        self._retry_or_info(a, b, why)

    def _retry_or_info(self, a: Any, b: Any, why: str) -> None:
        op = self.op
        assert op is not None
        if op.kind is not OpKind.READ and self.attempts_left > 0:
            self.attempts_left -= 1
            self._trace(f"c{self.id} retry op{op.id} ({why}) via n{self.target}")
            self._attempt(a, b)
            return
        self._finish(Outcome.INFO, None, why)

    def _finish(self, outcome: Outcome, result: Any, why: str = "") -> None:
        op = self.op
        assert op is not None
        if op.kind is not OpKind.READ:
            self.reuse_seq = outcome is Outcome.FAIL
        self.history.complete(op, outcome, self.loop.now, result)
        note = f" ({why})" if why else ""
        self._trace(f"c{self.id} {op.render()}{note}")
        self.op = None
        self._schedule_next()

    def _pick_other(self) -> None:
        others = [n for n in self._nodes() if n != self.target]
        if others:
            self.target = self.rng.choice(others)

    def _remember(self, key: str, value: Any) -> None:
        seen = self._recent.setdefault(key, [])
        seen.append(value)
        del seen[:-3]
