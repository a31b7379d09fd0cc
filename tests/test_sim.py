"""The simulator: scenarios hold, runs replay byte for byte, the CLI keeps its contract."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from coord.raft import Entry, HardState, Index, Term
from sim.disk import CorruptLog, SimDisk
from sim.explore import swarm_scenario
from sim.run import run_scenario
from sim.scenario import ScenarioError, catalogue, load

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = [sc.name for sc in catalogue()]


def test_catalogue_has_the_promised_scenarios() -> None:
    promised = {
        "leader-minority-split",
        "isolate-leader",
        "partial-partition",
        "one-way",
        "majorities-ring",
        "bridge",
        "rejoin-after-isolation",
        "crash-lose-unsynced",
        "membership-under-partition",
        "snapshot-under-faults",
        "duplicate-reorder-retry",
        "figure-8",
        "wan-link",  # per-link delay and loss
    }
    assert promised <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("seed", [1, 2])
def test_scenario_holds(name: str, seed: int) -> None:
    res = run_scenario(load(name), seed)
    assert res.ok, "\n".join(v.render() for v in res.violations) + f"\nreplay: {res.replay}"
    assert res.linearizable is not False


def test_wan_link_needs_prevote() -> None:
    # The same slow, lossy WAN without PreVote: the far site's elections depose the
    # leader and terms climb; the scenario's expectations say so.
    sc = load("wan-link")
    sc.params = {**sc.params, "raft": {"pre_vote": False}}
    res = run_scenario(sc, 1)
    kinds = {v.kind for v in res.violations}
    assert {"expect:stable-leader", "expect:prevoted-in-vain"} <= kinds


def test_link_step_refuses_unknown_settings() -> None:
    sc = load("wan-link")
    sc.steps = [
        {"wait": "leader", "within": "5s"},
        {"at": "1s", "do": "link", "from": 1, "to": 4, "colour": "red"},
    ]
    with pytest.raises(ScenarioError, match="unknown link setting 'colour'"):
        run_scenario(sc, 1)


def test_leader_minority_split_behaves_as_described() -> None:
    res = run_scenario(load("leader-minority-split"), 3)
    assert res.ok
    run = res.run
    old = run.names["old"]
    start, end, groups = run.splits[0]
    minority = {old, run.names["buddy"]}
    assert end is not None and sorted(minority) in [sorted(g) for g in groups]
    sent = [
        op
        for op in res.world.history.ops
        if op.nodes
        and set(op.nodes) <= minority
        and start + 100_000 < op.invoke_us
        and op.complete_us is not None
        and op.complete_us < end
    ]
    assert sent, "the minority's clients sent nothing during the split"
    assert all(op.outcome.value != "ok" for op in sent)
    # A newer leader on the majority side, and the old leader deposed.
    assert any(t > start and n not in minority for t, _, n in res.leaders)


@pytest.mark.parametrize("seed", range(1, 16))
def test_explore_seeds_hold(seed: int) -> None:
    res = run_scenario(swarm_scenario(seed), seed)
    assert res.ok, "\n".join(v.render() for v in res.violations) + f"\nreplay: {res.replay}"


def test_same_seed_same_trace() -> None:
    a = run_scenario(load("snapshot-under-faults"), 7)
    b = run_scenario(load("snapshot-under-faults"), 7)
    c = run_scenario(load("snapshot-under-faults"), 8)
    assert a.trace_digest == b.trace_digest
    assert a.trace_digest != c.trace_digest


def _cli(*args: str, hashseed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    return subprocess.run(
        [sys.executable, "-m", "sim", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_trace_does_not_depend_on_hash_seed() -> None:
    digests = set()
    for hs in ("0", "1", "4242"):
        out = _cli("run", "explore:3", "--json", hashseed=hs)
        assert out.returncode == 0, out.stderr
        digests.add(json.loads(out.stdout)["trace_digest"])
    assert len(digests) == 1


def test_cli_run_json_contract() -> None:
    out = _cli("run", "leader-minority-split", "--seed", "2", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["scenario"] == "leader-minority-split" and doc["seed"] == 2
    assert doc["violations"] == []
    assert set(doc["ops"]) == {"ok", "fail", "info"} and doc["ops"]["ok"] > 0
    assert doc["leaders"] and {"term", "node"} <= set(doc["leaders"][0])
    assert len(doc["trace_digest"]) == 64


def test_cli_run_text_shows_seed_timeline_and_verdict() -> None:
    out = _cli("run", "isolate-leader", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("SEED=1 ")
    assert "partition isolate" in out.stdout and "leads t" in out.stdout
    assert "linearizable: yes" in out.stdout and "expected old-leader-steps-down" in out.stdout
    assert "OK: isolate-leader seed=1" in out.stdout


def test_cli_violation_exit_and_report() -> None:
    out = _cli("run", "figure-8", "--engine", "commit-by-counting")
    assert out.returncode == 1
    assert "state-machine-safety" in out.stdout
    assert "replay: python -m sim run figure-8 --seed 1 --engine commit-by-counting" in out.stdout
    assert "events before it:" in out.stdout


def test_cli_usage_errors_exit_2() -> None:
    assert _cli("run", "no-such-scenario").returncode == 2
    assert _cli("run", "partial-partition", "--nodes", "3").returncode == 2
    assert _cli("run", "figure-8", "--engine", "nope").returncode == 2
    assert _cli("explore", "--seeds", "0").returncode == 2
    assert _cli("bogus").returncode == 2


def test_cli_list_and_explore() -> None:
    out = _cli("list")
    assert out.returncode == 0 and "figure-8" in out.stdout and "explore:SEED" in out.stdout
    out = _cli("explore", "--seeds", "2", "--start", "5", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [r["seed"] for r in doc["runs"]] == [5, 6] and doc["failing_seeds"] == []


# ---- simulated disk and the small KV store ------------------------------------------


def test_disk_crash_keeps_synced_and_cuts_torn_tail() -> None:
    disk = SimDisk()
    e1, e2 = Entry(Index(1), Term(1)), Entry(Index(2), Term(1))
    disk.write(("ents", (e1,)))
    disk.write(("hs", HardState(Term(1))))
    disk.sync()
    disk.write(("ents", (e2,)))
    rng = random.Random(0)
    seen_torn = False
    for _ in range(40):
        d = SimDisk()
        d.records, d.durable = list(disk.records), disk.durable
        _, torn = d.crash(rng)
        got = d.recover()
        assert got.entries[0] == e1 and got.hard_state.term == 1
        seen_torn |= torn and d.torn_repairs == 1
    assert seen_torn


def test_disk_refuses_corruption_in_the_middle() -> None:
    disk = SimDisk()
    disk.write(("ents", (Entry(Index(1), Term(1)),)))
    disk.write(("torn",))
    disk.write(("hs", HardState(Term(1))))
    with pytest.raises(CorruptLog):
        disk.recover()
