"""Where replicas go: a pure function of the policy and the disks that have room.

Candidates are disks of the policy's tier on live, undrained nodes with at
least the replica's size free. Two placements:

- scatter: every member (data replicas and arbiter) on a different node, so
  losing a node costs at most one member. Each member goes to the node with
  the most free space on a fitting disk, so load spreads as volumes come.
- aggregate: as few nodes as possible (different disks, never the same disk
  twice): the node that can take the most members is filled first.

Ties break on ids, so every replica of the state machine decides the same.
When a policy cannot be met the error says what is missing, in numbers:
"needs 3 nodes with a live standard disk with 10.0 GiB free; 2 have one (n1, n2)".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .model import AGGREGATE, GIB, MIB, Record, arbiter_bytes


class Unplaceable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Disk:
    node: str
    disk: str
    tier: str
    free_bytes: int


@dataclass(frozen=True, slots=True)
class Slot:
    role: str  # data | arbiter
    node: str
    disk: str
    size_bytes: int


def human(n: int) -> str:
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / MIB:.1f} MiB"


def wanted(pol: Record, size_bytes: int) -> list[tuple[str, int]]:
    """The members to place, largest first: (role, bytes)."""
    out = [("data", size_bytes)] * int(pol["replicas"])
    if pol["arbiter"]:
        out.append(("arbiter", arbiter_bytes(size_bytes)))
    return out


def place(
    pol: Record,
    members: list[tuple[str, int]],
    disks: Iterable[Disk],
    *,
    avoid_nodes: frozenset[str] = frozenset(),
    avoid_disks: frozenset[tuple[str, str]] = frozenset(),
) -> list[Slot]:
    """Slots for ``members`` (role, bytes), or Unplaceable saying what is missing.

    ``avoid_nodes``/``avoid_disks``: where the volume's other members already
    are (a rebuild places one member beside the rest).
    """
    tier = pol["tier"]
    pool = sorted(
        (d for d in disks if d.tier == tier and (d.node, d.disk) not in avoid_disks),
        key=lambda d: (d.node, d.disk),
    )
    free = {(d.node, d.disk): d.free_bytes for d in pool}
    by_node: dict[str, list[str]] = {}
    for d in pool:
        by_node.setdefault(d.node, []).append(d.disk)
    if pol["placement"] == AGGREGATE:
        slots = _aggregate(members, by_node, free)
    else:
        slots = _scatter(members, by_node, free, avoid_nodes)
    if slots is None:
        raise Unplaceable(_why(pol, members, pool, avoid_nodes))
    return slots


def _roomiest(room: dict[str, int], need: int) -> str | None:
    """The disk with the most room that fits ``need`` (ties: lowest id)."""
    best: str | None = None
    for d in sorted(room):
        if room[d] >= need and (best is None or room[d] > room[best]):
            best = d
    return best


def _scatter(
    members: list[tuple[str, int]],
    by_node: dict[str, list[str]],
    free: dict[tuple[str, str], int],
    avoid: frozenset[str],
) -> list[Slot] | None:
    slots: list[Slot] = []
    used = set(avoid)
    for role, need in members:
        choice: tuple[int, str, str] | None = None  # (-room, node, disk): lowest wins
        for node in sorted(by_node):
            if node in used:
                continue
            d = _roomiest({x: free[(node, x)] for x in by_node[node]}, need)
            if d is None:
                continue
            cand = (-free[(node, d)], node, d)
            if choice is None or cand < choice:
                choice = cand
        if choice is None:
            return None
        _, node, d = choice
        used.add(node)
        free[(node, d)] -= need
        slots.append(Slot(role, node, d, need))
    return slots


def _aggregate(
    members: list[tuple[str, int]],
    by_node: dict[str, list[str]],
    free: dict[tuple[str, str], int],
) -> list[Slot] | None:
    slots: list[Slot] = []
    taken: set[tuple[str, str]] = set()
    left = list(members)
    while left:
        # The node that can take the most of what is left (then: most room, then id).
        best: tuple[int, int, str] | None = None
        for node in sorted(by_node):
            n = len(_fill(node, by_node[node], free, taken, left))
            if n == 0:
                continue
            room = sum(free[(node, d)] for d in by_node[node] if (node, d) not in taken)
            cand = (-n, -room, node)
            if best is None or cand < best:
                best = cand
        if best is None:
            return None
        node = best[2]
        for slot in _fill(node, by_node[node], free, taken, left):
            taken.add((slot.node, slot.disk))
            free[(slot.node, slot.disk)] -= slot.size_bytes
            slots.append(slot)
            left.remove((slot.role, slot.size_bytes))
    return slots


def _fill(
    node: str,
    disks: list[str],
    free: dict[tuple[str, str], int],
    taken: set[tuple[str, str]],
    members: list[tuple[str, int]],
) -> list[Slot]:
    """Members (largest first) on distinct untaken disks of ``node``, greedily."""
    room = {d: free[(node, d)] for d in disks if (node, d) not in taken}
    out: list[Slot] = []
    for role, need in members:
        d = _roomiest(room, need)
        if d is None:
            continue
        del room[d]
        out.append(Slot(role, node, d, need))
    return out


def _why(
    pol: Record, members: list[tuple[str, int]], pool: list[Disk], avoid: frozenset[str]
) -> str:
    tier = pol["tier"]
    need = max(b for _, b in members)
    fitting = sorted({d.node for d in pool if d.free_bytes >= need and d.node not in avoid})
    shape = f"{pol['replicas']} data replica{'s' if pol['replicas'] != 1 else ''}" + (
        " + arbiter" if pol["arbiter"] else ""
    )
    if not pool:
        return (
            f"policy {pol['name']!r} ({shape}, tier {tier}) needs live, undrained nodes with "
            f"{tier} disks; there are none"
        )
    listed = ", ".join(fitting) if fitting else "none"
    if pol["placement"] == AGGREGATE:
        n_disks = sum(1 for d in pool if d.free_bytes >= need)
        return (
            f"policy {pol['name']!r} ({shape}, tier {tier}, aggregate) needs {len(members)} "
            f"{tier} disks with {human(need)} free on live, undrained nodes; "
            f"{n_disks} have that room (on: {listed})"
        )
    return (
        f"policy {pol['name']!r} ({shape}, tier {tier}, scatter) needs {len(members)} "
        f"live, undrained node{'s' if len(members) != 1 else ''} with a {tier} disk with "
        f"{human(need)} free{' besides those holding its other replicas' if avoid else ''}; "
        f"{len(fitting)} {'has' if len(fitting) == 1 else 'have'} one ({listed})"
    )
