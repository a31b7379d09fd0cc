"""``coordctl top``: a live, full-screen view of a coord cluster for incidents.

    coordctl top                      # endpoints as for every coordctl command

The cluster (each member's own role, term and indexes, replication lag as
bars, last contact, down members with the age of their last data), the VIPs,
the target nodes (lease freshness, sessions as bars, drained), the volumes
that need attention, and the stream of changes from a watch. Keys: ``t``
transfers leadership (to the member under the cursor, or the first follower
that answers), ``d`` drains or undrains the node under the cursor, ``m``
moves the VIP under the cursor; each asks for confirmation first.

``TopApp`` takes its model and, optionally, its endpoints: without endpoints
it shows the model as it is (tests feed one); with them it runs a ``Feed``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Label, RichLog, Static

from coord.client import CoordError, UnknownOutcome

from .topfeed import Feed
from .topmodel import TopModel

COLUMNS = {
    "members": (
        "id",
        "api",
        "role",
        "term",
        "commit",
        "applied",
        "lag (entries)",
        "leader's last contact",
        "its data",
    ),
    "nodes": ("node", "portal", "lease", "sessions", "VIPs", "drained"),
    "vips": ("VIP", "owner", "epoch", "since", "state"),
    "volumes": ("volume", "state", "healthy", "replicas not healthy"),
}
TITLES = {
    "members": "Cluster",
    "nodes": "Target nodes",
    "vips": "VIPs",
    "volumes": "Volumes needing attention",
}


class Confirm(ModalScreen[bool]):
    """A yes/no question before an action that changes the cluster."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", variant="warning", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TopApp(App[int]):
    CSS_PATH = "top.tcss"
    TITLE = "coord top"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "transfer", "Transfer leader"),
        Binding("d", "drain", "Drain/undrain node"),
        Binding("m", "move", "Move VIP"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        model: TopModel,
        endpoints: list[str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        period_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.endpoints = endpoints or []
        self.clock = clock
        self.wall_ms = wall_ms
        self.period_s = period_s
        self.feed: Feed | None = None
        self._dirty = True
        self._events_shown = 0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield from self._panel("members")
        with Horizontal():
            with Vertical(id="left"):
                for name in ("nodes", "volumes"):
                    yield from self._panel(name)
            with Vertical(id="right"):
                yield from self._panel("vips")
                yield Label("Events", classes="title")
                yield RichLog(id="events", max_lines=500, wrap=True, markup=False)
        yield Static("", id="status")
        yield Footer()

    def _panel(self, name: str) -> ComposeResult:
        yield Label(TITLES[name], id=f"{name}-title", classes="title")
        table: DataTable[Text] = DataTable(id=name, cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS[name])
        yield table

    def on_mount(self) -> None:
        if self.endpoints:
            self.feed = Feed(self.endpoints, self.model, self.changed, period_s=self.period_s)
            self.run_worker(self.feed.run(), name="feed", exit_on_error=False)
        self.redraw()
        self.set_interval(0.2, self._maybe_redraw)
        self.set_interval(1.0, self.changed)  # ages move even when nothing else does

    # ---- drawing ---------------------------------------------------------------------------

    def changed(self) -> None:
        self._dirty = True

    def _maybe_redraw(self) -> None:
        if self._dirty:
            self.redraw()

    def redraw(self) -> None:
        self._dirty = False
        now = self.clock()
        leader = self.model.leader()
        if leader is not None:
            self.sub_title = f"leader {leader.id} ({leader.api}) · term {self.model.term()}"
        else:
            self.sub_title = f"NO LEADER answers · highest term seen {self.model.term()}"
        self._fill("members", self.model.member_rows(now))
        self._fill("nodes", self.model.node_rows())
        self._fill("vips", self.model.vip_rows(self.wall_ms()))
        volumes = self.model.volume_rows()
        self._fill("volumes", volumes)
        stale = self.model.map_age(now)
        for name in ("nodes", "vips", "volumes"):
            title = TITLES[name]
            if name == "volumes" and self.model.map is not None:
                title += f": {len(volumes)} of {len(self.model.map.volumes)}"
            if stale:
                title += f"  [{stale}]"
            self.query_one(f"#{name}-title", Label).update(Text(title))
        log = self.query_one("#events", RichLog)
        new = self.model.events_total - self._events_shown
        if new > 0:
            for line in self.model.event_lines(min(new, 500)):
                log.write(line)
            self._events_shown = self.model.events_total
        self.query_one("#status", Static).update(self.model.message)

    def _fill(self, name: str, rows: list[tuple[str, list[Text]]]) -> None:
        table: DataTable[Text] = self.query_one(f"#{name}", DataTable)
        keep = self.selected(name)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if keep is not None and keep in {k for k, _ in rows}:
            table.move_cursor(row=table.get_row_index(keep))

    def selected(self, name: str) -> str | None:
        table: DataTable[Text] = self.query_one(f"#{name}", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    # ---- actions ---------------------------------------------------------------------------

    def action_transfer(self) -> None:
        leader = self.model.leader()
        if leader is None:
            self.say("no leader answers: nothing to transfer")
            return
        followers = [m for m in self.model.known() if m.up and m.id not in (0, leader.id)]
        chosen = self.selected("members")
        picked = [m for m in followers if m.api == chosen] or followers
        if not picked:
            self.say("no follower answers: nowhere to transfer leadership")
            return
        to = picked[0]
        feed = self.feed
        self._confirm(
            f"Transfer leadership from member {leader.id} to member {to.id} ({to.api})?",
            lambda: feed.transfer(to.id) if feed else _offline(),
        )

    def action_drain(self) -> None:
        node = self.selected("nodes")
        if node is None or self.model.map is None or node not in self.model.map.nodes:
            self.say("no target node selected (Tab to the node table)")
            return
        drained = bool(self.model.map.nodes[node].get("drained"))
        feed = self.feed
        if drained:
            question = f"Undrain node {node}? It will take VIPs and new logins again."
        else:
            question = (
                f"Drain node {node}? Its VIPs are released and move; new logins go elsewhere."
            )
        self._confirm(question, lambda: feed.drain(node, drained) if feed else _offline())

    def action_move(self) -> None:
        vip = self.selected("vips")
        if vip is None or self.model.map is None or vip not in self.model.map.vips:
            self.say("no VIP selected (Tab to the VIP table)")
            return
        owner = self.model.map.vips[vip].get("owner") or "nobody"
        feed = self.feed
        self._confirm(
            f"Move VIP {vip} away from {owner}? New logins pause until the next owner serves it.",
            lambda: feed.move_vip(vip) if feed else _offline(),
        )

    def _confirm(self, question: str, act: Callable[[], Awaitable[str]]) -> None:
        async def answered(yes: bool | None) -> None:
            if not yes:
                self.say("cancelled")
                return
            self.say("working…")
            try:
                self.say(await act())
            except UnknownOutcome as e:
                self.say(f"outcome unknown (it may or may not have happened): {e.message}")
            except CoordError as e:
                hint = e.details.get("leader")
                self.say(f"failed: {e.code}: {e.message}" + (f" (leader {hint})" if hint else ""))

        self.push_screen(Confirm(question), answered)

    def say(self, message: str) -> None:
        self.model.message = message
        self.changed()


async def _offline() -> str:
    return "no endpoints: this view is not connected"


def run_top(endpoints: list[str]) -> int:
    """Run the view until the operator quits; 0."""
    TopApp(TopModel(), endpoints).run()
    return 0
