"""The target side under the simulator: agents with drifting clocks hold VIPs, initiators
log in and reconnect, replicas are healed and rebuilt. The scenarios hold, runs replay
byte for byte, agents stop serving at the very instant their rule says, and the VIP and
map checkers catch each rule broken on purpose within a few seeds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from coord.clustermap import apply as map_apply
from coord.clustermap import model as map_model
from coord.clustermap.controller import MapController
from coord.clustermap.state import ClusterMap
from sim.agents import Agent
from sim.explore import swarm_scenario
from sim.run import run_scenario
from sim.scenario import catalogue, load
from target.vip import VipHolder

ROOT = Path(__file__).resolve().parent.parent
MAP_SCENARIOS = [
    "vip-failover",
    "vip-under-partition",
    "vip-drain",
    "mass-reconnect",
    "accuse-heal-rebuild",
]


def test_catalogue_has_the_target_side_scenarios() -> None:
    assert set(MAP_SCENARIOS) <= {sc.name for sc in catalogue()}


# test_sim.py runs every catalogue scenario with seeds 1 and 2: these are more seeds.
@pytest.mark.parametrize("name", MAP_SCENARIOS)
@pytest.mark.parametrize("seed", [3, 4])
def test_target_scenario_holds(name: str, seed: int) -> None:
    res = run_scenario(load(name), seed)
    assert res.ok, "\n".join(v.render() for v in res.violations) + f"\nreplay: {res.replay}"
    assert res.run.evidence, "every expectation leaves evidence when it holds"


def test_failover_and_balance_say_what_happened() -> None:
    res = run_scenario(load("vip-failover"), 5, check_linearizability=False)
    assert res.ok
    [line] = [e for e in res.run.evidence if e.startswith("vip-failover")]
    assert "served again" in line and "bound 2140ms" in line
    res = run_scenario(load("mass-reconnect"), 5, check_linearizability=False)
    assert res.ok
    fleet = res.world.fleet
    assert fleet is not None
    assert sum(1 for i in fleet.initiators if i.connects > 1) >= 90  # the dead node's herd
    assert any("'t2': 150, 't3': 150" in e for e in res.run.evidence)


def test_same_seed_same_trace() -> None:
    a = run_scenario(load("vip-under-partition"), 7, check_linearizability=False)
    b = run_scenario(load("vip-under-partition"), 7, check_linearizability=False)
    c = run_scenario(load("vip-under-partition"), 8, check_linearizability=False)
    assert a.trace_digest == b.trace_digest != c.trace_digest


def test_trace_with_agents_does_not_depend_on_hash_seed() -> None:
    assert swarm_scenario(4).params["agents"], "explore:4 runs agents"
    digests = set()
    for hs in ("0", "77"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        out = subprocess.run(
            [sys.executable, "-m", "sim", "run", "explore:4", "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        digests.add(json.loads(out.stdout)["trace_digest"])
    assert len(digests) == 1


def test_an_agent_stops_at_its_serve_until_exactly() -> None:
    """Every stop for staleness happens at serve_until() on the agent's clock, converted
    to real time through its rate: the microsecond it falls in (or the next, if float
    rounding puts it a hair earlier)."""
    stops: list[tuple[int, int]] = []
    orig = Agent._set_serving

    def spy(self: Agent, new: dict[str, int]) -> None:
        until = self.holder.serve_until()
        stale = until is not None and not self.holder.fresh(self.local_s())
        if self.serving and not new and self.alive and stale:
            assert until is not None
            stops.append((self.loop.now, math.ceil(until * self.rate * 1e6)))
        orig(self, new)

    with mock.patch.object(Agent, "_set_serving", spy):
        res = run_scenario(load("vip-under-partition"), 2, check_linearizability=False)
    assert res.ok
    assert stops, "the cut-off holder stopped for staleness"
    for now, due in stops:
        assert due <= now <= due + 1, (now, due)


def test_explore_runs_agents_under_faults() -> None:
    """Not vacuous: some explored seeds run agents; their VIPs are served and move."""
    seeds = [s for s in range(1, 40) if swarm_scenario(s).params["agents"]]
    assert 10 <= len(seeds) <= 30
    seed = next(
        s for s in seeds if any(st["do"] == "kill-agent" for st in swarm_scenario(s).steps[1:])
    )
    res = run_scenario(swarm_scenario(seed), seed, check_linearizability=False)
    assert res.ok, [v.render() for v in res.violations]
    fleet = res.world.fleet
    assert fleet is not None and fleet.deaths
    holders = {iv.agent for iv in fleet.vip_checker.intervals}
    assert len(holders) >= 2, "VIPs moved between agents"


def test_figures_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sim", "figures", "--seeds", "2", "--balance-seeds", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "p50" in out.stdout and "p99" in out.stdout and "bound" in out.stdout
    assert "max - min of active sessions on the live nodes: worst 0" in out.stdout


# ---- the checkers bite ----------------------------------------------------------------


@contextmanager
def holder_ignores_drift() -> Iterator[None]:
    """The agent serves a full TTL by its own clock, as if clocks never drifted."""
    orig = VipHolder.__init__

    def init(self: VipHolder, node_id: str, ttl_s: float, rho: float, margin_s: float) -> None:
        orig(self, node_id, ttl_s, 0.0, 0.0)

    with mock.patch.object(VipHolder, "__init__", init):
        yield


@contextmanager
def holder_serves_after_its_lease() -> Iterator[None]:
    """Once acknowledged, always fresh: the agent keeps serving when cut off."""
    with mock.patch.object(VipHolder, "fresh", lambda self, now: self.acked_send is not None):
        yield


@contextmanager
def leader_moves_without_waiting() -> Iterator[None]:
    """The leader's controller hands a released VIP over at once, not after a full TTL."""
    orig = MapController._due

    def due(self: MapController, key: Any, now: float, ttl_s: float, current: Any) -> bool:
        return orig(self, key, now, 0.0 if key[0] == "vip" else ttl_s, current)

    with mock.patch.object(MapController, "_due", due):
        yield


@contextmanager
def epoch_not_bumped() -> Iterator[None]:
    """A VIP keeps its epoch when it moves: the fencing token no longer fences."""

    def set_vip(cm: ClusterMap, vip: Any, ctx: Any, **changes: Any) -> Any:
        new = {**vip, **changes, "epoch": vip.get("epoch", cm.revision()), "since_ms": ctx.now_ms}
        cm.put_vip(new)
        return new

    with mock.patch.object(map_apply, "_set_vip", set_vip):
        yield


@contextmanager
def accused_replicas_do_io() -> Iterator[None]:
    """The data path is offered every replica not retired, accused ones included."""
    io = lambda vol: [r for r in vol["replicas"] if r["state"] != map_model.RETIRED]  # noqa: E731
    with mock.patch.object(map_model, "io_replicas", io):
        yield


@contextmanager
def lease_index_keeps_dead_nodes() -> Iterator[None]:
    """Rewriting a node record forgets to drop its old lease from the index."""

    def put_node(self: ClusterMap, rec: Any) -> None:
        self._index_node(rec)
        self.kv.put(map_model.NODES + rec["id"], map_model.encode(rec), 0)

    with mock.patch.object(ClusterMap, "put_node", put_node):
        yield


# name -> (broken rule, scenario, sim overrides, seeds, the violation it must cause)
CASES: dict[str, tuple[Callable[[], Any], str, dict[str, Any], range, str]] = {
    "holder-ignores-drift": (
        holder_ignores_drift,
        "vip-under-partition",
        {"drift": 0.1},
        range(1, 11),
        "vip-overlap",
    ),
    "holder-serves-after-lease": (
        holder_serves_after_its_lease,
        "vip-under-partition",
        {},
        range(1, 4),
        "vip-overlap",
    ),
    "leader-moves-without-waiting": (
        leader_moves_without_waiting,
        "vip-drain",
        {},
        range(1, 4),
        "vip-overlap",
    ),
    "epoch-not-bumped": (epoch_not_bumped, "vip-failover", {}, range(1, 4), "vip-epoch"),
    "accused-replicas-do-io": (
        accused_replicas_do_io,
        "accuse-heal-rebuild",
        {},
        range(1, 4),
        "accused-in-io",
    ),
    "lease-index-keeps-dead-nodes": (
        lease_index_keeps_dead_nodes,
        "vip-failover",
        {},
        range(1, 4),
        "map-index",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_rule_is_caught_and_the_real_one_passes(name: str) -> None:
    broken, scenario, sim, seeds, kind = CASES[name]
    sc = load(scenario)
    sc.params["sim"] = {**sc.params["sim"], **sim}
    caught = None
    for seed in seeds:
        with broken():
            res = run_scenario(sc, seed, check_linearizability=False)
        if any(v.kind == kind for v in res.violations):
            caught = seed
            break
    assert caught is not None, f"{name}: no {kind} violation in seeds {seeds}"
    clean = run_scenario(sc, caught, check_linearizability=False)
    assert clean.ok, [v.render() for v in clean.violations]
