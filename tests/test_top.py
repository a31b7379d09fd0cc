"""``coordctl top``: the model's rows, a snapshot of the main screen, and the live view.

The live test drives the real app with textual's pilot against a real local
cluster: the screen shows the leader, a VIP moved with the ``m`` key (and the
confirmation), a node drained with ``d``, leadership moved with ``t``, and a
member killed with -9 shown as down with the age of its last data while the
new leader appears.

The snapshot is the main screen built from fixed facts and clocks, stored as
SVG in tests/snapshots/. After an intended change of the screen, rewrite it
with ``COORD_REWRITE_SNAPSHOTS=1 pytest tests/test_top.py`` and review the diff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.widgets import DataTable, RichLog

from coord.client import Client
from coord.ctl.top import TopApp
from coord.ctl.topmodel import TopModel
from tests.procs import Cluster, running

SNAPSHOTS = Path(__file__).parent / "snapshots"
T0 = 1_000.0  # the fixed monotonic clock of the model tests
WALL_MS = 1_800_000_000_000


def status(mid: int, role: str, term: int, commit: int, members: list[dict[str, Any]]) -> Any:
    return {
        "id": mid,
        "role": role,
        "term": term,
        "commit_index": commit,
        "applied_index": commit,
        "last_index": commit,
        "members": members,
    }


def member(mid: int, lag: int | None = None, contact_ms: int | None = None) -> dict[str, Any]:
    return {
        "id": mid,
        "api": f"127.0.0.1:710{mid}",
        "lag": lag,
        "match_index": None if lag is None else 100 - lag,
        "last_contact_ms": contact_ms,
    }


def fixed_model() -> TopModel:
    """Three members (3 is down since 42 s), two target nodes, two VIPs, a degraded volume."""
    m = TopModel()
    everyone = [member(1, 0, 50), member(2, 0, 0), member(3, 40, 42_000)]
    m.answered("127.0.0.1:7101", status(1, "follower", 7, 100, everyone), T0)
    m.answered("127.0.0.1:7102", status(2, "leader", 7, 100, everyone), T0)
    m.answered("127.0.0.1:7103", status(3, "follower", 6, 60, everyone), T0 - 42)
    m.failed("127.0.0.1:7103", "refused")
    nodes = {
        "t1": {"portal": "127.0.3.21:3260", "live": True, "lease": 11, "ttl_ms": 2000},
        "t2": {"portal": "127.0.3.22:3260", "live": True, "lease": 12, "ttl_ms": 2000},
        "t3": {"portal": "127.0.3.23:3260", "live": False, "lease": 13, "ttl_ms": 2000},
    }
    nodes["t2"]["drained"] = True
    vips = {
        "127.0.10.1": {"port": 3260, "owner": "t1", "epoch": 9, "since_ms": WALL_MS - 65_000},
        "127.0.10.2": {"port": 3260, "owner": None, "epoch": 4, "since_ms": WALL_MS - 3_000},
    }
    sessions = {
        f"v{i}/iqn.2026-01.io.x:{i}": {"node": "t1", "state": "active"} for i in range(6)
    } | {"v9/iqn.2026-01.io.x:9": {"node": "t2", "state": "pending"}}
    volumes = {
        "ok-vol": {
            "state": "ok",
            "replicas": [{"id": 1, "node": "t1", "state": "healthy", "role": "data"}],
        },
        "db": {
            "state": "degraded",
            "replicas": [
                {"id": 1, "node": "t1", "state": "healthy", "role": "data"},
                {"id": 2, "node": "t3", "state": "accused", "role": "data"},
            ],
        },
    }
    m.map = SimpleNamespace(nodes=nodes, vips=vips, sessions=sessions, volumes=volumes)
    m.map_seen_at = T0
    m.leases = {11: 1.6, 12: 0.4}
    for rev, key, value in [
        (41, "/coord/map/vips/127.0.10.1", '{"owner":"t1","epoch":9}'),
        (42, "config/feature", "on"),
    ]:
        m.event({"type": "put", "revision": rev, "key": key, "kv": {"value": value}})
    m.event({"type": "delete", "revision": 43, "key": "config/old"})
    return m


def cells(rows: list[tuple[str, list[Any]]]) -> dict[str, list[str]]:
    return {key: [str(c) for c in row] for key, row in rows}


# ---- the model ------------------------------------------------------------------------------


def test_members_leader_lag_and_a_down_member_with_its_age() -> None:
    m = fixed_model()
    leader = m.leader()
    assert leader is not None and leader.id == 2
    rows = cells(m.member_rows(T0 + 3))
    assert rows["127.0.0.1:7102"][2] == "leader"
    assert rows["127.0.0.1:7101"][6].endswith(" 0")
    down = rows["127.0.0.1:7103"]
    assert down[2] == "down"
    assert down[3] == "6"  # its last known term, kept (dimmed), not a current figure
    assert down[8] == "45 s old (refused)"
    assert down[6].endswith(" 40") and down[7] == "42 s"


def test_leader_is_the_one_of_the_highest_term() -> None:
    m = TopModel()
    m.answered("a:1", status(1, "leader", 3, 10, []), T0)  # an old leader, cut off
    m.answered("b:1", status(2, "leader", 4, 12, []), T0)
    leader = m.leader()
    assert leader is not None and leader.id == 2
    m.failed("b:1", "no answer")
    leader = m.leader()
    assert leader is not None and leader.id == 1  # all that is left: shown as it says
    assert m.term() == 4


def test_an_endpoint_that_never_answered_is_down_with_the_reason() -> None:
    m = TopModel()
    m.failed("127.0.0.1:9", "refused")
    assert cells(m.member_rows(T0))["127.0.0.1:9"][2:] == ["down", *["—"] * 5, "none: refused"]
    assert m.leader() is None
    assert m.map_age(T0) == "no map yet"


def test_map_rows() -> None:
    m = fixed_model()
    vips = cells(m.vip_rows(WALL_MS))
    assert vips["127.0.10.1"][1:] == ["t1", "9", "65 s ago", "served"]
    assert vips["127.0.10.2"][1] == "—" and vips["127.0.10.2"][4] == "unowned"
    nodes = cells(m.node_rows())
    assert nodes["t1"][2] == "live, 1.6/2.0 s left"
    assert nodes["t1"][3].endswith(" 6") and nodes["t1"][4] == "1"
    assert nodes["t2"][3].endswith(" 0+1 pending") and nodes["t2"][5] == "drained"
    assert nodes["t3"][2] == "dead (lease expired)"
    vols = cells(m.volume_rows())
    assert list(vols) == ["db"]  # ok-vol needs no attention
    assert vols["db"][1:] == ["degraded", "1/2", "#2 t3 accused"]


def test_events_are_summarised() -> None:
    lines = [str(t) for t in fixed_model().event_lines(10)]
    assert "owner=t1 epoch=9" in lines[0]
    assert lines[1].split()[1:] == ["put", "config/feature", "on"]
    assert lines[2].split()[1:] == ["delete", "config/old"]


# ---- the main screen, as a snapshot -----------------------------------------------------------


async def test_main_screen_snapshot() -> None:
    app = TopApp(fixed_model(), clock=lambda: T0 + 3, wall_ms=lambda: WALL_MS)
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.pause()
        app.redraw()
        await pilot.pause()
        svg = app.export_screenshot()
    path = SNAPSHOTS / "top_main.svg"
    if os.environ.get("COORD_REWRITE_SNAPSHOTS") or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(svg)
    assert svg == path.read_text(), "the main screen changed: rewrite the snapshot and review it"


async def test_actions_need_a_selection_and_a_confirmation() -> None:
    app = TopApp(fixed_model(), clock=lambda: T0, wall_ms=lambda: WALL_MS)
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.pause()
        await pilot.press("m")  # the VIP table is not focused, but a VIP row is selected
        await pilot.pause()
        assert type(app.screen).__name__ == "Confirm"
        await pilot.press("n")
        await pilot.pause()
        assert app.model.message == "cancelled"
        await pilot.press("d", "y")
        await pilot.pause()
        assert "not connected" in app.model.message  # no endpoints: nothing was sent


# ---- live, against a real cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("top")) as c:
        yield c


@contextlib.asynccontextmanager
async def target_nodes(c: Client, names: list[str]) -> AsyncIterator[None]:
    """Registered nodes kept live by heartbeats, as agents would."""
    leases = {}
    disks = [{"id": "d1", "size_bytes": 1 << 40, "tier": "standard"}]
    for i, name in enumerate(names):
        leases[name] = (await c.register_node(name, f"127.0.3.{30 + i}:3260", disks, 2000))["lease"]

    async def beat() -> None:
        while True:
            for name, lease in leases.items():
                with contextlib.suppress(Exception):
                    await c.heartbeat(name, lease)
            await asyncio.sleep(0.3)

    task = asyncio.get_running_loop().create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(pilot: Any, what: str, check: Any, timeout: float = 15.0) -> None:
    """Until ``check()`` holds on the screen (bounded); else fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        pilot.app.redraw()
        await pilot.pause()
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the screen never showed {what}: {pilot.app.model.message!r}")


def row(app: TopApp, table: str, key: str) -> list[str]:
    t: DataTable[Any] = app.query_one(f"#{table}", DataTable)
    if key not in {k.value for k in t.rows}:
        return []
    return [str(c) for c in t.get_row(key)]


def roles(app: TopApp) -> dict[str, str]:
    t: DataTable[Any] = app.query_one("#members", DataTable)
    return {str(k.value): str(t.get_row(k)[2]) for k in t.rows}


async def test_live_view_of_a_real_cluster(cluster: Cluster) -> None:
    first = cluster.wait_ready()
    async with Client(cluster.endpoints(), timeout=3.0) as c, target_nodes(c, ["ta", "tb"]):
        vip = "127.0.10.77"
        await c.create_vip(vip)
        app = TopApp(TopModel(), cluster.endpoints(), period_s=0.3)
        async with app.run_test(size=(160, 45)) as pilot:
            api = cluster.apis[first]
            await until(pilot, "the leader", lambda: roles(app).get(api) == "leader")
            assert f"leader {first}" in app.sub_title
            await until(pilot, "the VIP", lambda: row(app, "vips", vip)[4:] == ["served"])
            owner = row(app, "vips", vip)[1]
            other = "tb" if owner == "ta" else "ta"

            # m on the VIP row, then y: released, then served by the other node.
            app.query_one("#vips", DataTable).focus()
            await pilot.press("m", "y")
            await until(pilot, "the VIP moved", lambda: row(app, "vips", vip)[1] == other)
            assert "released for a move" in app.model.message
            await until(pilot, "the VIP's events", lambda: _logged(app, f"vips/{vip}"))

            # d on the node row, then y: drained (and its VIP goes).
            nodes: DataTable[Any] = app.query_one("#nodes", DataTable)
            nodes.focus()
            nodes.move_cursor(row=nodes.get_row_index(other))
            await pilot.press("d", "y")
            await until(pilot, "the drain", lambda: row(app, "nodes", other)[5] == "drained")
            await pilot.press("d", "y")  # undrain
            await until(pilot, "the undrain", lambda: row(app, "nodes", other)[5] == "—")

            # t: leadership to the follower under the cursor.
            members: DataTable[Any] = app.query_one("#members", DataTable)
            members.focus()
            to = next(i for i in sorted(cluster.apis) if i != first)
            members.move_cursor(row=members.get_row_index(cluster.apis[to]))
            await pilot.press("t", "y")
            await until(pilot, "the transfer", lambda: roles(app).get(cluster.apis[to]) == "leader")

            # kill -9 the leader: shown as down with the age of its data; a new leader.
            cluster.kill9(to)
            await until(
                pilot,
                "the killed member as down",
                lambda: row(app, "members", cluster.apis[to])[8].endswith(" old (refused)"),
            )
            await until(
                pilot,
                "a new leader",
                lambda: any(r == "leader" and a != cluster.apis[to] for a, r in roles(app).items()),
            )
            assert row(app, "members", cluster.apis[to])[2] == "down"
        cluster.start(to)
        cluster.wait_ready()


def _logged(app: TopApp, text: str) -> bool:
    log = app.query_one("#events", RichLog)
    return any(text in line.text for line in log.lines)
