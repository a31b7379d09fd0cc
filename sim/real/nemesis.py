"""The nemesis: a fault schedule drawn from a seed, played against real processes.

The schedule is deterministic in the seed: which faults, in which order, with
which variants, node choices and durations (``schedule``). Its playing is not:
real processes run on real time, and "the leader" is whoever leads when the
fault begins (``Nemesis`` resolves it then and says whom it chose). Faults come
one at a time: each is applied, held, then undone, with a quiet gap after it
(with ``overlap``, one at a time per lane: network faults and process faults
run side by side); at the end everything is healed, resumed and restarted.

Kinds (``KINDS``):

- ``partition``: groups that only talk among themselves. Variants as in the
  simulator: isolate a node, isolate the leader, random halves, majorities
  ring (every node sees a majority, no two the same; for 3 nodes a line),
  bridge (two halves and one node that talks to both). Each cut is a ``stall``
  (bytes stop, TCP backs up, delivered late after heal) or a ``reset``
  (connections reset and refused), drawn from the seed.
- ``oneway``: directed cuts (always ``stall``): a node deaf (hears nobody) or
  mute (nobody hears it), the leader deaf or mute, or one directed link.
- ``delay``: every link of one node, or all links, slowed by a drawn latency
  and jitter (order is kept: TCP does not reorder).
- ``lossy``: one node's links, both ways, lose connections: every 0.1-0.5 s
  each is reset, or stalled for a moment (TCP's loss, seen from above).
- ``kill``: kill -9 a node (or the leader) and restart it on the same data
  directory after the hold: what it acknowledged must survive.
- ``crash-majority``: kill -9 a majority including the leader at once; restart
  them after the hold (their disks alone hold the acknowledged writes).
- ``pause``: SIGSTOP a node (or the leader), SIGCONT after the hold.
- ``amnesia`` (only with ``--break amnesia``, a deliberate bug): kill -9 every
  node, wipe a majority's data directories, restart that majority at once and
  the rest after the hold. A durable store cannot survive this; the checkers
  must say so.

With ``--agents N`` (target agents, sim/real/agents.py) a lane of its own, drawn from
the seed (``"{seed}/agents"``: the coordinators' schedule stays what it is without
agents) and played alongside the others, one fault at a time:

- ``agent-kill``: kill -9 an agent (the kernel closes its sockets at once), restart it
  after the hold.
- ``agent-isolate``: cut (stall or reset) every proxy of one agent: it must stop serving
  before the leader hands its VIPs to another agent. Held at least 2 x TTL so that the
  hand-over happens while it is cut off.
- ``agent-drain``: drain its node through the API (a planned move: a release), undrain
  after the hold.

Agents are never SIGSTOPped: on loopback a paused process keeps its listening socket,
hence the VIP (the interface mode's address lifetimes exist for that, out of scope).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from .agents import AGENT_KINDS, AGENT_MUST, AgentFleet
from .cluster import RealCluster
from .proxy import OPEN, Flow

KINDS = ("partition", "oneway", "delay", "lossy", "kill", "crash-majority", "pause")
NET_KINDS = ("partition", "oneway", "delay", "lossy")
MUST = ("partition", "kill", "pause")  # every schedule has these first (when enabled)
PARTITIONS = ("isolate-node", "isolate-leader", "halves", "ring", "bridge")
ONEWAYS = ("deaf-node", "mute-node", "deaf-leader", "mute-leader", "link")


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    hold_s: float
    variant: str = ""
    mode: str = "stall"
    order: tuple[int, ...] = ()  # a seeded permutation of the nodes: who is picked
    delay_ms: int = 0
    jitter_ms: int = 0
    lane: str = ""  # with --overlap: "net" or "proc", each lane one fault at a time

    def describe(self) -> str:
        bits = [self.kind]
        if self.variant:
            bits.append(self.variant)
        if self.kind in ("partition", "agent-isolate"):
            bits.append(f"({self.mode})")
        if self.kind == "delay":
            bits.append(f"{self.delay_ms}+{self.jitter_ms}ms")
        return " ".join(bits) + f" for {self.hold_s:.1f}s"

    def to_json(self) -> dict[str, Any]:
        return {
            "at_s": self.at_s,
            "kind": self.kind,
            "hold_s": self.hold_s,
            "variant": self.variant,
            "mode": self.mode,
            "order": list(self.order),
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "lane": self.lane,
        }


def schedule(
    seed: int,
    n: int,
    duration_s: float,
    kinds: tuple[str, ...] = KINDS,
    *,
    warmup_s: float = 2.0,
    calm_s: float = 3.0,
    amnesia: bool = False,
    overlap: bool = False,
    agents: int = 0,
    agent_hold_min_s: float = 3.0,
    isolate_first: bool = False,
) -> list[Fault]:
    """The faults of a run, from the seed alone.

    ``overlap``: two lanes drawn from the seed, played at the same time: the network's
    faults (partition, oneway, delay, lossy) and the processes' (kill, crash-majority,
    pause, amnesia), so a node may die while a partition holds. Each lane still plays
    one fault at a time.

    ``agents``: the target agents' faults (the ``agent-*`` kinds in ``kinds``) in a
    lane of their own, drawn from ``"{seed}/agents"``, played alongside."""
    agent_kinds = tuple(k for k in kinds if k in AGENT_KINDS)
    kinds = tuple(k for k in kinds if k not in AGENT_KINDS)
    extra: list[Fault] = []
    if agents and agent_kinds:
        rng = random.Random(f"{seed}/agents")
        extra = _agent_lane(
            rng,
            agents,
            duration_s,
            agent_kinds,
            warmup_s,
            calm_s,
            agent_hold_min_s,
            isolate_first,
        )
    if not kinds:
        return extra
    if not overlap:
        one = _lane(random.Random(seed), n, duration_s, kinds, warmup_s, calm_s, amnesia, "")
        return sorted(one + extra, key=lambda f: (f.at_s, f.lane)) if extra else one
    net = tuple(k for k in kinds if k in NET_KINDS)
    proc = tuple(k for k in kinds if k not in NET_KINDS)
    out: list[Fault] = []
    if net:
        rng = random.Random(f"{seed}/net")
        out += _lane(rng, n, duration_s, net, warmup_s, calm_s, False, "net")
    if proc or amnesia:
        rng = random.Random(f"{seed}/proc")
        out += _lane(rng, n, duration_s, proc or ("kill",), warmup_s, calm_s, amnesia, "proc")
    return sorted(out + extra, key=lambda f: (f.at_s, f.lane))


def _pace(duration_s: float) -> tuple[float, float, float, float]:
    """How long faults hold and the quiet between them: shorter in runs under a minute."""
    if duration_s < 60:
        return 0.8, 2.5, 0.5, 2.0
    return 1.0, 5.0, 1.0, 4.0


def _agent_lane(
    rng: random.Random,
    agents: int,
    duration_s: float,
    kinds: tuple[str, ...],
    warmup_s: float,
    calm_s: float,
    isolate_min_s: float,
    isolate_first: bool,
) -> list[Fault]:
    hold_lo, hold_hi, gap_lo, gap_hi = _pace(duration_s)
    must = [k for k in AGENT_MUST if k in kinds]
    rng.shuffle(must)
    if isolate_first and "agent-isolate" in must:
        must.remove("agent-isolate")
        must.insert(0, "agent-isolate")
    out: list[Fault] = []
    t = warmup_s
    for _ in range(100_000):
        kind = must.pop(0) if must else rng.choice(kinds)
        hold = round(rng.uniform(hold_lo, hold_hi), 2)
        if kind == "agent-isolate":
            hold = max(hold, isolate_min_s)
        if t + hold > duration_s - calm_s:
            break
        order = list(range(1, agents + 1))
        rng.shuffle(order)
        mode = rng.choice(("stall", "reset")) if kind == "agent-isolate" else "stall"
        out.append(Fault(t, kind, hold, "", mode, tuple(order), 0, 0, "agent"))
        t = round(t + hold + rng.uniform(gap_lo, gap_hi), 2)
    return out


def _lane(
    rng: random.Random,
    n: int,
    duration_s: float,
    kinds: tuple[str, ...],
    warmup_s: float,
    calm_s: float,
    amnesia: bool,
    lane: str,
) -> list[Fault]:
    hold_lo, hold_hi, gap_lo, gap_hi = _pace(duration_s)
    must = [k for k in MUST if k in kinds]
    rng.shuffle(must)
    if amnesia:
        must.insert(0, "amnesia")
    out: list[Fault] = []
    t = warmup_s
    for _ in range(100_000):
        kind = must.pop(0) if must else rng.choice(kinds)
        hold = round(rng.uniform(hold_lo, hold_hi), 2)
        if kind == "amnesia":
            hold = max(hold, 2.0)
        if t + hold > duration_s - calm_s:
            break
        order = list(range(1, n + 1))
        rng.shuffle(order)
        variant, mode, delay, jitter = "", "stall", 0, 0
        if kind == "partition":
            variant = rng.choice(PARTITIONS)
            mode = rng.choice(("stall", "reset"))
        elif kind == "oneway":
            variant = rng.choice(ONEWAYS)
        elif kind == "delay":
            variant = rng.choice(("all-links", "node-links"))
            delay, jitter = rng.choice((20, 50, 100, 200)), rng.choice((0, 10, 50))
        elif kind in ("kill", "pause"):
            variant = rng.choice(("node", "leader"))
        out.append(Fault(t, kind, hold, variant, mode, tuple(order), delay, jitter, lane))
        t = round(t + hold + rng.uniform(gap_lo, gap_hi), 2)
    return out


# ---- what happened, when ---------------------------------------------------------------


@dataclass
class Event:
    t_s: float
    kind: str  # fault | heal | down | up | pause | resume | role | note
    node: int = 0
    text: str = ""
    role: str = ""
    term: int = 0


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, kind: str, text: str = "", node: int = 0, role: str = "", term: int = 0) -> None:
        self.events.append(Event(round(self.now(), 3), kind, node, text, role, term))


# ---- the network as links ------------------------------------------------------------


class Links:
    """Directed links' conditions, mapped onto the proxies (see cluster.py)."""

    def __init__(self, cluster: RealCluster) -> None:
        self.c = cluster
        self.flows: dict[tuple[int, int], Flow] = {}

    def flow(self, a: int, b: int) -> Flow:
        return self.flows.get((a, b), OPEN)

    def apply(self) -> None:
        for (i, j), peer in self.c.peer_proxies.items():
            f = self.flow(i, j)
            peer.set(f, f)  # the dialler's channel: all of it is i's traffic to j
            fwd, back = f, self.flow(j, i)
            if fwd.blocked != back.blocked:  # one way on a request/answer link: stall only
                fwd = Flow(True, "stall", fwd.delay_s, fwd.jitter_s) if fwd.blocked else fwd
                back = Flow(True, "stall", back.delay_s, back.jitter_s) if back.blocked else back
            self.c.api_proxies[(i, j)].set(fwd, back)

    def cut(self, pairs: set[tuple[int, int]], mode: str) -> None:
        for p in pairs:
            self.flows[p] = Flow(True, mode)
        self.apply()

    def partition(self, groups: list[list[int]], mode: str) -> None:
        where = {h: k for k, g in enumerate(groups) for h in g}
        ids = self.c.ids
        self.cut({(a, b) for a in ids for b in ids if a != b and where[a] != where[b]}, mode)

    def heal(self) -> None:
        self.flows = {}
        self.apply()

    def slow(self, pairs: set[tuple[int, int]], delay_ms: int, jitter_ms: int) -> None:
        for p in pairs:
            self.flows[p] = Flow(False, "stall", delay_ms / 1000, jitter_ms / 1000)
        self.apply()


def _groups_text(groups: list[list[int]]) -> str:
    return " | ".join(",".join(f"n{i}" for i in sorted(g)) for g in groups)


class Nemesis:
    def __init__(
        self,
        cluster: RealCluster,
        timeline: Timeline,
        faults: list[Fault],
        seed: int,
        agents: AgentFleet | None = None,
    ) -> None:
        self.c = cluster
        self.agents = agents
        self.tl = timeline
        self.faults = faults
        self.links = Links(cluster)
        self.rng = random.Random(seed ^ 0x5EED)  # lossy timing choices
        self.applied: list[dict[str, Any]] = []  # what each fault really did (resolved)
        self.down: set[int] = set()
        self.paused: set[int] = set()

    async def run(self, end_s: float, stop: asyncio.Event) -> None:
        lanes = sorted({f.lane for f in self.faults})
        await asyncio.gather(
            *(self._run_lane([f for f in self.faults if f.lane == x], end_s, stop) for x in lanes)
        )

    async def _run_lane(self, faults: list[Fault], end_s: float, stop: asyncio.Event) -> None:
        for f in faults:
            if stop.is_set():
                return
            wait = f.at_s - self.tl.now()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    return
                except TimeoutError:
                    pass
            if self.tl.now() + f.hold_s > end_s:
                return
            await self.play(f)

    async def play(self, f: Fault) -> None:
        begun = self.tl.now()
        what = await self._begin(f)
        self.tl.add("fault", what)
        entry: dict[str, Any] = {"at_s": round(begun, 3), "fault": f.describe(), "did": what}
        if f.lane:
            entry["lane"] = f.lane
        self.applied.append(entry)
        if f.kind == "lossy":
            await self._lossy(f, entry)
        else:
            await asyncio.sleep(f.hold_s)
        undo = await self._end(f)
        entry["until_s"] = round(self.tl.now(), 3)
        self.tl.add("heal", undo)

    async def heal_all(self) -> None:
        """Everything back: links healed, paused nodes resumed, dead nodes restarted."""
        self.links.heal()
        did = ["final heal: all links open"]
        for i in sorted(self.paused):
            self.c.resume(i)
            self.tl.add("resume", "", i)
            did.append(f"SIGCONT n{i}")
        self.paused.clear()
        for i in sorted(self.down):
            self.c.start_node(i)
            self.tl.add("up", "", i)
            did.append(f"restart n{i}")
        self.down.clear()
        if self.agents is not None:
            did += await self.agents.heal_all()
        self.tl.add("heal", ", ".join(did))

    # ---- faults ----------------------------------------------------------------------

    async def _leader_or(self, fallback: int) -> tuple[int, str]:
        lead = await self.c.leader()
        if lead is None:
            return fallback, f"n{fallback} (no leader known)"
        return lead, f"leader n{lead}"

    async def _begin(self, f: Fault) -> str:
        ids = self.c.ids
        order = list(f.order)
        if f.kind.startswith("agent-"):
            return await self._agent_begin(f)
        match f.kind:
            case "partition":
                groups = await self._partition_groups(f, order)
                if f.variant in ("ring", "bridge"):
                    pairs = self._ring_or_bridge(f.variant, order)
                    self.links.cut(pairs, f.mode)
                    return f"{f.variant} ({f.mode}): cut {_pairs_text(pairs)}"
                self.links.partition(groups, f.mode)
                return f"partition {f.variant} ({f.mode}): {_groups_text(groups)}"
            case "oneway":
                if f.variant == "link":
                    a, b = order[0], order[1]
                    self.links.cut({(a, b)}, "stall")
                    return f"one-way: n{a} -> n{b} cut"
                who, text = (
                    await self._leader_or(order[0])
                    if f.variant.endswith("leader")
                    else (order[0], f"n{order[0]}")
                )
                others = [o for o in ids if o != who]
                if f.variant.startswith("deaf"):
                    self.links.cut({(o, who) for o in others}, "stall")
                    return f"one-way: {text} hears nobody (can still send)"
                self.links.cut({(who, o) for o in others}, "stall")
                return f"one-way: nobody hears {text} (it still hears)"
            case "delay":
                if f.variant == "all-links":
                    pairs = {(a, b) for a in ids for b in ids if a != b}
                    text = "all links"
                else:
                    x = order[0]
                    pairs = {(a, b) for a in ids for b in ids if a != b and x in (a, b)}
                    text = f"n{x}'s links"
                self.links.slow(pairs, f.delay_ms, f.jitter_ms)
                return f"delay {text} by {f.delay_ms}ms + up to {f.jitter_ms}ms"
            case "lossy":
                return f"lossy: n{order[0]}'s links reset or stall at random"
            case "kill":
                who, text = (
                    await self._leader_or(order[0])
                    if f.variant == "leader"
                    else (order[0], f"n{order[0]}")
                )
                await self._kill(who)
                return f"kill -9 {text}"
            case "crash-majority":
                lead, _ = await self._leader_or(order[0])
                rest = [o for o in order if o != lead]
                victims = sorted([lead, *rest[: len(ids) // 2]])
                for v in victims:
                    await self._kill(v)
                return "kill -9 a majority: " + ", ".join(f"n{v}" for v in victims)
            case "pause":
                who, text = (
                    await self._leader_or(order[0])
                    if f.variant == "leader"
                    else (order[0], f"n{order[0]}")
                )
                if who in self.down:
                    return f"pause {text}: it is down, nothing to pause"
                self.c.pause(who)
                self.paused.add(who)
                self.tl.add("pause", "", who)
                return f"SIGSTOP {text}"
            case "amnesia":
                for v in ids:
                    await self._kill(v)
                wiped = sorted(order[: len(ids) // 2 + 1])
                for v in wiped:
                    self.c.wipe(v)
                    self.c.start_node(v)
                    self.down.discard(v)
                    self.tl.add("up", "", v)
                return (
                    "BREAK amnesia: kill -9 all, wipe "
                    + ", ".join(f"n{v}" for v in wiped)
                    + " and restart them; the others later"
                )
        raise ValueError(f"unknown fault kind {f.kind!r}")

    async def _agent_begin(self, f: Fault) -> str:
        fleet = self.agents
        if fleet is None:
            return f"{f.kind}: no agents"
        k = f.order[0]
        match f.kind:
            case "agent-kill":
                await fleet.kill9(k)
                return f"kill -9 agent a{k}"
            case "agent-isolate":
                fleet.isolate(k, f.mode)
                return f"isolate agent a{k} ({f.mode}): cut from every coordinator"
            case "agent-drain":
                return await fleet.drain(k)
        raise ValueError(f"unknown fault kind {f.kind!r}")

    async def _agent_end(self, f: Fault) -> str:
        fleet = self.agents
        if fleet is None:
            return "nothing to undo"
        k = f.order[0]
        match f.kind:
            case "agent-kill":
                if k in fleet.down:
                    fleet.down.discard(k)
                    fleet.start_agent(k)
                    return f"restart agent a{k}"
                return "nothing to restart"
            case "agent-isolate":
                fleet.reconnect(k)
                return f"reconnect agent a{k}"
            case "agent-drain":
                if k not in fleet.drained:
                    return "nothing to undrain"
                ok = await fleet.undrain(k, tries=3)
                return f"undrain a{k}" if ok else f"undrain a{k} failed (again at the final heal)"
        raise ValueError(f.kind)

    async def _end(self, f: Fault) -> str:
        if f.kind.startswith("agent-"):
            return await self._agent_end(f)
        if f.kind in ("partition", "oneway", "delay", "lossy"):
            self.links.heal()
            return "heal: all links open"
        if f.kind in ("kill", "crash-majority", "amnesia"):
            back = sorted(self.down)
            for i in back:
                self.c.start_node(i)
                self.tl.add("up", "", i)
            self.down.clear()
            return "restart " + ", ".join(f"n{i}" for i in back) if back else "nothing to restart"
        if f.kind == "pause":
            back = sorted(self.paused)
            for i in back:
                self.c.resume(i)
                self.tl.add("resume", "", i)
            self.paused.clear()
            return "SIGCONT " + ", ".join(f"n{i}" for i in back) if back else "nothing to resume"
        raise ValueError(f.kind)

    async def _kill(self, i: int) -> None:
        if i in self.down:
            return
        self.paused.discard(i)
        self.down.add(i)  # first: the monitor must not take this death for a crash
        await self.c.kill9(i)
        self.tl.add("down", "", i)

    async def _partition_groups(self, f: Fault, order: list[int]) -> list[list[int]]:
        n = len(order)
        if f.variant == "isolate-leader":
            lead = await self.c.leader()
            x = lead if lead is not None else order[0]
            return [[x], [o for o in order if o != x]]
        if f.variant == "isolate-node":
            return [[order[0]], order[1:]]
        if f.variant == "halves":
            return [order[: n // 2], order[n // 2 :]]
        return [order]  # ring, bridge: expressed as cut links

    def _ring_or_bridge(self, variant: str, order: list[int]) -> set[tuple[int, int]]:
        n = len(order)
        if variant == "ring":
            # Each node talks to its two ring neighbours: with 5 nodes a majority each
            # (itself included), no two the same. For 3 nodes: a line a-b-c.
            ok: set[tuple[int, int]] = set()
            for k in range(n if n > 3 else n - 1):
                a, b = order[k], order[(k + 1) % n]
                ok |= {(a, b), (b, a)}
        else:
            bridge, rest = order[0], order[1:]
            half = len(rest) // 2
            left, right = rest[:half], rest[half:]
            ok = {(a, b) for g in (left, right) for a in g for b in g if a != b}
            ok |= {(bridge, o) for o in rest} | {(o, bridge) for o in rest}
        return {(a, b) for a in order for b in order if a != b and (a, b) not in ok}

    async def _lossy(self, f: Fault, entry: dict[str, Any]) -> None:
        x = f.order[0]
        proxies = [
            p
            for (a, b), p in [*self.c.peer_proxies.items(), *self.c.api_proxies.items()]
            if x in (a, b)
        ]
        resets = stalls = 0
        end = time.monotonic() + f.hold_s
        for _ in range(10_000):
            left = end - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(left, self.rng.uniform(0.1, 0.5)))
            if time.monotonic() >= end:
                break
            for p in proxies:
                r = self.rng.random()
                if r < 0.4:
                    resets += p.reset_connections()
                elif r < 0.6:
                    p.cut(mode="stall")
                    stalls += 1
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))
            for p in proxies:
                p.heal()
        entry["resets"] = resets
        entry["stalls"] = stalls


def _pairs_text(pairs: set[tuple[int, int]]) -> str:
    return ", ".join(f"n{a}->n{b}" for a, b in sorted(pairs)) or "nothing"
