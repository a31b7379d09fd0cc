"""One real run: cluster up, load and nemesis for the duration, heal, read, judge.

Order of the end of a run: the nemesis stops and heals everything (links
open, paused nodes resumed, dead nodes restarted); clients start no new
operation and finish the one in flight (bounded by their own limits); the
harness waits for an agreed leader (the recovery time); one linearizable range
reads every key (recorded as reads); the watchers get a bounded time to catch
up with that revision; each node's own history of the prefix is read; then
every process is stopped by PID and the checkers judge what was recorded.
Whatever happens (an exception, Ctrl-C), the ``finally`` stops every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..history import History
from .agents import OVERLAP_TOLERANCE_MS, AgentFleet, LogEvent, judge_vips, report_lines
from .checks import Violation, judge
from .clients import Workload, WorkloadParams
from .cluster import RealCluster
from .nemesis import KINDS, Event, Nemesis, Timeline, schedule
from .report import RealResult


@dataclass
class RealParams:
    nodes: int = 3
    duration_s: float = 60.0
    seed: int = 1
    clients: int = 4
    keys: int = 3
    watchers: int = 2
    bind: str = "mixed"  # or "all": every client given every node
    attempts: int = 8  # coord.client's attempts per operation
    attempt_timeout_s: float = 2.0
    kinds: tuple[str, ...] = KINDS
    overlap: bool = False  # network and process faults in two lanes, at the same time
    broken: str = ""  # "", "amnesia" or "vip-linger"
    agents: int = 0  # target agents (sim/real/agents.py); 0: none
    vips: int = 2  # VIPs on loopback (127.0.77.1, ...) when there are agents
    agent_ttl_ms: int = 1500
    keep: Path | None = None
    tick_ms: int = 50
    election_ticks: int = 6
    # Bounds after the final heal: an agreed leader; the final read; watchers and
    # every node's history reaching the final revision.
    recover_s: float = 30.0
    final_read_s: float = 20.0
    catch_up_s: float = 10.0
    # Every VIP served by exactly one live agent (the map's owner), from the final heal.
    vip_settle_s: float = 15.0
    # --break vip-linger: agents that keep serving 2 s past their lease's safe window.
    linger_margin_s: float = -2.0


async def _watchers_caught_up(wl: Workload, revision: int, bound: float) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline and any(r.progress_rev < revision for r in wl.watches):
        await asyncio.sleep(0.1)


def _last_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.startswith("coord:") or "CRITICAL" in ln]
    if not lines:
        lines = [ln for ln in log.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no log)"


async def _monitor(
    cluster: RealCluster,
    tl: Timeline,
    nemesis: Nemesis,
    exits: list[str],
    fleet: AgentFleet | None = None,
    agent_exits: list[str] | None = None,
) -> None:
    """Poll every node's role and term (straight to its API) and note each change."""
    seen: dict[int, tuple[str, int]] = {}
    for _ in range(10_000_000):
        if fleet is not None:
            for k, code in fleet.exited():  # the final heal restarts it
                text = f"agent a{k} exited by itself (status {code}): {fleet.last_line(k)}"
                tl.add("exit", text)
                if agent_exits is not None:
                    agent_exits.append(text)
        for i, nd in cluster.nodes.items():
            if nd.proc is not None and nd.proc.poll() is not None and i not in nemesis.down:
                # Nobody killed it: it stopped by itself (a refused invariant, a crash).
                code = int(nd.proc.returncode)
                nd.exits.append(code)
                nd.proc = None
                nemesis.down.add(i)  # the final heal restarts it
                nemesis.paused.discard(i)
                last = _last_line(cluster.log_tail(i, 4000))
                text = f"n{i} exited by itself (status {code}): {last}"
                tl.add("exit", text, i)
                exits.append(text)
        sts = await cluster.statuses(0.4)
        for i, st in sts.items():
            if st is None or i in nemesis.down or i in nemesis.paused:
                if i in nemesis.down or i in nemesis.paused:
                    seen.pop(i, None)
                continue
            now = (str(st.get("role")), int(st.get("term", 0)))
            if seen.get(i) != now:
                seen[i] = now
                tl.add("role", node=i, role=now[0], term=now[1])
        await asyncio.sleep(0.25)


async def run_real(p: RealParams, say: Callable[[str], None] = print) -> RealResult:
    started = time.monotonic()
    if p.keep is not None:
        p.keep.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"seed{p.seed}-", dir=p.keep))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="coord-real-"))
    cluster = RealCluster(
        workdir, p.nodes, tick_ms=p.tick_ms, election_ticks=p.election_ticks, seed=p.seed
    )
    history = History()
    faults = schedule(
        p.seed,
        p.nodes,
        p.duration_s,
        p.kinds,
        amnesia=p.broken == "amnesia",
        overlap=p.overlap,
        agents=p.agents,
        agent_hold_min_s=2 * p.agent_ttl_ms / 1000,
        isolate_first=p.broken == "vip-linger",
    )
    tasks: list[asyncio.Task[Any]] = []
    final_rev = 0
    recovery: float | None = None
    final_leader: int | None = None
    node_histories: dict[int, tuple[list[dict[str, Any]], int, bool]] = {}
    notes: list[str] = []
    exits: list[str] = []  # nodes that stopped without the nemesis killing them
    stats: dict[str, Any] = {}
    tl = Timeline()
    wl: Workload | None = None
    nemesis: Nemesis | None = None
    fleet: AgentFleet | None = None
    agent_exits: list[str] = []
    wall0 = time.time()
    stopped_at = 0.0  # wall clock: every agent stopped
    settled: tuple[float | None, str] = (None, "")
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    if main is not None:
        # SIGTERM ends a run as Ctrl-C does: through the finally below, which stops
        # every process by its PID.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        say(f"real: {p.nodes} nodes on loopback in {workdir}, seed {p.seed}")
        leader = await cluster.start(30.0)
        if p.agents:
            fleet = AgentFleet(
                workdir,
                cluster,
                p.agents,
                vips=tuple(f"127.0.77.{v}" for v in range(1, p.vips + 1)),
                ttl_ms=p.agent_ttl_ms,
                margin_s=p.linger_margin_s if p.broken == "vip-linger" else None,
            )
            say(f"real: {p.agents} target agents, VIPs on port {fleet.vip_port}")
            await fleet.start()
            await fleet.wait_registered(30.0)
            await fleet.create_vips()
            took, seen = await fleet.wait_settled(15.0)
            if took is None:
                notes.append(f"the VIPs were not all served before the load began: {seen}")
        tl = Timeline()  # time 0: the cluster is up, the load begins
        wall0 = time.time() - tl.now()
        tl.add("note", f"cluster up: n{leader} leads")
        wparams = WorkloadParams(
            clients=p.clients,
            keys=p.keys,
            watchers=p.watchers,
            bind=p.bind,
            attempts=p.attempts,
            attempt_timeout_s=p.attempt_timeout_s,
            op_deadline_s=p.attempts * (p.attempt_timeout_s + 1.0) + 5.0,
        )
        wl = Workload(cluster, history, tl.t0, p.seed, wparams)
        nemesis = Nemesis(cluster, tl, faults, p.seed, fleet)
        stop = asyncio.Event()
        tasks.append(loop.create_task(_monitor(cluster, tl, nemesis, exits, fleet, agent_exits)))
        watchers = [loop.create_task(wl.run_watcher(rec)) for rec in wl.watcher_records()]
        tasks += watchers
        clients = [loop.create_task(wl.run_client(cid, stop)) for cid in range(p.clients)]
        tasks += clients
        say(f"real: load and nemesis for {p.duration_s:g}s ({len(faults)} faults planned)")
        await nemesis.run(p.duration_s, stop)
        left = p.duration_s - tl.now()
        if left > 0:
            await asyncio.sleep(left)
        stop.set()
        say(f"real: {tl.now():.1f}s final heal; clients finish, then a leader, a final read")
        await nemesis.heal_all()
        heal_at = tl.now()
        done, pending = await asyncio.wait(clients, timeout=wparams.op_deadline_s + 5)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        if pending:
            notes.append(f"{len(pending)} clients did not stop in time")
        try:
            final_leader = await cluster.wait_leader(p.recover_s)
            recovery = tl.now() - heal_at
            tl.add("note", f"recovered: n{final_leader} leads, every node agrees")
        except TimeoutError:
            tl.add("note", f"no agreed leader within {p.recover_s:g}s of the final heal")
        final_rev = await wl.final_read(p.final_read_s)
        say(f"real: {tl.now():.1f}s final read at revision {final_rev}")
        tl.add("note", f"final read at revision {final_rev}")
        # The watchers catch up while each node's own history is read: one bound for both.
        caught_up = loop.create_task(_watchers_caught_up(wl, final_rev, p.catch_up_s))
        got = await asyncio.gather(
            *(wl.node_history(i, final_rev, p.catch_up_s) for i in cluster.ids)
        )
        await caught_up
        node_histories = dict(zip(cluster.ids, got, strict=True))
        say(f"real: {tl.now():.1f}s every node's history read; stopping the processes")
        for problem in cluster.bypassed_links():
            notes.append(f"harness routing (results may not mean what they say): {problem}")
        if fleet is not None:
            left = max(1.0, p.vip_settle_s - (tl.now() - heal_at))
            took, seen = await fleet.wait_settled(left)
            settled = (None if took is None else round(tl.now() - heal_at, 3), seen)
            if took is not None:
                tl.add("note", "every VIP served by exactly one live agent, the map's owner")
            say(f"real: {tl.now():.1f}s VIPs: {seen}")
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        try:
            if fleet is not None:
                try:
                    stopped_at = await fleet.stop_all()  # first: their intervals end here
                    await fleet.close()
                finally:
                    fleet.kill_all_sync()
        finally:
            try:
                await cluster.stop_all()
                await cluster.close_proxies()
            finally:
                cluster.kill_all_sync()
        stats["proxies"] = {
            p2.name: {
                "accepted": p2.stats.accepted,
                "refused": p2.stats.refused,
                "resets": p2.stats.resets,
                "bytes_forward": p2.stats.bytes_forward,
                "bytes_backward": p2.stats.bytes_backward,
            }
            for p2 in [*cluster.peer_proxies.values(), *cluster.api_proxies.values()]
        }
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        stats["exits"] = {i: nd.exits for i, nd in cluster.nodes.items()}
        stats["starts"] = {i: nd.starts for i, nd in cluster.nodes.items()}
    history.close()
    assert wl is not None and nemesis is not None
    stats["clients_replaced"] = wl.replaced
    stats["errors"] = _error_counts(wl.errors)
    say("real: judging the history")
    j = judge(
        history,
        wl.revision,
        node_histories,
        wl.watches,
        final_rev,
        explain=lambda op_id: "; ".join(wl.sends.get(op_id, [])),
    )
    j.notes.extend(notes)
    for text in exits:
        j.violations.append(Violation("node-exited", text))
    vip: dict[str, Any] = {}
    if fleet is not None:
        vip = _judge_vips(p, fleet, wall0, stopped_at, settled)
        for kind, detail in vip.pop("_violations"):
            j.violations.append(Violation(kind, detail))
        for text in agent_exits:
            j.violations.append(Violation("agent-exited", text))
        tl.events.extend(vip.pop("_events"))
        tl.events.sort(key=lambda e: e.t_s)
    if recovery is None:
        j.violations.append(
            Violation("liveness", f"no agreed leader within {p.recover_s:g}s of the final heal")
        )
    keep = p.keep is not None or bool(j.violations)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return RealResult(
        seed=p.seed,
        nodes=p.nodes,
        duration_s=p.duration_s,
        clients=p.clients,
        faults=faults,
        played=nemesis.applied,
        events=tl.events,
        history=history,
        judgement=j,
        final_revision=final_rev,
        recovery_s=None if recovery is None else round(recovery, 3),
        final_leader=final_leader,
        wall_s=time.monotonic() - started,
        workdir=workdir if keep else None,
        stats=stats,
        broken=p.broken,
        vip=vip,
        errors=dict(wl.errors),
        revisions=dict(wl.revision),
        sends=dict(wl.sends),
        params={
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(p).items()
        },
    )


def _judge_vips(
    p: RealParams,
    fleet: AgentFleet,
    wall0: float,
    stopped_at: float,
    settled: tuple[float | None, str],
) -> dict[str, Any]:
    """The VIP check on the agents' logs: the report's part, its violations, its events."""
    events = fleet.events()
    vj = judge_vips(events, fleet.deaths(), stopped_at or time.time(), t0=wall0)
    violations = list(vj.violations)
    took, seen = settled
    if took is None:
        violations.append(
            (
                "vip-liveness",
                f"{p.vip_settle_s:g}s after the final heal the VIPs were not each served by "
                f"exactly one live agent, the map's owner: {seen}",
            )
        )
    tl_events = [
        Event(round(ev.t - wall0, 3), "vip", 0, _vip_text(ev))
        for ev in events
        if ev.kind in ("serve", "stop", "cannot")
    ]
    tl_events += [
        Event(round(t - wall0, 3), "vip", 0, f"{name} seen dead (its VIPs end here)")
        for name, ts in fleet.deaths().items()
        for t in ts
    ]
    return {
        "agents": p.agents,
        "vips": list(fleet.vips),
        "vip_port": fleet.vip_port,
        "tolerance_ms": OVERLAP_TOLERANCE_MS,
        "intervals": {
            v: [
                {
                    "agent": iv.agent,
                    "start_s": round(iv.start - wall0, 3),
                    "end_s": round(iv.end - wall0, 3),
                    "epoch": iv.epoch,
                    "end": iv.why_end,
                }
                for iv in lst
            ]
            for v, lst in sorted(vj.intervals.items())
        },
        "handovers": [
            {
                "vip": h.vip,
                "from": h.src,
                "to": h.dst,
                "at_s": round(h.at - wall0, 3),
                "gap_ms": h.gap_ms,
            }
            for h in vj.handovers
        ],
        "cannot_listen": vj.cannot,
        "settled_after_heal_s": took,
        "settled": seen,
        "lines": report_lines(vj, wall0),
        "stats": fleet.stats(),
        "_violations": violations,
        "_events": tl_events,
    }


def _vip_text(ev: LogEvent) -> str:
    if ev.kind == "serve":
        return f"{ev.agent} serves {ev.vip} (epoch {ev.epoch})"
    if ev.kind == "stop":
        return f"{ev.agent} stops serving {ev.vip}"
    return f"{ev.agent} CANNOT LISTEN on {ev.vip}"


def _error_counts(errors: dict[int, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for why in errors.values():
        out[why] = out.get(why, 0) + 1
    return dict(sorted(out.items()))
