"""The iSCSI portal: discovery, redirects, refusals, bad input, bounds -- and the real tools.

The first half runs the portal against a fake Directory and talks to it with
the test initiator (tests/iscsi_initiator.py) or raw PDUs. The second half
starts real tgtds on loopback addresses and drives the portal with libiscsi's
own tools (iscsi-inq, iscsi-readcapacity16, iscsi-ls) and with the test
initiator writing and reading data through the redirect.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from target.backing import ensure_backing
from target.iscsi import (
    RESERVED_TAG,
    LoginRequest,
    LoginResponse,
    NopIn,
    NopOut,
    Reject,
    ScsiCommand,
    Stage,
    TextRequest,
    TextResponse,
    encode,
    encode_text,
    parse_pairs,
    parse_text,
)
from target.portal import Portal, Unavailable, UnknownTarget
from target.tgt import Tgtd, TgtError

from .iscsi_initiator import Connection, ConnectionLost, LoginFailed, Options, Session, discover
from .tgtd_fixture import free_loopback, skip_reason

IQN_A = "iqn.2026-01.test.coord:vol-a"
IQN_B = "iqn.2026-01.test.coord:vol-b"
INITIATOR = "iqn.2026-01.test.coord:host-1"


class FakeDirectory:
    """``routes``: IQN -> an address, an exception to raise, or "hang"."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.calls: list[tuple[str, str]] = []

    def targets(self) -> list[str]:
        return sorted(self.routes)

    async def assign(self, iqn: str, initiator: str) -> str:
        self.calls.append((iqn, initiator))
        route = self.routes.get(iqn)
        if route is None:
            raise UnknownTarget(iqn)
        if route == "hang":
            await asyncio.sleep(3600)
        if isinstance(route, BaseException):
            raise route
        return str(route)


PortalFactory = Callable[..., Awaitable[Portal]]


@pytest.fixture
async def make_portal() -> AsyncIterator[PortalFactory]:
    portals: list[Portal] = []

    async def make(directory: FakeDirectory, host: str = "127.0.0.1", **kw: Any) -> Portal:
        portal = Portal(directory, **kw)
        await portal.start(host, 0)
        portals.append(portal)
        return portal

    yield make
    for p in portals:
        await p.stop()
        assert p.stats.internal_errors == 0
        assert p.stats.active == 0


def login_keys(**extra: str) -> list[tuple[str, str]]:
    keys = {"InitiatorName": INITIATOR, "TargetName": IQN_A, "SessionType": "Normal"}
    keys.update(extra)
    return [(k, v) for k, v in keys.items() if v != "-"]


async def raw_login(
    address: str, keys: list[tuple[str, str]], **fields: Any
) -> tuple[LoginResponse, Connection]:
    conn = await Connection.open(address, timeout_s=5.0)
    fields = {"transit": True, "csg": Stage.OPERATIONAL, "nsg": Stage.FULL_FEATURE} | fields
    try:
        await conn.send(
            LoginRequest(itt=0x1234, isid=b"\x80abc\0\0", data=encode_text(keys), **fields)
        )
        resp = await conn.recv()
    except BaseException:
        await conn.close()
        raise
    assert isinstance(resp, LoginResponse)
    assert resp.itt == 0x1234
    return resp, conn


async def settled(portal: Portal) -> Portal:
    """The portal, once every connection's handler is done (bounded wait)."""
    for _ in range(200):
        if portal.stats.active == 0:
            break
        await asyncio.sleep(0.01)
    return portal


async def assert_closed(conn: Connection) -> None:
    assert await conn.recv_or_eof() is None
    await conn.close()


# ---- discovery -------------------------------------------------------------------


async def test_discovery_announces_every_target_at_the_portal(make_portal: PortalFactory) -> None:
    portal = await make_portal(FakeDirectory({IQN_B: "x:1", IQN_A: "y:2"}), tpgt=7)
    expected = [(IQN_A, f"{portal.address},7"), (IQN_B, f"{portal.address},7")]
    assert await discover(portal.address) == expected
    # The security stage first (CSG=0, AuthMethod=None), then the operational one.
    assert await discover(portal.address, options=Options(security_stage=True)) == expected
    assert (await settled(portal)).stats.snapshot()["discovery"] == 2


async def test_discovery_answers_in_pieces_and_pings(make_portal: PortalFactory) -> None:
    names = {f"iqn.2026-01.test.coord:{'v' * 40}-{i:04d}": "x:1" for i in range(300)}
    portal = await make_portal(FakeDirectory(names))
    async with await Session.discovery(
        portal.address, options=Options(max_recv_data_segment_length=512)
    ) as s:
        await s.conn.send(NopOut(itt=77, data=b"ping"))
        pong = await s.conn.recv()
        assert isinstance(pong, NopIn) and pong.itt == 77 and pong.data == b"ping"
        # By hand: the answer comes 512 bytes at a time, each asked for by its TTT.
        text, pieces, ttt = bytearray(), 0, RESERVED_TAG
        request = b"SendTargets=All\0"
        for _ in range(1000):
            await s.conn.send(TextRequest(immediate=True, itt=5, ttt=ttt, data=request))
            resp = await s.conn.recv()
            assert isinstance(resp, TextResponse) and resp.itt == 5
            assert len(resp.data) <= 512 and resp.cont == (not resp.final)
            text += resp.data
            pieces += 1
            if resp.final:
                break
            ttt, request = resp.ttt, b""
        assert pieces > 10
        pairs = parse_pairs(bytes(text), max_pairs=1000)
        by_hand = [v for k, v in pairs if k == "TargetName"]
        by_helper = [v for k, v in await s.send_targets() if k == "TargetName"]
    assert by_hand == by_helper == sorted(names)


class BrokenListing(FakeDirectory):
    def targets(self) -> list[str]:
        if self.routes:
            return ["iqn.ok:1", "bad name", "x\0y", 7, "iqn.ok:2"]  # type: ignore[list-item]
        raise RuntimeError("the directory's listing is broken")


async def test_a_broken_listing_announces_what_it_can(make_portal: PortalFactory) -> None:
    directory = BrokenListing({IQN_A: "x:1"})
    portal = await make_portal(directory)
    assert [n for n, _ in await discover(portal.address)] == ["iqn.ok:1", "iqn.ok:2"]
    directory.routes.clear()
    assert await discover(portal.address) == []


# ---- normal logins: redirect or refuse --------------------------------------------------


async def test_normal_login_is_redirected_then_closed(make_portal: PortalFactory) -> None:
    directory = FakeDirectory({IQN_A: "10.1.2.3:3260"})
    portal = await make_portal(directory, tpgt=1)
    resp, conn = await raw_login(portal.address, login_keys())
    assert resp.status == 0x0101
    assert parse_text(resp.data) == {"TargetAddress": "10.1.2.3:3260,1"}
    await assert_closed(conn)
    # SessionType absent means Normal; the security stage works too.
    resp, conn = await raw_login(
        portal.address,
        [*login_keys(SessionType="-"), ("AuthMethod", "None")],
        csg=Stage.SECURITY,
        nsg=Stage.OPERATIONAL,
    )
    assert resp.status == 0x0101
    await assert_closed(conn)
    assert directory.calls == [(IQN_A, INITIATOR)] * 2
    assert (await settled(portal)).stats.redirected == 2


async def test_redirect_loop_ends(make_portal: PortalFactory) -> None:
    directory = FakeDirectory({})
    portal = await make_portal(directory)
    directory.routes[IQN_A] = portal.address  # back to itself, forever
    with pytest.raises(LoginFailed) as e:
        await Session.login(portal.address, IQN_A, options=Options(max_hops=5))
    assert e.value.hops == [portal.address] * 6
    assert (await settled(portal)).stats.redirected == 6


@pytest.mark.parametrize(
    ("route", "status", "reason"),
    [
        (None, 0x0203, "not_found"),
        (Unavailable("all nodes down"), 0x0301, "unavailable"),
        ("hang", 0x0301, "assign_timeout"),
        (RuntimeError("a bug in the directory"), 0x0300, "target_error"),
        ("not an address", 0x0300, "target_error"),
        ("10.0.0.1:99999", 0x0300, "target_error"),
    ],
)
async def test_refusals(make_portal: PortalFactory, route: Any, status: int, reason: str) -> None:
    routes = {IQN_B: "x:1"} if route is None else {IQN_A: route}
    portal = await make_portal(FakeDirectory(routes), assign_timeout_s=0.3)
    started = time.monotonic()
    resp, conn = await raw_login(portal.address, login_keys())
    assert time.monotonic() - started < 2.0
    assert resp.status == status and not resp.transit and resp.tsih == 0
    await assert_closed(conn)
    assert (await settled(portal)).stats.snapshot()[f"refused.{reason}"] == 1


@pytest.mark.parametrize(
    ("keys", "fields", "status"),
    [
        (login_keys(InitiatorName="-"), {}, 0x0207),
        (login_keys(TargetName="-"), {}, 0x0207),
        (login_keys(SessionType="Boot"), {}, 0x0209),
        (login_keys(InitiatorName="has space"), {}, 0x0200),
        (login_keys(), {"version_min": 1, "version_max": 1}, 0x0205),
        (login_keys(), {"tsih": 5}, 0x020A),
        (login_keys(TargetName="-", SessionType="Discovery", HeaderDigest="CRC32C"), {}, 0x0200),
        (
            login_keys(TargetName="-", SessionType="Discovery", AuthMethod="CHAP"),
            {"csg": Stage.SECURITY, "nsg": Stage.OPERATIONAL},
            0x0201,
        ),
        (login_keys(TargetName="-", SessionType="Discovery", MaxBurstLength="1"), {}, 0x0200),
    ],
)
async def test_bad_login_parameters(
    make_portal: PortalFactory, keys: list[tuple[str, str]], fields: dict[str, Any], status: int
) -> None:
    directory = FakeDirectory({IQN_A: "10.1.2.3:3260"})
    portal = await make_portal(directory)
    resp, conn = await raw_login(portal.address, keys, **fields)
    assert resp.status == status
    await assert_closed(conn)
    assert directory.calls == []


# ---- bad input: refused and closed, nobody else affected -----------------------------


def _oversize_header() -> bytes:
    raw = bytearray(
        encode(LoginRequest(transit=True, csg=Stage.OPERATIONAL, nsg=Stage.FULL_FEATURE))
    )
    raw[5:8] = (0xFFFFFF).to_bytes(3, "big")
    return bytes(raw)


BAD_INPUT = {
    "truncated header": encode(LoginRequest())[:20],
    "truncated data": encode(LoginRequest(data=encode_text(login_keys())))[:60],
    "oversize data segment": _oversize_header(),
    "unknown opcode": bytes([0x3E]) + bytes(47),
    "a target's PDU": encode(NopIn(itt=1)),
    "http": b"GET / HTTP/1.1\r\nHost: portal\r\n\r\n",
    "bad text": encode(LoginRequest(data=b"InitiatorName\0")),
    "not a login": encode(NopOut(itt=1)),
}


async def test_bad_input_during_login(make_portal: PortalFactory) -> None:
    portal = await make_portal(FakeDirectory({IQN_A: "x:1"}), login_timeout_s=3.0)
    bystander = await Session.discovery(portal.address)
    for name, raw in BAD_INPUT.items():
        conn = await Connection.open(portal.address)
        await conn.send_raw(raw)
        conn.writer.write_eof()
        resp = await conn.recv()
        assert isinstance(resp, LoginResponse), name
        assert resp.status >> 8 == 2, name
        await assert_closed(conn)
        assert (await bystander.send_targets())[0] == ("TargetName", IQN_A)
    await bystander.logout()
    stats = (await settled(portal)).stats.snapshot()
    assert stats["refused"] == len(BAD_INPUT)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (bytes([0x3E]) + bytes(47), 0x05),  # unknown opcode
        (encode(ScsiCommand(read=True, edtl=96, cdb=bytes([0x12]) + bytes(15))), 0x05),
        (encode(LoginRequest()), 0x04),
        (encode(TextRequest(ttt=99)), 0x09),  # continues nothing
        (_oversize_header(), 0x04),
        (encode(TextRequest(immediate=True, data=b"SendTargets")), 0x04),  # bad text
    ],
)
async def test_bad_input_after_login_is_rejected(
    make_portal: PortalFactory, raw: bytes, reason: int
) -> None:
    portal = await make_portal(FakeDirectory({IQN_A: "x:1"}))
    bystander = await Session.discovery(portal.address)
    victim = await Session.discovery(portal.address)
    await victim.conn.send_raw(raw)
    reject = await victim.conn.recv()
    assert isinstance(reject, Reject) and reject.reason == reason
    assert reject.data == raw[:48]
    await assert_closed(victim.conn)
    assert await bystander.send_targets() == [
        ("TargetName", IQN_A),
        ("TargetAddress", f"{portal.address},1"),
    ]
    await bystander.logout()


# ---- bounds -------------------------------------------------------------------------


async def test_connection_limit_and_timeouts(make_portal: PortalFactory) -> None:
    portal = await make_portal(
        FakeDirectory({IQN_A: "x:1"}), max_connections=2, login_timeout_s=0.3, idle_timeout_s=0.3
    )
    idle = await Connection.open(portal.address)
    session = await Session.discovery(portal.address)
    extra = await Connection.open(portal.address)  # one too many: closed at once
    await assert_closed(extra)
    started = time.monotonic()
    await assert_closed(idle)  # never logged in
    await assert_closed(session.conn)  # logged in, then idle
    assert 0.2 < time.monotonic() - started < 2.0
    stats = (await settled(portal)).stats.snapshot()
    assert stats["refused.busy"] == 1 and stats["refused.login_timeout"] == 1
    assert (await settled(portal)).stats.outcomes["idle_timeout"] == 1


async def test_stop_closes_connections(make_portal: PortalFactory) -> None:
    portal = await make_portal(FakeDirectory({IQN_A: "hang"}))
    session = await Session.discovery(portal.address)
    pending = asyncio.ensure_future(raw_login(portal.address, login_keys()))
    await asyncio.sleep(0.1)
    address = portal.address
    await portal.stop()
    await assert_closed(session.conn)
    with pytest.raises(Exception):  # noqa: B017 - closed mid-login: whichever way it shows
        await pending
    with pytest.raises(ConnectionLost):
        await Connection.open(address, timeout_s=1.0)
    assert portal.stats.active == 0 and (await settled(portal)).stats.outcomes["shutdown"] == 2


# ---- with real tgtd and libiscsi ------------------------------------------------------

SKIP = skip_reason()
real = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


async def _start_tgtd(workdir: Path, prefix: str, rng: random.Random) -> Tgtd:
    for _ in range(5):  # an address or control port another run took meanwhile: again
        address = free_loopback(3260, prefix, rng)
        tgtd = Tgtd(rng.randint(10000, 32000), f"{address}:3260", workdir / f"{address}.log")
        try:
            await tgtd.start()
            return tgtd
        except TgtError:
            await tgtd.stop()
    raise RuntimeError(f"no tgtd would start on {prefix}.N:3260")


@pytest.fixture
async def tgtds(tmp_path: Path) -> AsyncIterator[tuple[Tgtd, Tgtd]]:
    """Two tgtds on two loopback addresses exporting IQN_A from one backing file."""
    if SKIP is not None:
        pytest.skip(SKIP)
    rng = random.Random()
    started: list[Tgtd] = []
    try:
        for prefix in ("127.0.20", "127.0.21"):
            started.append(await _start_tgtd(tmp_path, prefix, rng))
        for t in started:
            await t.export(IQN_A, ensure_backing(tmp_path, "vol-a", 64 << 20))
        await started[0].export(IQN_B, ensure_backing(tmp_path, "vol-b", 8 << 20))
        yield started[0], started[1]
    finally:
        for t in started:
            await t.stop()


@pytest.fixture
async def vip_portal(tgtds: tuple[Tgtd, Tgtd]) -> AsyncIterator[tuple[Portal, FakeDirectory]]:
    """A portal on 127.0.10.x:3260 (as on a VIP) sending both targets to the first tgtd."""
    a, _ = tgtds
    directory = FakeDirectory({IQN_A: a.portal, IQN_B: a.portal})
    portal = Portal(directory)
    rng = random.Random()
    for attempt in range(5):
        try:
            await portal.start(free_loopback(3260, "127.0.10", rng), 3260)
            break
        except OSError:
            if attempt == 4:
                raise
    yield portal, directory
    await portal.stop()
    assert portal.stats.internal_errors == 0


async def run_tool(*cmd: str, timeout_s: float = 20.0) -> tuple[int, str]:
    """Run a libiscsi tool; (exit status, stdout + stderr). Killed by PID if it hangs."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@real
async def test_libiscsi_through_the_redirect(vip_portal: tuple[Portal, FakeDirectory]) -> None:
    portal, directory = vip_portal
    rc, out = await run_tool("iscsi-inq", f"iscsi://{portal.address}/{IQN_A}/1")
    assert rc == 0, out
    assert "Vendor:IET" in out and "Peripheral Device Type:DIRECT_ACCESS" in out
    rc, out = await run_tool("iscsi-readcapacity16", f"iscsi://{portal.address}/{IQN_B}/1")
    assert rc == 0, out
    assert f"Total size:{8 << 20}" in out
    assert [iqn for iqn, _ in directory.calls] == [IQN_A, IQN_B]
    assert all("libiscsi" in who for _, who in directory.calls)
    assert (await settled(portal)).stats.redirected == 2


@real
async def test_libiscsi_discovery(vip_portal: tuple[Portal, FakeDirectory]) -> None:
    portal, directory = vip_portal
    rc, out = await run_tool("iscsi-ls", f"iscsi://{portal.address}")
    assert rc == 0, out
    assert f"Target:{IQN_A} Portal:{portal.address},1" in out
    assert f"Target:{IQN_B} Portal:{portal.address},1" in out
    assert directory.calls == []  # discovery is not redirected
    rc, out = await run_tool("iscsi-ls", "-s", f"iscsi://{portal.address}")  # logs in to each
    assert rc == 0, out
    assert out.count("Type:DIRECT_ACCESS") == 2
    assert (await settled(portal)).stats.snapshot()["discovery"] == 2 and (
        await settled(portal)
    ).stats.redirected == 2


@real
async def test_libiscsi_refused_cleanly(vip_portal: tuple[Portal, FakeDirectory]) -> None:
    portal, directory = vip_portal
    rc, out = await run_tool("iscsi-inq", f"iscsi://{portal.address}/iqn.2026-01.test:none/1")
    assert rc != 0 and "Target not found(515)" in out
    directory.routes[IQN_A] = Unavailable()
    rc, out = await run_tool("iscsi-inq", f"iscsi://{portal.address}/{IQN_A}/1")
    assert rc != 0 and "Service unavailable(769)" in out
    directory.routes[IQN_A] = portal.address  # a loop: libiscsi gives up by itself
    rc, out = await run_tool("iscsi-inq", f"iscsi://{portal.address}/{IQN_A}/1")
    assert rc != 0 and "too many tries" in out
    assert 5 <= (await settled(portal)).stats.redirected <= 20
    refused = (await settled(portal)).stats.refused
    assert refused["not_found"] == 1 and refused["unavailable"] == 1


@real
async def test_write_through_one_tgtd_read_through_another(
    vip_portal: tuple[Portal, FakeDirectory], tgtds: tuple[Tgtd, Tgtd]
) -> None:
    portal, directory = vip_portal
    a, b = tgtds
    data = os.urandom((1 << 20) + 3 * 512)
    lba = random.randrange(0, 100_000)
    async with await Session.login(portal.address, IQN_A) as s:
        assert s.hops == [portal.address, a.portal]
        cap = await s.read_capacity16()
        assert (cap.blocks, cap.block_size) == (131072, 512)
        assert (await s.inquiry()).vendor == "IET"
        await s.write(lba, data)
        assert await s.read(lba, len(data) // 512) == data
    directory.routes[IQN_A] = b.portal  # the volume's sessions now go to the other node
    async with await Session.login(portal.address, IQN_A) as s:
        assert s.hops == [portal.address, b.portal]
        assert await s.read(lba, len(data) // 512) == data


@real
@pytest.mark.parametrize(
    "options",
    [
        Options(immediate_data=True, initial_r2t=False),
        Options(immediate_data=False, initial_r2t=True),
        Options(
            immediate_data=True, initial_r2t=True, security_stage=True, first_burst_length=4096
        ),
        Options(max_recv_data_segment_length=4096, max_burst_length=16384),
    ],
    ids=["immediate", "r2t-only", "security-stage", "small-segments"],
)
async def test_initiator_paths_against_tgtd(tgtds: tuple[Tgtd, Tgtd], options: Options) -> None:
    a, _ = tgtds
    data = os.urandom(300 * 512)
    lba = random.randrange(100_000, 130_000)
    async with await Session.login(a.portal, IQN_A, options=options) as s:
        assert s.hops == [a.portal]
        await s.write(lba, data)
        assert await s.read(lba, 300) == data
        assert await s.read(lba + 1, 2) == data[512 : 3 * 512]
