"""The write-ahead log and snapshot files: durable, repaired when torn, refused when corrupt."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.raft import (
    Config,
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    RaftNode,
    Snapshot,
    SnapshotMeta,
    Term,
)
from coord.raft.confchange import bootstrap
from coord.storage import CorruptStorage, Storage, codec


def ents(first: int, *terms: int) -> list[Entry]:
    return [
        Entry(Index(first + k), Term(t), data=f"e{first + k}t{t}".encode())
        for k, t in enumerate(terms)
    ]


def segments(d: Path) -> list[Path]:
    return sorted((d / "wal").glob("wal-*.log"))


def test_round_trip_and_overwrite(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    assert s.open().entries == ()
    s.wal.append_entries(ents(1, 1, 1, 2, 2, 2))
    s.wal.set_hard_state(HardState(Term(2), NodeId(3), Index(2)))
    s.wal.append_entries(ents(4, 3))  # a new leader replaced 4..5
    s.wal.sync()
    s.close()
    got = Storage(tmp_path).open()
    assert [(e.index, e.term) for e in got.entries] == [(1, 1), (2, 1), (3, 2), (4, 3)]
    assert got.hard_state == HardState(Term(2), NodeId(3), Index(2))


def two_synced_entries(path: Path) -> tuple[Path, int]:
    """A WAL holding entries 1 and 2, synced: its last segment and that segment's size."""
    s = Storage(path)
    s.open()
    s.wal.append_entries(ents(1, 1, 1))
    s.wal.sync()
    s.close()
    seg = segments(path)[-1]
    return seg, seg.stat().st_size


def test_torn_tail_is_cut_and_reported(tmp_path: Path) -> None:
    seg, good = two_synced_entries(tmp_path)
    whole = codec.encode(["E", [[3, 1, 0, b"x" * 100]]])
    with open(seg, "ab") as f:
        f.write(whole[: len(whole) // 2])  # the crash hit mid-write
    s2 = Storage(tmp_path)
    got = s2.open()
    assert [e.index for e in got.entries] == [1, 2]
    assert f"offset {good}" in s2.torn_cut and "cut short" in s2.torn_cut
    assert seg.stat().st_size == good
    s2.wal.append_entries(ents(3, 1))  # and the log goes on from there
    s2.wal.sync()
    s2.close()
    assert [e.index for e in Storage(tmp_path).open().entries] == [1, 2, 3]


def test_a_torn_record_holding_record_like_bytes_is_still_a_torn_tail(tmp_path: Path) -> None:
    # A client's value may contain what looks like a whole WAL record; the crash cut
    # the record that carries it. That must not read as "intact data after damage".
    seg, good = two_synced_entries(tmp_path)
    inner = codec.encode(["E", [[9, 9, 0, b"a record inside a value"]]])
    whole = codec.encode(["E", [[3, 1, 0, b"before" + inner + b"suffix" * 40]]])
    cut = whole.index(inner) + len(inner) + 30  # after the look-alike, before the end
    with open(seg, "ab") as f:
        f.write(whole[:cut])
    got = Storage(tmp_path).open()
    assert [e.index for e in got.entries] == [1, 2]
    assert seg.stat().st_size == good


def test_torn_tail_with_bad_checksum_is_cut(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.open()
    s.wal.append_entries(ents(1, 1))
    s.wal.append_entries(ents(2, 1))
    s.wal.sync()
    s.close()
    seg = segments(tmp_path)[-1]
    raw = bytearray(seg.read_bytes())
    raw[-1] ^= 0xFF  # garbage in the last record only
    seg.write_bytes(bytes(raw))
    s2 = Storage(tmp_path)
    assert [e.index for e in s2.open().entries] == [1]
    assert "checksum" in s2.torn_cut


def five_synced_records(path: Path) -> tuple[Path, bytearray]:
    """A WAL of five synced records: its last segment and that segment's bytes."""
    s = Storage(path)
    s.open()
    for i in range(1, 6):
        s.wal.append_entries(ents(i, 1))
    s.wal.sync()
    s.close()
    seg = segments(path)[-1]
    return seg, bytearray(seg.read_bytes())


def test_corruption_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    seg, raw = five_synced_records(tmp_path)
    second = len(codec.HEADER) + len(codec.encode(["E", [[1, 1, 0, b"e1t1"]]]))
    raw[second + 12] ^= 0x01  # inside the second record, valid records follow
    seg.write_bytes(bytes(raw))
    with pytest.raises(CorruptStorage) as err:
        Storage(tmp_path).open()
    assert err.value.path == seg and err.value.offset == second
    assert str(seg) in str(err.value) and f"offset {second}" in str(err.value)


@pytest.mark.parametrize("bump", [1, 256, 1 << 20])
def test_a_damaged_length_in_front_of_good_records_refuses_to_start(
    tmp_path: Path, bump: int
) -> None:
    # A length that runs past the end of the file looks like a torn write, but records
    # that were acknowledged follow it: cutting there would lose them.
    seg, raw = five_synced_records(tmp_path)
    first = len(codec.HEADER)
    length = int.from_bytes(raw[first : first + 4], "little")
    raw[first : first + 4] = (length + bump).to_bytes(4, "little")
    seg.write_bytes(bytes(raw))
    with pytest.raises(CorruptStorage) as err:
        Storage(tmp_path).open()
    assert err.value.path == seg and err.value.offset == first


def test_missing_segment_and_bad_header_refuse(tmp_path: Path) -> None:
    s = Storage(tmp_path, segment_bytes=200)
    s.open()
    for i in range(1, 30):
        s.wal.append_entries(ents(i, 1))
        s.wal.sync()
    s.close()
    segs = segments(tmp_path)
    assert len(segs) > 3
    segs[1].unlink()
    with pytest.raises(CorruptStorage, match="missing"):
        Storage(tmp_path).open()
    segs[2].write_bytes(b"not a wal at all")
    segs[1].write_bytes(segs[2].read_bytes())
    with pytest.raises(CorruptStorage, match=r"bad magic|bad header"):
        Storage(tmp_path).open()


def test_segments_roll_and_replay_in_order(tmp_path: Path) -> None:
    s = Storage(tmp_path, segment_bytes=300)
    s.open()
    for i in range(1, 60):
        s.wal.append_entries(ents(i, 1 + i // 20))
        s.wal.sync()
    s.close()
    assert len(segments(tmp_path)) > 3
    got = Storage(tmp_path).open()
    assert [e.index for e in got.entries] == list(range(1, 60))


def snap_at(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMeta(Index(index), Term(term), ConfState((NodeId(1), NodeId(2)))), data)


def test_compaction_drops_old_segments_and_restarts_from_snapshot(tmp_path: Path) -> None:
    s = Storage(tmp_path, segment_bytes=300)
    s.open()
    all_entries = ents(1, *([1] * 40))
    for e in all_entries:
        s.wal.append_entries([e])
        s.wal.sync()
    s.hard_state = HardState(Term(1), NodeId(1), Index(40))
    before = segments(tmp_path)
    s.compact(snap_at(30, 1), all_entries[30:])
    assert not set(before) & set(segments(tmp_path))
    s.close()
    got = Storage(tmp_path).open()
    assert (
        got.snapshot is not None and got.snapshot.meta.index == 30 and got.snapshot.data == b"state"
    )
    assert [e.index for e in got.entries] == list(range(31, 41))
    assert got.hard_state.commit == 40


def test_installed_snapshot_replaces_the_log(tmp_path: Path) -> None:
    from coord.raft import Ready

    s = Storage(tmp_path)
    s.open()
    s.wal.append_entries(ents(1, 1, 1, 1))
    rd = Ready(
        None, HardState(Term(5), NodeId(0), Index(9)), snap_at(9, 4), (), (), (), (), (), True
    )
    s.persist(rd)
    s.close()
    got = Storage(tmp_path).open()
    assert got.snapshot is not None and got.snapshot.meta.index == 9 and got.entries == ()


def test_damaged_snapshot_refuses(tmp_path: Path) -> None:
    s = Storage(tmp_path)
    s.open()
    s.hard_state = HardState(Term(1), NodeId(1), Index(3))
    s.compact(snap_at(3, 1), [])
    s.close()
    snap = next((tmp_path / "snap").glob("*.snap"))
    raw = bytearray(snap.read_bytes())
    raw[-1] ^= 0x10
    snap.write_bytes(bytes(raw))
    with pytest.raises(CorruptStorage, match="checksum") as err:
        Storage(tmp_path).open()
    assert err.value.path == snap


def test_a_real_node_restarts_where_it_was(tmp_path: Path) -> None:
    entry, hs = bootstrap([1])
    s = Storage(tmp_path)
    s.wal.open()
    s.wal.append_entries([entry])
    s.wal.set_hard_state(hs)
    s.wal.sync()
    node = RaftNode(Config(id=NodeId(1)), random.Random(1), s.open())
    node.campaign()
    for data in (b"a", b"b", b"c"):
        while node.has_ready():
            rd = node.ready()
            s.persist(rd)
            node.advance(rd)
        node.propose(data)
    while node.has_ready():
        rd = node.ready()
        s.persist(rd)
        node.advance(rd)
    s.close()
    again = RaftNode(Config(id=NodeId(1)), random.Random(2), Storage(tmp_path).open())
    assert again.term == node.term and again.vote == 1
    assert [e.data for e in again.log.entries][-3:] == [b"a", b"b", b"c"]
    assert again.log.committed == node.log.committed


# ---- crash at any byte ---------------------------------------------------------------


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 3), st.booleans()), min_size=1, max_size=25
    ),
    st.integers(0, 10**9),
)
def test_synced_data_survives_a_crash_at_any_byte(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int, bool]], cut_seed: int
) -> None:
    """Model: append batches (possibly overwriting the tail), sync some. Crash by cutting
    the newest segment anywhere after the last sync. Recovery must hold every synced
    entry and be a state the log actually passed through."""
    d = tmp_path_factory.mktemp("wal")
    s = Storage(d, segment_bytes=400)
    s.open()
    model: list[Entry] = []
    states: list[list[tuple[int, int]]] = [[]]  # every state after each write
    synced_pos = 0  # states[synced_pos] was made durable
    synced_at: tuple[Path, int] | None = None  # (newest segment, its size) at that sync
    term = 1
    for count, back, sync in steps:
        first = max(1, len(model) + 1 - back)
        term += 1
        batch = ents(first, *([term] * count))
        s.wal.append_entries(batch)
        model = model[: first - 1] + batch
        states.append([(e.index, e.term) for e in model])
        if sync:
            seg = segments(d)[-1]
            synced_at = (seg, seg.stat().st_size)  # before sync() may roll to a new one
            s.wal.sync()
            synced_pos = len(states) - 1
    s.wal._fd = None  # crash: no final sync, no close
    last = segments(d)[-1]
    size = last.stat().st_size
    lo = synced_at[1] if synced_at is not None and synced_at[0] == last else 0
    cut = random.Random(cut_seed).randint(lo, size)
    with open(last, "r+b") as f:
        f.truncate(cut)
    got = [(e.index, e.term) for e in Storage(d).open().entries]
    assert got in states[synced_pos:], (got, synced_pos, states)
