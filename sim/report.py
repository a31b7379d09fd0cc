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
    """One row per change: every node's role and term, and what finished since the last row."""
    w = res.world
    ids = sorted(w.nodes)
    roles: dict[int, tuple[Role | None, int]] = {n: (None, 0) for n in ids}
    state: dict[int, str] = {n: "up" for n in ids}
    done = sorted(
        (op.complete_us if op.complete_us is not None else 0, op.outcome)
        for op in w.history.ops
        if op.outcome is not Outcome.INFO and op.complete_us is not None
    )
    infos = sum(1 for op in w.history.ops if op.outcome is Outcome.INFO)
    k = 0
    width = max(4, max(len(f"n{n}") for n in ids) + 2)
    head = "    time  " + "".join(f"n{n}".ljust(width) for n in ids) + "ok/fail   event"
    lines = [head]
    for ev in w.timeline:
        ok = fail = 0
        while k < len(done) and done[k][0] <= ev.time_us:
            if done[k][1] is Outcome.OK:
                ok += 1
            else:
                fail += 1
            k += 1
        text = ev.text
        if ev.kind == "role":
            roles[ev.node] = (ev.role, ev.term)
            text = f"n{ev.node} leader t{ev.term}" if ev.role is Role.LEADER else ""
            if not text and ok == fail == 0:
                # Keep followers' and candidates' changes, but fold quiet ones.
                text = f"n{ev.node} {ev.role.value if ev.role else ''} t{ev.term}"
        elif ev.kind in ("down", "up", "pause"):
            state[ev.node] = ev.kind
        cells = "".join(_cell(*roles[n], state[n]).ljust(width) for n in ids)
        counts = f"{ok}/{fail}" if ok or fail else ""
        lines.append(f"{fmt_time(ev.time_us)}  {cells}{counts:<10}{text}")
    lines.append(f"({infos} operations ended with unknown outcome: info)")
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
