"""Simulated users of leases and watches, and the messages they exchange with nodes.

A LeaseHolder does what a target agent does with its liveness lease: grant,
attach a key, keep it alive every TTL/3, and now and then walk away (stop
keepalives) so that the lease must expire. Every acknowledged grant or
keepalive is reported to the LeaseChecker with the time its request was
*sent*: the lease must outlive that instant by a full TTL.

A WatchClient does what coord.client's resuming watch does: open a stream
from the next revision it has not seen, and when the stream breaks (a lost
or reordered message shows as a gap in its sequence numbers — the simulated
network is not TCP — the node crashes, or nothing arrives for a while),
reopen it on another node from that same revision. It keeps exactly what
arrived, without filtering duplicates: the WatchChecker judges it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .loop import MS, Loop
from .workload import ClientReply

if TYPE_CHECKING:
    from .checkers.store import LeaseChecker

WatchEvent = tuple[int, str, str, str | None]  # (revision, put|delete, key, value)


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    client: int
    host: int
    req: int
    kind: str  # grant | attach | keepalive
    lease: int = 0
    ttl: int = 0
    key: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class MapRequest:
    """A target agent, initiator or operator asking a node about the cluster map.

    ``propose``: a ``map.*`` command (``cmd``) through Raft; ``heartbeat``: the
    node's keepalive plus the VIPs it may serve (the daemon's node_heartbeat);
    ``list``: every map key as this node has applied it (re-listing a watch).
    """

    client: int
    host: int
    req: int
    kind: str  # propose | heartbeat | list
    cmd: dict[str, Any] | None = None
    node: str = ""
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchRequest:
    client: int
    host: int
    stream: int
    prefix: str
    start: int


@dataclass(frozen=True, slots=True)
class WatchMsg:
    client: int
    stream: int
    seq: int
    kind: str  # events | progress | compacted | cut
    revision: int
    events: tuple[WatchEvent, ...] = ()


class LeaseHolder:
    def __init__(
        self,
        cid: int,
        host: int,
        nodes: Callable[[], list[int]],
        loop: Loop,
        rng: random.Random,
        send: Callable[[int, int, Any], None],
        trace: Callable[[str], None],
        checker: LeaseChecker,
        ttl_s: int,
        timeout_us: int,
    ) -> None:
        self.id, self.host, self._nodes = cid, host, nodes
        self.loop, self.rng, self._send, self._trace = loop, rng, send, trace
        self.checker = checker
        self.ttl_s = ttl_s
        self.timeout_us = timeout_us
        self.target = host
        self.req = 0
        self.lease = 0
        self.key = f"lease/c{cid}"
        self.sent_at: dict[int, int] = {}
        self.keepalives_left = 0
        self.stopped = False
        self.busy = False
        self.kind = ""

    def start(self) -> None:
        self.loop.after(self.rng.randint(0, 300 * MS), self._grant)

    def stop(self) -> None:
        if not self.stopped and self.lease:
            self.checker.on_abandon(self.lease, self.loop.now)
        self.stopped = True

    def _request(self, kind: str, **kw: Any) -> None:
        if self.stopped:
            return
        self.req += 1
        self.sent_at = {self.req: self.loop.now}
        self.busy = True
        self.kind = kind
        msg = LeaseRequest(self.id, self.host, self.req, kind, **kw)
        self._send(self.host, self.target, msg)
        self.loop.after(self.timeout_us, self._timeout, self.req, kind)

    def _grant(self) -> None:
        self.lease = 0
        self._request("grant", ttl=self.ttl_s)

    def _attach(self) -> None:
        self._request("attach", lease=self.lease, key=self.key, value=f"{self.id}.{self.req}")

    def _keepalive(self) -> None:
        if self.stopped or self.busy:
            return
        if self.keepalives_left <= 0:
            # Walk away: this lease must now expire by itself.
            self._trace(f"c{self.id} abandons lease {self.lease}")
            self.checker.on_abandon(self.lease, self.loop.now)
            self.lease = 0
            self.loop.after(self.ttl_s * 1_000_000, self._grant)
            return
        self.keepalives_left -= 1
        self._request("keepalive", lease=self.lease)

    def _next_keepalive(self) -> None:
        self.loop.after(self.ttl_s * 1_000_000 // 3, self._keepalive)

    def _timeout(self, req: int, kind: str) -> None:
        if req != self.req or not self.busy:
            return
        self.busy = False
        self._pick_other()
        self._retry(kind)

    def _retry(self, kind: str) -> None:
        if kind == "grant":
            self.loop.after(100 * MS, self._grant)
        elif kind == "attach":
            self.loop.after(100 * MS, self._attach)
        else:
            self._next_keepalive()

    def on_reply(self, rep: ClientReply) -> None:
        if rep.req != self.req or not self.busy or self.stopped:
            return
        self.busy = False
        sent, kind = self.sent_at[rep.req], self.kind
        if rep.leader:
            self.target = rep.leader
        if rep.status == "ok":
            if kind == "grant":
                self.lease = int(rep.result)
                self._trace(f"c{self.id} lease {self.lease} granted")
            if kind != "attach":  # attaching a key does not restart the countdown
                self.checker.on_ack(self.lease, sent, self.ttl_s, self.loop.now)
            if kind == "grant":
                self._attach()
                return
            if kind == "attach":
                self.keepalives_left = self.rng.randint(2, 12)
            self._next_keepalive()
            return
        if rep.status == "lease_not_found" and kind != "grant":
            # Expired (we were cut off too long): start again with a new lease.
            self._trace(f"c{self.id} lease {self.lease} is gone")
            self.checker.on_abandon(self.lease, sent)
            self.lease = 0
            self.loop.after(100 * MS, self._grant)
            return
        if rep.status == "not_leader" and not rep.leader:
            self._pick_other()
        self._retry(kind)

    def _pick_other(self) -> None:
        others = [n for n in self._nodes() if n != self.target]
        if others:
            self.target = self.rng.choice(others)


@dataclass
class Segment:
    """One unbroken view of the history: from ``start``, what arrived, in order."""

    prefix: str
    start: int
    events: list[WatchEvent] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)  # (events so far, revision)


class WatchClient:
    SILENCE_US = 1500 * MS  # progress comes every 500 ms: this much silence is a dead stream

    def __init__(
        self,
        cid: int,
        host: int,
        nodes: Callable[[], list[int]],
        loop: Loop,
        rng: random.Random,
        send: Callable[[int, int, Any], None],
        trace: Callable[[str], None],
        prefix: str,
    ) -> None:
        self.id, self.host, self._nodes = cid, host, nodes
        self.loop, self.rng, self._send, self._trace = loop, rng, send, trace
        self.target = host
        self.stream = 0
        self.expect = 0
        self.next_rev = 1
        self.last_msg_us = 0
        self.segments = [Segment(prefix, 1)]
        self.stopped = False
        self.reopens = 0

    @property
    def seg(self) -> Segment:
        return self.segments[-1]

    def start(self) -> None:
        # Watch a node across the network, so its faults reach the stream.
        others = [n for n in self._nodes() if n != self.host]
        if others:
            self.target = self.rng.choice(others)
        self._open()
        self.loop.after(self.SILENCE_US // 3, self._check_silence)

    def stop(self) -> None:
        self.stopped = True

    def _open(self) -> None:
        self.stream += 1
        self.expect = 0
        self.last_msg_us = self.loop.now
        req = WatchRequest(self.id, self.host, self.stream, self.seg.prefix, self.next_rev)
        self._send(self.host, self.target, req)

    def _reopen(self, why: str) -> None:
        self.reopens += 1
        others = [n for n in self._nodes() if n != self.target]
        if others:
            self.target = self.rng.choice(others)
        self._trace(f"c{self.id} watch reopens at {self.next_rev} on n{self.target} ({why})")
        self._open()

    def _check_silence(self) -> None:
        if self.stopped:
            return
        if self.loop.now - self.last_msg_us > self.SILENCE_US:
            self._reopen("silence")
        self.loop.after(self.SILENCE_US // 3, self._check_silence)

    def on_watch(self, msg: WatchMsg) -> None:
        if self.stopped or msg.stream != self.stream or msg.seq < self.expect:
            return  # an old stream, or a duplicate
        if msg.seq > self.expect:
            self._reopen("gap in the stream")
            return
        self.expect += 1
        self.last_msg_us = self.loop.now
        seg = self.seg
        if msg.kind == "events":
            seg.events.extend(msg.events)
            self.next_rev = msg.events[-1][0] + 1
        elif msg.kind == "progress":
            seg.progress.append((len(seg.events), msg.revision))
        elif msg.kind == "compacted":
            # History is gone: re-list (here: start over from now) in a new segment.
            self.next_rev = msg.revision + 1
            self.segments.append(Segment(seg.prefix, self.next_rev))
            self._open()
        elif msg.kind == "cut":
            self._reopen("cut off")
