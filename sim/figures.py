"""python -m sim figures: what the target side achieves, measured over many seeds.

1. VIP reassignment time (scenario vip-failover): from the instant the VIP
   holder's host dies until another agent serves the VIP, in simulated time,
   for every VIP the dead agent served (one per seed in that scenario).
   p50 and p99 are nearest-rank percentiles over the seeds. The bound is the
   one the scenario checks (expectations_map.py): TTL x (1 + drift) + tick x
   (1 + drift) + network and fsync slack.
2. Balance after a mass reconnect (scenario mass-reconnect): 300 initiators
   over 3 nodes, one node's host dies, its initiators reconnect; at the end,
   the active sessions per live node as the leader's map counts them, and
   max - min of those counts; and how long after the death the last of the
   dead node's initiators was logged in elsewhere.

A seed whose run has any violation is listed and makes the exit status 1.
"""

from __future__ import annotations

import time

from .expectations_map import (
    failover_bound_us,
    failover_times,
    herd_reconnect_us,
    session_counts,
)
from .loop import MS
from .run import run_scenario
from .scenario import load


def percentile(values: list[int], q: float) -> int:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-int(q * 100) * len(ordered) // 100))
    return ordered[rank - 1]


def vip_failover(seeds: int) -> tuple[list[str], bool]:
    sc = load("vip-failover")
    took: list[int] = []
    bounds: set[int] = set()
    bad: list[int] = []
    settings = ""
    for seed in range(1, seeds + 1):
        res = run_scenario(sc, seed, check_linearizability=False)
        if not res.ok:
            bad.append(seed)
        w = res.world
        assert w.fleet is not None
        settings = f"TTL {w.fleet.p.ttl_ms}ms, tick {w.p.tick_us // MS}ms, drift {w.p.drift}"
        for _, t in failover_times(w):
            if t is not None:
                took.append(t)
                death = w.fleet.deaths[0][0]
                bounds.add(failover_bound_us(w, death, death + t))
    lines = [
        f"VIP reassignment after the holder's host dies (vip-failover: {settings}), "
        f"{seeds} seeds, {len(took)} reassignments:"
    ]
    if took:
        lines.append(
            f"  p50 {percentile(took, 0.5) / MS:.0f}ms  p99 {percentile(took, 0.99) / MS:.0f}ms  "
            f"min {min(took) / MS:.0f}ms  max {max(took) / MS:.0f}ms  "
            f"(bound {max(bounds) / MS:.0f}ms)"
        )
    if bad:
        lines.append(f"  seeds with violations: {bad}")
    return lines, not bad


def balance(seeds: int) -> tuple[list[str], bool]:
    sc = load("mass-reconnect")
    spreads: list[int] = []
    seen: dict[str, int] = {}
    bad: list[int] = []
    herds: list[int] = []
    for seed in range(1, seeds + 1):
        res = run_scenario(sc, seed, check_linearizability=False)
        if not res.ok:
            bad.append(seed)
        fleet = res.world.fleet
        assert fleet is not None
        live = {a.name for a in fleet.agents.values() if a.alive}
        counts = {n: c for n, c in session_counts(res.world).items() if n in live}
        spreads.append(max(counts.values()) - min(counts.values()))
        herd = herd_reconnect_us(res.world)
        if herd is not None:
            herds.append(herd)
        key = ", ".join(f"{n}: {c}" for n, c in counts.items())
        seen[key] = seen.get(key, 0) + 1
    lines = [
        f"mass-reconnect balance (300 initiators over 3 nodes, one node's host dies), "
        f"{seeds} seeds:",
        f"  max - min of active sessions on the live nodes: worst {max(spreads)}, "
        f"mean {sum(spreads) / len(spreads):.2f}",
    ]
    for key, n in sorted(seen.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n:>4} seeds: {{{key}}}")
    if herds:
        lines.append(
            f"  the dead node's initiators all logged in elsewhere within: "
            f"p50 {percentile(herds, 0.5) / MS:.0f}ms, max {max(herds) / MS:.0f}ms "
            f"of its death ({len(herds)} seeds)"
        )
    if bad:
        lines.append(f"  seeds with violations: {bad}")
    return lines, not bad


def main(seeds: int, balance_seeds: int) -> int:
    started = time.perf_counter()
    a, ok_a = vip_failover(seeds)
    print("\n".join(a), flush=True)
    b, ok_b = balance(balance_seeds)
    print("\n".join(b))
    print(f"({time.perf_counter() - started:.0f}s)")
    return 0 if ok_a and ok_b else 1
