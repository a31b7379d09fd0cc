"""Scenario steps and wait conditions for the target side (agents, VIPs, initiators).

Steps (``do = ...``):

    kill-agent        agent = SEL [, for_good = true]   the agent's host dies (at the final
                                                        heal it restarts unless for_good)
    restart-agent     agent = SEL                       a new agent process on that host
    drain             agent = SEL [, drained = false]   map.node_update through the operator
    map               ops = [{op = "map....", ...}]     map commands through the operator,
                                                        one after another, each until applied
    disk-fault        volume = V, replica = R           heals of that replica's disk fail
    start-initiators  [spread = "2s"]                   every initiator begins to log in

Waits (``wait = ...``):

    vip-served             address = A [, as = NAME]    some agent serves A (bound to NAME)
    agents-live                                         every agent not killed is registered
                                                        and live in the leader's map
    initiators-connected                                every initiator logged in and the
                                                        leader's map counts them all active

An agent selector is a bound name, an agent's name ("t2") or its host id (102).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from coord.clustermap import model as m

from .agents import Agent
from .fleet import Fleet
from .loop import parse_duration

if TYPE_CHECKING:
    from .scenario import Runner


class MapSteps:
    def __init__(self, runner: Runner) -> None:
        self.r = runner
        self.w = runner.w

    @property
    def fleet(self) -> Fleet:
        from .scenario import ScenarioError

        if self.w.fleet is None:
            raise ScenarioError(f"{self.r.sc.name}: this step needs agents ([agents] count)")
        return self.w.fleet

    def agent(self, sel: Any) -> Agent:
        from .scenario import ScenarioError

        if isinstance(sel, str) and sel in self.r.run.names:
            sel = self.r.run.names[sel]
        try:
            return self.fleet.agent(sel)
        except KeyError as e:
            raise ScenarioError(f"no agent {sel!r}") from e

    # ---- steps ----------------------------------------------------------------------

    def do(self, step: dict[str, Any]) -> bool:
        """Run a target-side step; False if ``step`` is not one."""
        match step["do"]:
            case "kill-agent":
                self.fleet.kill(self.agent(step["agent"]), bool(step.get("for_good", False)))
            case "restart-agent":
                self.fleet.restart(self.agent(step["agent"]))
            case "drain":
                a = self.agent(step["agent"])
                drained = bool(step.get("drained", True))
                self.w.note(f"{'drain' if drained else 'undrain'} {a.name}")
                self.fleet.submit(
                    {"op": "map.node_update", "node": a.name, "drained": drained}, self._done
                )
            case "map":
                self._map(step)
            case "disk-fault":
                self._disk_fault(step)
            case "start-initiators":
                n = len(self.fleet.initiators)
                self.w.note(f"{n} initiators start logging in")
                self.fleet.start_initiators(parse_duration(step.get("spread", "2s")))
            case _:
                return False
        return True

    def _done(self, result: dict[str, Any]) -> None:
        # Refusals are outcomes (a drain before the node ever registered): the
        # scenario's expectations judge what came of it.
        self.w.trace(f"operator: {result}")
        if "error" in result:
            self.w.note(f"operator's command refused: {result['error']['message']}", "note")

    def _map(self, step: dict[str, Any]) -> None:
        """Each command in turn, waiting until it is applied (retried through leader changes)."""
        w = self.w
        deadline = w.loop.now + parse_duration(step.get("within", "10s"))
        for cmd in step["ops"]:
            box: list[dict[str, Any]] = []
            self.fleet.submit(dict(cmd), box.append)
            w.run_until(deadline, stop=lambda box=box: bool(box))  # type: ignore[misc]
            if not box:
                w.report("scenario-stuck", (), f"map command {cmd['op']} not applied in time")
                w.stopped = True
                return
            result = box[0]
            w.trace(f"operator {cmd['op']}: {result}")
            # A retry after an unknown outcome may find its own first attempt applied.
            if "error" in result and result["error"]["code"] != "exists":
                w.report("script-map", (), f"{cmd['op']} refused: {result['error']['message']}")

    def _disk_fault(self, step: dict[str, Any]) -> None:
        lead = self.w.stable_leader()
        if lead is None:
            from .scenario import _NotYet

            raise _NotYet("no leader to read the map from")
        vol = lead.sm.map.volumes[step["volume"]]
        rep = next(r for r in vol["replicas"] if r["id"] == int(step["replica"]))
        agent = self.fleet.agent(rep["node"])
        agent.bad_disks.add(rep["disk"])
        self.w.note(
            f"disk {rep['disk']} of {agent.name} fails (replica {rep['id']} of {vol['name']})"
        )

    # ---- conditions -------------------------------------------------------------------

    def condition(self, step: dict[str, Any]) -> Callable[[], bool] | None:
        kind = step["wait"]
        if kind == "vip-served":
            addr = step["address"]

            def served() -> bool:
                holders = self.fleet.holders(addr)
                if len(holders) != 1:
                    return False
                if "as" in step:
                    self.r.run.names[step["as"]] = holders[0].host
                return True

            return served
        if kind == "agents-live":
            return self._agents_live
        if kind == "initiators-connected":
            return self._initiators_connected
        return None

    def _agents_live(self) -> bool:
        lead = self.w.stable_leader()
        if lead is None:
            return False
        nodes = lead.sm.map.nodes
        return all(
            a.name in nodes and nodes[a.name].get("live") and nodes[a.name]["lease"] == a.lease
            for a in self.fleet.agents.values()
            if a.alive
        )

    def _initiators_connected(self) -> bool:
        fleet = self.fleet
        if any(i.agent is None for i in fleet.initiators):
            return False
        lead = self.w.stable_leader()
        if lead is None:
            return False
        active = sum(1 for s in lead.sm.map.sessions.values() if s["state"] == m.ACTIVE)
        return active == len(fleet.initiators)
