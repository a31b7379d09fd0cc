"""target/tgt.py and target/tgtshow.py: the parser on captured tgtadm output, and the
driver against real tgtds on loopback (skipped where tgtd cannot run).

Every tgtd and iscsi-perf a test starts is stopped by it, by PID; each uses its own
127.x address and control port, so tests can run beside other tgtds on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from target import tgt
from target.backing import ensure_backing
from target.tgt import Tgtd, TgtError, unavailable
from target.tgtshow import Lun, Session, parse_portals, parse_targets

DATA = Path(__file__).parent / "testdata" / "tgtadm"
needs_tgtd = pytest.mark.skipif(unavailable() is not None, reason=f"{unavailable()}")


# --- the parser, on output captured from tgtadm 1.0.85 ---------------------------------


def test_parse_targets_with_sessions_luns_and_acls() -> None:
    targets = parse_targets((DATA / "show-target-sessions.txt").read_text())
    assert sorted(targets) == [
        "iqn.2026-12.coord:vol.db1",
        "iqn.2026-12.coord:vol.db2",
        "iqn.2026-12.coord:vol.empty",
    ]
    db1 = targets["iqn.2026-12.coord:vol.db1"]
    assert (db1.tid, db1.state, db1.acl) == (1, "ready", ("ALL",))
    assert db1.luns == (Lun(0, None, 0), Lun(1, "/tmp/tgtx/b1", 67))
    assert db1.sessions == (
        Session(1, "iqn.2026-12.host:a", "127.0.0.1", (0,)),
        Session(2, "iqn.2026-12.host:b", "127.0.0.1", (0,)),
    )
    db2 = targets["iqn.2026-12.coord:vol.db2"]
    lun1 = db2.lun(1)
    assert lun1 is not None and lun1.path == "/tmp/tgtx/b 2"  # spaces kept
    assert db2.acl == ("127.0.0.1", "iqn.2026-12.host:c")  # an address and a name
    assert [s.initiator for s in db2.sessions] == ["iqn.2026-12.host:c"]
    empty = targets["iqn.2026-12.coord:vol.empty"]
    assert (empty.tid, empty.state, empty.sessions, empty.acl) == (5, "offline", (), ())
    assert empty.lun(1) is None


def test_parse_targets_accounts_are_not_acl_entries() -> None:
    db1 = parse_targets((DATA / "show-target-accounts.txt").read_text())[
        "iqn.2026-12.coord:vol.db1"
    ]
    assert db1.accounts == ("alice", "bob (outgoing)")
    assert db1.acl == ("ALL",)


def test_parse_targets_tolerates_noise_and_new_fields() -> None:
    assert parse_targets("") == {}
    text = (
        "tgtadm: some warning\n"
        "Target 7: iqn.2026-12.x:y   \r\n"
        "    System information:\n"
        "        Driver: iscsi\n"
        "        Shiny new field: 42\n"
        "    I_T nexus information:\n"
        "        I_T nexus: 9\n"
        "            Initiator: iqn.2026-12.h:z alias: my host\n"
        "            Connection: 0\n"
        "                IP Address: 10.1.2.3\n"
        "            Connection: 1\n"
        "                IP Address: 10.1.2.4\n"
        "    LUN information:\n"
        "        LUN: 1\n"
        "            Size: 3298535 MB, Block size: 512\n"
        "            Backing store path: /srv/v.img\n"
        "            Backing store flags: \n"
    )
    (t,) = parse_targets(text).values()
    assert (t.tid, t.iqn, t.state) == (7, "iqn.2026-12.x:y", "ready")
    assert t.sessions == (Session(9, "iqn.2026-12.h:z", "10.1.2.3", (0, 1)),)
    assert t.luns == (Lun(1, "/srv/v.img", 3298535),)


def test_parse_portals() -> None:
    assert parse_portals((DATA / "show-portal.txt").read_text()) == ["127.0.0.56:3260"]
    # What tgtd 1.0.85 does when it cannot bind the portal it was given:
    fallback = parse_portals((DATA / "show-portal-fallback.txt").read_text())
    assert fallback == ["0.0.0.0:3260", "[::]:3260"]


def test_portal_and_errors() -> None:
    assert Tgtd(3000, "127.0.0.9:3260").portal == "127.0.0.9:3260"
    assert Tgtd(3000, "[::1]:3261").portal == "[::1]:3261"
    for bad in ("0.0.0.0:3260", "[::]:3260", "127.0.0.1", "127.0.0.1:0", "host:3260"):
        with pytest.raises(ValueError):
            Tgtd(3000, bad)
    e = TgtError(["tgtadm", "-C", "3"], "tgtadm: can't find the target", 22)
    assert str(e) == "tgtadm -C 3: tgtadm: can't find the target (exit status 22)"


# --- helpers for real tgtds ------------------------------------------------------------


def _free_loopback() -> str:
    """A 127.x address whose port 3260 nobody holds (away from 127.0.0.x)."""
    for _ in range(100):
        a, b, c = (
            secrets.randbelow(100) + 150,
            secrets.randbelow(250) + 1,
            secrets.randbelow(250) + 1,
        )
        ip = f"127.{a}.{b}.{c}"
        with socket.socket() as s:
            try:
                s.bind((ip, 3260))
            except OSError:
                continue
        return ip
    raise RuntimeError("no free loopback address")


def _free_control_port() -> int:
    for _ in range(100):
        port = 10000 + secrets.randbelow(22000)  # tgtd takes 0..32767
        if tgt._lock_holder(port) is None:
            return port
    raise RuntimeError("no free tgtd control port")


def _exited(pid: int) -> bool:
    return tgt._gone(pid)


def _stopped(d: Tgtd) -> bool:
    return d.pid is None and not d.alive


@pytest.fixture
async def tgtds(tmp_path: Path) -> AsyncIterator[Callable[..., Tgtd]]:
    """Makes Tgtd drivers; stops every one at the end and checks that no process is left."""
    made: list[Tgtd] = []
    pids: list[int] = []

    def make(ip: str | None = None, **kw: float) -> Tgtd:
        d = Tgtd(
            _free_control_port(),
            f"{ip or _free_loopback()}:3260",
            tmp_path / f"tgtd-{len(made)}.log",
            **kw,
        )
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            if d.pid is not None:
                pids.append(d.pid)
            await d.stop()
    for pid in pids:
        assert _exited(pid), f"tgtd {pid} is still running"


class Perf:
    """``timeout N iscsi-perf`` in a process group of its own, always stopped by the test."""

    def __init__(self, portal: str, iqn: str, initiator: str, timeout_s: int = 5) -> None:
        self.proc = subprocess.Popen(
            ["timeout", str(timeout_s), "iscsi-perf", "-i", initiator, f"iscsi://{portal}/{iqn}/1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        # Its own process group (``timeout`` and iscsi-perf), ended by the group's id:
        # iscsi-perf that is reconnecting ignores a SIGTERM passed on by ``timeout``.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)


async def _until(check: Callable[[], object], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.02) + 1):
        if check():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s")


async def _sessions_until(d: Tgtd, want: list[tuple[str, str]], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    got: list[tuple[str, str]] = []
    for _ in range(int(timeout_s / 0.05) + 1):
        got = await d.sessions()
        if got == want:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"sessions {got}, wanted {want}")


# --- the driver, against real tgtds -----------------------------------------------------


@needs_tgtd
async def test_export_and_unexport_are_idempotent(
    tgtds: Callable[..., Tgtd], tmp_path: Path
) -> None:
    d = tgtds()
    await d.start()
    assert d.pid is not None and d.alive
    assert await d.targets() == {}
    a = ensure_backing(tmp_path / "store", "a", 64 << 20)
    b = ensure_backing(tmp_path / "store", "b", 8 << 20)
    assert await d.export("iqn.2026-12.test:a", a) == 1
    assert await d.export("iqn.2026-12.test:a", a) == 1  # again: nothing changes
    assert await d.export("iqn.2026-12.test:b", b) == 2
    with pytest.raises(TgtError, match="already exports"):
        await d.export("iqn.2026-12.test:a", b)  # another file under the same name
    targets = await d.targets()
    ta = targets["iqn.2026-12.test:a"]
    assert (ta.tid, ta.acl, ta.sessions) == (1, ("ALL",), ())
    assert ta.lun(1) == Lun(1, str(a), 67)  # 64 MiB in tgtd's decimal megabytes
    await d.unexport("iqn.2026-12.test:a")
    await d.unexport("iqn.2026-12.test:a")  # gone already: fine
    await d.unexport("iqn.2026-12.test:never")
    assert sorted(await d.targets()) == ["iqn.2026-12.test:b"]
    # The next tid is one more than the highest in use; tid 1 is free again.
    assert await d.export("iqn.2026-12.test:c", a) == 3
    await d.unexport("iqn.2026-12.test:b")
    await d.unexport("iqn.2026-12.test:c")
    assert await d.export("iqn.2026-12.test:a", a) == 1
    # An export that stopped half-way (target made, no LUN, no ACL) is completed.
    await d._tgtadm(
        "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "5", "--targetname",
        "iqn.2026-12.test:half",
    )  # fmt: skip
    assert await d.export("iqn.2026-12.test:half", b) == 5
    half = (await d.targets())["iqn.2026-12.test:half"]
    assert half.acl == ("ALL",) and half.lun(1) is not None
    with pytest.raises(FileNotFoundError):
        await d.export("iqn.2026-12.test:x", tmp_path / "missing.img")
    pid = d.pid
    await d.stop()
    assert _stopped(d) and _exited(pid)
    assert tgt._lock_holder(d.control_port) is None
    assert not (tgt.SOCKET_DIR / f"socket.{d.control_port}").exists()  # tidied up
    await d.stop()  # again: nothing to do


@needs_tgtd
async def test_two_tgtds_share_a_backing_file_and_list_sessions(
    tgtds: Callable[..., Tgtd], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one, two = tgtds(), tgtds()
    await asyncio.gather(one.start(), two.start())
    vol = ensure_backing(tmp_path / "store", "shared", 16 << 20)
    iqn = "iqn.2026-12.test:shared"
    assert await one.export(iqn, vol) == 1
    assert await two.export(iqn, vol) == 1
    perfs = [
        Perf(one.portal, iqn, "iqn.2026-12.host:a"),
        Perf(one.portal, iqn, "iqn.2026-12.host:b"),
        Perf(two.portal, iqn, "iqn.2026-12.host:c"),
    ]
    try:
        await _sessions_until(one, [(iqn, "iqn.2026-12.host:a"), (iqn, "iqn.2026-12.host:b")])
        await _sessions_until(two, [(iqn, "iqn.2026-12.host:c")])
        (session, *_) = (await one.targets())[iqn].sessions
        assert session.address == "127.0.0.1" and session.cids == (0,)
        # Unexport under load ends the sessions; libiscsi cannot log in again.
        await one.unexport(iqn)
        assert await one.sessions() == []
        assert iqn not in await one.targets()
        await asyncio.sleep(0.3)
        assert await one.sessions() == []
        # Stop under load: clean (no SIGKILL), and the other tgtd is untouched.
        with caplog.at_level("WARNING", logger="coord.target.tgt"):
            await two.stop()
        assert "SIGKILL" not in caplog.text and "failed" not in caplog.text
        assert (await one.targets()) == {} and one.alive
    finally:
        for p in perfs:
            p.stop()
    # The same portal again, straight away (its old connections are in TIME_WAIT).
    again = tgtds(ip=two.portal.rpartition(":")[0])
    await again.start()
    assert await again.export(iqn, vol) == 1


@needs_tgtd
async def test_start_refuses_a_taken_portal_and_a_foreign_address(
    tgtds: Callable[..., Tgtd],
) -> None:
    ip = _free_loopback()
    with socket.socket() as s:
        s.bind((ip, 3260))
        s.listen()
        d = tgtds(ip=ip)
        with pytest.raises(TgtError, match="cannot bind"):
            await d.start()
        assert _stopped(d) and tgt._lock_holder(d.control_port) is None
    # Not an address of this host (binding is all that happens: nothing is sent).
    with pytest.raises(TgtError, match="cannot bind"):
        await Tgtd(_free_control_port(), "192.0.2.7:3260").start()


@needs_tgtd
async def test_start_refuses_a_control_port_in_use(tgtds: Callable[..., Tgtd]) -> None:
    first = tgtds()
    await first.start()
    second = Tgtd(first.control_port, f"{_free_loopback()}:3260")
    with pytest.raises(TgtError, match=f"in use by PID {first.pid}"):
        await second.start()
    assert second.pid is None and first.alive


@needs_tgtd
async def test_start_kills_a_tgtd_that_fell_back_to_the_wildcard(
    tgtds: Callable[..., Tgtd], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tgtd binds 0.0.0.0 and [::] when its portal fails: start must not let it run.

    Run in a network namespace of the test's own (only lo), so the wildcard
    listener exists only there; the check that normally refuses first is skipped.
    """
    ns = f"ctgt-{os.getpid()}-{secrets.token_hex(3)}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace")
    d = Tgtd(_free_control_port(), "10.213.0.7:3260", tmp_path / "ns.log")
    try:
        # With lo down, a fresh namespace lets anything bind any address.
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        wrapper = tmp_path / "tgtd-in-ns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {tgt._executable("tgtd")} "$@"\n')
        wrapper.chmod(0o755)
        real = tgt._executable
        monkeypatch.setattr(tgt, "_executable", lambda n: str(wrapper) if n == "tgtd" else real(n))
        monkeypatch.setattr(tgt, "_check_bindable", lambda portal, argv: None)
        with pytest.raises(TgtError, match=r"listens on 0\.0\.0\.0:3260, \[::\]:3260, not"):
            await d.start()
        assert _stopped(d) and tgt._lock_holder(d.control_port) is None
    finally:
        await d.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)


@needs_tgtd
async def test_stop_kills_a_wedged_tgtd_within_its_bound(
    tgtds: Callable[..., Tgtd], tmp_path: Path
) -> None:
    d = tgtds(command_timeout_s=0.5, stop_timeout_s=1.0)
    await d.start()
    await d.export("iqn.2026-12.test:w", ensure_backing(tmp_path, "w", 1 << 20))
    pid = d.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # tgtadm now waits forever for an answer
    t0 = time.monotonic()
    await d.stop()
    assert time.monotonic() - t0 < 2.5
    assert _exited(pid) and _stopped(d)


@needs_tgtd
async def test_stop_after_tgtd_died_on_its_own(tgtds: Callable[..., Tgtd]) -> None:
    d = tgtds()
    await d.start()
    pid = d.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await _until(lambda: not d.alive)
    await d.stop()
    assert d.pid is None


@needs_tgtd
async def test_stop_leftover_ends_a_tgtd_from_an_earlier_run(tmp_path: Path) -> None:
    port, ip = _free_control_port(), _free_loopback()
    old = subprocess.Popen(
        [tgt._executable("tgtd") or "tgtd", "-f", "-C", str(port), "--iscsi", f"portal={ip}:3260"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    d = Tgtd(port, f"{ip}:3260", stop_timeout_s=3.0)
    try:
        await _until(lambda: tgt._lock_holder(port) == old.pid)
        await d._tgtadm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1",
                        "--targetname", "iqn.2026-12.test:left")  # fmt: skip
        assert await d.stop_leftover() == old.pid
        assert old.wait(timeout=5) == 0  # a clean exit, not a kill
        assert await d.stop_leftover() is None
        await d.start()  # the port and the portal are free again
    finally:
        await d.stop()
        if old.poll() is None:
            old.kill()
            old.wait(timeout=5)
