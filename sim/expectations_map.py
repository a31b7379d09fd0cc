"""Expectations for the target side: VIP failover, sessions, heals and rebuilds.

Registered into expectations.EXPECTATIONS under these names:

    vip-failover[:MS]            the VIPs of the first agent host killed are served again
                                 by another agent within the failover bound (or MS)
    vip-moves-under-partition    the holder cut off by the first split stops serving, and
                                 another agent serves its VIP before the split ends
    vip-handover:MARK:ADDR:MS    the agent serving ADDR at mark MARK stops, and another
                                 serves it within MS of the mark
    vips-served[:S]              at the end every VIP's owner (the leader's map) is a live
                                 agent, and each VIP was served at least half of the last
                                 S seconds (default 5)
    sessions-balanced            at the end every initiator is logged in, the leader's map
                                 counts each once, active, and the live nodes' counts are
                                 within 1 of each other (none left on dead nodes)
    replica-healed:VOL/ID        that replica was accused and is healthy again
    replica-rebuilt:VOL/ID       that replica failed to heal max_heal_failures times, a
                                 rebuild was placed by the volume's policy, completed, and
                                 the old replica was retired

The failover bound, from the settings: the dead holder's lease expires a full
TTL (by the leader's clock, at most rate 1 + drift) after its last keepalive,
which is at most one network delay after the host died (a heartbeat already
in flight); the leader notices on its next tick; the revoke commits (one
round trip and fsyncs); the new owner's watch delivers it (two hops):

    bound = TTL x (1 + drift) + tick x (1 + drift) + 6 x delay_max x (1 + spread)
            + 2 x fsync_max   [+ TTL/4 x (1 + drift) under a split: the new owner's
                               watch may be cut off; its next heartbeat tells it]

counted from the holder's death, or from the election of a leader that took office
meanwhile (a new leader restarts every countdown from a full TTL).
"""

from __future__ import annotations

from typing import Any

from coord.clustermap import model as m

from .expectations import expectation
from .fleet import Fleet
from .loop import MS, S
from .scenario import Scenario, ScenarioRun
from .world import World


def _fleet(run: ScenarioRun) -> Fleet:
    assert run.world.fleet is not None, "this expectation needs agents"
    return run.world.fleet


def max_rate(world: World) -> float:
    fleet = world.fleet
    d = world.p.drift
    if fleet is not None and fleet.p.drift is not None:
        d = max(d, fleet.p.drift)
    return 1.0 + d


def failover_bound_us(world: World, start_us: int, end_us: int, split: bool = False) -> int:
    p, fleet = world.p, world.fleet
    assert fleet is not None
    r = max_rate(world)
    link = p.link
    bound = (
        fleet.p.ttl_ms * MS * r
        + p.tick_us * r
        + 6 * link.delay_max_us * (1 + link.link_spread)
        + 2 * p.fsync_max_us
    )
    if split:
        # The new owner's watch may be on a node the split cut off: it then learns from
        # its next heartbeat answer.
        bound += fleet.p.ttl_ms * MS * fleet.p.heartbeat_every * r
    # A leader elected meanwhile restarts every countdown from a full TTL when it takes
    # office: the bound then counts from that moment.
    office = max((t for t, _, _ in world.leaders if start_us <= t <= end_us), default=start_us)
    return int(office - start_us + bound)


def failover_times(world: World) -> list[tuple[str, int | None]]:
    """For the first agent host killed: each VIP it served at that instant, and how long
    until another agent served it (None: never)."""
    fleet = world.fleet
    assert fleet is not None
    if not fleet.deaths:
        return []
    t0, name = fleet.deaths[0]
    ivs = fleet.vip_checker.intervals
    out: list[tuple[str, int | None]] = []
    for iv in ivs:
        if iv.agent == name and iv.end_us == t0:
            starts = [
                j.start_us
                for j in ivs
                if j.address == iv.address and j.agent != name and j.start_us >= t0
            ]
            out.append((iv.address, min(starts) - t0 if starts else None))
    return out


@expectation("vip-failover")
def vip_failover(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    w = run.world
    fleet = _fleet(run)
    times = failover_times(w)
    if not times:
        return ["vacuous: no agent host was killed while serving a VIP"]
    t0 = fleet.deaths[0][0]
    problems = []
    for addr, took in times:
        bound = int(arg) * MS if arg else failover_bound_us(w, t0, t0 + (took or 0))
        if took is None:
            problems.append(f"{addr} was never served again after {fleet.deaths[0][1]} died")
        elif took > bound:
            problems.append(
                f"{addr} served again {took / MS:.0f}ms after its holder died "
                f"(bound {bound / MS:.0f}ms)"
            )
        else:
            run.evidence.append(
                f"vip-failover: {addr} served again {took / MS:.0f}ms after its holder "
                f"{fleet.deaths[0][1]} died (bound {bound / MS:.0f}ms)"
            )
    return problems


@expectation("vip-moves-under-partition")
def vip_moves_under_partition(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    w = run.world
    fleet = _fleet(run)
    host = run.names.get("holder")
    if host is None or not run.splits:
        return ["scenario did not bind the holder ('holder') or split"]
    start, end, _ = run.splits[0]
    end = end if end is not None else w.loop.now
    holder = fleet.agents[host].name
    ivs = fleet.vip_checker.intervals
    cut = [
        iv
        for iv in ivs
        if iv.agent == holder and iv.start_us <= start and (iv.end_us is None or iv.end_us > start)
    ]
    if not cut:
        return [f"vacuous: {holder} served nothing when the split began"]
    problems = []
    for iv in cut:
        stop = iv.end_us if iv.end_us is not None else w.loop.now
        nxt = [
            j
            for j in ivs
            if j.address == iv.address and j.agent != holder and start <= j.start_us < end
        ]
        if not nxt:
            problems.append(f"{iv.address} was not served by another agent during the split")
            continue
        took = nxt[0].start_us - start
        bound = failover_bound_us(w, start, nxt[0].start_us, split=True)
        if took > bound:
            problems.append(
                f"{iv.address} moved {took / MS:.0f}ms into the split (bound {bound / MS:.0f}ms)"
            )
        run.evidence.append(
            f"vip-moves-under-partition: {holder} stopped serving {iv.address} "
            f"{(stop - start) / MS:.0f}ms into the split; {nxt[0].agent} started "
            f"{took / MS:.0f}ms in ({(nxt[0].start_us - stop) / MS:.0f}ms with nobody)"
        )
    return problems


@expectation("vip-handover")
def vip_handover(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    mark, addr, ms = arg.split(":")
    at = run.marks.get(mark)
    if at is None:
        return [f"no mark {mark!r}"]
    ivs = _fleet(run).vip_checker.served(addr)
    before = [iv for iv in ivs if iv.start_us <= at and (iv.end_us is None or iv.end_us > at)]
    if len(before) != 1:
        return [f"vacuous: {addr} was served by {[iv.agent for iv in before]} at {mark}"]
    old = before[0]
    after = [iv for iv in ivs if iv.agent != old.agent and iv.start_us >= at]
    if not after:
        return [f"{addr} was never served by another agent after {mark}"]
    took = after[0].start_us - at
    stop = old.end_us if old.end_us is not None else run.world.loop.now
    if took > int(ms) * MS:
        return [f"{addr} moved {took / MS:.0f}ms after {mark} (bound {ms}ms)"]
    run.evidence.append(
        f"vip-handover: {old.agent} stopped serving {addr} {(stop - at) / MS:.0f}ms after "
        f"{mark}; {after[0].agent} started {took / MS:.0f}ms after it (bound {ms}ms)"
    )
    return []


@expectation("vips-served")
def vips_served(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """Liveness after the heal: at the end each VIP's owner (the leader's map) is a live
    agent, and over the last ``arg`` seconds (default 5) each VIP was served at least half
    the time. Not all of it: on a lossy network a holder whose heartbeats all go
    unanswered for TTL x (1 - rho) stops, as it must, and its lease may expire."""
    w = run.world
    fleet = _fleet(run)
    lead = w.stable_leader()
    if lead is None:
        return ["no leader at the end"]
    live = {a.name for a in fleet.agents.values() if a.alive}
    if not live:
        return []
    end = w.loop.now
    since = end - int(float(arg or 5) * S)
    problems, shares = [], []
    for addr in fleet.vips:
        rec = lead.sm.map.vips.get(addr)
        owner = rec["owner"] if rec is not None else None
        if owner not in live:
            problems.append(f"{addr}: the map's owner at the end is {owner}, not a live agent")
        lit = sum(
            min(end, iv.end_us if iv.end_us is not None else end) - max(since, iv.start_us)
            for iv in fleet.vip_checker.served(addr)
            if (iv.end_us is None or iv.end_us > since)
        )
        shares.append(f"{addr} {lit / (end - since):.0%}")
        if lit * 2 < end - since:
            problems.append(
                f"{addr} was served only {lit / S:.1f}s of the last {(end - since) / S:.0f}s"
            )
    run.evidence.append(
        f"vips-served: share of the last {(end - since) / S:.0f}s served: " + ", ".join(shares)
    )
    return problems


@expectation("sessions-balanced")
def sessions_balanced(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    w = run.world
    fleet = _fleet(run)
    lead = w.stable_leader()
    if lead is None:
        return ["no leader at the end"]
    counts = session_counts(w)
    live = {a.name for a in fleet.agents.values() if a.alive}
    total = len(fleet.initiators)
    problems = []
    on_live = [c for n, c in sorted(counts.items()) if n in live]
    if sum(counts.values()) != total or any(c for n, c in counts.items() if n not in live):
        problems.append(f"{sum(counts.values())} active sessions for {total} initiators: {counts}")
    if not on_live or max(on_live) - min(on_live) > 1:
        problems.append(f"active sessions on live nodes are not within 1: {counts}")
    lost = sum(1 for i in fleet.initiators if i.agent is None)
    if lost:
        problems.append(f"{lost} initiators are not logged in at the end")
    reconnected = sum(1 for i in fleet.initiators if i.connects > 1)
    before = (
        f"{fleet.sessions_at_death[0]} when {fleet.deaths[0][1]} died, " if (fleet.deaths) else ""
    )
    herd = herd_reconnect_us(w)
    took = f" within {herd / MS:.0f}ms of the death" if herd is not None else ""
    run.evidence.append(
        f"sessions-balanced: active per node {before}{counts} at the end; "
        f"{reconnected} initiators reconnected{took}"
    )
    return problems


def herd_reconnect_us(world: World) -> int | None:
    """From the first agent host's death until the last initiator that was logged in
    there has logged in again elsewhere (None: no death, or one never did)."""
    fleet = world.fleet
    assert fleet is not None
    if not fleet.deaths:
        return None
    t0 = fleet.deaths[0][0]
    last = 0
    for ini in fleet.orphans[0]:
        after = [t for t in ini.logins if t > t0]
        if not after:
            return None
        last = max(last, after[0] - t0)
    return last


def session_counts(world: World) -> dict[str, int]:
    """Active sessions per registered node, as the leader's map has them."""
    assert world.fleet is not None
    return world.fleet.active_sessions()


def _replica_history(run: ScenarioRun, volume: str) -> list[dict[str, Any]]:
    """Every applied version of a volume's record, oldest first (from the watch history)."""
    key = m.VOLUMES + volume
    out = []
    for rev in sorted(run.world.watch_checker.history):
        for _, kind, k, value in run.world.watch_checker.history[rev]:
            if k == key and kind == "put" and value is not None:
                out.append(m.decode(value))
    return out


def _target(arg: str) -> tuple[str, int]:
    volume, _, rid = arg.partition("/")
    return volume, int(rid)


@expectation("replica-healed")
def replica_healed(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    volume, rid = _target(arg)
    states = [
        next(r["state"] for r in v["replicas"] if r["id"] == rid)
        for v in _replica_history(run, volume)
    ]
    if m.ACCUSED not in states:
        return [f"vacuous: replica {rid} of {volume} was never accused"]
    if states[-1] != m.HEALTHY:
        return [f"replica {rid} of {volume} ends {states[-1]} (went {_steps(states)})"]
    run.evidence.append(f"replica-healed: {volume}/{rid} went {_steps(states)}")
    return []


@expectation("replica-rebuilt")
def replica_rebuilt(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    volume, rid = _target(arg)
    hist = _replica_history(run, volume)
    if not hist:
        return [f"no volume {volume}"]
    final = hist[-1]
    olds = [
        next(r for r in v["replicas"] if r["id"] == rid)
        for v in hist
        if any(r["id"] == rid for r in v["replicas"])
    ]
    failures = max(r["heal_failures"] for r in olds)
    limit = final["layout"]["max_heal_failures"]
    problems = []
    if failures < limit:
        problems.append(f"replica {rid} failed to heal {failures} times (threshold {limit})")
    copies = [r for v in hist for r in v["replicas"] if r.get("replaces") == rid]
    if not copies:
        return [*problems, f"no rebuild of replica {rid} of {volume} was ever placed"]
    new_id = copies[-1]["id"]
    now = {r["id"]: r for r in final["replicas"]}
    old, new = now.get(rid), now.get(new_id)
    if old is None or old["state"] != m.RETIRED:
        problems.append(f"replica {rid} ends {old and old['state']}, not retired")
    if new is None or new["state"] != m.HEALTHY:
        problems.append(f"the rebuilt replica {new_id} ends {new and new['state']}, not healthy")
    else:
        # Placed by policy: the policy's tier; scatter: a node holding no other member
        # (nor the failed copy).
        near = {
            r["node"]
            for r in final["replicas"]
            if r["id"] != new_id and (r["id"] == rid or r["state"] != m.RETIRED)
        }
        if final["layout"]["placement"] == m.SCATTER and new["node"] in near:
            problems.append(f"scatter broken: rebuilt replica on {new['node']}, beside {near}")
    if final["state"] != "ok":
        problems.append(f"volume {volume} ends {final['state']}")
    if not problems:
        assert new is not None and old is not None
        run.evidence.append(
            f"replica-rebuilt: {volume}/{rid} on {old['node']} failed {failures} heals; "
            f"rebuilt as replica {new_id} on {new['node']}/{new['disk']}; {rid} retired"
        )
    return problems


def _steps(states: list[str]) -> str:
    out: list[str] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return " -> ".join(out)
