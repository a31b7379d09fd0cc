"""Readable output: the timeline of a run, its verdict, and violation reports."""

from __future__ import annotations

from coord.raft import Role

from .history import Outcome
from .loop import fmt_time
from .run import RunResult


def _cell(role: Role | None, term: int, state: str) -> str:
    if state == "down":
        return "--"
    if state == "pause":
        return "zz"
    if role is None:
        return "·"
    return f"{role.letter}{term}"


def timeline(res: RunResult) -> str:
    """One row per instant something changed: every node's role and term (F follower,
    P pre-candidate, C candidate, L leader, -- down, zz paused), how many client
    operations ended ok/fail since the row before, and what happened."""
    w = res.world
    ids = sorted(w.nodes)
    roles: dict[int, tuple[Role | None, int]] = {n: (None, 0) for n in ids}
    state: dict[int, str] = {n: "up" for n in ids}
    done = sorted(
        (op.complete_us, op.outcome is Outcome.OK)
        for op in w.history.ops
        if op.complete_us is not None and op.outcome is not Outcome.INFO
    )
    infos = sum(1 for op in w.history.ops if op.outcome is Outcome.INFO)
    width = max(4, max(len(f"n{n}") for n in ids) + 2)
    lines = ["    time  " + "".join(f"n{n}".ljust(width) for n in ids) + "ok/fail   what happened"]
    k = 0
    rows: list[tuple[int, list[str]]] = []
    for ev in w.timeline:
        if ev.kind == "role":
            roles[ev.node] = (ev.role, ev.term)
            text = f"n{ev.node} leads t{ev.term}" if ev.role is Role.LEADER else ""
        else:
            text = ev.text
            if ev.kind in ("down", "up", "pause"):
                state[ev.node] = ev.kind
        cells = "".join(_cell(*roles[n], state[n]).ljust(width) for n in ids)
        if rows and rows[-1][0] == ev.time_us:
            rows[-1] = (ev.time_us, [cells, *rows[-1][1][1:], *([text] if text else [])])
        else:
            rows.append((ev.time_us, [cells, *([text] if text else [])]))
    for t, (cells, *texts) in rows:
        ok = fail = 0
        while k < len(done) and done[k][0] <= t:
            ok, fail = ok + done[k][1], fail + (not done[k][1])
            k += 1
        counts = f"{ok}/{fail}" if ok or fail else ""
        lines.append(f"{fmt_time(t)}  {cells}{counts:<10}{'; '.join(texts)}".rstrip())
    rest_ok = sum(1 for _, good in done[k:] if good)
    lines.append(f"{'':>10}{'':{width * len(ids)}}{rest_ok}/{len(done) - k - rest_ok}     end")
    lines.append(f"({infos} operations ended with an unknown outcome: info)")
    return "\n".join(lines)


def verdict(res: RunResult) -> str:
    ops = res.ops
    head = (
        f"{'OK' if res.ok else 'VIOLATION'}: {res.scenario} seed={res.seed} nodes={res.nodes} "
        f"ops ok={ops['ok']} fail={ops['fail']} info={ops['info']} "
        f"leaders={len(res.leaders)} sim={res.sim_us / 1e6:.1f}s wall={res.wall_s:.2f}s"
    )
    lines = [head]
    if res.run.heal_us is not None and res.run.recovered_us is not None:
        lines.append(
            f"recovery after final heal: {(res.run.recovered_us - res.run.heal_us) / 1e3:.0f}ms"
        )
    checked = (
        "election safety, leader append-only, log matching, leader completeness, "
        "state-machine safety, lost acknowledged writes, exactly-once"
    )
    if res.world.fleet is not None:
        checked += (
            "; VIPs: never two holders at once, no holder left serving after a hand-over, "
            "epochs only rising (every replica, every agent); no accused replica offered "
            "for I/O; map indexes equal to a rebuild from the keys"
        )
    lines.append(f"checked: {checked}")
    lin = {True: "yes", False: "NO", None: "inconclusive"}[res.linearizable]
    lines.append(f"linearizable: {lin} ({len(res.world.history.ops)} operations)")
    lines.extend(f"expected {e}" for e in res.run.evidence)
    lines.extend(f"note: {n}" for n in res.notes)
    lines.append(f"trace sha256: {res.trace_digest}")
    for v in res.violations:
        lines.append("")
        lines.append(f"  {v.render()}")
        if v.context:
            lines.append("  events before it:")
            lines.extend(f"    {c}" for c in v.context)
        lines.append(f"  replay: {res.replay}")
    return "\n".join(lines)
