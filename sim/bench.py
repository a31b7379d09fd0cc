"""python -m sim bench: how fast the simulator runs (a benchmark, never a test).

1. Simulated seconds per wall-clock second: a 5-node cluster, five clients
   (about 25 operations/s), 1-6 ms links with 1% loss, a partition or a crash
   every two seconds, checkers on, linearizability checked at the end.
2. Seeds explored per minute: ``explore`` with 5 nodes, each seed a full
   25-second swarm run (safety phase, heal, liveness phase) plus all checks.
"""

from __future__ import annotations

import platform
import sys
import time

from .explore import swarm_scenario
from .loop import S
from .run import run_scenario
from .scenario import Scenario

STEADY_S = 30.0


def steady_scenario() -> Scenario:
    steps: list[dict[str, object]] = [{"wait": "leader", "within": "5s"}]
    t = 2.0
    kinds = ["isolate", "partition", "crash", "heal"]
    k = 0
    while t < STEADY_S - 4:
        kind = kinds[k % len(kinds)]
        at = f"{t:.1f}s"
        if kind == "isolate":
            steps.append({"at": at, "do": "isolate", "node": "leader"})
        elif kind == "partition":
            steps.append({"at": at, "do": "partition", "groups": [[1, 2], [3, 4, 5]]})
        elif kind == "crash":
            steps.append({"at": at, "do": "crash", "node": 1 + k % 5})
            steps.append({"at": f"{t + 1.0:.1f}s", "do": "restart", "node": 1 + k % 5})
        else:
            steps.append({"at": at, "do": "heal"})
        t += 2.0
        k += 1
    return Scenario(
        name="bench-steady",
        summary="steady workload with faults",
        nodes=5,
        nodes_fixed=True,
        duration_us=int(STEADY_S * S),
        heal_at_us=int((STEADY_S - 4) * S),
        liveness_us=2 * S,
        expect=[],
        params={
            "network": {"delay": ["1ms", "6ms"], "loss": 0.01},
            "workload": {"clients": 5, "keys": 3},
            "raft": {},
            "sim": {},
        },
        steps=steps,
    )


def main(budget_s: float = 20.0) -> int:
    sc = steady_scenario()
    sim_us = 0
    events = 0
    ops = 0
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < budget_s or runs == 0:
        res = run_scenario(sc, runs + 1)
        sim_us += res.sim_us
        events += res.world.loop.events
        ops += sum(res.ops.values())
        runs += 1
        if res.violations:
            print(f"violation in the steady benchmark: {res.replay}", file=sys.stderr)
            return 1
    steady_wall = time.perf_counter() - started

    seeds = 0
    failing = 0
    started = time.perf_counter()
    while time.perf_counter() - started < budget_s or seeds == 0:
        seeds += 1
        res = run_scenario(swarm_scenario(seeds, 5), seeds)
        failing += not res.ok
    explore_wall = time.perf_counter() - started

    ratio = sim_us / S / steady_wall
    print(f"machine: {platform.machine()} python {platform.python_version()}")
    print()
    print(f"{'measure':<44} {'value':>12}")
    print(f"{'-' * 44} {'-' * 12}")
    print(f"{'simulated s per wall s (5 nodes, faults)':<44} {ratio:>11.0f}x")
    print(f"{'  runs / simulated s / wall s':<44} {runs:>4} {sim_us / S:>5.0f} {steady_wall:>4.1f}")
    print(f"{'  events per wall s':<44} {events / steady_wall:>12.0f}")
    print(f"{'  client operations per simulated s':<44} {ops / (sim_us / S):>12.1f}")
    print(
        f"{'explore seeds per minute (5 nodes, 25 s each)':<44} {seeds / explore_wall * 60:>12.0f}"
    )
    print(f"{'  failing seeds':<44} {failing:>12}")
    print()
    print("aim: at least 100x real time on one core")
    return 1 if failing else 0
