"""Batch entries: several writes in one log entry apply exactly as consecutive entries."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from coord.store import StateMachine, encode
from coord.store.batch import Batcher, Packed
from coord.store.snapshot import View


def decode(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return doc


def test_a_lone_write_is_a_plain_entry_stamped_with_the_time() -> None:
    b: Batcher[str] = Batcher()
    b.add({"op": "put", "key": "k", "value": "v"}, "w1")
    [p] = b.take(1234)
    assert not p.batched and p.tokens == ["w1"]
    assert decode(p.data) == {"op": "put", "key": "k", "value": "v", "time_ms": 1234}
    assert len(b) == 0 and b.take(1) == []


def test_writes_waiting_together_share_an_entry_split_by_count_and_bytes() -> None:
    b: Batcher[int] = Batcher(max_cmds=3, max_bytes=200)
    for i in range(7):
        b.add({"op": "put", "key": f"k{i}", "value": "x"}, i)
    packed = b.take(99)
    assert [p.tokens for p in packed] == [[0, 1, 2], [3, 4, 5], [6]]
    first = decode(packed[0].data)
    assert first["op"] == "batch" and first["time_ms"] == 99
    assert [c["key"] for c in first["cmds"]] == ["k0", "k1", "k2"]
    assert not packed[2].batched  # a chunk of one is a plain entry
    big = "y" * 150
    for i in range(3):
        b.add({"op": "put", "key": f"b{i}", "value": big}, i)
    assert [p.tokens for p in b.take(1)] == [[0], [1], [2]]  # 200 bytes hold one each


def test_take_skips_writes_nobody_waits_for_and_drop_returns_the_waiters() -> None:
    b: Batcher[int] = Batcher()
    for i in range(4):
        b.add({"op": "delete", "key": f"k{i}"}, i)
    [p] = b.take(5, keep=lambda t: t % 2 == 0)
    assert p.tokens == [0, 2]
    b.add({"op": "put", "key": "a", "value": "b"}, 9)
    assert b.drop() == [9] and len(b) == 0


def test_only_index_independent_writes_are_batchable() -> None:
    assert Batcher.batchable({"op": "put"}) and Batcher.batchable({"op": "txn"})
    assert not Batcher.batchable({"op": "lease_grant", "ttl": 5})
    assert not Batcher.batchable({"op": "map.volume_create"})


def test_results_of_a_refused_batch_go_to_every_writer() -> None:
    p: Packed[int] = Packed(b"", [1, 2], True)
    err = {"error": {"code": "bad_request", "message": "x"}}
    assert p.results(err) == [err, err]
    assert p.results({"results": [{"revision": 1}, {"revision": 2}]}) == [
        {"revision": 1},
        {"revision": 2},
    ]
    assert Packed(b"", [1], False).results({"revision": 3}) == [{"revision": 3}]


def test_a_batch_refuses_what_it_may_not_hold_and_applies_the_rest() -> None:
    sm = StateMachine()
    sm.apply(1, encode({"op": "lease_grant", "id": 7, "ttl": 10, "time_ms": 0}))
    cmds = [
        {"op": "put", "key": "a", "value": "1"},
        {"op": "lease_grant", "id": 0, "ttl": 5},  # its id would be the entry's index
        {"op": "batch", "cmds": []},
        "not a map",
        {"op": "put", "key": "b", "value": "2", "lease": 7},
    ]
    got = sm.apply(2, encode({"op": "batch", "time_ms": 5, "cmds": cmds}))
    codes = [r.get("error", {}).get("code") for r in got["results"]]
    assert codes == [None, "bad_request", "bad_request", "bad_request", None]
    assert sm.get("a") is not None and sm.get("b") is not None and sm.get("b").lease == 7  # type: ignore[union-attr]
    for bad in ({"op": "batch", "time_ms": 1}, {"op": "batch", "cmds": [], "time_ms": 1}):
        assert sm.apply(3, encode(bad))["error"]["code"] == "bad_request"


# ---- a batch is its commands as consecutive entries ----------------------------------------

keys = st.sampled_from(["a", "b", "c", "d"])
values = st.sampled_from(["1", "2", "3"])
sessions = st.one_of(
    st.just({}),
    st.builds(lambda c, s: {"client": c, "seq": s}, st.sampled_from(["x", "y"]), st.integers(1, 4)),
)
puts = st.builds(lambda k, v: {"op": "put", "key": k, "value": v}, keys, values)
cas_puts = st.builds(
    lambda k, v, r: {"op": "put", "key": k, "value": v, "prev_revision": r},
    keys,
    values,
    st.integers(0, 6),
)
deletes = st.builds(lambda k: {"op": "delete", "key": k}, keys)
prefix_deletes = st.just({"op": "delete", "prefix": ""})
txns = st.builds(
    lambda k, v, k2, v2: {
        "op": "txn",
        "compare": [{"key": k, "target": "value", "op": "==", "value": v}],
        "success": [{"op": "put", "key": k2, "value": v2}],
        "failure": [{"op": "delete", "key": k}],
    },
    keys,
    values,
    keys,
    values,
)
commands = st.builds(
    lambda c, s: {**c, **s}, st.one_of(puts, cas_puts, deletes, prefix_deletes, txns), sessions
)


def state(sm: StateMachine) -> Any:
    view = View.take(sm)
    doc = msgpack.unpackb(view.encode(), raw=False, strict_map_key=False)
    doc.pop("applied")
    return doc


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(commands, min_size=1, max_size=6), min_size=1, max_size=5))
def test_a_batch_applies_as_its_commands_one_entry_each(groups: list[list[dict[str, Any]]]) -> None:
    one_by_one, batched = StateMachine(), StateMachine()
    events_a: list[Any] = []
    events_b: list[Any] = []
    one_by_one.on_events = events_a.extend
    batched.on_events = events_b.extend
    index = 0
    for n, group in enumerate(groups):
        now = 1000 * n
        separate = []
        for cmd in group:
            index += 1
            separate.append(one_by_one.apply(index, encode({**cmd, "time_ms": now})))
        b: Batcher[int] = Batcher()
        for i, cmd in enumerate(group):
            b.add(dict(cmd), i)
        together: list[Any] = []
        for p in b.take(now):
            together += p.results(batched.apply(index, p.data))
        assert together == separate
    assert state(batched) == state(one_by_one)
    assert events_b == events_a
