"""The timeline picture of a run: one self-contained HTML file, an inline SVG.

``python -m sim run SCENARIO --seed N --html out.html`` writes it. Top to bottom:
violations (red lines through everything), the network (partitions and cut links
as shaded spans, other faults as ticks), one lane per node (its role and term over
virtual time, down and paused spans, hatched while it is cut off), one lane per VIP
when target agents run (who serves it, at which epoch), client operations per
second by outcome, and one row per client with its operations from invocation to
completion, coloured ok / fail / unknown (info). Every mark has an SVG ``<title>``:
hovering shows the details.

The drawing reads a neutral ``Scene`` (node lanes, fault rows, blocked links,
operations, violations); ``scene(res)`` builds one from a simulator ``RunResult``, and
``sim/real/picture.py`` from the real-process harness's result, so both share it.

Pure and deterministic: ``render(res)`` reads only what the run recorded (virtual
times, no wall clock) and iterates in sorted order, so a seed gives the same bytes.
Long runs stay small: a client's consecutive operations with the same outcome that
would touch on screen are drawn as one bar that says how many it holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape

from coord.raft import RaftNode, Role

from .history import Op, Outcome
from .mutants import MUTANTS
from .report import timeline
from .run import RunResult

PLOT_W = 1400  # px of virtual time
LEFT = 128  # lane labels
RIGHT = 28
SVG_W = LEFT + PLOT_W + RIGHT

NODE_H = 22
ROLE_H = 16  # of a node's lane: its role; below it, a strip hatched while it is cut off
VIP_H = 36
GAP = 6
HIST_H = 44
HIST_BUCKETS = PLOT_W // 10
MERGE_PX = 1.0  # ops closer than this on screen, same client and outcome: one bar
MAX_TITLE_LINES = 12

ROLE_CLASS = {
    Role.LEADER: "leader",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "precandidate",
    Role.FOLLOWER: "follower",
}
OUTCOME_NAME = {
    Outcome.OK: "ok",
    Outcome.FAIL: "fail",
    Outcome.INFO: "info",
    Outcome.PENDING: "pending",
}
AGENT_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#a6761d", "#17becf", "#66a61e", "#666666")

CSS_SVG = """
text{font:11px sans-serif;fill:#222}
.lbl{font-weight:bold}
.small{font-size:9px}
.tick{fill:#555;font-size:10px}
.grid{stroke:#e4e4e4;stroke-width:1}
.lane{fill:#f7f7f7}
.leader{fill:#1f5fa8}
.candidate{fill:#8e5cc4}
.precandidate{fill:#c9b3e6}
.follower{fill:#d3e0ee}
.down{fill:#444;fill-opacity:.85}
.paused{fill:url(#paused)}
.cut{fill:url(#cut)}
.cutp{fill:url(#cutp)}
.split{fill:#f6c58f;fill-opacity:.55;stroke:#e08a2c;stroke-width:.6}
.fault{stroke:#b35900;stroke-width:1.4}
.note{stroke:#999;stroke-width:1}
.ok{fill:#3f9f3f}
.fail{fill:#e0439b}
.info{fill:#f0a020}
.pending{fill:#aaa}
.flagged{stroke:#d00;stroke-width:1.2}
.viol{stroke:#e00000;stroke-width:1.3}
.vlbl{fill:#c00000;font-size:10px}
.tw{fill:#fff;font-size:10px}
.tws{fill:#fff;font-size:8px}
.td{fill:#333;font-size:9px}
"""

CSS_PAGE = """
body{font:14px/1.4 sans-serif;margin:16px;color:#222}
h1{font-size:20px;margin:0 0 4px}
.ok-v{color:#2d7d2d}.bad-v{color:#c00000}
code,pre{font:12px/1.35 monospace;background:#f4f4f4}
pre{padding:6px 8px;overflow-x:auto}
.pic{overflow-x:auto}
ul.v li{margin-bottom:4px}
.meta{color:#444}
"""

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_OP_REF = re.compile(r"\bop(\d+)\b")
_PAUSE_FOR = re.compile(r"for (\d+)ms")


def _esc(text: str) -> str:
    return escape(_BAD_XML.sub("?", text), quote=True)


def _f(x: float) -> str:
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _s(us: int) -> str:
    return f"{us / 1e6:.3f}s"


def _span(a: int, b: int) -> str:
    return f"{_s(a)} – {_s(b)} ({(b - a) / 1e3:.0f}ms)"


def _title(lines: Iterable[str]) -> str:
    ls = list(lines)
    if len(ls) > MAX_TITLE_LINES:
        ls = [*ls[: MAX_TITLE_LINES - 1], f"… and {len(ls) - MAX_TITLE_LINES + 1} more"]
    return "<title>" + _esc("\n".join(ls)) + "</title>"


def engine_name(res: RunResult) -> str:
    cls = res.world.p.node_class
    if cls is RaftNode:
        return "coord"
    for name in sorted(MUTANTS):
        if MUTANTS[name] is cls:
            return name
    return cls.__name__


@dataclass
class Seg:
    start: int
    end: int
    cls: str
    title: str
    label: str = ""
    attrs: str = ""
    term: int = 0


class _Pic:
    """Lanes stacked top to bottom; x is virtual time."""

    def __init__(self, end_us: int) -> None:
        self.end_us = max(1, end_us)
        self.out: list[str] = []
        self.y = 0.0

    def x(self, t_us: int) -> float:
        return LEFT + PLOT_W * min(max(t_us, 0), self.end_us) / self.end_us

    def add(self, s: str) -> None:
        self.out.append(s)

    def label(self, y: float, h: float, text: str, sub: str = "") -> None:
        self.add(
            f'<text class="lbl" x="8" y="{_f(y + h / 2 + 4)}">{_esc(text)}'
            + (f'<tspan class="small" font-weight="normal"> {_esc(sub)}</tspan>' if sub else "")
            + "</text>"
        )

    def seg(self, seg: Seg, y: float, h: float, label_cls: str = "tw") -> None:
        x0, x1 = self.x(seg.start), self.x(seg.end)
        w = max(x1 - x0, 0.6)
        self.add(
            f'<rect class="{seg.cls}" x="{_f(x0)}" y="{_f(y)}" width="{_f(w)}" '
            f'height="{_f(h)}"{seg.attrs}>{_title([seg.title])}</rect>'
        )
        if seg.label and h >= 8 and w >= 7 * len(seg.label) + 4:
            self.add(
                f'<text class="{label_cls}" x="{_f(x0 + 3)}" y="{_f(y + h / 2 + 3.5)}" '
                f'pointer-events="none">{_esc(seg.label)}</text>'
            )


# ---- what happened, as spans -------------------------------------------------------------


def _node_spans(res: RunResult, nodes: list[int]) -> dict[int, tuple[list[Seg], list[Seg]]]:
    """Per node: role spans, and down / paused spans (drawn over the roles)."""
    end = res.sim_us
    roles: dict[int, list[Seg]] = {n: [] for n in nodes}
    over: dict[int, list[Seg]] = {n: [] for n in nodes}
    cur: dict[int, tuple[int, Role, int]] = {}
    down: dict[int, tuple[int, str]] = {}
    paused: dict[int, tuple[int, str, int]] = {}  # start, text, planned end

    def close_role(n: int, t: int) -> None:
        if n in cur:
            start, role, term = cur.pop(n)
            name = role.value
            roles[n].append(
                Seg(
                    start,
                    t,
                    ROLE_CLASS[role],
                    f"n{n} {name}, term {term}: {_span(start, t)}",
                    f"t{term}" if role is Role.LEADER else "",
                    f' data-node="{n}" data-term="{term}" data-role="{name}"',
                    term,
                )
            )

    def close_pause(n: int, t: int) -> None:
        if n in paused:
            start, text, planned = paused.pop(n)
            stop = min(t, planned)
            over[n].append(
                Seg(start, stop, "paused", f"n{n} paused ({text}): {_span(start, stop)}")
            )

    def close_down(n: int, t: int, why: str) -> None:
        if n in down:
            start, text = down.pop(n)
            over[n].append(Seg(start, t, "down", f"n{n} down: {text}; {why}: {_span(start, t)}"))

    for ev in res.world.timeline:
        n, t = ev.node, ev.time_us
        if n not in roles:
            continue  # an agent's host, or the cluster as a whole
        if n in paused and paused[n][2] <= t:
            close_pause(n, t)
        if ev.kind == "role" and ev.role is not None:
            close_role(n, t)
            cur[n] = (t, ev.role, ev.term)
        elif ev.kind == "down":
            close_pause(n, t)
            down.setdefault(n, (t, ev.text))
        elif ev.kind == "up":
            close_pause(n, t)
            close_down(n, t, ev.text)
        elif ev.kind == "pause":
            m = _PAUSE_FOR.search(ev.text)
            planned = t + int(m.group(1)) * 1000 if m else end
            paused.setdefault(n, (t, ev.text, planned))
    for n in nodes:
        close_role(n, end)
        close_pause(n, end)
        close_down(n, end, "still down at the end")
    return {n: (roles[n], over[n]) for n in nodes}


@dataclass
class NetSpan:
    start: int
    end: int
    text: str
    blocked: frozenset[tuple[int, int]]


def _net_spans(res: RunResult) -> list[NetSpan]:
    log = res.world.net_log
    spans: list[NetSpan] = []
    for i, (t, text, blocked) in enumerate(log):
        stop = log[i + 1][0] if i + 1 < len(log) else res.sim_us
        if blocked and stop > t:
            spans.append(NetSpan(t, stop, text, frozenset(blocked)))
        elif blocked and stop == t and i + 1 == len(log):
            spans.append(NetSpan(t, t, text, frozenset(blocked)))
    return spans


def _cut_of(
    n: int, nodes: list[int], blocked: frozenset[tuple[int, int]]
) -> tuple[list[int], list[int], list[int]]:
    """(nodes n talks with both ways, including itself; cannot reach; cannot hear)."""
    no_out = [m for m in nodes if m != n and (n, m) in blocked]
    no_in = [m for m in nodes if m != n and (m, n) in blocked]
    both = [m for m in nodes if m == n or ((n, m) not in blocked and (m, n) not in blocked)]
    return both, no_out, no_in


def _names(ids: Iterable[int]) -> str:
    return ",".join(f"n{i}" for i in ids) or "none"


def _host_names(res: RunResult) -> str:
    fleet = res.world.fleet
    if fleet is None:
        return ""
    hosts = [f"{h}={a.name}" for h, a in sorted(fleet.agents.items())]
    return "other hosts: " + " ".join(hosts) + ", 0=operator, 201+=initiators"


# ---- the neutral description the drawing reads ----------------------------------------------
#
# ``svg_scene`` draws a ``Scene``; ``scene(res)`` builds one from a simulator ``RunResult``
# and ``sim/real/picture.py`` from the real harness's result, so both pictures share every
# drawing function.


@dataclass
class NodeLane:
    """One node: its role spans (``Seg`` with class leader / candidate / precandidate /
    follower and ``term``), the down / paused spans drawn over them, the terms it led."""

    node: int
    roles: list[Seg]
    over: list[Seg]
    leads: list[int]


@dataclass
class FaultSpan:
    """A fault held over a span of time, on a fault row (tooltip: ``lines``)."""

    start: int
    end: int
    text: str  # drawn on the span where it fits
    lines: list[str]
    attrs: str = ""  # extra SVG attributes, e.g. ' data-cut="n1,n2"'
    cls: str = "split"


@dataclass
class FaultRow:
    """A row of fault spans, with instantaneous faults and notes as ticks."""

    label: str
    sub: str
    spans: list[FaultSpan]
    ticks: list[tuple[int, str, str]]  # (time, "fault" | "note", text), in time order


@dataclass(frozen=True)
class Mark:
    """A violation: a red line at ``time_us``, labelled ``kind``, tooltip ``text``."""

    time_us: int
    kind: str
    text: str


@dataclass
class Scene:
    end_us: int
    nodes: list[int]
    lanes: list[NodeLane]
    cuts: list[NetSpan]  # blocked links over time: the hatched strip under each node's role
    rows: list[FaultRow]
    violations: list[Mark]
    ops: list[Op]
    flagged: set[int]  # op ids a violation names: outlined in red
    # Lanes drawn after the nodes' (the simulator's VIPs and agents); returns the agent
    # names the legend shows.
    extra: Callable[[_Pic], list[str]] | None = None
    legend: list[tuple[str, str, str]] | None = None  # (class, text, fill); None: the default
    css: str = ""  # appended to the picture's stylesheet


# ---- operations ----------------------------------------------------------------------------


@dataclass
class _OpBar:
    start: int
    end: int
    outcome: str
    ops: list[Op]
    flagged: bool


def _op_bars(ops: list[Op], end_us: int, us_per_px: float, flagged: set[int]) -> list[_OpBar]:
    """One client's operations as bars; neighbours with one outcome that would touch merge."""
    bars: list[_OpBar] = []
    for i, op in enumerate(ops):
        outcome = OUTCOME_NAME[op.outcome]
        if op.complete_us is not None:
            stop = op.complete_us
        else:  # unknown: it was given up on before this client's next operation began
            stop = ops[i + 1].invoke_us if i + 1 < len(ops) else end_us
        stop = max(stop, op.invoke_us)
        mark = op.id in flagged
        last = bars[-1] if bars else None
        if (
            last is not None
            and not mark
            and not last.flagged
            and last.outcome == outcome
            and (op.invoke_us - last.end) < MERGE_PX * us_per_px
        ):
            last.end = max(last.end, stop)
            last.ops.append(op)
        else:
            bars.append(_OpBar(op.invoke_us, stop, outcome, [op], mark))
    return bars


def _op_title(bar: _OpBar, client: int) -> list[str]:
    if len(bar.ops) == 1:
        op = bar.ops[0]
        lines = [op.render(), "sent to " + _names(op.nodes)]
        if op.outcome is Outcome.INFO:
            lines.append("outcome unknown: it may take effect at any point after its invocation")
        if bar.flagged:
            lines.append("named by a violation")
        return lines
    kinds: dict[str, int] = {}
    for op in bar.ops:
        kinds[op.kind.value] = kinds.get(op.kind.value, 0) + 1
    what = ", ".join(f"{kinds[k]} {k}" for k in sorted(kinds))
    name = {"info": "unknown (info)"}.get(bar.outcome, bar.outcome)
    return [
        f"c{client}: {len(bar.ops)} operations {name}, {_span(bar.start, bar.end)}",
        what,
        f"op{bar.ops[0].id} … op{bar.ops[-1].id}",
    ]


# ---- the picture ---------------------------------------------------------------------------


def _nice_step(end_us: int) -> int:
    for step in (
        1_000,
        2_000,
        5_000,
        10_000,
        20_000,
        50_000,
        100_000,
        200_000,
        500_000,
        1_000_000,
        2_000_000,
        5_000_000,
        10_000_000,
        15_000_000,
        30_000_000,
        60_000_000,
        120_000_000,
        300_000_000,
        600_000_000,
    ):
        if end_us / step <= 16:
            return step
    return 1_200_000_000


def _tick_label(t: int, step: int) -> str:
    if step >= 1_000_000:
        return f"{t // 1_000_000}s"
    if t % 1_000_000 == 0:
        return f"{t // 1_000_000}s"
    if step >= 100_000:
        return f"{t / 1e6:.1f}s"
    if step >= 10_000:
        return f"{t / 1e6:.2f}s"
    return f"{t / 1e3:.0f}ms"


def _axis(p: _Pic, y: float, step: int, top: bool) -> None:
    p.add(f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{_f(y)}" y2="{_f(y)}" stroke="#888"/>')
    for t in range(0, p.end_us + 1, step):
        x = p.x(t)
        dy = -4 if top else 4
        p.add(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{_f(y)}" y2="{_f(y + dy)}" stroke="#888"/>')
        ty = y - 7 if top else y + 15
        p.add(
            f'<text class="tick" x="{_f(x)}" y="{_f(ty)}" text-anchor="middle">'
            f"{_tick_label(t, step)}</text>"
        )


def _defs() -> str:
    return (
        "<defs>"
        '<pattern id="cut" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ff6a00" '
        'fill-opacity=".18"/><line x1="0" y1="0" x2="0" y2="6" stroke="#e04400" '
        'stroke-width="2.2"/></pattern>'
        '<pattern id="cutp" width="8" height="8" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="8" stroke="#e07a00" '
        'stroke-width="1.2" stroke-opacity=".8"/></pattern>'
        '<pattern id="paused" width="5" height="5" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(-45)"><rect width="5" height="5" fill="#bbb"/>'
        '<line x1="0" y1="0" x2="0" y2="5" stroke="#666" stroke-width="2"/></pattern>'
        "</defs>"
    )


def _violation_row(p: _Pic, marks: list[Mark]) -> list[tuple[float, list[str]]]:
    """Label row above everything; returns (x, texts) of each red line to draw later."""
    by_x: dict[int, list[Mark]] = {}
    for v in marks:
        by_x.setdefault(round(p.x(v.time_us)), []).append(v)
    lines = [
        (x, [v.text for v in vs], sorted({v.kind for v in vs})) for x, vs in sorted(by_x.items())
    ]
    y = p.y
    h = 16 * min(3, max(1, len(lines)))
    if lines:
        p.label(y, 16, "violations", f"{len(marks)}")
    row_end = [float(LEFT) - 1] * 3
    for x, texts, kinds in lines:
        text = ", ".join(kinds)
        width = 6.2 * len(text) + 8
        # Right of the line if it fits, else left of it (a violation found at the very end).
        left = x + width >= SVG_W
        x0 = x - width if left else float(x)
        for r in range(3):
            if row_end[r] < x0:
                row_end[r] = x0 + width
                anchor = ' text-anchor="end"' if left else ""
                p.add(
                    f'<text class="vlbl" x="{_f(x - 3 if left else x + 3)}" '
                    f'y="{_f(y + 12 + 16 * r)}"{anchor}>{_esc(text)}{_title(texts)}</text>'
                )
                break
    p.y += h + GAP if lines else 0
    return [(float(x), texts) for x, texts, _ in lines]


def _fault_row(p: _Pic, row: FaultRow) -> None:
    y, h = p.y, NODE_H
    p.add(f'<rect class="lane" x="{LEFT}" y="{y}" width="{PLOT_W}" height="{h}"/>')
    p.label(y, h, row.label, row.sub)
    for span in row.spans:
        x0, x1 = p.x(span.start), p.x(span.end)
        p.add(
            f'<rect class="{span.cls}" x="{_f(x0)}" y="{_f(y + 1)}" '
            f'width="{_f(max(x1 - x0, 1.5))}" height="{h - 2}"{span.attrs}>'
            f"{_title(span.lines)}</rect>"
        )
        if x1 - x0 > 40:
            chars = int((x1 - x0 - 6) / 6.2)
            text = span.text if len(span.text) <= chars else span.text[: max(1, chars - 1)] + "…"
            p.add(
                f'<text class="td" x="{_f(x0 + 3)}" y="{_f(y + h / 2 + 3)}" '
                f'pointer-events="none">{_esc(text)}</text>'
            )
    # Other faults and notes as ticks; several at one pixel share one tick.
    ticks: dict[tuple[int, str], list[str]] = {}
    for t, cls, text in row.ticks:
        ticks.setdefault((round(p.x(t)), cls), []).append(f"{_s(t)} {text}")
    for (x, cls), texts in sorted(ticks.items(), key=lambda kv: (kv[0][1] == "fault", kv[0])):
        top = y + (h / 2 if cls == "note" else 2)
        p.add(
            f'<line class="{cls}" x1="{x}" x2="{x}" y1="{_f(top)}" y2="{_f(y + h - 1)}">'
            f"{_title(texts)}</line>"
        )
    p.y += h + GAP


def _network(res: RunResult, nodes: list[int]) -> FaultRow:
    """The simulator's network row: partitions and cut links as spans, the rest as ticks."""
    quorum = len(nodes) // 2 + 1
    hosts = _host_names(res)
    spans: list[FaultSpan] = []
    for span in _net_spans(res):
        minority = [n for n in nodes if len(_cut_of(n, nodes, span.blocked)[0]) < quorum]
        lines = [span.text, _span(span.start, span.end)]
        lines.append("cut off from a majority: " + _names(minority))
        for n in nodes:
            both, no_out, no_in = _cut_of(n, nodes, span.blocked)
            if no_out or no_in:
                lines.append(
                    f"n{n} talks with {_names(both)}; cannot reach {_names(no_out)}; "
                    f"cannot hear {_names(no_in)}"
                )
        if hosts:
            lines.append(hosts)
        attrs = f' data-cut="{_esc(_names(minority))}"'
        spans.append(FaultSpan(span.start, span.end, span.text, lines, attrs))
    ticks: list[tuple[int, str, str]] = []
    for ev in res.world.timeline:
        if ev.kind == "role" or (ev.node in nodes and ev.kind in ("down", "up", "pause")):
            continue
        if ev.text.startswith(("partition ", "links cut", "heal: ")):
            continue  # the spans above
        ticks.append((ev.time_us, "note" if ev.kind == "note" else "fault", ev.text))
    return FaultRow("network", "faults", spans, ticks)


def _node_lanes(p: _Pic, lanes: list[NodeLane], nodes: list[int], net: list[NetSpan]) -> None:
    quorum = len(nodes) // 2 + 1
    for lane in lanes:
        n = lane.node
        y, h = p.y, ROLE_H
        p.add(f'<g class="node" data-node="{n}">')
        p.add(f'<rect class="lane" x="{LEFT}" y="{y}" width="{PLOT_W}" height="{NODE_H}"/>')
        leads = lane.leads
        p.label(y, NODE_H, f"n{n}", ("leads t" + ",".join(str(t) for t in leads)) if leads else "")
        for seg in lane.roles:
            p.seg(seg, y, h)
            if seg.cls != "leader" and p.x(seg.end) - p.x(seg.start) > 46:
                p.add(
                    f'<text class="td" x="{_f(p.x(seg.start) + 3)}" y="{_f(y + h / 2 + 3)}" '
                    f'pointer-events="none">t{seg.term}</text>'
                )
        for seg in lane.over:
            p.seg(seg, y + 1, h - 2)
        for span in net:
            both, no_out, no_in = _cut_of(n, nodes, span.blocked)
            if not (no_out or no_in):
                continue
            strong = len(both) < quorum
            what = "cut off from a majority" if strong else "some links cut"
            title = (
                f"n{n} {what}: {span.text}\n{_span(span.start, span.end)}\n"
                f"talks with {_names(both)}; cannot reach {_names(no_out)}; "
                f"cannot hear {_names(no_in)}"
            )
            cut = Seg(span.start, span.end, "cut" if strong else "cutp", title)
            p.seg(cut, y + h + 1, NODE_H - h - 1)
        p.add("</g>")
        p.y += NODE_H + 3
    p.y += GAP - 3


@dataclass
class Held:
    """An agent serving a VIP from ``start_us`` to ``stop_us`` (one segment of its lane)."""

    start_us: int
    stop_us: int
    agent: str
    epoch: object
    title: str


@dataclass
class VipLane:
    address: str
    held: list[Held]
    ticks: list[tuple[int, str, str]]  # (time, agent, what): a red tick on the agent's row


def vip_lanes(p: _Pic, agents: list[str], lanes: list[VipLane]) -> None:
    """One lane per VIP, a sub-lane per agent: who served it when, coloured per agent."""
    colour = {name: AGENT_COLOURS[i % len(AGENT_COLOURS)] for i, name in enumerate(agents)}
    slot = {name: i for i, name in enumerate(agents)}
    sub = min(10.0, max(4.0, VIP_H / max(1, len(agents))))
    h = sub * max(1, len(agents))
    for lane in lanes:
        y = p.y
        p.add(f'<g class="vip" data-address="{_esc(lane.address)}">')
        p.add(f'<rect class="lane" x="{LEFT}" y="{_f(y)}" width="{PLOT_W}" height="{_f(h)}"/>')
        p.label(y, h, f"VIP {lane.address}")
        for hd in lane.held:
            seg = Seg(
                hd.start_us,
                hd.stop_us,
                "held",
                hd.title,
                f"{hd.agent} e{hd.epoch}",
                f' fill="{colour.get(hd.agent, "#999")}" data-agent="{_esc(hd.agent)}"',
            )
            p.seg(seg, y + sub * slot.get(hd.agent, 0), sub, "tws")
        for t, name, what in lane.ticks:
            x = p.x(t)
            yy = y + sub * slot.get(name, 0)
            p.add(
                f'<line class="fault" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(yy)}" '
                f'y2="{_f(yy + sub)}">{_title([f"{_s(t)} {what}"])}</line>'
            )
        p.add("</g>")
        p.y += h + 3
    p.y += GAP - 3


def _vip_lanes(p: _Pic, res: RunResult) -> list[str]:
    fleet = res.world.fleet
    if fleet is None:
        return []
    agents = [a.name for _, a in sorted(fleet.agents.items())]
    intervals = fleet.vip_checker.intervals
    deaths = [(t, name, f"host of {name} killed") for t, name in sorted(fleet.deaths)]
    lanes = []
    for addr in sorted(set(fleet.vips) | {iv.address for iv in intervals}):
        held = []
        for iv in sorted(
            (i for i in intervals if i.address == addr), key=lambda i: (i.start_us, i.agent)
        ):
            stop = iv.end_us if iv.end_us is not None else res.sim_us
            title = f"{iv.agent} serves {addr} at epoch {iv.epoch}: {_span(iv.start_us, stop)}"
            held.append(Held(iv.start_us, stop, iv.agent, iv.epoch, title))
        lanes.append(VipLane(addr, held, deaths))
    vip_lanes(p, agents, lanes)
    return agents


_AGENT_RESTART = re.compile(r"^restart agent (\S+)$")


def _agent_lanes(p: _Pic, res: RunResult, nodes: list[int]) -> None:
    """One thin lane per target agent: when its host was dead, and when it was cut off."""
    fleet = res.world.fleet
    if fleet is None:
        return
    events: dict[str, list[tuple[int, int]]] = {}  # name -> (time, 0 killed / 1 restarted)
    for t, name in fleet.deaths:
        events.setdefault(name, []).append((t, 0))
    for ev in res.world.timeline:
        m = _AGENT_RESTART.match(ev.text) if ev.kind == "up" and ev.node == 0 else None
        if m:
            events.setdefault(m.group(1), []).append((ev.time_us, 1))
    quorum = len(nodes) // 2 + 1
    net = _net_spans(res)
    h = 12.0
    for host, agent in sorted(fleet.agents.items()):
        y = p.y
        p.add(f'<g class="agent" data-agent="{_esc(agent.name)}">')
        p.add(f'<rect class="lane" x="{LEFT}" y="{_f(y)}" width="{PLOT_W}" height="{_f(h)}"/>')
        p.add(
            f'<text class="small" x="8" y="{_f(y + h - 2.5)}">agent {_esc(agent.name)} '
            f"(host {host})</text>"
        )
        dead: int | None = None
        for t, what in [*sorted(events.get(agent.name, [])), (res.sim_us, 1)]:
            if what == 0 and dead is None:
                dead = t
            elif what == 1 and dead is not None:
                title = f"host of {agent.name} dead: {_span(dead, t)}"
                p.seg(Seg(dead, t, "down", title), y, h / 2)
                dead = None
        for span in net:
            both = [
                m for m in nodes if (host, m) not in span.blocked and (m, host) not in span.blocked
            ]
            if len(both) == len(nodes):
                continue
            strong = len(both) < quorum
            desc = "cut off from a majority of the nodes" if strong else "some links cut"
            title = (
                f"{agent.name} (host {host}) {desc}: {span.text}\n"
                f"{_span(span.start, span.end)}\ntalks with {_names(both)}"
            )
            p.seg(Seg(span.start, span.end, "cut" if strong else "cutp", title), y + h / 2, h / 2)
        p.add("</g>")
        p.y += h + 2
    p.y += GAP - 2


def _ops_hist(p: _Pic, ops: list[Op]) -> None:
    y, h = p.y, HIST_H
    p.add(f'<rect class="lane" x="{LEFT}" y="{y}" width="{PLOT_W}" height="{h}"/>')
    b_us = p.end_us / HIST_BUCKETS
    p.label(y, h, "ops", f"per {b_us / 1e3:.0f}ms")
    buckets = [[0, 0, 0] for _ in range(HIST_BUCKETS)]
    for op in ops:
        if op.outcome is Outcome.OK or op.outcome is Outcome.FAIL:
            t = op.complete_us if op.complete_us is not None else op.invoke_us
            k = 0 if op.outcome is Outcome.OK else 1
        else:
            t, k = op.invoke_us, 2
        buckets[min(HIST_BUCKETS - 1, int(t / b_us))][k] += 1
    top = max((sum(b) for b in buckets), default=0)
    if not top:
        p.y += h + GAP
        return
    bw = PLOT_W / HIST_BUCKETS
    for i, (ok, fail, info) in enumerate(buckets):
        if not ok + fail + info:
            continue
        x = LEFT + i * bw
        t0, t1 = int(i * b_us), int((i + 1) * b_us)
        title = (
            f"{_s(t0)} – {_s(t1)}: {ok} ok, {fail} fail (by completion), "
            f"{info} unknown (by invocation)"
        )
        p.add(f"<g>{_title([title])}")
        base = y + h
        for count, cls in ((ok, "ok"), (fail, "fail"), (info, "info")):
            if count:
                bh = (h - 2) * count / top
                base -= bh
                p.add(
                    f'<rect class="{cls}" x="{_f(x + 0.5)}" y="{_f(base)}" '
                    f'width="{_f(bw - 1)}" height="{_f(bh)}"/>'
                )
        p.add("</g>")
    p.add(f'<text class="tick" x="{LEFT + PLOT_W + 4}" y="{y + 10}">{top}</text>')
    p.y += h + GAP


def _client_rows(p: _Pic, ops: list[Op], flagged: set[int], end_us: int) -> None:
    by_client: dict[int, list[Op]] = {}
    for op in ops:
        by_client.setdefault(op.client, []).append(op)
    clients = sorted(by_client)
    if not clients:
        return
    row = 10.0 if len(clients) <= 16 else max(3.0, 160 / len(clients))
    us_per_px = p.end_us / PLOT_W
    for c in clients:
        y = p.y
        lst = sorted(by_client[c], key=lambda o: (o.invoke_us, o.id))
        if row >= 8:
            p.add(f'<text class="small" x="8" y="{_f(y + row - 1.5)}">c{c}</text>')
        p.add(f'<g class="client" data-client="{c}">')
        for bar in _op_bars(lst, end_us, us_per_px, flagged):
            x0, x1 = p.x(bar.start), p.x(bar.end)
            cls = f"op {bar.outcome}" + (" flagged" if bar.flagged else "")
            p.add(
                f'<rect class="{cls}" x="{_f(x0)}" y="{_f(y + 1)}" width="{_f(max(x1 - x0, 1.0))}"'
                f' height="{_f(row - 2)}" data-n="{len(bar.ops)}">'
                f"{_title(_op_title(bar, c))}</rect>"
            )
        p.add("</g>")
        p.y += row
    p.y += GAP


LEGEND: list[tuple[str, str, str]] = [
    ("leader", "leader (tN: term)", ""),
    ("candidate", "candidate", ""),
    ("precandidate", "pre-candidate", ""),
    ("follower", "follower", ""),
    ("down", "down (crashed)", ""),
    ("paused", "paused", ""),
    ("cut", "cut off from a majority", ""),
    ("cutp", "some links cut", ""),
    ("split", "partition / cut links", ""),
    ("ok", "op ok", ""),
    ("fail", "op fail", ""),
    ("info", "op unknown (info)", ""),
]


def _legend(p: _Pic, agents: list[str], base: list[tuple[str, str, str]] | None = None) -> None:
    items = list(LEGEND if base is None else base)
    items += [
        ("held", f"{a} serves", AGENT_COLOURS[i % len(AGENT_COLOURS)]) for i, a in enumerate(agents)
    ]
    p.add('<g class="legend">')
    x, y = float(LEFT), p.y + 4
    for cls, text, fill in items:
        width = 18 + 6.2 * len(text) + 14
        if x + width > SVG_W:
            x, y = float(LEFT), y + 18
        extra = f' fill="{fill}"' if fill else ""
        p.add(f'<rect class="{cls}" x="{_f(x)}" y="{_f(y)}" width="14" height="12"{extra}/>')
        p.add(f'<text x="{_f(x + 18)}" y="{_f(y + 10)}">{_esc(text)}</text>')
        x += width
    if x + 200 > SVG_W:
        x, y = float(LEFT), y + 18
    for cls, text, dx, top in (
        ("viol", "violation", 70, 0),
        ("fault", "fault", 50, 0),
        ("note", "note", 50, 5),
    ):
        p.add(
            f'<line class="{cls}" x1="{_f(x + 7)}" x2="{_f(x + 7)}" y1="{_f(y + top)}" '
            f'y2="{_f(y + 12)}"/>'
        )
        p.add(f'<text x="{_f(x + 14)}" y="{_f(y + 10)}">{text}</text>')
        x += dx
    p.add("</g>")
    p.y = y + 20


def scene(res: RunResult) -> Scene:
    """What the picture of a simulator run shows, in the drawing's neutral terms."""
    nodes = sorted(res.world.nodes)
    spans = _node_spans(res, nodes)
    lanes = [
        NodeLane(
            n,
            spans[n][0],
            spans[n][1],
            sorted({term for _, term, who in res.leaders if who == n}),
        )
        for n in nodes
    ]

    def extra(p: _Pic) -> list[str]:
        agents = _vip_lanes(p, res)
        _agent_lanes(p, res, nodes)
        return agents

    return Scene(
        end_us=res.sim_us,
        nodes=nodes,
        lanes=lanes,
        cuts=_net_spans(res),
        rows=[_network(res, nodes)],
        violations=[Mark(v.time_us, v.kind, v.render()) for v in res.violations],
        ops=res.world.history.ops,
        flagged={int(m) for v in res.violations for m in _OP_REF.findall(v.detail)},
        extra=extra,
    )


def svg(res: RunResult) -> str:
    """The picture alone: one ``<svg>`` element (well-formed XML)."""
    return svg_scene(scene(res))


def svg_scene(sc: Scene) -> str:
    """The picture of a ``Scene``: one ``<svg>`` element (well-formed XML)."""
    p = _Pic(sc.end_us)
    step = _nice_step(p.end_us)
    p.y = 22
    top_axis = p.y
    p.y += 8
    vlines = _violation_row(p, sc.violations)
    body_top = p.y
    grid_at = len(p.out)  # gridlines go under the lanes: inserted once the height is known
    for row in sc.rows:
        _fault_row(p, row)
    _node_lanes(p, sc.lanes, sc.nodes, sc.cuts)
    agents = sc.extra(p) if sc.extra is not None else []
    _ops_hist(p, sc.ops)
    _client_rows(p, sc.ops, sc.flagged, sc.end_us)
    body_bottom = p.y - GAP + 2
    grid = [
        f'<line class="grid" x1="{_f(p.x(t))}" x2="{_f(p.x(t))}" y1="{_f(body_top)}" '
        f'y2="{_f(body_bottom)}"/>'
        for t in range(0, p.end_us + 1, step)
    ]
    p.out[grid_at:grid_at] = grid
    for x, texts in vlines:
        p.add(
            f'<line class="viol" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(top_axis)}" '
            f'y2="{_f(body_bottom)}">{_title(texts)}</line>'
        )
    _axis(p, top_axis, step, top=True)
    _axis(p, body_bottom + 4, step, top=False)
    p.y = body_bottom + 28
    _legend(p, agents, sc.legend)
    height = p.y + 4
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{_f(height)}" '
        f'viewBox="0 0 {SVG_W} {_f(height)}" font-family="sans-serif">'
        f"<style>{CSS_SVG}{sc.css}</style>{_defs()}"
        f'<rect width="{SVG_W}" height="{_f(height)}" fill="#fff"/>'
    )
    return head + "\n".join(p.out) + "\n</svg>"


def render(res: RunResult, engine: str | None = None) -> str:
    """The whole page: header, picture, violations, the text timeline."""
    eng = engine or engine_name(res)
    ops = res.ops
    lin = {True: "yes", False: "NO", None: "inconclusive"}[res.linearizable]
    verdict = "OK" if res.ok else f"VIOLATION ({len(res.violations)})"
    title = f"{res.scenario} seed {res.seed} ({eng}): {verdict}"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>{CSS_PAGE}</style></head><body>",
        f'<h1>{_esc(res.scenario)} — <span class="{"ok-v" if res.ok else "bad-v"}">'
        f"{verdict}</span></h1>",
        f'<p class="meta">seed <b>{res.seed}</b> · engine <b>{_esc(eng)}</b> · '
        f"{res.nodes} nodes · {res.sim_us / 1e6:.1f}s virtual · ops ok={ops['ok']} "
        f"fail={ops['fail']} unknown (info)={ops['info']} · leaders elected: "
        f"{len(res.leaders)} · linearizable: {lin}</p>",
        f"<p>replay: <code>{_esc(res.replay)}</code> (add <code>--html FILE</code> "
        "for this picture)</p>",
    ]
    extra = [f"expected {e}" for e in res.run.evidence] + [f"note: {n}" for n in res.notes]
    if extra:
        head.append("<ul>" + "".join(f"<li>{_esc(e)}</li>" for e in extra) + "</ul>")
    head.append(
        '<p class="meta">Hover over any mark for details. Time is virtual (the simulator\'s '
        "clock). Client operations of one client that would touch on screen and share an "
        "outcome are drawn as one bar; its tooltip says how many.</p>"
    )
    body = [f'<div class="pic">{svg(res)}</div>']
    if res.violations:
        body.append(f'<h2>Violations ({len(res.violations)})</h2><ul class="v">')
        for v in res.violations:
            ctx = ""
            if v.context:
                ctx = (
                    "<details><summary>events before it</summary><pre>"
                    + _esc("\n".join(v.context))
                    + "</pre></details>"
                )
            body.append(f"<li><code>{_esc(v.render())}</code>{ctx}</li>")
        body.append("</ul>")
    body.append(
        "<details><summary>text timeline</summary><pre>" + _esc(timeline(res)) + "</pre></details>"
    )
    body.append(f'<p class="meta">trace sha256: <code>{res.trace_digest}</code></p>')
    body.append("</body></html>\n")
    return "\n".join(head + body)
