"""Judging a real run with the simulator's checkers, plus what revisions make possible.

- Linearizability: sim/checkers/wgl.py on the recorded history, per key (the
  final range after the heal is in it, as ok reads).
- One history: each node's own record of the prefix (a watch from revision 1
  on that node alone, after the heal) goes to WatchChecker.on_events, which
  reports any revision two nodes applied differently.
- Lost acknowledged writes: an ok write (or swapping CAS) answered with
  revision r must be in that history at r, with its key and value. Revisions
  play the role the simulator's log positions play.
- Failed writes applied: a value whose write ended ``fail`` must never be in
  the history (fail means "definitely not applied"). Applied twice: a value at
  two revisions (an exactly-once retry executed again). Phantom: a value no
  client ever sent.
- Watches: WatchChecker.judge on each watcher's segments (every event once, in
  order, no gap; progress notes not ahead of the events), and completeness:
  after the heal each watcher must have caught up with the final revision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coord.store.mvcc import Event, KeyValue

from ..checkers.store import WatchChecker
from ..checkers.wgl import LinearizabilityResult, check_history
from ..history import History, OpKind, Outcome
from ..services import Segment
from .clients import WatchRecord


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str

    def render(self) -> str:
        return f"VIOLATION {self.kind}: {self.detail}"


@dataclass
class Judgement:
    violations: list[Violation]
    linearizability: LinearizabilityResult
    checked: dict[str, Any]  # what each check looked at (counts), for the report
    notes: list[str]


def to_event(doc: dict[str, Any]) -> Event:
    kv = doc.get("kv")
    value = None
    if isinstance(kv, dict):
        value = KeyValue(
            kv["key"],
            kv["value"],
            int(kv.get("create_revision", 0)),
            int(kv.get("mod_revision", 0)),
            int(kv.get("version", 0)),
            int(kv.get("lease", 0)),
        )
    return Event(str(doc["type"]), str(doc["key"]), int(doc["revision"]), value, None)


def judge(
    history: History,
    revisions: dict[int, int],
    node_histories: dict[int, tuple[list[dict[str, Any]], int, bool]],
    watches: list[WatchRecord],
    final_revision: int,
    *,
    budget_per_key: int = 200_000,
    explain: Callable[[int], str] | None = None,
) -> Judgement:
    violations: list[Violation] = []
    notes: list[str] = []
    checked: dict[str, Any] = {}

    def report(kind: str, nodes: tuple[int, ...], detail: str) -> None:
        violations.append(Violation(kind, detail))

    # ---- linearizability --------------------------------------------------------------
    lin = check_history(history.ops, budget_per_key=budget_per_key)
    for kv in lin.failures():
        report("linearizability", (), f"key {kv.key}: {kv.detail}")
    undecided = [kv.key for kv in lin.keys if kv.linearizable is None]
    if undecided:
        notes.append(f"linearizability inconclusive (search budget) for keys {undecided}")
    checked["linearizability_keys"] = len(lin.keys)

    # ---- one history across nodes -----------------------------------------------------
    wc = WatchChecker(report)
    compacted = 0
    complete_nodes = []
    for nid in sorted(node_histories):
        events, compact, reached = node_histories[nid]
        compacted = max(compacted, compact)
        wc.on_events(nid, [to_event(e) for e in events])
        if reached:
            complete_nodes.append(nid)
        else:
            report(
                "liveness",
                (nid,),
                f"n{nid} did not catch up to revision {final_revision} after the final heal "
                f"(its history ends at {max((int(e['revision']) for e in events), default=0)})",
            )
    checked["history_nodes"] = complete_nodes
    checked["history_events"] = sum(len(v) for v in wc.history.values())
    if compacted:
        notes.append(
            f"history before revision {compacted + 1} was compacted: writes acknowledged "
            "before it are judged by linearizability only"
        )
    if not final_revision:
        report("liveness", (), "no linearizable read succeeded after the final heal")

    # ---- acknowledged writes, failed writes, duplicates ------------------------------
    applied: dict[tuple[str, str], list[int]] = {}  # (key, value) -> revisions
    for rev, rows in wc.history.items():
        for _, typ, key, value in rows:
            if typ == "put" and value is not None:
                applied.setdefault((key, value), []).append(rev)
    sent: dict[tuple[str, str], tuple[int, Outcome]] = {}
    for op in history.ops:
        if op.kind is OpKind.WRITE:
            sent[(op.key, str(op.value))] = (op.id, op.outcome)
        elif op.kind is OpKind.CAS:
            sent[(op.key, str(op.value[1]))] = (op.id, op.outcome)
    acked = 0
    unchecked = 0
    by_id = {op.id: op for op in history.ops}
    have_history = bool(complete_nodes)
    for op_id, rev in sorted(revisions.items()):
        op = by_id[op_id]
        if op.outcome is not Outcome.OK:
            continue
        value = str(op.value) if op.kind is OpKind.WRITE else str(op.value[1])
        if rev <= compacted or not have_history:
            unchecked += 1
            continue
        acked += 1
        rows = wc.history.get(rev, ())
        if not any(r[2] == op.key and r[3] == value for r in rows):
            where = applied.get((op.key, value))
            found = f"it is at revision(s) {where}" if where else "its value is nowhere"
            there = ", ".join(f"{r[1]} {r[2]}={r[3]}" for r in rows) or "nothing"
            report(
                "lost-write",
                (),
                f"{op.render()} was acknowledged at revision {rev}, but the history has "
                f"{there} there; {found}",
            )
    checked["acknowledged_writes"] = acked
    if unchecked:
        checked["acknowledged_writes_unchecked"] = unchecked
    took_effect = 0
    for (key, value), revs in sorted(applied.items()):
        who = sent.get((key, value))
        if who is None:
            report("phantom-write", (), f"{key}={value} at revision {revs}: no client sent it")
            continue
        op = by_id[who[0]]
        if len(revs) > 1:
            report("duplicate-apply", (), f"{op.render()} was applied at revisions {sorted(revs)}")
        if who[1] is Outcome.FAIL:
            how = explain(op.id) if explain is not None else ""
            report(
                "failed-write-applied",
                (),
                f"{op.render()} ended fail (definitely not applied) but is in the history "
                f"at revision {revs[0]}" + (f" [its HTTP tries: {how}]" if how else ""),
            )
        elif who[1] is Outcome.INFO:
            took_effect += 1
    checked["unknown_writes_that_took_effect"] = took_effect

    # ---- watches ---------------------------------------------------------------------
    for rec in watches:
        segs = rec.segments
        if compacted:
            segs = [_trim(s, compacted) for s in segs]
        wc.judge(rec.cid, segs)
        last = segs[-1] if segs else None
        if last is not None and have_history and final_revision:
            want = wc.expected(last.prefix, last.start, final_revision)
            if len(last.events) < len(want):
                report(
                    "watch-incomplete",
                    (),
                    f"c{rec.cid} (on {'every node' if not rec.bound else f'n{rec.bound}'}) "
                    f"got {len(last.events)} of the {len(want)} events up to revision "
                    f"{final_revision} after the final heal",
                )
    checked["watchers"] = [
        {
            "client": rec.cid,
            "node": rec.bound or "all",
            "events": sum(len(s.events) for s in rec.segments),
            "segments": len(rec.segments),
            "progress_notes": sum(len(s.progress) for s in rec.segments),
        }
        for rec in watches
    ]
    return Judgement(violations, lin, checked, notes)


def _trim(seg: Segment, compacted: int) -> Segment:
    """A segment seen against a history that starts after ``compacted``."""
    if seg.start > compacted:
        return seg
    drop = sum(1 for e in seg.events if e[0] <= compacted)
    out = Segment(seg.prefix, compacted + 1, list(seg.events[drop:]))
    out.progress = [(n - drop, r) for n, r in seg.progress if r > compacted and n >= drop]
    return out
