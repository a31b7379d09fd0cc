"""Swarm testing: every seed draws its own fault mix, then runs it.

After TigerBeetle's VOPR: the seed picks not only *when* faults happen but
*which kinds* and *how harsh* — loss rate, duplication, delay spread, FIFO or
not, fsync latency, clock drift, snapshot frequency, message sizes, and a
subset of nemesis actions. A run has two phases: safety (faults while clients
work) and liveness (everything healed, a leader and a completed write required
within a bound). ``python -m sim run explore:SEED`` replays one. About half the seeds add target
agents holding VIPs, so the VIP checkers run under the same faults.
"""

from __future__ import annotations

import random
from typing import Any

from .loop import S
from .scenario import Scenario

FAULTS = (
    "partition-halves",
    "isolate-node",
    "isolate-leader",
    "majorities-ring",
    "bridge",
    "one-way",
    "crash",
    "crash-fast",
    "crash-majority",
    "pause",
    "transfer",
)

FAULT_PHASE_S = 14.0
LIVENESS_S = 8.0


def _ms(x: float) -> str:
    return f"{x:.0f}ms"


def _s(x: float) -> str:
    return f"{x:.3f}s"


def swarm_scenario(seed: int, nodes: int | None = None) -> Scenario:
    # A stream of its own, so the schedule does not shift the world's randomness.
    rng = random.Random(f"swarm-{seed}")
    n = nodes or rng.choice([3, 5, 5])
    hi = rng.choice([2, 6, 15, 40])
    network: dict[str, Any] = {
        "delay": [_ms(max(0.2, hi / 10)), _ms(hi)],
        "loss": rng.choice([0.0, 0.0, 0.01, 0.05, 0.15]),
        "dup": rng.choice([0.0, 0.0, 0.02, 0.1]),
        "slow_p": rng.choice([0.0, 0.0, 0.03]),
        "fifo": rng.random() < 0.4,
    }
    sim: dict[str, Any] = {
        "fsync_max_us": rng.choice([1000, 5000, 20000]),
        "drift": rng.choice([0.0, 0.02, 0.1]),
        "snapshot_every": rng.choice([0, 25, 100]),
        "snapshot_keep": rng.choice([0, 5, 20]),
    }
    raft: dict[str, Any] = {
        "max_msg_entries": rng.choice([1, 3, 64]),
        "max_inflight": rng.choice([1, 2, 256]),
    }
    workload: dict[str, Any] = {
        "clients": rng.randint(2, 7),
        "keys": rng.randint(1, 4),
        "retry_unknown": rng.choice([0, 0, 2]),
    }
    enabled = sorted(rng.sample(FAULTS, k=rng.randint(1, len(FAULTS))))
    steps: list[dict[str, Any]] = [{"wait": "leader", "within": "6s"}]
    t = 1.0
    nodes_list = list(range(1, n + 1))
    down_until: dict[int, float] = {}
    while True:
        t += rng.uniform(0.2, 2.0)
        if t >= FAULT_PHASE_S:
            break
        fault = rng.choice(enabled)
        at = _s(t)
        if rng.random() < 0.25:
            steps.append({"at": at, "do": "heal"})
            continue
        match fault:
            case "partition-halves":
                shuffled = nodes_list[:]
                rng.shuffle(shuffled)
                cut = rng.randint(1, n - 1)
                steps.append(
                    {
                        "at": at,
                        "do": "partition",
                        "groups": [sorted(shuffled[:cut]), sorted(shuffled[cut:])],
                    }
                )
            case "isolate-node":
                steps.append({"at": at, "do": "isolate", "node": rng.choice(nodes_list)})
            case "isolate-leader":
                steps.append({"at": at, "do": "isolate", "node": "leader"})
            case "majorities-ring":
                ring = nodes_list[:]
                rng.shuffle(ring)
                up = [[ring[i], ring[(i + 1) % n]] for i in range(n)]
                steps.append({"at": at, "do": "links", "label": "ring", "up": up})
            case "bridge":
                shuffled = nodes_list[:]
                rng.shuffle(shuffled)
                mid, rest = shuffled[0], shuffled[1:]
                half = len(rest) // 2
                a, b = rest[:half], rest[half:]
                up = [[x, y] for x in a for y in a if x < y] + [
                    [x, y] for x in b for y in b if x < y
                ]
                up += [[mid, x] for x in rest]
                steps.append({"at": at, "do": "links", "label": "bridge", "up": up})
            case "one-way":
                steps.append({"at": at, "do": "deaf", "node": rng.choice(nodes_list)})
            case "crash" | "crash-fast":
                nid = rng.choice(nodes_list)
                if down_until.get(nid, 0) > t:
                    continue
                down = rng.uniform(0.001, 0.03) if fault == "crash-fast" else rng.uniform(0.05, 2.0)
                steps.append({"at": at, "do": "crash", "node": nid})
                steps.append({"at": _s(t + down), "do": "restart", "node": nid, "_later": True})
                down_until[nid] = t + down
            case "crash-majority":
                if any(u > t for u in down_until.values()):
                    continue
                down = rng.uniform(0.01, 1.0)
                steps.append({"at": at, "do": "crash", "nodes": "majority"})
                steps.append(
                    {"at": _s(t + down), "do": "restart", "nodes": "all-down", "_later": True}
                )
                for nid in nodes_list:
                    down_until[nid] = t + down
            case "pause":
                steps.append(
                    {
                        "at": at,
                        "do": "pause",
                        "node": rng.choice(["leader", *nodes_list]),
                        "for": _ms(rng.uniform(50, 2500)),
                    }
                )
            case "transfer":
                steps.append({"at": at, "do": "transfer", "to": rng.choice(nodes_list)})
    agents, expect = _with_agents(seed, steps)
    steps = _ordered(steps)
    heal = FAULT_PHASE_S + 0.5
    summary = f"swarm: faults {', '.join(enabled)}; network {network}; {sim}; {raft}"
    if agents:
        summary += f"; agents {agents}"
    return Scenario(
        name=f"explore:{seed}",
        summary=summary,
        nodes=n,
        nodes_fixed=True,
        duration_us=int((heal + LIVENESS_S + 3) * S),
        heal_at_us=int(heal * S),
        liveness_us=int(LIVENESS_S * S),
        expect=expect,
        params={
            "network": network,
            "workload": workload,
            "raft": raft,
            "sim": sim,
            "agents": agents,
        },
        steps=steps,
    )


AGENT_FAULTS = ("kill-agent", "isolate-agent", "drain-agent", "agents-in-partitions")


def _with_agents(seed: int, steps: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """About half the seeds also run target agents holding VIPs (and a few initiators),
    with faults of their own: hosts killed and restarted, hosts isolated, nodes drained
    and undrained, hosts put on either side of the nodes' partitions. Drawn from a stream
    of its own, so the nodes' schedule of a seed is the same with or without them."""
    rng = random.Random(f"swarm-agents-{seed}")
    if rng.random() < 0.5:
        return {}, []
    count = rng.randint(2, 4)
    agents: dict[str, Any] = {
        "count": count,
        "vips": rng.randint(1, 3),
        "ttl_ms": rng.choice([1000, 2000, 3000]),
        "initiators": rng.choice([0, 6, 12]),
        "initiator_hosts": 2,
        "volumes": ["v1"],
        "setup": True,
    }
    hosts = [100 + k for k in range(1, count + 1)]
    enabled = sorted(rng.sample(AGENT_FAULTS, k=rng.randint(1, len(AGENT_FAULTS))))
    if "agents-in-partitions" in enabled:
        for st in steps:
            if st.get("do") == "partition":
                for h in hosts:
                    if rng.random() < 0.5:
                        st["groups"][rng.randrange(len(st["groups"]))].append(h)
    t = 1.5
    while True:
        t += rng.uniform(0.5, 4.0)
        if t >= FAULT_PHASE_S:
            break
        host = rng.choice(hosts)
        match rng.choice([f for f in enabled if f != "agents-in-partitions"] or ["none"]):
            case "kill-agent":
                down = min(rng.uniform(0.2, 4.0), FAULT_PHASE_S - t)
                steps.append({"at": _s(t), "do": "kill-agent", "agent": host})
                steps.append(
                    {"at": _s(t + down), "do": "restart-agent", "agent": host, "_later": True}
                )
            case "isolate-agent":
                steps.append({"at": _s(t), "do": "isolate", "node": host})
            case "drain-agent":
                # Its VIPs are released (not moved); undrained a while later.
                back = min(rng.uniform(0.5, 4.0), FAULT_PHASE_S - t)
                steps.append({"at": _s(t), "do": "drain", "agent": host})
                steps.append(
                    {
                        "at": _s(t + back),
                        "do": "drain",
                        "agent": host,
                        "drained": False,
                        "_later": True,
                    }
                )
            case _:
                pass
    return agents, ["vips-served"]


def _ordered(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Restarts were scheduled ahead; merge them in time order (stable for ties)."""
    head, timed = steps[:1], steps[1:]
    keyed = sorted(enumerate(timed), key=lambda p: (float(p[1]["at"][:-1]), p[0]))
    out = head
    for _, st in keyed:
        st = {k: v for k, v in st.items() if k != "_later"}
        out.append(st)
    return out
