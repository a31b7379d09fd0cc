"""The leader's timers for the cluster map: what to propose, and when.

Pure, like coord/store/leases.py: the caller hands in its monotonic clock
(the daemon's, or a simulated node's drifting one) and proposes the commands
``due`` returns through Raft, so the simulator runs exactly these rules.

- A pending session not confirmed by its node's agent within ``pending_ttl_s``
  is expired (``map.sessions_expire``), so a login that never happened stops
  counting against its node.
- A VIP being released is handed over once the old holder's lease TTL has
  passed in full (``map.vip_release_expired``) if the holder never reported
  letting go: by then it has stopped serving (target/vip.py).
- Waiting rebuilds are offered to ``map.rebuild_schedule`` every
  ``rebuild_every_s`` when one of them could be placed now.
- VIPs are spread: when no VIP is being released and one eligible node holds
  at least two more than another (VIPs created before most agents came up, a
  node back from the dead), one VIP moves from the fullest to the emptiest
  (``map.vip_move``, itself a release: safe), at most every
  ``rebalance_every_s``. A VIP carries only logins (sessions run to the nodes'
  own portals), so a move costs new logins a moment, not I/O.

Every countdown starts when this leader first sees the item: taking office
restarts them all, so they only ever end later than the state says, never
earlier. An item proposed and still there ``retry_s`` later (its proposal
was lost with a leader change, say) is proposed again.
"""

from __future__ import annotations

from typing import Any

from . import apply as ops
from .model import SESSIONS
from .state import ClusterMap

Key = tuple[str, str, int]  # (kind, id, revision it was seen at)


class MapController:
    def __init__(
        self,
        pending_ttl_s: float = 10.0,
        rebuild_every_s: float = 1.0,
        retry_s: float = 1.0,
        rebalance_every_s: float = 5.0,
    ) -> None:
        self.pending_ttl_s = pending_ttl_s
        self.rebuild_every_s = rebuild_every_s
        self.retry_s = retry_s
        self.rebalance_every_s = rebalance_every_s
        self.leading = False
        self.deadlines: dict[Key, float] = {}
        self.next_rebuild = 0.0
        self.next_rebalance = 0.0

    def lead(self, now: float) -> None:
        self.leading = True
        self.deadlines = {}
        self.next_rebuild = now
        # A new leader lets the cluster settle (agents re-registering) before spreading.
        self.next_rebalance = now + self.rebalance_every_s

    def step_down(self) -> None:
        self.leading = False
        self.deadlines = {}

    def due(self, now: float, cm: ClusterMap) -> list[dict[str, Any]]:
        """Commands to propose now (each in its own entry)."""
        if not self.leading:
            return []
        cmds: list[dict[str, Any]] = []
        current: dict[Key, float] = {}
        expire: list[list[Any]] = []
        for sid in sorted(cm.pending):
            rev = cm.mod_revision(SESSIONS + sid)
            if self._due(("session", sid, rev), now, self.pending_ttl_s, current):
                expire.append([sid, rev])
        for at in range(0, len(expire), ops.MAX_REPORT):  # one entry holds so many
            cmds.append({"op": "map.sessions_expire", "sessions": expire[at : at + ops.MAX_REPORT]})
        for addr in sorted(cm.releasing):
            vip = cm.vips[addr]
            ttl_s = vip["release_ttl_ms"] / 1000
            if self._due(("vip", addr, vip["epoch"]), now, ttl_s, current):
                cmds.append(
                    {"op": "map.vip_release_expired", "address": addr, "epoch": vip["epoch"]}
                )
        self.deadlines = current
        if cm.rebuild_waiting and now >= self.next_rebuild:
            self.next_rebuild = now + self.rebuild_every_s
            if any(ops.rebuild_slot(cm, v, r) is not None for v, r in sorted(cm.rebuild_waiting)):
                cmds.append({"op": "map.rebuild_schedule"})
        if now >= self.next_rebalance and not cm.releasing:
            move = rebalance_move(cm)
            if move is not None:
                self.next_rebalance = now + self.rebalance_every_s
                cmds.append({"op": "map.vip_move", "address": move[0], "to": move[1]})
        return cmds

    def _due(self, key: Key, now: float, ttl_s: float, current: dict[Key, float]) -> bool:
        deadline = self.deadlines.get(key, now + ttl_s)
        if deadline <= now:
            current[key] = now + self.retry_s  # proposed now; again later if still there
            return True
        current[key] = deadline
        return False


def rebalance_move(cm: ClusterMap) -> tuple[str, str] | None:
    """(VIP, to): one step from the node with the most VIPs to the one with the fewest,
    if they differ by two or more; None when the spread is even enough."""
    to = cm.least_vips()
    if to is None:
        return None
    counts = [(len(cm.node_vips.get(n, ())), n) for n in cm.eligible()]
    most, fullest = min(counts, key=lambda c: (-c[0], c[1]))  # the fullest; ties: lowest id
    if most - len(cm.node_vips.get(to, ())) < 2:
        return None
    return sorted(cm.node_vips[fullest])[0], to
