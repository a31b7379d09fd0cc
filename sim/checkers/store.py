"""Checkers for the store's promises beyond linearizable reads and writes.

WatchChecker. Every node reports the events its state machine applies (or
learns from a snapshot's history); the first report of a revision becomes
the history, and any node reporting that revision differently is a
violation. At the end, each watcher's segments are judged against it: a
segment from revision S with prefix P must have received exactly the
history's events with revision >= S under P, in order, each once, with no
gap (a prefix of that list); and at each progress notification naming
revision R it must already have had every such event up to R.

LeaseChecker. A lease whose grant or keepalive was acknowledged for a request
sent at time t must not be revoked before t + TTL x (the slowest clock's
rate): that is what a holder relies on to keep serving. Keys attached to a
revoked lease must be gone (checked where the revoke is applied). A lease its
holder walked away from must be revoked within its TTL plus a bound once the
cluster has a stable leader again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from coord.store.mvcc import Event

from ..services import Segment, WatchEvent

Report = Callable[[str, tuple[int, ...], str], None]


class WatchChecker:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.history: dict[int, tuple[WatchEvent, ...]] = {}  # revision -> its events

    def on_events(self, nid: int, events: list[Event]) -> None:
        by_rev: dict[int, list[WatchEvent]] = {}
        for e in events:
            value = e.kv.value if e.kv is not None else None
            by_rev.setdefault(e.revision, []).append((e.revision, e.type, e.key, value))
        for rev, rows in by_rev.items():
            got = tuple(rows)
            known = self.history.get(rev)
            if known is None:
                self.history[rev] = got
            elif known != got:
                self.report(
                    "watch-history",
                    (nid,),
                    f"n{nid} applied revision {rev} as {got}, others as {known}",
                )

    def expected(self, prefix: str, start: int, upto: int | None = None) -> list[WatchEvent]:
        out: list[WatchEvent] = []
        for rev in sorted(self.history):
            if rev < start or (upto is not None and rev > upto):
                continue
            out.extend(row for row in self.history[rev] if row[2].startswith(prefix))
        return out

    def judge(self, cid: int, segments: Iterable[Segment]) -> None:
        for seg in segments:
            want = self.expected(seg.prefix, seg.start)
            got = seg.events
            n = len(got)
            if got != want[:n]:
                i = next(k for k in range(n) if k >= len(want) or got[k] != want[k])
                self.report(
                    "watch",
                    (),
                    f"c{cid} watching {seg.prefix!r} from {seg.start}: event {i} is "
                    f"{got[i]}, the history says "
                    f"{want[i] if i < len(want) else 'nothing (beyond the history)'}",
                )
                continue
            for count, rev in seg.progress:
                need = len(self.expected(seg.prefix, seg.start, rev))
                if count < need:
                    self.report(
                        "watch-progress",
                        (),
                        f"c{cid} watching {seg.prefix!r}: told it was current at revision "
                        f"{rev} after {count} events, but {need} happened by then",
                    )
                    break


class LeaseChecker:
    def __init__(self, report: Report) -> None:
        self.report = report
        # Node clocks run at 1/rate of real time (rate: the node's tick-period factor).
        self.fastest = 1.0  # the smallest rate: its TTL is the shortest real span
        self.slowest = 1.0  # the largest rate
        self.acked: dict[int, tuple[int, int]] = {}  # lease -> (latest acked send time, ttl)
        self.revoked: dict[int, int] = {}  # lease -> when first applied anywhere
        self.abandoned: dict[int, int] = {}  # lease -> last send before the holder left

    def _promise(self, lease: int) -> int | None:
        got = self.acked.get(lease)
        if got is None:
            return None
        sent, ttl = got
        return sent + int(ttl * 1_000_000 * self.fastest)

    def on_ack(self, lease: int, sent_us: int, ttl: int, now_us: int) -> None:
        prev = self.acked.get(lease)
        if prev is None or sent_us > prev[0]:
            self.acked[lease] = (sent_us, ttl)
        revoked = self.revoked.get(lease)
        if revoked is not None:
            self._judge(lease, revoked)

    def on_revoked(self, lease: int, at_us: int) -> None:
        if lease in self.revoked:
            return
        self.revoked[lease] = at_us
        self._judge(lease, at_us)

    def _judge(self, lease: int, at_us: int) -> None:
        promise = self._promise(lease)
        if promise is not None and at_us < promise:
            sent, ttl = self.acked[lease]
            self.report(
                "lease-early-expiry",
                (),
                f"lease {lease} (ttl {ttl}s) revoked at {at_us / 1e6:.3f}s, but a keepalive "
                f"sent at {sent / 1e6:.3f}s was acknowledged: it was promised until "
                f"{promise / 1e6:.3f}s",
            )

    def on_abandon(self, lease: int, last_send_us: int) -> None:
        if lease:
            self.abandoned.setdefault(lease, last_send_us)

    def finish(self, end_us: int, leader_since_us: int | None, bound_us: int) -> None:
        """Abandoned leases must have expired, given a stable leader long enough."""
        if leader_since_us is None:
            return
        for lease, left in sorted(self.abandoned.items()):
            if lease in self.revoked:
                continue
            ttl = self.acked.get(lease, (0, 0))[1]
            due = max(left, leader_since_us) + int(ttl * 1_000_000 * self.slowest) + bound_us
            if due < end_us:
                self.report(
                    "lease-not-expired",
                    (),
                    f"lease {lease} (ttl {ttl}s) left at {left / 1e6:.3f}s is still alive at "
                    f"{end_us / 1e6:.3f}s under a leader since {leader_since_us / 1e6:.3f}s",
                )
