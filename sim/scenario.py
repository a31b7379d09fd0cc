"""Scenarios as data: one TOML file each under sim/scenarios/.

A scenario sets the cluster and its faults up, then runs a script of steps.
Each step happens ``at`` a virtual time, or as soon as a ``wait`` condition
holds (checked after every event, so "the instant n3 becomes leader" is
exact), or right after the previous step when it has neither. Steps can bind
names to nodes and log entries so that later steps refer to "the old leader"
rather than to an id that depends on the seed.

    [[step]]
    wait = "leader"   # leader | has-entry | durable | leader-majority | caught-up | conf
    among = ["rest"]
    as = "L2"
    within = "5s"

    [[step]]
    do = "isolate"
    node = "L2"

Node selectors: an id, a bound name, "leader", "follower" (a follower not yet
named), "other" (a node not yet named), "rest" (in a group list: every node
not listed elsewhere), or a target agent's name ("t2": its host). Steps and
waits for agents, VIPs and initiators are in scenario_map.py.

After the script, ``heal_at`` heals everything, restarts crashed nodes (and
killed agents) and resumes paused ones; the run then has ``liveness``
to elect a stable leader and complete a write, and ends at ``duration``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from coord.raft import ChangeType, ConfChange, NodeId, Role

from .history import OpKind
from .loop import S, parse_duration
from .net import LinkParams
from .scenario_map import MapSteps
from .workload import WorkloadParams
from .world import SimParams, World


class ScenarioError(Exception):
    """A scenario file that does not make sense (a usage error, exit 2)."""


@dataclass
class Scenario:
    name: str
    summary: str
    nodes: int
    nodes_fixed: bool
    duration_us: int
    heal_at_us: int | None
    liveness_us: int
    expect: list[str]
    params: dict[str, Any]
    steps: list[dict[str, Any]]
    source: str = ""


def scenario_dir() -> Path:
    return Path(str(resources.files("sim") / "scenarios"))


def catalogue() -> list[Scenario]:
    return [load(p) for p in sorted(scenario_dir().glob("*.toml"))]


def load(name_or_path: str | Path) -> Scenario:
    path = Path(name_or_path)
    if not path.suffix:
        path = scenario_dir() / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(p.stem for p in sorted(scenario_dir().glob("*.toml")))
        raise ScenarioError(f"no scenario {name_or_path!r} (known: {known})")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: {e}") from e
    try:
        heal = doc.get("heal_at")
        return Scenario(
            name=doc["name"],
            summary=doc.get("summary", ""),
            nodes=int(doc.get("nodes", 5)),
            nodes_fixed=bool(doc.get("nodes_fixed", False)),
            duration_us=parse_duration(doc["duration"]),
            heal_at_us=parse_duration(heal) if heal is not None else None,
            liveness_us=parse_duration(doc.get("liveness", "8s")),
            expect=list(doc.get("expect", [])),
            params={k: doc.get(k, {}) for k in ("network", "workload", "raft", "sim", "agents")},
            steps=list(doc.get("step", [])),
            source=str(path),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ScenarioError(f"{path}: {e}") from e


def build_params(sc: Scenario, nodes: int | None = None) -> SimParams:
    net = dict(sc.params["network"])
    link = LinkParams()
    if "delay" in net:
        lo, hi = net.pop("delay")
        link.delay_min_us, link.delay_max_us = parse_duration(lo), parse_duration(hi)
    for k, v in net.items():
        if not hasattr(link, k):
            raise ScenarioError(f"{sc.name}: unknown network setting {k!r}")
        setattr(link, k, v)
    wl = WorkloadParams()
    for k, v in sc.params["workload"].items():
        if k.endswith("_us") or not hasattr(wl, k):
            if k in ("think", "timeout"):
                val = [parse_duration(x) for x in v] if isinstance(v, list) else parse_duration(v)
                if k == "think":
                    wl.think_min_us, wl.think_max_us = val  # type: ignore[misc]
                else:
                    wl.timeout_us = val  # type: ignore[assignment]
                continue
            raise ScenarioError(f"{sc.name}: unknown workload setting {k!r}")
        setattr(wl, k, v)
    p = SimParams(nodes=nodes or sc.nodes, link=link, workload=wl, raft=dict(sc.params["raft"]))
    for k, v in sc.params.get("agents", {}).items():
        if not hasattr(p.agents, k):
            raise ScenarioError(f"{sc.name}: unknown agents setting {k!r}")
        setattr(p.agents, k, v)
    for k, v in sc.params["sim"].items():
        if not hasattr(p, k):
            raise ScenarioError(f"{sc.name}: unknown sim setting {k!r}")
        if k.endswith("_us") and isinstance(v, str):
            v = parse_duration(v)
        setattr(p, k, v)
    return p


@dataclass
class ScenarioRun:
    """What happened, for the expectations to judge."""

    world: World
    names: dict[str, int] = field(default_factory=dict)
    entries: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (start, end or None, groups) for every partition-like fault
    splits: list[tuple[int, int | None, list[list[int]]]] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)  # named instants
    removed: set[int] = field(default_factory=set)  # left the cluster for good
    # per closed split: node -> (commit, {index: term} of its uncommitted tail) at its end
    split_logs: list[dict[int, tuple[int, dict[int, int]]]] = field(default_factory=list)
    # per split: node -> its last log index when the split began
    split_last: list[dict[int, int]] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # what the expectations saw
    heal_us: int | None = None
    recovered_us: int | None = None  # first ok write after the final heal


class Runner:
    def __init__(self, sc: Scenario, world: World) -> None:
        self.sc = sc
        self.w = world
        self.run = ScenarioRun(world)
        self._script_client = 0
        self._catch_up_target = 0
        self.map_steps = MapSteps(self)

    # ---- selectors ------------------------------------------------------------------

    def node(self, sel: Any, taken: set[int] | None = None) -> int:
        w, names = self.w, self.run.names
        taken = taken if taken is not None else set(names.values())
        if isinstance(sel, int):
            return sel
        if sel in names:
            return names[sel]
        if sel == "leader":
            lead = w.stable_leader()
            if lead is None:
                raise _NotYet("no leader")
            return lead.id
        if sel in ("follower", "other"):
            lead = w.stable_leader()
            for nid in sorted(w.nodes):
                if nid in taken or (lead is not None and nid == lead.id):
                    continue
                if sel == "follower" and not w.nodes[nid].alive:
                    continue
                return nid
            raise ScenarioError(f"no {sel} node left to pick")
        if w.fleet is not None and isinstance(sel, str):
            return self.map_steps.agent(sel).host  # an agent's host, by its name ("t2")
        raise ScenarioError(f"unknown node selector {sel!r}")

    def groups(self, spec: list[list[Any]]) -> list[list[int]]:
        out: list[list[int]] = []
        rest_at = None
        listed: set[int] = set()
        for g in spec:
            if g == ["rest"]:
                rest_at = len(out)
                out.append([])
                continue
            ids = [self.node(s) for s in g]
            listed.update(ids)
            out.append(ids)
        if rest_at is not None:
            out[rest_at] = [n for n in sorted(self.w.nodes) if n not in listed]
        return out

    # ---- running --------------------------------------------------------------------

    def execute(self) -> ScenarioRun:
        w, sc = self.w, self.sc
        w.start()
        for n, step in enumerate(sc.steps):
            if w.stopped:
                break
            self._run_step(n, step)
        if sc.heal_at_us is not None and not w.stopped:
            w.run_until(sc.heal_at_us)
            self.heal_all()
            self.run.heal_us = w.loop.now
            if w.clients:
                self._watch_recovery()
        w.run_until(sc.duration_us - 2 * S)
        # Quiesce: no new operations; let what is in flight finish and followers catch up.
        w.stop_clients()
        # Background writes go on (leases expire): followers must catch up with
        # what was committed a second before the end, not to the last instant.
        w.run_until(sc.duration_us - S)
        lead = w.stable_leader()
        self._catch_up_target = lead.core.log.committed if lead and lead.core else 0
        w.run_until(sc.duration_us)
        self._end_checks()
        return self.run

    def heal_all(self) -> None:
        w = self.w
        w.heal()
        self._close_split()
        for nid in sorted(w.nodes):
            node = w.nodes[nid]
            if node.alive and node.paused:
                w.guard(nid, node.resume)
            if not node.alive and nid not in self.run.removed:
                w.restart(nid)
        if w.fleet is not None:
            w.fleet.restart_killed()

    def _run_step(self, n: int, step: dict[str, Any]) -> None:
        w = self.w
        if "at" in step:
            w.run_until(parse_duration(step["at"]))
        if "wait" in step:
            deadline = w.loop.now + parse_duration(step.get("within", "10s"))
            cond = self._condition(step)
            if not cond():
                w.run_until(deadline, stop=cond)
            if not cond():
                w.report(
                    "scenario-stuck",
                    (),
                    f"step {n + 1}: waited {step.get('within', '10s')} for {step['wait']!r}"
                    f"{' among ' + str(step.get('among')) if 'among' in step else ''}",
                )
                w.stopped = True
                return
        if "do" in step:
            try:
                self._do(step)
            except _NotYet as e:
                w.note(f"step {n + 1} ({step['do']}) skipped: {e}", "note")

    def _condition(self, step: dict[str, Any]) -> Callable[[], bool]:
        w = self.w
        kind = step["wait"]
        if kind == "leader":
            among = step.get("among")

            def leader_ok() -> bool:
                lead = w.stable_leader()
                if lead is None:
                    return False
                if among is not None and lead.id not in self._ids(among):
                    return False
                if "as" in step:
                    self.run.names[step["as"]] = lead.id
                return True

            return leader_ok
        if kind == "has-entry":
            nid, (index, term) = self.node(step["node"]), self.run.entries[step["entry"]]
            return lambda: self._has(nid, index, term)
        if kind == "durable":
            nid, (index, term) = self.node(step["node"]), self.run.entries[step["entry"]]

            def durable() -> bool:
                core = w.nodes[nid].core
                return (
                    core is not None and core.log.stabled >= index and self._has(nid, index, term)
                )

            return durable
        if kind == "leader-majority":
            nid, (index, term) = self.node(step["node"]), self.run.entries[step["entry"]]

            def majority_holds() -> bool:
                core = w.nodes[nid].core
                if core is None or core.role is not Role.LEADER:
                    return False
                held = sum(1 for pr in core.progress.values() if pr.match >= index)
                return held >= len(core.conf.voters) // 2 + 1

            return majority_holds
        if kind == "caught-up":
            nid = self.node(step["node"])

            def caught_up() -> bool:
                lead = w.stable_leader()
                core = w.nodes[nid].core
                return (
                    lead is not None
                    and lead.core is not None
                    and core is not None
                    and core.log.last_index() >= lead.core.log.committed
                )

            return caught_up
        if kind == "conf":
            voters = tuple(self._ids(step["voters"]))

            def conf_is() -> bool:
                lead = w.stable_leader()
                if lead is None or lead.core is None:
                    return False
                idx, conf = lead.core.log.latest_conf()
                return conf.voters == voters and idx <= lead.core.log.committed

            return conf_is
        if kind == "time":
            return lambda: False
        cond = self.map_steps.condition(step)
        if cond is not None:
            return cond
        raise ScenarioError(f"unknown wait condition {kind!r}")

    def _ids(self, sels: list[Any]) -> list[int]:
        if sels == ["rest"]:
            named = set(self.run.names.values())
            return [n for n in sorted(self.w.nodes) if n not in named]
        return sorted(self.node(s) for s in sels)

    def _has(self, nid: int, index: int, term: int) -> bool:
        core = self.w.nodes[nid].core
        return core is not None and core.log.term(index) == term

    def _do(self, step: dict[str, Any]) -> None:
        w, run = self.w, self.run
        what = step["do"]
        match what:
            case "let":
                if "entry" in step:
                    src, _, of = step["entry"].partition(":")
                    if src != "last-of":
                        raise ScenarioError(f"bad entry reference {step['entry']!r}")
                    core = w.nodes[self.node(of)].core
                    assert core is not None
                    run.entries[step["name"]] = (core.log.last_index(), core.log.last_term())
                else:
                    run.names[step["name"]] = self.node(step["node"])
            case "partition":
                groups = self.groups(step["groups"])
                self._close_split()
                w.partition(groups, step.get("label", ""))
                self._open_split(groups)
            case "isolate":
                nid = self.node(step["node"])
                others = [n for n in sorted(w.nodes) if n != nid]
                self._close_split()
                who = f"n{nid}" if nid in w.nodes else self.map_steps.agent(nid).name
                w.partition([[nid], others], f"isolate {who}")
                self._open_split([[nid], others])
            case "links":
                # Only the listed (bidirectional) links work; "one-way" pairs only a->b.
                ups = {(self.node(a), self.node(b)) for a, b in step.get("up", [])}
                ups |= {(b, a) for a, b in ups}
                ups |= {(self.node(a), self.node(b)) for a, b in step.get("one_way", [])}
                hosts = sorted(w.nodes)
                cut = {(a, b) for a in hosts for b in hosts if a != b and (a, b) not in ups}
                self._close_split()
                w.block(cut, step.get("label", "links"))
            case "deaf":
                nid = self.node(step["node"])
                self._close_split()
                w.block({(o, nid) for o in sorted(w.nodes) if o != nid}, f"n{nid} hears nobody")
            case "heal":
                w.heal()
                self._close_split()
            case "heal-all":
                self.heal_all()
            case "crash":
                for nid in self._many(step):
                    w.crash(nid)
            case "restart":
                for nid in self._many(step):
                    w.restart(nid)
            case "storm":
                self._storm(step)
            case "flap":
                self._flap(step)
            case "kill-leaders":
                self._kill_leaders(step)
            case "crash-voters":
                self._crash_voters(step)
            case "sleep":
                w.run_until(w.loop.now + parse_duration(step["for"]))
            case "pause":
                w.pause(self.node(step["node"]), parse_duration(step["for"]))
            case "network":
                changes = {k: v for k, v in step.items() if k not in ("do", "at", "wait")}
                w.set_link(**changes)
            case "link":
                self._link(step)
            case "mark":
                run.marks[step["name"]] = w.loop.now
            case "write":
                self._write(self.node(step["node"]), step.get("key", "x"))
            case "add-node":
                w.add_node(int(step["node"]))
            case "conf":
                self._conf(step)
            case "transfer":
                why = w.transfer(self.node(step["to"]))
                if why:
                    w.note(f"transfer refused: {why}", "note")
            case _:
                if not self.map_steps.do(step):
                    raise ScenarioError(f"unknown step action {what!r}")

    def _link(self, step: dict[str, Any]) -> None:
        """One path's own parameters: ``from``, ``to`` (nodes), ``both`` (default true),
        and any network setting (``delay = [lo, hi]``, ``loss``, ``dup``, ``slow_p``...);
        ``reset = true`` gives it the common parameters back."""
        a = self.node(step["from"])
        b = self.node(step["to"], taken={a})
        changes: dict[str, Any] = {}
        if not step.get("reset", False):
            for k, v in step.items():
                if k in ("do", "at", "wait", "from", "to", "both", "reset"):
                    continue
                if k == "delay":
                    changes["delay_min_us"], changes["delay_max_us"] = map(parse_duration, v)
                elif k in LinkParams.__dataclass_fields__:
                    changes[k] = v
                else:
                    raise ScenarioError(f"unknown link setting {k!r}")
        self.w.set_one_link(a, b, changes, bool(step.get("both", True)))

    def _storm(self, step: dict[str, Any]) -> None:
        """Crash random nodes and bring them back quickly, again and again, for a while.

        ``for``: how long; ``every``: [min, max] between crashes; ``down``:
        [min, max] downtime. Restarts come fast, so a node may be back while
        messages it sent before crashing are still in flight.
        """
        w = self.w
        rng = w.fault_rng
        end = w.loop.now + parse_duration(step["for"])
        every = [parse_duration(x) for x in step.get("every", ["20ms", "200ms"])]
        down = [parse_duration(x) for x in step.get("down", ["1ms", "20ms"])]
        t = w.loop.now
        while True:
            t += rng.randint(*every)
            if t >= end:
                break
            nid = rng.choice(sorted(w.nodes))
            w.loop.at(t, self._storm_crash, nid, rng.randint(*down))

    def _kill_leaders(self, step: dict[str, Any]) -> None:
        """For a while, every new leader crashes soon after taking office and comes back.

        Elections follow elections, and votes cast a moment ago matter most:
        the regime where a vote that was not durable turns into two leaders.
        """
        w = self.w
        rng = w.fault_rng
        end = w.loop.now + parse_duration(step["for"])
        after = [parse_duration(x) for x in step.get("after", ["0ms", "100ms"])]
        down = [parse_duration(x) for x in step.get("down", ["1ms", "50ms"])]

        def on_leader(nid: int, term: int) -> None:
            if w.loop.now < end:
                w.loop.after(rng.randint(*after), self._storm_crash, nid, rng.randint(*down))

        w.leader_hooks.append(on_leader)

    def _crash_voters(self, step: dict[str, Any]) -> None:
        """For a while, a node that has just granted a vote crashes (with probability ``p``)
        a moment later and restarts quickly: whatever it had not made durable is gone."""
        from coord.raft.messages import VoteResponse

        w = self.w
        rng = w.fault_rng
        end = w.loop.now + parse_duration(step["for"])
        p = float(step.get("p", 0.5))
        after = [parse_duration(x) for x in step.get("after", ["0ms", "5ms"])]
        down = [parse_duration(x) for x in step.get("down", ["1ms", "20ms"])]

        def on_send(src: int, m: Any) -> None:
            if (
                isinstance(m, VoteResponse)
                and m.granted
                and not m.pre
                and w.loop.now < end
                and rng.random() < p
            ):
                w.loop.after(rng.randint(*after), self._storm_crash, src, rng.randint(*down))

        w.send_hooks.append(on_send)

    def _flap(self, step: dict[str, Any]) -> None:
        """Random two-way splits (or a heal) every [min, max] for a while."""
        w = self.w
        rng = w.fault_rng
        end = w.loop.now + parse_duration(step["for"])
        every = [parse_duration(x) for x in step.get("every", ["100ms", "1s"])]
        t = w.loop.now
        while True:
            t += rng.randint(*every)
            if t >= end:
                break
            ids = sorted(w.nodes)
            rng.shuffle(ids)
            cut = rng.randint(0, len(ids) - 1)
            groups = [sorted(ids[:cut]), sorted(ids[cut:])] if cut else []
            w.loop.at(t, self._flap_to, groups)

    def _flap_to(self, groups: list[list[int]]) -> None:
        if groups:
            self.w.partition(groups, "flap")
        else:
            self.w.heal()

    def _storm_crash(self, nid: int, down_us: int) -> None:
        w = self.w
        if w.nodes[nid].alive and nid not in self.run.removed:
            w.crash(nid)
            w.loop.after(down_us, w.restart, nid)

    def _many(self, step: dict[str, Any]) -> list[int]:
        """``node = X``, ``nodes = [X, Y]``, or ``nodes = "majority"`` (leader first) / "all"."""
        sel = step.get("nodes", [step.get("node")])
        live = [n.id for n in self.w.live()]
        if sel == "all":
            return live
        if sel == "all-down":
            return [
                nid
                for nid in sorted(self.w.nodes)
                if not self.w.nodes[nid].alive and nid not in self.run.removed
            ]
        if sel == "majority":
            lead = self.w.stable_leader()
            order = ([lead.id] if lead else []) + [n for n in live if not lead or n != lead.id]
            return order[: _quorum(len(self.w.nodes))]
        return [self.node(x) for x in sel]

    def _conf(self, step: dict[str, Any]) -> None:
        kinds = {
            "add-learner": ChangeType.ADD_LEARNER,
            "promote": ChangeType.PROMOTE,
            "remove": ChangeType.REMOVE,
            "add-voter": ChangeType.ADD_VOTER,
        }
        cc = ConfChange(kinds[step["change"]], NodeId(self.node(step["node"])))
        w = self.w
        deadline = w.loop.now + parse_duration(step.get("within", "10s"))
        # An operator retries a refused change (no leader yet, previous change not
        # committed, learner not caught up) until it is accepted or time is up.
        while w.loop.now < deadline and not w.stopped:
            why = w.conf_change(cc)
            if not why:
                if cc.type is ChangeType.REMOVE:
                    self.run.removed.add(cc.node)
                return
            w.run_until(w.loop.now + 100_000)
        w.report(
            "scenario-stuck", (), f"membership change {step['change']} n{cc.node} never accepted"
        )
        w.stopped = True

    def _write(self, nid: int, key: str) -> None:
        """A one-off client write sent to ``nid`` from its own host."""
        from .workload import ClientRequest

        w = self.w
        self._script_client += 1
        cid = 900 + self._script_client
        value = cid * 1_000_000 + 1
        op = w.history.invoke(cid, OpKind.WRITE, key, value, w.loop.now)
        op.nodes.append(nid)
        w.note(f"script write {key}={value} via n{nid}", "note")
        w.script_ops[cid] = op
        # Handed over at once (the client sits on the node's host), so a following
        # ``let ... entry = "last-of:..."`` names the entry this write became.
        w.nodes[nid].receive(ClientRequest(cid, nid, 1, f"s{cid}", 1, OpKind.WRITE, key, value))

    def _open_split(self, groups: list[list[int]]) -> None:
        self.run.splits.append((self.w.loop.now, None, groups))
        self.run.split_last.append(
            {n.id: int(n.core.log.last_index()) for n in self.w.live()}  # type: ignore[union-attr]
        )

    def _close_split(self) -> None:
        splits = self.run.splits
        if splits and splits[-1][1] is None:
            start, _, groups = splits[-1]
            splits[-1] = (start, self.w.loop.now, groups)
            logs: dict[int, tuple[int, dict[int, int]]] = {}
            for node in self.w.live():
                log = node.core.log  # type: ignore[union-attr]
                tail = {
                    i: int(log.term(i) or 0) for i in range(log.committed + 1, log.last_index() + 1)
                }
                logs[node.id] = (int(log.committed), tail)
            self.run.split_logs.append(logs)

    def _watch_recovery(self) -> None:
        heal = self.run.heal_us
        assert heal is not None

        def recovered() -> bool:
            for op in reversed(self.w.history.ops):
                if op.invoke_us < heal:
                    return False
                if op.outcome.value == "ok" and op.kind is not OpKind.READ:
                    self.run.recovered_us = op.complete_us
                    return True
            return False

        self.w.run_until(heal + self.sc.liveness_us, stop=recovered)

    def _end_checks(self) -> None:
        w, run = self.w, self.run
        if run.heal_us is not None and not w.stopped and w.stable_leader() is None:
            # The end is an arbitrary instant: a leader that stepped down just now
            # (CheckQuorum on a slow link) gets the time of an election to come back.
            # Runs that end with a leader are untouched.
            w.note("no stable leader at the end: allowing one election", "note")
            w.run_until(
                w.loop.now + END_ELECTION_GRACE_US, stop=lambda: w.stable_leader() is not None
            )
        w.finish_checks()
        if w.stopped:
            return
        if run.heal_us is not None and run.recovered_us is None and w.clients:
            w.report(
                "liveness",
                (),
                f"no write completed within {self.sc.liveness_us / S:.1f}s after the final heal",
            )
        lead = w.stable_leader()
        if lead is not None and lead.core is not None:
            term = lead.core.term
            since = max(t for t, tm, nid in w.leaders if nid == lead.id and tm == term)
            w.lease_checker.finish(w.loop.now, since, LEASE_EXPIRY_BOUND_US)
        if run.heal_us is not None and lead is None:
            w.report("liveness", (), "no stable leader at the end of the run")
        if lead is not None and lead.core is not None and run.heal_us is not None:
            target = self._catch_up_target
            for nid in lead.core.conf.voters:
                node = w.nodes.get(nid)
                if node is None or node.core is None:
                    continue
                if node.core.log.applied < target:
                    w.report(
                        "liveness",
                        (nid,),
                        f"n{nid} applied {node.core.log.applied}, but {target} was "
                        f"committed a second before the end: it did not catch up",
                    )


# An election with PreVote on a slow network: two randomized timeouts and two rounds.
END_ELECTION_GRACE_US = 2 * S

# How long after its TTL (by the slowest clock) an abandoned lease may take to be
# revoked under a stable leader: a tick, then one commit round.
LEASE_EXPIRY_BOUND_US = 2 * S


class _NotYet(ScenarioError):
    pass


def _quorum(n: int) -> int:
    return n // 2 + 1
