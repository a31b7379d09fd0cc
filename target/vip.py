"""The agent's rule for holding VIPs: a small pure core (the simulator runs it too).

Inputs: the agent's own monotonic clock (handed in); each acknowledged
heartbeat — when it was *sent*, and the VIPs the leader said this node owns
at the revision it answered from; and views of the map from a watch, also
stamped with their revision. Output: which VIPs the agent may serve right
now, with their epochs (the fencing token).

The rule (DESIGN.md "VIP safety"):

    serve VIP v  iff  the newest view says we own v (not being released)
                 and  now - send time of the last acknowledged heartbeat
                      < TTL x (1 - rho) - margin

Why no one else can be serving v meanwhile. v leaves this node only by one
of three entries in the log (coord/clustermap/apply.py):
- our lease *expired*: the leader counted a full TTL, by its clock, from a
  moment after it received our last acknowledged heartbeat (a new leader
  restarts that countdown when it takes office, later still). With rho
  bounding how much faster one clock runs than another over an interval,
  TTL x (1 - rho) by our clock from that heartbeat's send ends before.
- v was *released* (drain, move, revoke by hand, re-registration): the new
  owner gets v only after we report we let go, or after the leader counted
  the same full TTL from when it applied the release. Every heartbeat
  answered after that apply says we do not own v; one answered before was
  sent before the countdown started — the same argument as above.
- an older agent of this node (replaced by a registration) is covered by
  the release: ``registered(revision)`` makes this one ignore every view
  older than its own registration.

Views only move forward: an answer or a watch view older than the newest one
seen is ignored for ownership (a late answer must not resurrect a VIP), while
the freshness of the lease still counts from the latest send acknowledged.
``margin`` covers the time from deciding to actually removing the address;
the I/O shell drops VIPs before anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Assignment:
    address: str
    owner: str | None
    epoch: int
    releasing: bool = False


class VipHolder:
    def __init__(self, node_id: str, ttl_s: float, rho: float, margin_s: float) -> None:
        if not 0 <= rho < 1:
            raise ValueError("rho must be in [0, 1)")
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.safe_s = ttl_s * (1 - rho) - margin_s
        if self.safe_s <= 0:
            raise ValueError("ttl x (1 - rho) - margin must be positive")
        self.acked_send: float | None = None  # send time of the newest acknowledged heartbeat
        self.floor = 0  # views older than our registration say nothing about us
        self.view_revision = -1
        self.owned: dict[str, int] = {}  # address -> epoch, as of view_revision

    def registered(self, revision: int) -> None:
        """A new lease for this node, granted at ``revision``: start from nothing."""
        self.acked_send = None
        self.floor = revision
        self.view_revision = -1
        self.owned = {}

    def heartbeat_acked(self, sent_at: float, revision: int, owned: dict[str, int]) -> None:
        """A heartbeat sent at ``sent_at`` was answered: at ``revision`` we own ``owned``."""
        if self.acked_send is None or sent_at > self.acked_send:
            self.acked_send = sent_at
        self._view(revision, owned)

    def map_seen(self, revision: int, vips: Iterable[Assignment]) -> None:
        """Every VIP as the map shows it at ``revision`` (a whole, consistent view)."""
        owned = {a.address: a.epoch for a in vips if a.owner == self.node_id and not a.releasing}
        self._view(revision, owned)

    def _view(self, revision: int, owned: dict[str, int]) -> None:
        if revision < self.floor or revision <= self.view_revision:
            return
        self.view_revision = revision
        self.owned = dict(owned)

    def lease_lost(self) -> None:
        """The lease is gone (expired, revoked, or a new one is being granted)."""
        self.acked_send = None
        self.owned = {}

    def fresh(self, now: float) -> bool:
        return self.acked_send is not None and now - self.acked_send < self.safe_s

    def serve_until(self) -> float | None:
        """Our clock's instant at which we must have stopped serving (None: already)."""
        return None if self.acked_send is None else self.acked_send + self.safe_s

    def serving(self, now: float) -> dict[str, int]:
        """VIP address -> epoch, for every VIP we may serve at ``now``."""
        if not self.fresh(now):
            return {}
        return dict(sorted(self.owned.items()))
