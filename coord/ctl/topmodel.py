"""What ``coordctl top`` knows, and the rows it shows: pure, so tests can feed it.

The feed (topfeed.py) writes three kinds of facts here: each member's own
``/v1/cluster`` answer (or its failure), the cluster map as a watch keeps it
(a ``MapCache``), and the events of a watch on every key. The screen
(top.py) asks for rows. Nothing here does I/O or reads a clock: ``now`` is
passed in (monotonic seconds for ages of our own observations, wall-clock
milliseconds for the map's ``since_ms`` stamps), so the same facts always
give the same rows.

Honesty rules: a member that does not answer is shown as down with the age of
its last answer, and its old figures are shown dimmed, never as current; a
table whose source is unreachable says since when its data is.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from coord.clustermap.model import HEALTHY, RETIRED

Record = dict[str, Any]
MAX_EVENTS = 500
BAR_WIDTH = 10


@dataclass
class MemberView:
    """One member as it last answered for itself."""

    id: int  # 0 until it (or another member) names it
    api: str
    status: Record | None = None  # its last /v1/cluster answer
    seen_at: float | None = None  # monotonic time of that answer
    error: str | None = None  # why the latest ask failed (None: it answered)

    @property
    def up(self) -> bool:
        return self.error is None and self.status is not None


@dataclass
class Event:
    revision: int
    kind: str  # put, delete, relist
    key: str
    value: str


@dataclass
class TopModel:
    members: dict[str, MemberView] = field(default_factory=dict)  # by API address
    map: Any = None  # a MapCache (or anything with nodes/vips/volumes/sessions dicts)
    map_seen_at: float | None = None  # monotonic time the map copy last moved or was confirmed
    map_error: str | None = None
    leases: dict[int, float] = field(default_factory=dict)  # lease id -> seconds remaining
    leases_seen_at: float | None = None
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    events_total: int = 0  # events ever taken in (the screen writes those it has not yet)
    message: str = ""  # the outcome of the last action, shown in the status line

    # ---- taking facts in ---------------------------------------------------------------

    def asked(self, api: str) -> MemberView:
        """The member at an API address (members are known by address until they answer)."""
        if api not in self.members:
            self.members[api] = MemberView(0, api)
        return self.members[api]

    def answered(self, api: str, status: Record, now: float) -> None:
        """A member's own /v1/cluster answer; it also names the members we did not know."""
        m = self.asked(api)
        m.id, m.status, m.seen_at, m.error = int(status["id"]), status, now, None
        for other in status.get("members", []):
            if other.get("api"):
                self.asked(str(other["api"])).id = int(other["id"])

    def failed(self, api: str, error: str) -> None:
        self.asked(api).error = error

    def event(self, item: Record) -> None:
        kind = str(item.get("type", ""))
        if kind in ("put", "delete"):
            kv = item.get("kv") or {}
            value = kv.get("value", "") if kind == "put" else ""
            self.events.append(Event(int(item["revision"]), kind, str(item["key"]), str(value)))
        elif kind == "relist":
            self.events.append(Event(int(item["revision"]), "relist", "", "history compacted"))
        else:
            return
        self.events_total += 1

    # ---- what is known about the cluster -------------------------------------------------

    def known(self) -> list[MemberView]:
        """Members by id; addresses that never answered and no member named, last."""
        return sorted(self.members.values(), key=lambda m: (m.id == 0, m.id, m.api))

    def leader(self) -> MemberView | None:
        """The member that says it leads, at the highest term among those that answer."""
        best: MemberView | None = None
        for m in self.known():
            leads = m.up and m.status is not None and m.status.get("role") == "leader"
            if leads and (best is None or _term(m) > _term(best)):
                best = m
        return best

    def term(self) -> int:
        return max((_term(m) for m in self.known() if m.status is not None), default=0)

    def member_rows(self, now: float) -> list[tuple[str, list[Text]]]:
        """(row key, cells) for the cluster table: id, api, role, term, commit, applied,
        lag bar, the leader's last contact, and how old our data of the member is."""
        leader = self.leader()
        progress: dict[int, Record] = {}
        last_index = 0
        if leader is not None and leader.status is not None:
            progress = {int(p["id"]): p for p in leader.status.get("members", [])}
            last_index = int(leader.status.get("last_index", 0))
        lags = {mid: int(p["lag"]) for mid, p in progress.items() if p.get("lag") is not None}
        worst = max([*lags.values(), 1])
        rows = []
        for m in self.known():
            st = m.status or {}
            dim = "" if m.up else "dim"
            ident = str(m.id) if m.id > 0 else "?"
            role = str(st.get("role", "?")) if m.up else "down"
            role_style = {"leader": "bold green", "candidate": "yellow", "down": "bold red"}
            p = progress.get(m.id, {})
            if leader is not None and m.id == leader.id:
                lag_cell = Text("leader", style="green")
                contact = Text("—")
            elif m.id in lags:
                lag_cell = bar(lags[m.id], worst, f"{lags[m.id]}")
                ms = p.get("last_contact_ms")
                contact = Text("—" if ms is None else _ms(int(ms)))
            else:
                lag_cell = Text("?" if last_index else "—", style="dim")
                contact = Text("—")
            if m.up:
                data = Text("current", style="green")
            elif m.seen_at is None:
                data = Text(f"none: {m.error}", style="red")
            else:
                data = Text(f"{_age(now - m.seen_at)} old ({m.error})", style="red")
            rows.append(
                (
                    m.api,
                    [
                        Text(ident, style=dim),
                        Text(m.api, style=dim),
                        Text(role, style=role_style.get(role, dim)),
                        Text(str(st.get("term", "—")), style=dim),
                        Text(str(st.get("commit_index", "—")), style=dim),
                        Text(str(st.get("applied_index", "—")), style=dim),
                        lag_cell,
                        contact,
                        data,
                    ],
                )
            )
        return rows

    # ---- the cluster map -----------------------------------------------------------------

    def _table(self, name: str) -> dict[str, Record]:
        if self.map is None:
            return {}
        table: dict[str, Record] = getattr(self.map, name)
        return table

    def map_age(self, now: float) -> str:
        """'' while the map copy is current; else how old it is and why."""
        if self.map is None:
            return "no map yet" + (f": {self.map_error}" if self.map_error else "")
        if self.map_error and self.map_seen_at is not None:
            return f"data from {_age(now - self.map_seen_at)} ago: {self.map_error}"
        return ""

    def vip_rows(self, wall_ms: int) -> list[tuple[str, list[Text]]]:
        rows = []
        for addr in sorted(self._table("vips")):
            v = self._table("vips")[addr]
            owner = v.get("owner")
            if v.get("releasing"):
                state = Text(f"releasing from {owner}", style="yellow")
            elif owner:
                state = Text("served", style="green")
            else:
                state = Text("unowned", style="bold red")
            since = v.get("since_ms")
            age = "—" if since is None else _age((wall_ms - int(since)) / 1000) + " ago"
            rows.append(
                (
                    addr,
                    [
                        Text(f"{addr}:{v.get('port', 3260)}"),
                        Text(str(owner or "—")),
                        Text(str(v.get("epoch", "—"))),
                        Text(age),
                        state,
                    ],
                )
            )
        return rows

    def node_rows(self) -> list[tuple[str, list[Text]]]:
        counts: dict[str, list[int]] = {}
        for s in self._table("sessions").values():
            c = counts.setdefault(str(s.get("node")), [0, 0])
            c[0 if s.get("state") == "active" else 1] += 1
        most = max([sum(c) for c in counts.values()] + [1])
        vips: dict[str, int] = {}
        for v in self._table("vips").values():
            if v.get("owner"):
                vips[str(v["owner"])] = vips.get(str(v["owner"]), 0) + 1
        rows = []
        for nid in sorted(self._table("nodes")):
            n = self._table("nodes")[nid]
            active, pending = counts.get(nid, [0, 0])
            label = f"{active}+{pending} pending" if pending else f"{active}"
            rows.append(
                (
                    nid,
                    [
                        Text(nid),
                        Text(str(n.get("portal", "—"))),
                        self._lease_cell(n),
                        bar(active + pending, most, label),
                        Text(str(vips.get(nid, 0))),
                        Text("drained", style="yellow") if n.get("drained") else Text("—"),
                    ],
                )
            )
        return rows

    def _lease_cell(self, n: Record) -> Text:
        if not n.get("live"):
            return Text("dead (lease expired)", style="bold red")
        ttl_s = int(n.get("ttl_ms", 0)) / 1000
        left = self.leases.get(int(n.get("lease", 0)))
        if left is None or ttl_s <= 0:
            return Text("live", style="green")
        style = "green" if left > ttl_s / 2 else "yellow"
        return Text(f"live, {left:.1f}/{ttl_s:.1f} s left", style=style)

    def volume_rows(self) -> list[tuple[str, list[Text]]]:
        """Volumes that need attention: not ok, or with a replica not healthy."""
        rows = []
        for name in sorted(self._table("volumes")):
            vol = self._table("volumes")[name]
            reps = [r for r in vol.get("replicas", []) if r.get("state") != RETIRED]
            troubled = [r for r in reps if r.get("state") != HEALTHY]
            state = str(vol.get("state", "?"))  # the map's own word (ok/degraded/unwritable)
            if state == "ok" and not troubled:
                continue
            style = {"degraded": "yellow", "unwritable": "bold red"}.get(state, "")
            detail = ", ".join(f"#{r.get('id')} {r.get('node')} {r.get('state')}" for r in troubled)
            rows.append(
                (
                    name,
                    [
                        Text(name),
                        Text(state, style=style),
                        Text(f"{len(reps) - len(troubled)}/{len(reps)}"),
                        Text(detail or "—"),
                    ],
                )
            )
        return rows

    def event_lines(self, last: int) -> list[Text]:
        return [_event_text(ev) for ev in list(self.events)[-last:]]


def _term(m: MemberView) -> int:
    return int((m.status or {}).get("term", 0))


def bar(value: int, most: int, label: str, width: int = BAR_WIDTH) -> Text:
    """A bar of ``value`` against ``most``, with its label after it."""
    filled = 0 if most <= 0 else round(width * min(value, most) / most)
    t = Text("█" * filled, style="cyan")
    t.append("·" * (width - filled), style="dim")
    t.append(f" {label}")
    return t


def _age(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.0f} h"


def _ms(ms: int) -> str:
    return f"{ms} ms" if ms < 10_000 else _age(ms / 1000)


def _event_text(ev: Event) -> Text:
    t = Text(f"{ev.revision:>8} ", style="dim")
    if ev.kind == "relist":
        t.append("relist  history compacted: the copy was listed again", style="yellow")
        return t
    t.append(f"{ev.kind:<7} ", style="green" if ev.kind == "put" else "red")
    t.append(ev.key, style="bold")
    summary = _summary(ev)
    if summary:
        t.append(f"  {summary}")
    return t


def _summary(ev: Event) -> str:
    """A map record in a few words; any other value, cut short."""
    if ev.kind != "put":
        return ""
    if ev.key.startswith("/coord/map/"):
        try:
            rec = json.loads(ev.value)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            keys = ("owner", "epoch", "releasing", "live", "drained", "state", "node")
            parts = [f"{k}={rec[k]}" for k in keys if k in rec and rec[k] is not None]
            return " ".join(parts)
    v = ev.value.replace("\n", " ")
    return v if len(v) <= 60 else v[:57] + "..."
