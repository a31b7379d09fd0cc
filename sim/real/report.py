"""What a real run says: the verdict, the nemesis schedule, counts, a text timeline, JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..history import History, OpKind, Outcome
from .checks import Judgement
from .nemesis import Event, Fault

SHOW_PER_KIND = 5
LETTER = {"leader": "L", "follower": "F", "candidate": "C", "pre-candidate": "P"}


@dataclass
class RealResult:
    seed: int
    nodes: int
    duration_s: float
    clients: int
    faults: list[Fault]  # planned (from the seed)
    played: list[dict[str, Any]]  # what each fault did, resolved at run time
    events: list[Event]
    history: History
    judgement: Judgement
    final_revision: int
    recovery_s: float | None
    final_leader: int | None
    wall_s: float
    workdir: Path | None  # kept (--keep, or because of a violation), else None
    stats: dict[str, Any] = field(default_factory=dict)
    broken: str = ""  # the deliberate bug asked for, if any
    errors: dict[int, str] = field(default_factory=dict)  # op id -> the error that ended it
    revisions: dict[int, int] = field(default_factory=dict)  # op id -> acknowledged revision
    sends: dict[int, list[str]] = field(default_factory=dict)  # op id -> its HTTP tries
    params: dict[str, Any] = field(default_factory=dict)  # how the run was asked for
    vip: dict[str, Any] = field(default_factory=dict)  # the VIP check (with --agents)

    @property
    def ok(self) -> bool:
        return not self.judgement.violations

    def op_counts(self) -> dict[str, dict[str, int]]:
        out = {k.value: {"ok": 0, "fail": 0, "info": 0} for k in OpKind}
        for op in self.history.ops:
            if op.outcome is not Outcome.PENDING:
                out[op.kind.value][op.outcome.value] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        j = self.judgement
        return {
            "verdict": "ok" if self.ok else "violation",
            "seed": self.seed,
            "nodes": self.nodes,
            "duration_s": self.duration_s,
            "clients": self.clients,
            "break": self.broken or None,
            "params": self.params,
            "ops": self.history.counts(),
            "ops_by_kind": self.op_counts(),
            "linearizable": j.linearizability.linearizable,
            "linearizability_keys": [
                {"key": k.key, "linearizable": k.linearizable, "ops": k.ops, "detail": k.detail}
                for k in j.linearizability.keys
            ],
            "violations": [{"kind": v.kind, "detail": v.detail} for v in j.violations],
            "checked": j.checked,
            "notes": j.notes,
            "final_revision": self.final_revision,
            "recovery_s": self.recovery_s,
            "final_leader": self.final_leader,
            "schedule": [f.to_json() for f in self.faults],
            "played": self.played,
            "events": [
                {
                    "t_s": e.t_s,
                    "kind": e.kind,
                    "node": e.node or None,
                    "text": e.text,
                    **({"role": e.role, "term": e.term} if e.kind == "role" else {}),
                }
                for e in self.events
            ],
            "history": [
                {
                    "id": op.id,
                    "client": op.client,
                    "kind": op.kind.value,
                    "key": op.key,
                    "value": list(op.value) if isinstance(op.value, tuple) else op.value,
                    "invoke_us": op.invoke_us,
                    "complete_us": op.complete_us,
                    "outcome": op.outcome.value,
                    "result": op.result,
                    "nodes": op.nodes,
                    "error": self.errors.get(op.id),
                    "revision": self.revisions.get(op.id),
                    "sends": self.sends.get(op.id, []),
                }
                for op in self.history.ops
            ],
            "vip": self.vip or None,
            "stats": self.stats,
            "wall_s": round(self.wall_s, 3),
            "workdir": str(self.workdir) if self.workdir else None,
        }


def verdict(res: RealResult) -> str:
    j = res.judgement
    c = res.history.counts()
    head = (
        f"{'OK' if res.ok else 'VIOLATION'}: real seed={res.seed} nodes={res.nodes} "
        f"duration={res.duration_s:g}s clients={res.clients} "
        f"ops ok={c['ok']} fail={c['fail']} info={c['info']} wall={res.wall_s:.1f}s"
    )
    if res.broken:
        head += f"  [deliberately broken: {res.broken}]"
    lines = [head]
    ck = j.checked
    hist = ck.get("history_nodes", [])
    lines.append(
        "checked: linearizability ({} keys, {} ops); one history on every node ({}: {} "
        "events); lost acknowledged writes ({} checked); failed writes never applied; no "
        "write applied twice; watches ({} watchers: each event once, in order, complete "
        "after the heal)".format(
            ck.get("linearizability_keys", 0),
            len(res.history.ops),
            ",".join(f"n{n}" for n in hist) or "none",
            ck.get("history_events", 0),
            ck.get("acknowledged_writes", 0),
            len(ck.get("watchers", [])),
        )
    )
    lin = {True: "yes", False: "NO", None: "inconclusive"}[j.linearizability.linearizable]
    lines.append(f"linearizable: {lin}")
    if res.recovery_s is not None:
        lines.append(
            f"recovery after the final heal: {res.recovery_s:.2f}s (leader n{res.final_leader})"
        )
    else:
        lines.append("recovery after the final heal: none (no agreed leader in time)")
    took = ck.get("unknown_writes_that_took_effect", 0)
    lines.append(
        f"unknown (info) writes found applied: {took}; final revision {res.final_revision}"
    )
    lines.extend(vip_text(res))
    lines.extend(f"note: {n}" for n in j.notes)
    shown: dict[str, int] = {}
    for v in j.violations:
        shown[v.kind] = shown.get(v.kind, 0) + 1
        if shown[v.kind] <= SHOW_PER_KIND:
            lines.append(f"  {v.render()}")
    for kind, n in shown.items():
        if n > SHOW_PER_KIND:
            lines.append(f"  ... and {n - SHOW_PER_KIND} more {kind} violations (all in --json)")
    if res.workdir is not None:
        lines.append(f"logs and data kept in {res.workdir}")
    return "\n".join(lines)


def vip_text(res: RealResult) -> list[str]:
    """With agents: what the VIP check looked at, per VIP who served it and the
    hand-overs."""
    v = res.vip
    if not v:
        return []
    settled = v.get("settled_after_heal_s")
    out = [
        f"checked: VIP single ownership ({v['agents']} agents, VIPs {', '.join(v['vips'])} "
        f"on port {v['vip_port']}: no 'cannot listen', no two agents serving one VIP for "
        f"more than {v['tolerance_ms']:g} ms, after the final heal each VIP served by "
        "exactly one live agent, the map's owner)",
        f"VIP hand-overs: {len(v['handovers'])}; cannot-listen lines: {v['cannot_listen']}; "
        + (
            f"settled {settled:.2f}s after the final heal"
            if settled is not None
            else "NOT settled after the final heal"
        ),
        *v.get("lines", []),
    ]
    return out


def schedule_text(res: RealResult) -> str:
    lines = [f"nemesis schedule (drawn from seed {res.seed}; times from the start of the load):"]
    for p in res.played:
        until = p.get("until_s")
        span = f"{p['at_s']:7.2f}s-{until:.2f}s" if until is not None else f"{p['at_s']:7.2f}s"
        extra = ""
        if "resets" in p:
            extra = f" ({p['resets']} connection resets, {p['stalls']} stalls)"
        lane = f"[{p['lane']}] " if p.get("lane") else ""
        lines.append(f"  {span}  {lane}{p['did']}{extra}")
    played = len(res.played)
    if played < len(res.faults):
        lines.append(f"  ({len(res.faults) - played} planned faults did not fit before the end)")
    return "\n".join(lines)


def counts_text(res: RealResult) -> str:
    lines = ["operations by kind and outcome:"]
    for kind, c in res.op_counts().items():
        lines.append(f"  {kind:<6} ok {c['ok']:>6}  fail {c['fail']:>6}  unknown {c['info']:>6}")
    return "\n".join(lines)


def timeline(res: RealResult) -> str:
    """One row per instant something changed: each node's role and term as the harness
    saw it (L leader, F follower, C candidate, P pre-candidate; -- killed, zz paused,
    · unknown), operations ended ok/fail since the row before, and what happened."""
    ids = list(range(1, res.nodes + 1))
    cell: dict[int, str] = dict.fromkeys(ids, "·")
    done = sorted(
        (op.complete_us, op.outcome is Outcome.OK)
        for op in res.history.ops
        if op.complete_us is not None and op.outcome in (Outcome.OK, Outcome.FAIL)
    )
    width = 5
    lines = ["     time  " + "".join(f"n{n}".ljust(width) for n in ids) + "ok/fail   what happened"]
    rows: list[tuple[float, str, list[str]]] = []
    for ev in sorted(res.events, key=lambda e: e.t_s):
        text = ev.text
        if ev.kind == "role":
            if cell.get(ev.node) in ("--", "zz"):
                continue  # a late answer from before the fault
            cell[ev.node] = f"{LETTER.get(ev.role, '?')}{ev.term}"
            text = f"n{ev.node} leads t{ev.term}" if ev.role == "leader" else ""
        elif ev.kind in ("down", "exit"):
            cell[ev.node] = "--"
        elif ev.kind == "pause":
            cell[ev.node] = "zz"
        elif ev.kind in ("up", "resume"):
            cell[ev.node] = "·"
        cells = "".join(cell[n].ljust(width) for n in ids)
        if rows and abs(rows[-1][0] - ev.t_s) < 0.01:  # one instant, as far as a reader cares
            rows[-1] = (ev.t_s, cells, [*rows[-1][2], *([text] if text else [])])
        else:
            rows.append((ev.t_s, cells, [text] if text else []))
    k = 0
    for t, cells, texts in rows:
        ok = fail = 0
        while k < len(done) and done[k][0] <= t * 1e6:
            ok, fail = ok + done[k][1], fail + (not done[k][1])
            k += 1
        counts = f"{ok}/{fail}" if ok or fail else ""
        lines.append(f"{t:8.3f}s  {cells}{counts:<10}{'; '.join(texts)}".rstrip())
    rest_ok = sum(1 for _, good in done[k:] if good)
    lines.append(f"{'':>11}{'':{width * len(ids)}}{rest_ok}/{len(done) - k - rest_ok:<8}end")
    infos = sum(1 for op in res.history.ops if op.outcome is Outcome.INFO)
    lines.append(f"({infos} operations ended with an unknown outcome: info)")
    return "\n".join(lines)


def full_report(res: RealResult) -> str:
    return "\n\n".join([verdict(res), schedule_text(res), counts_text(res), timeline(res)])
