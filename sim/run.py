"""Run one scenario with one seed, judge it, and say what happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coord.raft import RaftNode

from . import expectations
from .checkers.wgl import LinearizabilityResult, check_history
from .scenario import Runner, Scenario, ScenarioRun, build_params
from .world import Violation, World


@dataclass
class RunResult:
    scenario: str
    seed: int
    nodes: int
    violations: list[Violation]
    ops: dict[str, int]
    leaders: list[tuple[int, int, int]]  # (time, term, node)
    trace_digest: str
    world: World
    run: ScenarioRun
    linearizable: bool | None
    wall_s: float
    sim_us: int
    replay: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "nodes": self.nodes,
            "violations": [
                {
                    "kind": v.kind,
                    "detail": v.detail,
                    "time_s": v.time_us / 1e6,
                    "nodes": list(v.nodes),
                }
                for v in self.violations
            ],
            "ops": self.ops,
            "leaders": [
                {"term": term, "node": node, "time_s": t / 1e6} for t, term, node in self.leaders
            ],
            "trace_digest": self.trace_digest,
            "linearizable": self.linearizable,
            "recovery_s": (
                None
                if self.run.recovered_us is None or self.run.heal_us is None
                else (self.run.recovered_us - self.run.heal_us) / 1e6
            ),
            "replay": self.replay,
            "notes": self.notes,
        }


def replay_command(scenario: str, seed: int, nodes: int | None, engine: str = "") -> str:
    cmd = f"python -m sim run {scenario} --seed {seed}"
    if nodes:
        cmd += f" --nodes {nodes}"
    if engine:
        cmd += f" --engine {engine}"
    return cmd


def run_scenario(
    sc: Scenario,
    seed: int,
    *,
    nodes: int | None = None,
    node_class: type[RaftNode] | None = None,
    keep_trace: bool = False,
    replay: str = "",
    check_linearizability: bool = True,
    make_world: Callable[..., World] = World,
) -> RunResult:
    params = build_params(sc, nodes)
    if node_class is not None:
        params.node_class = node_class
    started = time.perf_counter()
    # make_world: another host than SimNode (sim/peers: other Raft implementations).
    world = make_world(seed, params, keep_trace=keep_trace)
    run = Runner(sc, world).execute()
    notes: list[str] = []
    lin: LinearizabilityResult | None = None
    if check_linearizability:
        lin = check_history(world.history.ops)
        for kv in lin.failures():
            world.report_at("linearizability", kv.at_us, kv.nodes, f"key {kv.key}: {kv.detail}")
        undecided = [kv.key for kv in lin.keys if kv.linearizable is None]
        if undecided:
            notes.append(f"linearizability inconclusive (search budget) for keys {undecided}")
    if not world.stopped:
        for name, problem in expectations.check(run, sc):
            world.report(f"expect:{name}", (), problem)
    return RunResult(
        scenario=sc.name,
        seed=seed,
        nodes=params.nodes,
        violations=list(world.violations),
        ops=world.history.counts(),
        leaders=list(world.leaders),
        trace_digest=world.trace_digest(),
        world=world,
        run=run,
        linearizable=lin.linearizable if lin is not None else None,
        wall_s=time.perf_counter() - started,
        sim_us=world.loop.now,
        replay=replay or replay_command(sc.name, seed, nodes),
        notes=notes,
    )
