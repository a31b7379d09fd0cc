"""The real-process harness (sim/real): its proxy, its schedule, its checks, and real runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest

from coord.client import Client, UnknownOutcome
from sim.history import History, OpKind, Outcome
from sim.real.checks import judge
from sim.real.cli import UsageError, parse_seconds
from sim.real.harness import RealParams, run_real
from sim.real.nemesis import MUST, schedule
from sim.real.proxy import OPEN, Flow, Proxy
from sim.real.report import full_report

# ---- the proxy, on loopback ---------------------------------------------------------------


class Sink:
    """A loopback server that keeps what each connection sends and can answer."""

    def __init__(self) -> None:
        self.got = bytearray()
        self.writers: list[asyncio.StreamWriter] = []
        self.connected = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.writers.append(w)
        self.connected.set()
        try:
            while data := await r.read(4096):
                self.got += data
        except ConnectionError:
            pass

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        assert self.server is not None
        self.server.close()


async def _until(cond: object, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        await asyncio.sleep(0.01)
    return False


async def _read(r: asyncio.StreamReader, n: int, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(r.readexactly(n), timeout)
    except TimeoutError:
        return b""


@pytest.fixture
async def link() -> object:
    sink = Sink()
    port = await sink.start()
    proxy = Proxy(("127.0.0.1", port), name="test")
    await proxy.start()
    yield sink, proxy
    await proxy.close()
    await sink.close()


async def test_proxy_passes_bytes_both_ways(link: tuple[Sink, Proxy]) -> None:
    sink, proxy = link
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    w.write(b"hello")
    await w.drain()
    assert await _until(lambda: bytes(sink.got) == b"hello")
    sink.writers[0].write(b"world")
    assert await _read(r, 5, 2.0) == b"world"
    w.close()


async def test_proxy_cut_both_ways_then_heal(link: tuple[Sink, Proxy]) -> None:
    sink, proxy = link
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    w.write(b"a")
    await w.drain()
    assert await _until(lambda: bytes(sink.got) == b"a")
    proxy.cut()  # stall, both directions
    w.write(b"b")
    await w.drain()
    sink.writers[0].write(b"x")
    assert not await _until(lambda: len(sink.got) > 1, 0.3)
    assert await _read(r, 1, 0.3) == b""
    # A connection dialled during the cut reaches nobody.
    _r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
    w2.write(b"c")
    await w2.drain()
    await asyncio.sleep(0.2)
    assert len(sink.writers) == 1
    proxy.heal()  # held bytes arrive late, as TCP would deliver them after the heal
    assert await _read(r, 1, 2.0) == b"x"
    assert await _until(lambda: b"b" in sink.got and b"c" in sink.got)
    assert len(sink.writers) == 2
    w.close()
    w2.close()


async def test_proxy_one_way(link: tuple[Sink, Proxy]) -> None:
    sink, proxy = link
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    w.write(b"1")
    await w.drain()
    assert await _until(lambda: bytes(sink.got) == b"1")
    proxy.set(forward=OPEN, backward=Flow(blocked=True))
    w.write(b"2")
    await w.drain()
    sink.writers[0].write(b"back")
    assert await _until(lambda: bytes(sink.got) == b"12")  # from A, bytes reach B
    assert await _read(r, 4, 0.3) == b""  # but not back
    proxy.set(forward=Flow(blocked=True), backward=OPEN)  # the other way round
    w.write(b"3")
    await w.drain()
    assert await _read(r, 4, 2.0) == b"back"
    assert not await _until(lambda: b"3" in sink.got, 0.3)
    proxy.heal()
    assert await _until(lambda: bytes(sink.got) == b"123")
    w.close()


async def test_proxy_reset_mode_refuses_then_heals(link: tuple[Sink, Proxy]) -> None:
    sink, proxy = link
    r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    w.write(b"a")
    await w.drain()
    assert await _until(lambda: bytes(sink.got) == b"a")
    proxy.cut(mode="reset")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(r.readexactly(1), 2.0)
    r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(r2.readexactly(1), 2.0)
    assert proxy.stats.resets >= 1 and proxy.stats.refused >= 1
    proxy.heal()
    _r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)
    w3.write(b"z")
    await w3.drain()
    assert await _until(lambda: b"z" in sink.got)
    for wr in (w, w2, w3):
        wr.close()


async def test_proxy_delay_keeps_order(link: tuple[Sink, Proxy]) -> None:
    sink, proxy = link
    proxy.set(forward=Flow(delay_s=0.2, jitter_s=0.05), backward=OPEN)
    _r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
    t = time.monotonic()
    for k in range(5):
        w.write(str(k).encode())
        await w.drain()
        await asyncio.sleep(0.01)
    assert await _until(lambda: len(sink.got) == 5)
    assert time.monotonic() - t >= 0.2
    assert bytes(sink.got) == b"01234"
    w.close()


def test_proxy_refuses_non_loopback() -> None:
    with pytest.raises(ValueError):
        Proxy(("192.0.2.1", 80))  # RFC 5737 documentation range: refused, never dialled


# ---- the schedule ---------------------------------------------------------------------


def test_schedule_is_drawn_from_the_seed() -> None:
    a = schedule(7, 3, 25.0)
    assert a == schedule(7, 3, 25.0)
    assert a != schedule(8, 3, 25.0)
    assert {f.kind for f in a[: len(MUST)]} == set(MUST)  # partition, kill, pause first
    assert all(f.at_s + f.hold_s <= 25.0 - 3.0 for f in a)
    long = schedule(1, 5, 1800.0)
    assert len(long) > 100
    assert {f.kind for f in long} >= {"partition", "oneway", "delay", "lossy", "kill", "pause"}


def test_overlapping_schedule_has_two_lanes() -> None:
    faults = schedule(3, 5, 40.0, overlap=True)
    assert faults == schedule(3, 5, 40.0, overlap=True)
    net = [f for f in faults if f.lane == "net"]
    proc = [f for f in faults if f.lane == "proc"]
    assert net and proc and len(net) + len(proc) == len(faults)
    assert {f.kind for f in net} <= {"partition", "oneway", "delay", "lossy"}
    assert net[0].kind == "partition" and {proc[0].kind, proc[1].kind} == {"kill", "pause"}
    for lane in (net, proc):  # one at a time within a lane
        assert all(a.at_s + a.hold_s < b.at_s for a, b in itertools.pairwise(lane))


def test_durations() -> None:
    assert parse_seconds("20s") == 20 and parse_seconds("30m") == 1800 and parse_seconds("90") == 90
    with pytest.raises(UsageError):
        parse_seconds("soon")
    with pytest.raises(UsageError):
        parse_seconds("1s")


# ---- the checks, on fabricated histories --------------------------------------------


def _ev(rev: int, key: str, value: str) -> dict[str, object]:
    return {"type": "put", "key": key, "revision": rev, "kv": {"key": key, "value": value}}


def test_lost_acknowledged_write_is_caught() -> None:
    h = History()
    w1 = h.invoke(1, OpKind.WRITE, "real/k0", "1000001", 0)
    h.complete(w1, Outcome.OK, 10)
    w2 = h.invoke(1, OpKind.WRITE, "real/k0", "1000002", 20)
    h.complete(w2, Outcome.OK, 30)
    # The store acknowledged both (revisions 1 and 2), but after the crash its history
    # (every node agreeing) holds only the first: the second acknowledged write is gone.
    events = [_ev(1, "real/k0", "1000001")]
    nodes = {1: (events, 0, True), 2: (list(events), 0, True)}
    j = judge(h, {w1.id: 1, w2.id: 2}, nodes, [], 2)
    kinds = [v.kind for v in j.violations]
    assert "lost-write" in kinds
    assert any("'1000002'" in v.detail and "nowhere" in v.detail for v in j.violations)
    # Same history with the write there: clean.
    events.append(_ev(2, "real/k0", "1000002"))
    nodes = {1: (events, 0, True)}
    assert judge(h, {w1.id: 1, w2.id: 2}, nodes, [], 2).violations == []


def test_failed_write_applied_and_divergence_are_caught() -> None:
    h = History()
    w = h.invoke(1, OpKind.WRITE, "real/k0", "1000001", 0)
    h.complete(w, Outcome.FAIL, 10)  # "definitely not applied"...
    nodes = {
        1: ([_ev(1, "real/k0", "1000001")], 0, True),  # ...but it is there
        2: ([_ev(1, "real/k0", "2000001")], 0, True),  # and n2 applied something else
    }
    kinds = {v.kind for v in judge(h, {}, nodes, [], 1).violations}
    assert {"failed-write-applied", "watch-history"} <= kinds


# ---- what the harness found ------------------------------------------------------------


async def test_client_put_to_a_node_that_dies_is_not_called_unavailable() -> None:
    got: list[bytes] = []
    node = await _dying_node(got)  # takes the PUT, then dies as a node killed -9 does
    port = node.sockets[0].getsockname()[1]
    async with Client([f"127.0.0.1:{port}"], attempts=1) as c:
        with pytest.raises(UnknownOutcome):
            await c.put("k", "v")
    assert len(got) == 1


async def _dying_node(got: list[bytes]) -> asyncio.Server:
    """A node that takes one request, then dies: no answer, nothing listening."""
    box: list[asyncio.Server] = []

    async def take(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        got.append(await r.readexactly(length))
        box[0].close()
        w.transport.abort()

    box.append(await asyncio.start_server(take, "127.0.0.1", 0))
    return box[0]


async def test_follower_relay_of_a_put_to_a_leader_that_dies_is_not_unavailable() -> None:
    import types

    import aiohttp
    from aiohttp import web

    from coord.server import api

    got: list[bytes] = []
    leader = await _dying_node(got)
    lport = leader.sockets[0].getsockname()[1]

    async def relay(request: web.Request) -> web.Response:
        return await api._forward(request, f"127.0.0.1:{lport}")

    app = web.Application()
    app[api.NODE] = types.SimpleNamespace(id=2)
    app[api.CONFIG] = types.SimpleNamespace(request_timeout_s=5.0)

    async def http_client(app: web.Application) -> object:
        async with api.relay_session() as session:  # as make_app does
            app[api.HTTP] = session
            yield

    app.cleanup_ctx.append(http_client)
    app.router.add_put("/v1/kv/{key:.+}", relay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.put(f"http://127.0.0.1:{port}/v1/kv/k", json={"value": "v"}) as r,
        ):
            status = r.status
    finally:
        await runner.cleanup()
    assert len(got) == 1  # the leader took the write...
    assert status == 504  # ...so its outcome is unknown, not "unavailable" (503)


# ---- real runs ------------------------------------------------------------------------


def test_real_run_partition_kill_pause(tmp_path: Path) -> None:
    """About 20 s of load on 3 real processes: partitions, kill -9 + restart, SIGSTOP.

    Clients know every node, and no fault takes a majority down for long. Snapshots are
    taken every 50 entries, so a node restarted after a kill catches up by one; every
    node's peer traffic goes through its proxies all along (its --dial routes).
    """
    p = RealParams(
        nodes=3,
        duration_s=18.0,
        seed=11,
        clients=4,
        bind="all",
        kinds=("partition", "kill", "pause", "oneway", "delay", "lossy"),
        keep=tmp_path,
    )
    res = asyncio.run(run_real(p, lambda _: None))
    text = full_report(res)
    kinds = {f.kind for f in res.faults[: len(res.played)]}
    assert {"partition", "kill", "pause"} <= kinds, text
    assert res.ok, text
    assert not [n for n in res.judgement.notes if "routing" in n], text
    assert res.history.counts()["ok"] > 50, text
    assert res.judgement.linearizability.linearizable is True, text
    ck = res.judgement.checked
    assert ck["acknowledged_writes"] > 0 and ck["history_nodes"] == [1, 2, 3], text
    assert all(w["events"] > 0 for w in ck["watchers"]), text
    assert res.final_revision > 0 and res.recovery_s is not None
    assert "kill -9" in text and "SIGSTOP" in text and "linearizable: yes" in text
    assert any(-9 in exits for exits in res.stats["exits"].values())  # somebody was killed
    doc = json.loads(json.dumps(res.to_json()))  # what --json writes
    assert doc["verdict"] == "ok" and doc["played"] and doc["history"]
    assert doc["params"]["bind"] == "all" and doc["checked"]["acknowledged_writes"] > 0


def test_real_run_catches_amnesia(tmp_path: Path) -> None:
    """Wiping a majority's data at a crash (--break amnesia) must not go unnoticed."""
    p = RealParams(
        nodes=3,
        duration_s=8.0,
        seed=5,
        clients=3,
        kinds=("kill",),
        broken="amnesia",
        keep=tmp_path,
        recover_s=8.0,  # a broken cluster may never agree again: do not wait long for it
        final_read_s=5.0,
        catch_up_s=4.0,
    )
    res = asyncio.run(run_real(p, lambda _: None))
    assert any("amnesia" in x["did"] for x in res.played)
    assert not res.ok, full_report(res)
    kinds = {v.kind for v in res.judgement.violations}
    assert kinds & {"lost-write", "linearizability", "watch-history", "node-exited"}, kinds
