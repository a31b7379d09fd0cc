"""The wire format and the authenticated peer transport, on loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord import wire
from coord.raft import (
    ConfState,
    Entry,
    EntryKind,
    Index,
    Message,
    NodeId,
    Snapshot,
    SnapshotMeta,
    Term,
)
from coord.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from coord.transport import LENGTH, NONCE_SIZE, Transport, _mac

SECRET = b"0123456789abcdef-test-secret"

ids = st.integers(1, 9).map(NodeId)
u = st.integers(0, 2**40)
entries = st.lists(
    st.builds(
        Entry,
        st.integers(1, 2**40).map(Index),
        u.map(Term),
        st.sampled_from(EntryKind),
        st.binary(max_size=40),
    ),
    max_size=4,
).map(tuple)
snapshots = st.builds(
    lambda i, t, d: Snapshot(
        SnapshotMeta(Index(i), Term(t), ConfState((NodeId(1), NodeId(2)), (NodeId(3),))), d
    ),
    u,
    u,
    st.binary(max_size=50),
)
messages = st.one_of(
    st.builds(VoteRequest, ids, ids, u, u, u, st.booleans(), st.booleans()),
    st.builds(VoteResponse, ids, ids, u, st.booleans(), st.booleans()),
    st.builds(AppendEntries, ids, ids, u, u, u, entries, u),
    st.builds(AppendResponse, ids, ids, u, u, st.booleans(), u, u),
    st.builds(Heartbeat, ids, ids, u, u, u),
    st.builds(HeartbeatResponse, ids, ids, u, u),
    st.builds(InstallSnapshot, ids, ids, u, snapshots),
    st.builds(TimeoutNow, ids, ids, u),
)


@given(st.lists(messages, max_size=6))
def test_wire_round_trip(msgs: list[Message]) -> None:
    assert wire.decode_batch(wire.encode_batch(3, msgs)) == (3, msgs)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_garbage_bytes_only_ever_raise_wire_error(data: bytes) -> None:
    with contextlib.suppress(wire.WireError):
        wire.decode_batch(data)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(list("VvAaHhST")) | json_like, max_size=9))
def test_wrong_shapes_only_ever_raise_wire_error(obj: list[object]) -> None:
    data = msgpack.packb([1, [obj]], use_bin_type=True)
    with contextlib.suppress(wire.WireError):
        wire.decode_batch(data)


def test_wire_rejects_bad_fields() -> None:
    good = wire.to_obj(Heartbeat(NodeId(1), NodeId(2), Term(3), Index(4), 5))
    for bad in (["H", 1, 2, -3, 4, 5], ["H", 1, 2, "3", 4, 5], ["Q", 1, 2, 3], ["H", 1, 2, 3, 4]):
        with pytest.raises(wire.WireError):
            wire.from_obj(bad)
    assert wire.from_obj(good) == Heartbeat(NodeId(1), NodeId(2), Term(3), Index(4), 5)


# ---- the transport -------------------------------------------------------------------


async def pair(**kw: object) -> tuple[Transport, Transport, list[Message], list[Message]]:
    got1: list[Message] = []
    got2: list[Message] = []
    t1 = Transport(1, ("127.0.0.1", 0), {}, SECRET, got1.append, **kw)  # type: ignore[arg-type]
    t2 = Transport(2, ("127.0.0.1", 0), {}, SECRET, got2.append, **kw)  # type: ignore[arg-type]
    await t1.start()
    await t2.start()
    t1.set_peer(2, t2.listen)
    t2.set_peer(1, t1.listen)
    return t1, t2, got1, got2


async def until(cond: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def hb(src: int, dst: int, n: int) -> Heartbeat:
    return Heartbeat(NodeId(src), NodeId(dst), Term(1), Index(n), 0)


async def test_messages_flow_both_ways_in_order() -> None:
    t1, t2, got1, got2 = await pair()
    try:
        for n in range(200):
            t1.send(hb(1, 2, n))
        t2.send(hb(2, 1, 7))
        await until(lambda: len(got2) == 200 and len(got1) == 1)
        assert [m.commit for m in got2] == list(range(200))  # type: ignore[union-attr]
        assert t1.stats.frames_sent < 200  # batched
    finally:
        await t1.close()
        await t2.close()


async def raw_connect(t: Transport) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(*t.listen)
    nonce = await reader.readexactly(NONCE_SIZE)
    return reader, writer, nonce


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(1), 2.0) == b""


async def test_garbage_oversize_and_forged_frames_are_dropped_and_node_serves() -> None:
    t1, t2, _, got2 = await pair(max_frame=1 << 16)
    try:
        # plain garbage
        r, w, _ = await raw_connect(t2)
        w.write(os.urandom(500))
        await w.drain()
        assert await closed(r)
        # a length beyond the limit: refused before reading (or allocating) the body
        r, w, _ = await raw_connect(t2)
        w.write(LENGTH.pack(1 << 30) + b"\0" * 32)
        await w.drain()
        assert await closed(r)
        # a well-formed frame under the wrong secret
        r, w, nonce = await raw_connect(t2)
        body = wire.encode_batch(1, [hb(1, 2, 1)])
        w.write(LENGTH.pack(len(body)) + _mac(b"wrong-secret-wrong-secret", nonce, 0, body) + body)
        await w.drain()
        assert await closed(r)
        # a valid frame replayed (same counter twice): the second is refused
        r, w, nonce = await raw_connect(t2)
        frame = LENGTH.pack(len(body)) + _mac(SECRET, nonce, 0, body) + body
        w.write(frame + frame)
        await w.drain()
        assert await closed(r)
        # authenticated but not a message
        r, w, nonce = await raw_connect(t2)
        junk = msgpack.packb([1, [["Z", 1, 2, 3]]])
        w.write(LENGTH.pack(len(junk)) + _mac(SECRET, nonce, 0, junk) + junk)
        await w.drain()
        assert await closed(r)
        rejected = t2.stats.rejected
        # the random garbage reads as an absurd length, or fails the MAC
        assert rejected.get("oversize frame", 0) + rejected.get("authentication failed", 0) == 4
        assert rejected.get("oversize frame", 0) >= 1
        assert rejected.get("authentication failed", 0) >= 2
        assert rejected.get("malformed frame") == 1
        # ...and the real peer still gets through
        t1.send(hb(1, 2, 42))
        await until(lambda: any(m.commit == 42 for m in got2))  # type: ignore[union-attr]
    finally:
        await t1.close()
        await t2.close()


async def test_a_strangers_first_frame_must_arrive_whole_in_time() -> None:
    # A head announcing a body within the first frame's limit, then silence: the connection is given
    # up after the authentication time, not after the 30 s an authenticated peer gets.
    t1, t2, _, got2 = await pair(auth_timeout_s=0.3)
    try:
        r, w, _ = await raw_connect(t2)
        w.write(LENGTH.pack(60_000) + b"\0" * 32 + b"partial body")
        await w.drain()
        assert await closed(r)
        assert t2.stats.rejected.get("no frame in time") == 1
        t1.send(hb(1, 2, 9))
        await until(lambda: any(m.commit == 9 for m in got2))  # type: ignore[union-attr]
    finally:
        await t1.close()
        await t2.close()


async def test_a_snapshot_larger_than_a_strangers_limit_goes_through_after_the_hello() -> None:
    # A stranger's first frame may be 64 KiB at most; a peer's first frame is the hello,
    # so a snapshot of megabytes, the first message on a new link, still arrives whole.
    t1, t2, _, got2 = await pair(max_first_frame=64 << 10, max_frame=8 << 20)
    try:
        data = os.urandom(3 << 20)
        meta = SnapshotMeta(Index(900), Term(2), ConfState((NodeId(1), NodeId(2)), ()))
        t1.send(InstallSnapshot(NodeId(1), NodeId(2), Term(2), Snapshot(meta, data)))
        await until(lambda: len(got2) == 1)
        assert got2[0].snapshot.data == data  # type: ignore[attr-defined]
        assert t2.stats.rejected == {}
    finally:
        await t1.close()
        await t2.close()


async def test_dead_peer_queue_is_bounded() -> None:
    got: list[Message] = []
    t = Transport(1, ("127.0.0.1", 0), {2: ("127.0.0.1", 1)}, SECRET, got.append, queue_limit=50)
    await t.start()
    try:
        for n in range(1000):
            t.send(hb(1, 2, n))
        assert t.stats.messages_dropped >= 950
    finally:
        await t.close()


async def test_reconnects_after_the_peer_restarts() -> None:
    t1, t2, _, _ = await pair()
    port = t2.listen[1]
    await t2.close()
    t1.send(hb(1, 2, 1))  # lost: nobody listens
    got3: list[Message] = []
    t3 = Transport(2, ("127.0.0.1", port), {}, SECRET, got3.append)
    await t3.start()
    try:

        async def resend() -> None:
            for n in range(100):
                t1.send(hb(1, 2, 100 + n))
                await asyncio.sleep(0.05)
                if got3:
                    return

        await resend()
        assert got3, "never reconnected"
    finally:
        await t1.close()
        await t3.close()


async def test_a_restarted_peer_gets_every_frame_sent_after_its_restart() -> None:
    """The link to a peer that restarted is replaced before anything is written into it:
    the first frames after the restart arrive (they used to vanish into the dead socket)."""
    t1, t2, _, got2 = await pair()
    t1.send(hb(1, 2, 1))
    await until(lambda: len(got2) == 1)  # t1's link to t2 is up
    port = t2.listen[1]
    await t2.close()  # closes its end of t1's link, as a killed process's kernel does
    got3: list[Message] = []
    t3 = Transport(2, ("127.0.0.1", port), {}, SECRET, got3.append)
    await t3.start()
    try:
        await asyncio.sleep(0.2)  # t1 sends nothing meanwhile, as a follower to a follower
        for n in (10, 11, 12):
            t1.send(hb(1, 2, n))
        await until(lambda: len(got3) == 3)
        assert [m.commit for m in got3] == [10, 11, 12]  # type: ignore[union-attr]
        assert t1.stats.messages_dropped == 0
    finally:
        await t1.close()
        await t3.close()


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        Transport(1, ("127.0.0.1", 0), {}, b"short", lambda m: None)


def test_frame_header_layout() -> None:
    assert LENGTH.size == 4 and struct.calcsize(">I") == 4
