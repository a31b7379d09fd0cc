"""One simulated cluster run: nodes, network, disks, clients, checkers, one seed.

Every random choice flows from ``random.Random(seed)`` through streams split
off at construction (network, disks, clients, nodes), and everything iterated
is sorted or insertion-ordered over ints, so a seed replays byte for byte:
the trace digest (sha256 of every traced line) proves it.
"""

from __future__ import annotations

import hashlib
import random
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from coord.raft import (
    ConfChange,
    Config,
    Message,
    NodeId,
    RaftError,
    RaftNode,
    Role,
    render,
)
from coord.raft.confchange import bootstrap

from .agents import AgentParams
from .checkers.raft import RaftChecker
from .checkers.store import LeaseChecker, WatchChecker
from .fleet import Fleet
from .history import History, Op, Outcome
from .loop import MS, Loop, fmt_time
from .net import LinkParams, Network
from .node import SimNode
from .services import LeaseHolder, WatchClient, WatchMsg
from .workload import Client, ClientReply, WorkloadParams


@dataclass
class SimParams:
    nodes: int = 5
    tick_us: int = 50 * MS  # the daemon's default tick
    election_ticks: int = 6
    heartbeat_ticks: int = 1
    link: LinkParams = field(default_factory=LinkParams)
    fsync_min_us: int = 200
    fsync_max_us: int = 2 * MS
    drift: float = 0.0  # per-node clock rate drawn from [1 - drift, 1 + drift]
    snapshot_every: int = 200  # entries applied between snapshots (0: never)
    snapshot_keep: int = 50  # entries kept behind a snapshot for slow followers
    workload: WorkloadParams = field(default_factory=WorkloadParams)
    raft: dict[str, Any] = field(default_factory=dict)  # extra Config fields
    node_class: type[RaftNode] = RaftNode
    agents: AgentParams = field(default_factory=AgentParams)  # target agents (none by default)


@dataclass(frozen=True)
class Violation:
    kind: str
    time_us: int
    nodes: tuple[int, ...]
    detail: str
    context: tuple[str, ...] = ()

    def render(self) -> str:
        nodes = ",".join(f"n{n}" for n in self.nodes)
        return f"{self.kind} at {fmt_time(self.time_us).strip()} [{nodes}]: {self.detail}"


@dataclass(frozen=True)
class TimelineEvent:
    time_us: int
    kind: str  # role | fault | note | down | up | pause
    node: int
    text: str
    role: Role | None = None
    term: int = 0


def _timeline_text(e: TimelineEvent) -> str:
    if e.kind == "role" and e.role is not None:
        return f"n{e.node} {e.role.value} t{e.term}"
    return e.text or f"n{e.node} {e.kind}"


class World:
    def __init__(self, seed: int, params: SimParams, *, keep_trace: bool = False) -> None:
        self.seed = seed
        self.p = params
        master = random.Random(seed)
        self.net_rng = random.Random(master.getrandbits(64))
        self.disk_rng = random.Random(master.getrandbits(64))
        self.client_rng = random.Random(master.getrandbits(64))
        self.fault_rng = random.Random(master.getrandbits(64))
        node_seed = master.getrandbits(64)
        # Drawn last, so runs without agents see the same streams as before they existed.
        self.agent_rng = random.Random(master.getrandbits(64))
        self.loop = Loop()
        self.tick_us = params.tick_us
        self.snapshot_every = params.snapshot_every
        self.snapshot_keep = params.snapshot_keep
        self.net = Network(self.loop, self.net_rng, params.link, self._deliver)
        self.history = History()
        self.violations: list[Violation] = []
        self.timeline: list[TimelineEvent] = []
        self.leaders: list[tuple[int, int, int]] = []  # (time, term, node)
        # (time, what, blocked links after it) at every partition, cut and heal: for pictures
        self.net_log: list[tuple[int, str, tuple[tuple[int, int], ...]]] = []
        self._digest = hashlib.sha256()
        self._pending_trace: list[str] = []
        self.recent: deque[str] = deque(maxlen=30)
        self.trace_lines: list[str] | None = [] if keep_trace else None
        self.checker = RaftChecker(self._report)
        self.watch_checker = WatchChecker(self._report)
        self.lease_checker = LeaseChecker(self._report)
        self.services: dict[int, LeaseHolder | WatchClient] = {}
        self.stopped = False
        self.dedup_entries: set[int] = set()  # log indexes of retries answered from sessions
        self.batched_writes = 0  # client writes that shared a log entry with others
        self.unsynced_lost = 0  # records crashes took from disks before they were synced
        self.torn_tails = 0  # crashes that left a partly written last record
        self.leader_hooks: list[Callable[[int, int], None]] = []  # called as a node takes office
        self.send_hooks: list[Callable[[int, Message], None]] = []  # a nemesis watching traffic
        self.nodes: dict[int, SimNode] = {}
        self._node_seed = node_seed
        self.clients: dict[int, Client] = {}
        self.script_ops: dict[int, Op] = {}  # one-off writes a scenario sends itself
        self._roles: dict[int, tuple[Role, int]] = {}
        self.fleet: Fleet | None = None
        first, hs = bootstrap(list(range(1, params.nodes + 1)))
        for nid in range(1, params.nodes + 1):
            node = self._make_node(nid)
            node.disk.write(("ents", (first,)))
            node.disk.write(("hs", hs))
            node.disk.sync()
        if params.agents.count:
            self.fleet = Fleet(self, params.agents)

    def _make_node(self, nid: int) -> SimNode:
        cfg = Config(
            id=NodeId(nid),
            election_ticks=self.p.election_ticks,
            heartbeat_ticks=self.p.heartbeat_ticks,
            **self.p.raft,
        )
        rng = random.Random(self._node_seed + nid)
        node = SimNode(self, nid, cfg, rng)
        node.node_class = self.p.node_class
        if self.p.drift:
            node.rate = 1.0 + self.fault_rng.uniform(-self.p.drift, self.p.drift)
        self.nodes[nid] = node
        return node

    # ---- running ------------------------------------------------------------------

    def start(self) -> None:
        for nid in sorted(self.nodes):
            self.nodes[nid].start()
        wp = self.p.workload
        hosts = wp.hosts or sorted(self.nodes)
        for k in range(wp.clients):
            cid = k + 1
            client = Client(
                cid,
                hosts[k % len(hosts)],
                self.member_ids,
                self.loop,
                random.Random(self.client_rng.getrandbits(64)),
                self.history,
                wp,
                self.net.send,
                self.trace,
            )
            self.clients[cid] = client
            client.start()
        self._start_services(wp, len(self.clients))
        if self.fleet is not None:
            self.fleet.start()

    def _start_services(self, wp: WorkloadParams, first: int) -> None:
        rates = [n.rate for n in self.nodes.values()]
        self.lease_checker.fastest, self.lease_checker.slowest = min(rates), max(rates)
        hosts = sorted(self.nodes)
        for k in range(wp.lease_holders + wp.watchers):
            cid = first + k + 1
            host = hosts[(k + 1) % len(hosts)]
            rng = random.Random(self.client_rng.getrandbits(64))
            svc: LeaseHolder | WatchClient
            if k < wp.lease_holders:
                svc = LeaseHolder(
                    cid,
                    host,
                    self.member_ids,
                    self.loop,
                    rng,
                    self.net.send,
                    self.trace,
                    self.lease_checker,
                    wp.lease_ttl_s,
                    wp.timeout_us,
                )
            else:
                prefix = ("", "k", "lease/")[(k - wp.lease_holders) % 3]
                svc = WatchClient(
                    cid, host, self.member_ids, self.loop, rng, self.net.send, self.trace, prefix
                )
            self.services[cid] = svc
            svc.start()

    def run_until(self, t_us: int, stop: Callable[[], bool] | None = None) -> None:
        def halt() -> bool:
            return self.stopped or (stop is not None and stop())

        self.loop.run_until(t_us, halt)

    def stop_clients(self) -> None:
        for c in self.clients.values():
            c.stop()
        for cid in sorted(self.services):
            self.services[cid].stop()

    def guard(self, nid: int, fn: Callable[..., None], *args: Any) -> None:
        """Run a node's event; a broken assertion inside the core is a violation."""
        try:
            fn(*args)
        except AssertionError as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}"
            self._report(
                "node-assertion", (nid,), f"n{nid} stopped on a broken invariant: {e} ({where})"
            )
            self.nodes[nid].crash()
            self.stopped = True

    # ---- plumbing -----------------------------------------------------------------

    def send_raft(self, src: int, m: Message) -> None:
        self.trace(render(m))
        for hook in self.send_hooks:
            hook(src, m)
        self.net.send(src, m.dst, m)

    def _deliver(self, src: int, dst: int, payload: Any) -> None:
        if self.fleet is not None and dst not in self.nodes:
            self.fleet.deliver(dst, payload)  # an agent's, initiator's or the operator's host
            return
        if isinstance(payload, WatchMsg):
            svc = self.services.get(payload.client)
            if isinstance(svc, WatchClient) and svc.host == dst:
                svc.on_watch(payload)
            return
        if isinstance(payload, ClientReply):
            holder = self.services.get(payload.client)
            if isinstance(holder, LeaseHolder):
                if holder.host == dst:
                    holder.on_reply(payload)
                return
            op = self.script_ops.get(payload.client)
            if op is not None:
                self._script_reply(op, payload)
                return
            client = self.clients.get(payload.client)
            if client is not None and client.host == dst:
                client.on_reply(payload)
            return
        node = self.nodes.get(dst)
        if node is not None:
            node.receive(payload)

    def _script_reply(self, op: Op, rep: ClientReply) -> None:
        if op.outcome is not Outcome.PENDING:
            return
        if rep.status == "ok":
            op.log_pos = rep.log_pos
            self.history.complete(op, Outcome.OK, self.loop.now)
        elif rep.status == "unknown":
            self.history.complete(op, Outcome.INFO, self.loop.now)
        else:
            self.history.complete(op, Outcome.FAIL, self.loop.now)
        self.trace(f"script {op.render()}")

    def draw_fsync_us(self) -> int:
        return self.disk_rng.randint(self.p.fsync_min_us, self.p.fsync_max_us)

    def trace(self, line: str) -> None:
        text = f"{self.loop.now} {line}"
        pending = self._pending_trace
        pending.append(text)
        if len(pending) >= 512:
            self._flush_trace()
        self.recent.append(text)
        if self.trace_lines is not None:
            self.trace_lines.append(text)

    def _flush_trace(self) -> None:
        # Hashing in batches: the same bytes as line by line, at a fraction of the calls.
        if self._pending_trace:
            self._digest.update(("\n".join(self._pending_trace) + "\n").encode())
            self._pending_trace = []

    def trace_digest(self) -> str:
        self._flush_trace()
        return self._digest.hexdigest()

    def _report(self, kind: str, nodes: tuple[int, ...], detail: str) -> None:
        v = Violation(kind, self.loop.now, nodes, detail, tuple(self.recent)[-12:])
        self.violations.append(v)
        self.trace(f"VIOLATION {v.render()}")

    def report(self, kind: str, nodes: tuple[int, ...], detail: str) -> None:
        self._report(kind, nodes, detail)

    def report_at(self, kind: str, time_us: int, nodes: tuple[int, ...], detail: str) -> None:
        """A violation found after the run, that happened at ``time_us``: stamped with
        that time, and with what the timeline shows just before it (the run's last
        events would say nothing about it)."""
        if not time_us:
            self._report(kind, nodes, detail)
            return
        before = [e for e in self.timeline if e.time_us <= time_us][-12:]
        context = tuple(f"{e.time_us} {_timeline_text(e)}" for e in before)
        v = Violation(kind, time_us, nodes, detail, context)
        self.violations.append(v)
        self.trace(f"VIOLATION {v.render()}")

    def role_changed(self, nid: int, role: Role, term: int) -> None:
        if self._roles.get(nid) == (role, term):
            return
        self._roles[nid] = (role, term)
        if role is Role.LEADER:
            self.leaders.append((self.loop.now, term, nid))
            for hook in self.leader_hooks:
                hook(nid, term)
        self.trace(f"n{nid} {role.value} t{term}")
        self.timeline.append(TimelineEvent(self.loop.now, "role", nid, "", role, term))

    def note(self, text: str, kind: str = "fault", node: int = 0) -> None:
        self.trace(text)
        self.timeline.append(TimelineEvent(self.loop.now, kind, node, text))

    # ---- looking ------------------------------------------------------------------

    def member_ids(self) -> list[int]:
        return sorted(self.nodes)

    def live(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.alive and n.core is not None]

    def leader(self) -> SimNode | None:
        """The leader of the highest term among live nodes, if any."""
        best: SimNode | None = None
        for n in self.live():
            assert n.core is not None
            if n.core.role is Role.LEADER and (best is None or n.core.term > best.core.term):  # type: ignore[union-attr]
                best = n
        return best

    def stable_leader(self) -> SimNode | None:
        """A leader whose term no live node has passed (so it can still commit)."""
        lead = self.leader()
        if lead is None or lead.core is None:
            return None
        top = max(n.core.term for n in self.live() if n.core is not None)
        return lead if lead.core.term == top else None

    # ---- faults (the nemesis calls these) -----------------------------------------

    def _net_changed(self, text: str) -> None:
        self.note(text)
        self.net_log.append((self.loop.now, text, tuple(sorted(self.net.blocked))))

    def heal(self) -> None:
        self.net.heal()
        self._net_changed("heal: network whole")

    def partition(self, groups: list[list[int]], label: str = "") -> None:
        # Every node takes part; other hosts (agents) only where a group names them.
        hosts = sorted(set(self.nodes) | {h for g in groups for h in g})
        self.net.partition(groups, hosts)
        text = " | ".join("{" + ",".join(str(h) for h in sorted(g)) + "}" for g in groups)
        self._net_changed(f"partition {label + ' ' if label else ''}{text}")

    def block(self, pairs: set[tuple[int, int]], label: str) -> None:
        self.net.block(pairs)
        self._net_changed(
            f"links cut ({label}): " + " ".join(f"{a}->{b}" for a, b in sorted(pairs))
        )

    def crash(self, nid: int) -> None:
        node = self.nodes[nid]
        if not node.alive:
            return
        lost, torn = node.crash()
        self.unsynced_lost += lost
        self.torn_tails += torn
        self.checker.forget_node(nid)
        self.note(
            f"crash n{nid} (lost {lost} unsynced records{', torn tail' if torn else ''})",
            "down",
            nid,
        )

    def restart(self, nid: int) -> None:
        node = self.nodes[nid]
        if node.alive:
            return
        before = node.disk.torn_repairs
        self.guard(nid, node.start)
        torn = " (cut a torn record)" if node.disk.torn_repairs > before else ""
        self.note(f"restart n{nid}{torn}", "up", nid)

    def pause(self, nid: int, duration_us: int) -> None:
        node = self.nodes[nid]
        if not node.alive or node.paused:
            return
        node.pause()
        self.note(f"pause n{nid} for {duration_us / 1000:.0f}ms", "pause", nid)
        inc = node.incarnation
        self.loop.after(duration_us, self._resume, nid, inc)

    def _resume(self, nid: int, inc: int) -> None:
        node = self.nodes[nid]
        if node.alive and node.paused and node.incarnation == inc:
            self.note(f"resume n{nid}", "up", nid)
            self.guard(nid, node.resume)

    def set_link(self, **changes: Any) -> None:
        self.net.params = replace(self.net.params, **changes)
        self.note("network " + " ".join(f"{k}={v}" for k, v in sorted(changes.items())))

    def set_one_link(self, a: int, b: int, changes: dict[str, Any], both: bool) -> None:
        """Give the link a->b (and b->a if ``both``) parameters of its own; with no
        changes, it goes back to the common ones."""
        for link in [(a, b), (b, a)] if both else [(a, b)]:
            if changes:
                base = self.net.overrides.get(link, self.net.params)
                self.net.overrides[link] = replace(base, **changes)
            else:
                self.net.overrides.pop(link, None)
        arrow = "<->" if both else "->"
        what = " ".join(f"{k}={v}" for k, v in sorted(changes.items())) or "as the rest"
        self.note(f"link n{a}{arrow}n{b}: {what}")

    def add_node(self, nid: int) -> SimNode:
        """A new, empty machine (it joins once the leader adds it)."""
        node = self._make_node(nid)
        self.guard(nid, node.start)
        self.note(f"new node n{nid} started (empty)", "up", nid)
        return node

    def conf_change(self, cc: ConfChange) -> str:
        """An operator's membership change through the current leader; '' or why not."""
        lead = self.stable_leader()
        if lead is None or lead.core is None:
            return "no leader"
        try:
            lead.core.propose_conf_change(cc)
        except RaftError as e:
            return str(e)
        self.note(f"n{lead.id}: proposed {cc.type.name.lower()} n{cc.node}")
        self.guard(lead.id, lead.pump)
        return ""

    def transfer(self, to: int) -> str:
        lead = self.stable_leader()
        if lead is None or lead.core is None:
            return "no leader"
        try:
            lead.core.transfer_leadership(NodeId(to))
        except RaftError as e:
            return str(e)
        self.note(f"n{lead.id}: transfer leadership to n{to}")
        self.guard(lead.id, lead.pump)
        return ""

    # ---- the end ------------------------------------------------------------------

    def finish_checks(self) -> None:
        """After the run: acknowledged writes must all be applied where they were acked."""
        self.history.close()
        acked_ops = {
            op.id: op
            for op in self.history.ops
            if op.outcome is Outcome.OK and op.log_pos is not None
        }
        acked = [(op.id, op.log_pos[0], op.log_pos[1]) for op in acked_ops.values()]  # type: ignore[index]
        for op_id, text in self.checker.lost_writes(acked):  # type: ignore[arg-type]
            op = acked_ops[op_id]
            # Stamped when it was acknowledged, by the node that acknowledged it.
            self.report_at("lost-write", op.complete_us or 0, tuple(op.nodes[-1:]), text)
        if self.fleet is not None:
            self.fleet.finish()
        for cid in sorted(self.services):
            svc = self.services[cid]
            if isinstance(svc, WatchClient):
                self.watch_checker.judge(cid, svc.segments)
