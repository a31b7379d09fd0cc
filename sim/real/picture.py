"""The timeline picture of a real run: ``python -m sim real --duration 20s --html out.html``.

The simulator's drawing (``sim/html.py``: ``svg_scene``) fed from a ``RealResult``:
``scene(res)`` turns what the harness recorded into the drawing's neutral ``Scene``.

- one lane per node: its role and term as polled every 250 ms from its API (a role held
  for less than a poll may be missing; the lane is blank from a restart or a SIGCONT
  until the next answer), killed spans dark, paused spans hatched, and under the role a
  strip hatched while the node's links are cut;
- two fault rows: ``network`` (partition, one-way, delay, lossy) and ``processes`` (kill,
  crash-majority, pause, amnesia), one span per fault as played, labelled with what it
  did (whom it hit: ``data-nodes``), notes as ticks;
- client operations per time slot and per client, coloured ok / fail / unknown (info);
  c9999 is the harness's final read;
- violations as red lines: the checkers judge after the run, so each is drawn where the
  last operation it names completed (or was invoked), a node's exit where it was seen,
  anything else at the end of the run.

Which links a partition or a one-way cut blocked is read back from the text the nemesis
wrote for it (``blocked_links``), since that is what the result records.
"""

from __future__ import annotations

import re

from ..history import Op
from ..html import (
    CSS_PAGE,
    LEGEND,
    FaultRow,
    FaultSpan,
    Held,
    Mark,
    NetSpan,
    NodeLane,
    Scene,
    Seg,
    VipLane,
    _cut_of,
    _esc,
    _names,
    _Pic,
    _span,
    svg_scene,
    vip_lanes,
)
from .agents import AGENT_KINDS
from .harness import RealParams
from .nemesis import NET_KINDS, Event
from .report import RealResult, full_report

ROLE_CLASS = {
    "leader": "leader",
    "candidate": "candidate",
    "pre-candidate": "precandidate",
    "follower": "follower",
}
CSS_REAL = """
.slow{fill:#f2dc8a;fill-opacity:.65;stroke:#c9a227;stroke-width:.6}
.proc{fill:#9a9a9a;fill-opacity:.4;stroke:#555;stroke-width:.6}
.unknown{fill:#fff}
"""
LEGEND_REAL: list[tuple[str, str, str]] = [
    *LEGEND[:4],
    ("down", "killed / exited", ""),
    ("paused", "paused (SIGSTOP)", ""),
    ("cut", "cut off from a majority", ""),
    ("cutp", "some links cut", ""),
    ("split", "partition / one-way cut", ""),
    ("slow", "delay / lossy links", ""),
    ("proc", "kill / pause", ""),
    *LEGEND[-3:],
]

_NODE = re.compile(r"\bn(\d+)\b")
_PAIR = re.compile(r"\bn(\d+)->n(\d+)\b")
_LINK = re.compile(r"^one-way: n(\d+) -> n(\d+) cut")
_OP_REF = re.compile(r"\bop(\d+)\b")


def _us(t_s: float) -> int:
    return round(t_s * 1e6)


def blocked_links(did: str, nodes: list[int]) -> frozenset[tuple[int, int]]:
    """The directed links (from, to) a partition or one-way fault cut, from its text."""
    if did.startswith("partition "):
        _, _, groups = did.partition(": ")
        where = {int(n): k for k, g in enumerate(groups.split(" | ")) for n in _NODE.findall(g)}
        return frozenset(
            (a, b) for a in nodes for b in nodes if a != b and where.get(a) != where.get(b)
        )
    if did.startswith(("ring ", "bridge ")):
        return frozenset((int(a), int(b)) for a, b in _PAIR.findall(did))
    if did.startswith("one-way: "):
        m = _LINK.match(did)
        if m:
            return frozenset({(int(m.group(1)), int(m.group(2)))})
        named = _NODE.findall(did)
        if not named:
            return frozenset()
        who = int(named[0])
        others = [o for o in nodes if o != who]
        if "hears nobody" in did:
            return frozenset((o, who) for o in others)
        if "nobody hears" in did:
            return frozenset((who, o) for o in others)
    return frozenset()


def _node_lanes(res: RealResult, nodes: list[int], end: int) -> list[NodeLane]:
    roles: dict[int, list[Seg]] = {n: [] for n in nodes}
    over: dict[int, list[Seg]] = {n: [] for n in nodes}
    leads: dict[int, set[int]] = {n: set() for n in nodes}
    cur: dict[int, tuple[int, str, int]] = {}
    down: dict[int, tuple[int, str]] = {}
    paused: dict[int, int] = {}

    def close_role(n: int, t: int) -> None:
        if n in cur:
            start, role, term = cur.pop(n)
            roles[n].append(
                Seg(
                    start,
                    t,
                    ROLE_CLASS.get(role, "unknown"),
                    f"n{n} {role}, term {term} (as polled): {_span(start, t)}",
                    f"t{term}" if role == "leader" else "",
                    f' data-node="{n}" data-term="{term}" data-role="{_esc(role)}"',
                    term,
                )
            )

    def close_pause(n: int, t: int, why: str) -> None:
        if n in paused:
            start = paused.pop(n)
            over[n].append(
                Seg(start, t, "paused", f"n{n} paused (SIGSTOP); {why}: {_span(start, t)}")
            )

    def close_down(n: int, t: int, why: str) -> None:
        if n in down:
            start, text = down.pop(n)
            over[n].append(Seg(start, t, "down", f"n{n} down: {text}; {why}: {_span(start, t)}"))

    ev: Event
    for ev in sorted(res.events, key=lambda e: e.t_s):
        n, t = ev.node, _us(ev.t_s)
        if n not in roles:
            continue  # the cluster as a whole
        if ev.kind == "role":
            if n in down or n in paused:
                continue  # a late answer from before the fault
            if n in cur and cur[n][1:] == (ev.role, ev.term):
                continue  # polled again after a pause: the same role goes on
            close_role(n, t)
            cur[n] = (t, ev.role, ev.term)
            if ev.role == "leader":
                leads[n].add(ev.term)
        elif ev.kind in ("down", "exit"):
            close_role(n, t)
            close_pause(n, t, "then killed")
            down.setdefault(n, (t, ev.text or "killed (kill -9)"))
        elif ev.kind == "up":
            close_down(n, t, "restarted")
        elif ev.kind == "pause":
            paused.setdefault(n, t)
        elif ev.kind == "resume":
            close_pause(n, t, "resumed (SIGCONT)")
    for n in nodes:
        close_role(n, end)
        close_pause(n, end, "still paused at the end")
        close_down(n, end, "still down at the end")
    return [NodeLane(n, roles[n], over[n], sorted(leads[n])) for n in nodes]


def _fault_rows(
    res: RealResult, nodes: list[int], end: int
) -> tuple[list[FaultRow], list[NetSpan]]:
    net = FaultRow("network", "faults", [], [])
    proc = FaultRow("processes", "kill, pause", [], [])
    agents = FaultRow("agents", "kill, isolate, drain", [], [])
    cuts: list[NetSpan] = []
    quorum = len(nodes) // 2 + 1
    for entry in res.played:
        did = str(entry.get("did", ""))
        planned = str(entry.get("fault", ""))
        kind = planned.split(" ", 1)[0]
        start = _us(float(entry["at_s"]))
        until = entry.get("until_s")
        stop = max(start, _us(float(until)) if until is not None else end)
        hit = sorted({int(x) for x in _NODE.findall(did)})
        if not hit and "all links" in did:
            hit = list(nodes)
        lines = [did, f"planned: {planned}", _span(start, stop)]
        if entry.get("lane"):
            lines.append(f"lane: {entry['lane']}")
        if "resets" in entry:
            lines.append(f"{entry['resets']} connection resets, {entry['stalls']} stalls")
        blocked = blocked_links(did, nodes)
        if blocked:
            minority = [n for n in nodes if len(_cut_of(n, nodes, blocked)[0]) < quorum]
            lines.append("cut off from a majority: " + _names(minority))
            for n in nodes:
                both, no_out, no_in = _cut_of(n, nodes, blocked)
                if no_out or no_in:
                    lines.append(
                        f"n{n} talks with {_names(both)}; cannot reach {_names(no_out)}; "
                        f"cannot hear {_names(no_in)}"
                    )
            cuts.append(NetSpan(start, stop, did, blocked))
        if kind in NET_KINDS:
            row, cls = net, "split" if blocked else "slow"
        elif kind.startswith("agent-"):
            row, cls = agents, "split" if kind == "agent-isolate" else "proc"
        else:
            row, cls = proc, "proc"
        attrs = f' data-kind="{_esc(kind)}" data-nodes="{_esc(_names(hit))}"'
        row.spans.append(FaultSpan(start, stop, did, lines, attrs, cls))
    for ev in sorted(res.events, key=lambda e: e.t_s):
        t = _us(ev.t_s)
        if ev.kind == "note" or (ev.kind == "heal" and ev.text.startswith("final heal")):
            net.ticks.append((t, "note", ev.text))
        elif ev.kind == "exit":
            (agents if ev.text.startswith("agent ") else proc).ticks.append((t, "fault", ev.text))
    return [net, proc, *([agents] if res.vip or agents.spans else [])], cuts


def _vip_lanes(p: _Pic, res: RealResult) -> list[str]:
    """With agents: one lane per VIP, a sub-lane per agent, its serving intervals as the
    logs say (coloured per agent), a red tick where the harness saw an agent dead after a
    kill -9 and where an agent could not listen."""
    v = res.vip
    if not v:
        return []
    ivs: dict[str, list[dict[str, object]]] = v.get("intervals", {})
    agents = [f"a{k}" for k in range(1, int(v.get("agents", 0)) + 1)]
    marks = [
        (max(0, _us(ev.t_s)), ev.text)
        for ev in res.events
        if ev.kind == "vip" and ("CANNOT" in ev.text or "seen dead" in ev.text)
    ]
    lanes = []
    for addr in sorted(set(v.get("vips", [])) | set(ivs)):
        held = []
        for iv in ivs.get(addr, []):
            name = str(iv["agent"])
            start = max(0, _us(float(str(iv["start_s"]))))
            stop = max(start, _us(float(str(iv["end_s"]))))
            title = (
                f"{name} serves {addr} at epoch {iv['epoch']} (its log): "
                f"{_span(start, stop)}; ended: {iv['end']}"
            )
            held.append(Held(start, stop, name, iv["epoch"], title))
        ticks = [
            (t, text.split(" ", 1)[0], text)
            for t, text in marks
            if "seen dead" in text or addr in text
        ]
        lanes.append(VipLane(addr, held, ticks))
    vip_lanes(p, agents, lanes)
    return agents


def _marks(res: RealResult, end: int) -> tuple[list[Mark], set[int]]:
    ops = {op.id: op for op in res.history.ops}
    exits = {ev.text: _us(ev.t_s) for ev in res.events if ev.kind == "exit"}
    marks: list[Mark] = []
    flagged: set[int] = set()
    for v in res.judgement.violations:
        named = [ops[int(m)] for m in _OP_REF.findall(v.detail) if int(m) in ops]
        flagged |= {op.id for op in named}
        if named:
            last = max(named, key=lambda o: (_op_end(o), o.id))
            t = _op_end(last)
            where = f"drawn where op{last.id}, the last operation it names, ended"
        elif v.detail in exits:
            t, where = exits[v.detail], "drawn where the exit was seen"
        else:
            t, where = end, "drawn at the end of the run"
        marks.append(Mark(t, v.kind, f"{v.render()}\n(found when the run was judged; {where})"))
    return marks, flagged


def _op_end(op: Op) -> int:
    return op.complete_us if op.complete_us is not None else op.invoke_us


def scene(res: RealResult) -> Scene:
    """What the picture of a real run shows, in the drawing's neutral terms."""
    nodes = list(range(1, res.nodes + 1))
    end = max(
        [_us(res.duration_s)]
        + [_us(ev.t_s) for ev in res.events]
        + [_op_end(op) for op in res.history.ops]
    )
    rows, cuts = _fault_rows(res, nodes, end)
    marks, flagged = _marks(res, end)
    return Scene(
        end_us=end,
        nodes=nodes,
        lanes=_node_lanes(res, nodes, end),
        cuts=cuts,
        rows=rows,
        violations=marks,
        ops=res.history.ops,
        flagged=flagged,
        legend=LEGEND_REAL,
        css=CSS_REAL,
        extra=(lambda p: _vip_lanes(p, res)) if res.vip else None,
    )


def replay_command(res: RealResult) -> str:
    """The command that plays this run's schedule again (the seed made explicit)."""
    p = res.params
    d = RealParams()
    bits = ["python -m sim real", f"--duration {res.duration_s:g}s"]
    if res.nodes != d.nodes:
        bits.append(f"--nodes {res.nodes}")
    bits.append(f"--seed {res.seed}")
    if res.clients != d.clients:
        bits.append(f"--clients {res.clients}")
    for name, flag in (("keys", "--keys"), ("watchers", "--watchers"), ("attempts", "--attempts")):
        if name in p and p[name] != getattr(d, name):
            bits.append(f"{flag} {p[name]}")
    if p.get("bind", d.bind) != d.bind:
        bits.append(f"--bind {p['bind']}")
    if "attempt_timeout_s" in p and p["attempt_timeout_s"] != d.attempt_timeout_s:
        bits.append(f"--attempt-timeout {p['attempt_timeout_s']:g}s")
    kinds = p.get("kinds")
    default = d.kinds + (AGENT_KINDS if p.get("agents") else ())
    if kinds is not None and tuple(kinds) != default:
        bits.append("--faults " + ",".join(kinds))
    if p.get("overlap"):
        bits.append("--overlap")
    if p.get("agents"):
        bits.append(f"--agents {p['agents']}")
        if p.get("vips", d.vips) != d.vips:
            bits.append(f"--vips {p['vips']}")
    if res.broken:
        bits.append(f"--break {res.broken}")
    return " ".join(bits)


def render(res: RealResult, command: str | None = None) -> str:
    """The whole page: header, picture, violations, the text report."""
    j = res.judgement
    c = res.history.counts()
    verdict = "OK" if res.ok else f"VIOLATION ({len(j.violations)})"
    lin = {True: "yes", False: "NO", None: "inconclusive"}[j.linearizability.linearizable]
    sc = scene(res)
    leaders = sum(len(lane.leads) for lane in sc.lanes)
    recovery = (
        f"{res.recovery_s:.2f}s (leader n{res.final_leader})"
        if res.recovery_s is not None
        else "none (no agreed leader in time)"
    )
    broken = f" · <b>deliberately broken: {_esc(res.broken)}</b>" if res.broken else ""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>real run seed {res.seed}: {verdict}</title>",
        f"<style>{CSS_PAGE}</style></head><body>",
        f'<h1>real run — <span class="{"ok-v" if res.ok else "bad-v"}">{verdict}</span></h1>',
        f'<p class="meta">seed <b>{res.seed}</b> · {res.nodes} nodes · duration '
        f"<b>{res.duration_s:g}s</b> (load and nemesis; {res.wall_s:.1f}s wall) · "
        f"{res.clients} clients · ops ok={c['ok']} fail={c['fail']} unknown (info)={c['info']}"
        f" · leaders seen: {leaders} · linearizable: {lin} · recovery after the final heal: "
        f"{recovery} · final revision {res.final_revision}{broken}</p>",
        f"<p>command: <code>{_esc(command or replay_command(res))}</code> (add <code>--html "
        "FILE</code> for this picture; the seed fixes the fault schedule, not the run)</p>",
    ]
    if j.notes:
        head.append("<ul>" + "".join(f"<li>note: {_esc(n)}</li>" for n in j.notes) + "</ul>")
    head.append(
        '<p class="meta">Hover over any mark for details. Time is real: seconds since the load '
        "began. Roles are as polled every 250 ms from each node's API (blank: no answer since "
        "a restart or a SIGCONT yet). Violations are found when the run is judged; each red "
        "line stands where the last operation it names ended. c9999 is the harness's final "
        "read. Operations of one client that would touch on screen and share an outcome are "
        "drawn as one bar; its tooltip says how many.</p>"
    )
    body = [f'<div class="pic">{svg_scene(sc)}</div>']
    if j.violations:
        body.append(f'<h2>Violations ({len(j.violations)})</h2><ul class="v">')
        body.extend(f"<li><code>{_esc(v.render())}</code></li>" for v in j.violations)
        body.append("</ul>")
    body.append(
        "<details><summary>text report</summary><pre>" + _esc(full_report(res)) + "</pre></details>"
    )
    body.append("</body></html>\n")
    return "\n".join(head + body)
