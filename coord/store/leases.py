"""The leader's lease countdowns: when to propose that a lease expired.

Pure (times are numbers handed in: the daemon's monotonic clock, or the
simulator's drifting local clock), so the daemon and the simulator run the
same rules:

- Only a leader counts down. Taking office restarts every countdown from a
  full TTL, so a lease never expires early because leadership moved.
- A keepalive restarts a countdown only on a leader that has just confirmed
  itself (the caller's read barrier), and is refused once the revoke of that
  lease has been proposed: acknowledging it then would promise a lease that
  is about to vanish.
- Expiry is proposed once; if the proposal is refused or its fate is unknown
  the lease becomes due again on a later tick (a second revoke of a revoked
  lease is answered "not found" and changes nothing).

Why a keepalive acknowledged at time t keeps the lease until at least
t + TTL (by the slowest clock): the countdown was restarted after the request
arrived; a later leader restarts it when it takes office, which is after a
quorum acknowledged the confirming leader's term, hence after the request too;
a revoke proposed by an earlier leader either is applied before the
confirmation completes (then the keepalive finds no lease) or never commits.
"""

from __future__ import annotations

from collections.abc import Iterable


class LeaseClock:
    def __init__(self) -> None:
        self.deadlines: dict[int, float] = {}
        self.revoking: set[int] = set()
        self.leading = False

    def lead(self, now: float, leases: Iterable[tuple[int, float]]) -> None:
        """Taking office: every lease (id, ttl) gets a full TTL from now."""
        self.leading = True
        self.deadlines = {lease_id: now + ttl for lease_id, ttl in leases}
        self.revoking = set()

    def step_down(self) -> None:
        self.leading = False
        self.deadlines = {}
        self.revoking = set()

    def granted(self, lease_id: int, ttl: float, now: float) -> None:
        if self.leading:
            self.deadlines[lease_id] = now + ttl

    def revoked(self, lease_id: int) -> None:
        self.deadlines.pop(lease_id, None)
        self.revoking.discard(lease_id)

    def keepalive(self, lease_id: int, ttl: float, now: float) -> bool:
        """Restart the countdown; False if expiry is already on its way."""
        if not self.leading or lease_id in self.revoking:
            return False
        self.deadlines[lease_id] = now + ttl
        return True

    def due(self, now: float) -> list[int]:
        """Leases whose time is up and whose revoke is not yet proposed (now marked)."""
        if not self.leading:
            return []
        out = [
            lease_id
            for lease_id, deadline in sorted(self.deadlines.items())
            if deadline <= now and lease_id not in self.revoking
        ]
        self.revoking.update(out)
        return out

    def revoke_failed(self, lease_id: int) -> None:
        """The revoke was refused or its fate is unknown: try again on a later tick."""
        self.revoking.discard(lease_id)

    def remaining(self, lease_id: int, now: float) -> float | None:
        deadline = self.deadlines.get(lease_id)
        return None if deadline is None else max(0.0, deadline - now)
