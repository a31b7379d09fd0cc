"""Run a scenario with PySyncObj as the engine, judged by the simulator's checkers.

The World, network, scenario runner, clients, history, expectations and checkers are the
simulator's own; only the hosts differ (:class:`PySyncObjHost` instead of SimNode).

Which checkers apply (the verdict's notes say so too):

- lost acknowledged writes: every write PySyncObj acknowledged with SUCCESS must be
  the entry the surviving nodes have committed at its (index, term) in the end (see
  PySyncObjWorld.finish_checks for why the end state rather than the first apply);
- linearizability of reads, writes and CAS (Wing–Gong with Lowe's memo, per key);
- Raft's safety properties, read from PySyncObj's journal, role and term after every
  event: election safety, leader append-only, log matching, leader completeness,
  committed-entry-changed and state-machine safety;
- the scenario's expectations and liveness after heal (PySyncObj's timings are its own:
  a partitioned leader keeps leading for ``leaderFallbackTimeout``, 30 s by default).

Not checked: exactly-once retries (PySyncObj has no client sessions), leases, watches,
target agents and VIPs (coord's services; a scenario asking for them is refused), and
membership changes.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from coord.raft import Config, NodeId

from ..history import Outcome
from ..node import SimNode
from ..run import RunResult, replay_command, run_scenario
from ..scenario import Scenario, ScenarioError
from ..world import SimParams, World
from .pysyncobj_engine import PySyncObjHost, PySyncObjOptions, patched

ENGINE = "pysyncobj"

UNSUPPORTED_STEPS = {
    "conf": "membership changes",
    "add-node": "membership changes",
    "crash-voters": "it watches coord's vote messages",
}

CHECKED = (
    "engine pysyncobj — checked: lost acknowledged writes, linearizability, election "
    "safety, leader append-only, log matching, leader completeness, committed entries "
    "unchanged, state-machine safety, expectations and liveness; not checked: "
    "exactly-once (no sessions), leases, watches"
)


def load_options(sc: Scenario) -> PySyncObjOptions:
    """The scenario file's ``[pysyncobj]`` table (scenario.load keeps only coord's tables)."""
    table: dict[str, Any] = {}
    if sc.source and Path(sc.source).exists():
        table = dict(tomllib.loads(Path(sc.source).read_text()).get("pysyncobj", {}))
    opts = PySyncObjOptions()
    for k, v in table.items():
        if not hasattr(opts, k):
            raise ScenarioError(f"{sc.name}: unknown pysyncobj setting {k!r}")
        setattr(opts, k, v)
    if opts.journal not in ("kept", "lost"):
        raise ScenarioError(f"{sc.name}: pysyncobj journal must be 'kept' or 'lost'")
    return opts


MAP_STEPS = {"kill-agent", "restart-agent", "drain", "map", "disk-fault", "start-initiators"}
MAP_WAITS = {"vip-served", "agents-live", "initiators-connected"}
MAP_EXPECT = {"vips-served"}


def without_agents(sc: Scenario) -> tuple[Scenario, list[str]]:
    """A swarm scenario (explore:SEED) minus its target agents, for an engine without them.

    The nodes' schedule is untouched (explore draws the agents from a stream of their
    own); agent hosts (ids above the nodes') leave the partitions and their steps go.
    """
    if not sc.params.get("agents", {}).get("count"):
        return sc, []
    hosts = set(range(1, sc.nodes + 1))
    steps: list[dict[str, Any]] = []
    for step in sc.steps:
        if step.get("do") in MAP_STEPS or step.get("wait") in MAP_WAITS:
            continue
        node = step.get("node")
        if step.get("do") == "isolate" and isinstance(node, int) and node not in hosts:
            continue
        if step.get("do") == "partition":
            groups = [
                [h for h in g if not isinstance(h, int) or h in hosts] for g in step["groups"]
            ]
            step = {**step, "groups": groups}
        steps.append(step)
    params = {**sc.params, "agents": {}}
    expect = [e for e in sc.expect if e.split(":", 1)[0] not in MAP_EXPECT]
    out = replace(sc, params=params, steps=steps, expect=expect)
    return out, [f"{sc.name}: target agents left out (coord's cluster map; not on pysyncobj)"]


def check_supported(sc: Scenario) -> None:
    problems = []
    if sc.params.get("agents", {}).get("count"):
        problems.append("target agents (coord's cluster map)")
    for step in sc.steps:
        why = UNSUPPORTED_STEPS.get(str(step.get("do", "")))
        if why is not None:
            problems.append(f"step do={step['do']!r} ({why})")
        if step.get("wait") == "conf":
            problems.append("wait='conf' (membership changes)")
    if problems:
        raise ScenarioError(
            f"{sc.name}: the pysyncobj engine cannot run " + "; ".join(sorted(set(problems)))
        )


class PySyncObjWorld(World):
    """The simulator's World with PySyncObj processes on its hosts."""

    def __init__(
        self,
        seed: int,
        params: SimParams,
        *,
        keep_trace: bool = False,
        options: PySyncObjOptions,
    ) -> None:
        self.options = options
        # Leases and watches are coord's services: no clients for them here.
        params = replace(params, workload=replace(params.workload, lease_holders=0, watchers=0))
        super().__init__(seed, params, keep_trace=keep_trace)

    def _make_node(self, nid: int) -> SimNode:
        cfg = Config(id=NodeId(nid))  # unused by PySyncObj; SimNode keeps one
        rng = random.Random(self._node_seed + nid)
        node = PySyncObjHost(self, nid, cfg, rng, self.options)
        if self.p.drift:
            node.rate = 1.0 + self.fault_rng.uniform(-self.p.drift, self.p.drift)
        self.nodes[nid] = node
        return node

    def conf_change(self, cc: Any) -> str:
        return "membership changes are not simulated on pysyncobj"

    def transfer(self, to: int) -> str:
        lead = self.stable_leader()
        if not isinstance(lead, PySyncObjHost) or lead.obj is None:
            return "no leader"
        answer: list[Any] = []
        with lead.running():
            lead.obj.transferLeadership(str(to), callback=lambda res, err: answer.append(err))
        self.note(f"n{lead.id}: transfer leadership to n{to}")
        return "" if answer == [0] else f"refused (PySyncObj error {answer})"

    def finish_checks(self) -> None:
        """Acknowledged writes must be what the surviving nodes have committed at their index.

        World.finish_checks compares with the first entry applied at each index anywhere:
        right while state machines agree, but once PySyncObj has applied two different
        entries at one index (state-machine safety, reported as it happens) it would blame
        the writes that replaced the lost ones. So the same promise is judged on the end
        state instead. (No agents or watchers run here: nothing else to finish.)
        """
        self.history.close()
        final = self._final_log()
        for op in self.history.ops:
            if op.outcome is not Outcome.OK or op.log_pos is None:
                continue
            index, term = op.log_pos
            got = final.get(index)
            if got is None or got[0] == term:
                continue
            self.report(
                "lost-write",
                (got[1],),
                f"op{op.id} acknowledged at {index}/{term} ({op.render()}), but the cluster "
                f"ends with {index}/{got[0]} committed there ({got[2]}): the write is gone",
            )

    def _final_log(self) -> dict[int, tuple[int, int, str]]:
        """index -> (term, node, whose word) of what the cluster has committed at the end.

        The stable leader's committed log if there is one: every node will end up with it.
        Otherwise, per index, the term a majority of live nodes have committed there. (A
        node's own commit index is not enough: a restarted PySyncObj node keeps the commit
        index it had, over entries the others have since replaced.)
        """
        lead = self.stable_leader()
        if isinstance(lead, PySyncObjHost):
            log = lead.view.log
            out: dict[int, tuple[int, int, str]] = {}
            for index in range(int(log.offset) + 1, int(log.committed) + 1):
                held = log.term(index)
                if held is not None:
                    out[index] = (int(held), lead.id, f"n{lead.id}, the leader")
            return out
        votes: dict[int, dict[int, list[int]]] = {}  # index -> term -> nodes
        for node in self.live():
            assert isinstance(node, PySyncObjHost)
            log = node.view.log
            for index in range(int(log.offset) + 1, int(log.committed) + 1):
                held = log.term(index)
                if held is not None:
                    votes.setdefault(index, {}).setdefault(int(held), []).append(node.id)
        quorum = len(self.nodes) // 2 + 1
        out = {}
        for index, terms in votes.items():
            for t, ids in sorted(terms.items()):
                if len(ids) >= quorum:
                    nodes = ",".join(f"n{n}" for n in ids)
                    out[index] = (t, ids[0], f"{nodes}, a majority")
        return out


def run_pysyncobj(
    sc: Scenario,
    seed: int,
    *,
    nodes: int | None = None,
    keep_trace: bool = False,
    replay: str = "",
    check_linearizability: bool = True,
    drop_agents: bool = False,
) -> RunResult:
    """``python -m sim run SCENARIO --engine pysyncobj --seed N``: one run, judged.

    ``drop_agents``: run a swarm scenario's nodes without its target agents (for
    ``explore``); otherwise a scenario PySyncObj cannot run is a ScenarioError.
    """
    notes: list[str] = []
    if drop_agents:
        sc, notes = without_agents(sc)
    check_supported(sc)
    options = load_options(sc)
    with patched():
        res = run_scenario(
            sc,
            seed,
            nodes=nodes,
            keep_trace=keep_trace,
            replay=replay or replay_command(sc.name, seed, nodes, ENGINE),
            check_linearizability=check_linearizability,
            make_world=partial(PySyncObjWorld, options=options),
        )
    res.notes.extend(notes)
    res.notes.append(CHECKED)
    return res
