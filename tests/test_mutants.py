"""The checkers bite: each deliberately broken core is flagged within a bounded number
of seeds, and the correct core passes the very run that exposed it."""

from __future__ import annotations

import pytest

from coord.raft import RaftNode
from sim.explore import swarm_scenario
from sim.mutants import MUTANTS
from sim.run import RunResult, run_scenario
from sim.scenario import Scenario, load

SAFETY = {
    "election-safety",
    "leader-append-only",
    "log-matching",
    "leader-completeness",
    "state-machine-safety",
    "committed-entry-changed",
    "lost-write",
    "exactly-once",
    "linearizability",
    "node-assertion",
}

# mutant -> (how to build the scenario for a seed, seeds to try, kinds that count)
CASES: dict[str, tuple[str, range, set[str]]] = {
    "commit-by-counting": (
        "figure-8",
        range(1, 4),
        {"state-machine-safety", "leader-completeness", "committed-entry-changed"},
    ),
    "vote-before-persist": ("crash-during-election", range(1, 41), {"election-safety"}),
    "truncate-on-append": ("explore", range(1, 11), SAFETY),
    "read-without-quorum": ("paused-leader", range(1, 11), {"linearizability"}),
}


def _scenario(name: str, seed: int) -> Scenario:
    return swarm_scenario(seed) if name == "explore" else load(name)


def _flagged(res: RunResult, kinds: set[str]) -> list[str]:
    return [v.render() for v in res.violations if v.kind in kinds]


@pytest.mark.parametrize("mutant", sorted(CASES))
def test_mutant_is_caught(mutant: str) -> None:
    name, seeds, kinds = CASES[mutant]
    for seed in seeds:
        res = run_scenario(_scenario(name, seed), seed, node_class=MUTANTS[mutant])
        found = _flagged(res, kinds)
        if found:
            break
    else:
        pytest.fail(f"{mutant} not flagged by {name} within seeds {seeds.start}..{seeds.stop - 1}")
    # The same seed on the real core is clean: it was the bug, not the scenario.
    clean = run_scenario(_scenario(name, seed), seed, node_class=RaftNode)
    assert clean.ok, [v.render() for v in clean.violations]
    assert res.replay.startswith(f"python -m sim run {res.scenario}")


def test_every_mutant_has_a_case() -> None:
    assert set(CASES) == set(MUTANTS)
