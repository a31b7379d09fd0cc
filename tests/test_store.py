"""The replicated store: revisions, transactions, history, leases, sessions, snapshots."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.store import Compacted, StateMachine, encode


class Log:
    """Feeds commands to a machine the way the log would: increasing indexes."""

    def __init__(self, sm: StateMachine | None = None) -> None:
        self.sm = sm or StateMachine()
        self.index = 0

    def __call__(self, **cmd: Any) -> dict[str, Any]:
        self.index += 1
        return self.sm.apply(self.index, encode(cmd))


def test_revisions_versions_and_incarnations() -> None:
    do = Log()
    assert do(op="put", key="a", value="1") == {"revision": 1}
    assert do(op="put", key="a", value="2") == {"revision": 2}
    kv = do.sm.get("a")
    assert kv is not None and (kv.create_revision, kv.mod_revision, kv.version) == (1, 2, 2)
    assert do(op="delete", key="a") == {"revision": 3, "deleted": 1}
    assert do(op="delete", key="a") == {"revision": 3, "deleted": 0}  # nothing changed
    do(op="put", key="a", value="3")
    kv = do.sm.get("a")
    assert kv is not None and (kv.create_revision, kv.version) == (4, 1)  # a new incarnation


def test_prev_revision_is_compare_and_set() -> None:
    do = Log()
    do(op="put", key="k", value="1")
    got = do(op="put", key="k", value="2", prev_revision=7)
    assert got["error"]["code"] == "precondition_failed" and got["error"]["mod_revision"] == 1
    assert do(op="put", key="k", value="2", prev_revision=1) == {"revision": 2}
    assert do(op="put", key="new", value="x", prev_revision=0) == {"revision": 3}  # create-only


def test_txn_is_atomic_under_one_revision() -> None:
    do = Log()
    do(op="put", key="a", value="1")
    ok = do(
        op="txn",
        compare=[{"key": "a", "target": "value", "op": "==", "value": "1"}],
        success=[
            {"op": "put", "key": "b", "value": "2"},
            {"op": "delete", "key": "a"},
            {"op": "get", "key": "b"},
        ],
        failure=[{"op": "put", "key": "c", "value": "3"}],
    )
    assert ok["succeeded"] and ok["revision"] == 2
    assert ok["results"][2]["kv"]["value"] == "2"
    b = do.sm.get("b")
    assert b is not None and b.mod_revision == 2 and do.sm.get("a") is None
    failed = do(
        op="txn",
        compare=[{"key": "b", "target": "version", "op": ">", "value": 5}],
        success=[{"op": "put", "key": "x", "value": "!"}],
        failure=[{"op": "put", "key": "c", "value": "3"}],
    )
    assert failed["succeeded"] is False and do.sm.get("c") is not None and do.sm.get("x") is None
    # All or nothing: the second op is refused, so the first does not happen either.
    refused = do(
        op="txn",
        success=[
            {"op": "put", "key": "d", "value": "4"},
            {"op": "put", "key": "e", "value": "5", "lease": 99},
        ],
    )
    assert refused["error"]["code"] == "lease_not_found" and do.sm.get("d") is None
    assert do.sm.kv.revision == 3
    dup = do(
        op="txn", success=[{"op": "put", "key": "d", "value": "4"}, {"op": "delete", "key": "d"}]
    )
    assert dup["error"]["code"] == "bad_request"
    readonly = do(op="txn", success=[{"op": "range", "prefix": ""}])
    assert readonly["revision"] == 3 and len(readonly["results"][0]["kvs"]) == 2


@pytest.mark.parametrize(
    ("target", "op", "value", "want"),
    [
        ("value", "==", "v", True),
        ("value", "!=", "v", False),
        ("version", "==", 1, True),
        ("create_revision", "<", 2, True),
        ("mod_revision", ">", 0, True),
        ("lease", "==", 0, True),
        ("value", "<", 3, False),  # a string never orders against a number
    ],
)
def test_compare_targets(target: str, op: str, value: object, want: bool) -> None:
    do = Log()
    do(op="put", key="k", value="v")
    got = do(op="txn", compare=[{"key": "k", "target": target, "op": op, "value": value}])
    assert got["succeeded"] is want


def test_missing_key_compares_as_absent() -> None:
    do = Log()
    got = do(
        op="txn", compare=[{"key": "nope", "target": "create_revision", "op": "==", "value": 0}]
    )
    assert got["succeeded"]  # the usual "create if absent" lock idiom
    got = do(op="txn", compare=[{"key": "nope", "target": "value", "op": "==", "value": ""}])
    assert not got["succeeded"]


def test_history_watch_and_compaction() -> None:
    do = Log(StateMachine(max_history=10))
    for i in range(5):
        do(op="put", key=f"app/{i}", value=str(i))
    do(op="put", key="other", value="x")
    events = list(do.sm.kv.events_since(3, "app/"))
    assert [(e.revision, e.key) for e in events] == [(3, "app/2"), (4, "app/3"), (5, "app/4")]
    assert do(op="compact", revision=4)["compact_revision"] == 4
    with pytest.raises(Compacted) as err:
        list(do.sm.kv.events_since(2))
    assert err.value.compact_revision == 4
    assert [e.revision for e in do.sm.kv.events_since(5)] == [5, 6]
    for i in range(20):  # over max_history: the oldest whole revisions go
        do(op="put", key="churn", value=str(i))
    assert len(do.sm.kv.history) <= 10 and do.sm.kv.compact_revision > 4


def test_leases_attach_and_revoke_delete_keys() -> None:
    do = Log()
    seen: list[tuple[int, int | None]] = []
    do.sm.on_lease = lambda i, ttl: seen.append((i, ttl))
    lease = do(op="lease_grant", id=0, ttl=10)
    assert lease == {"id": 1, "ttl": 10}  # id 0: the entry's index
    do(op="put", key="lock/a", value="me", lease=1)
    do(op="put", key="lock/b", value="me", lease=1)
    do(op="put", key="lock/b", value="free")  # re-put without the lease detaches it
    assert do(op="put", key="x", value="y", lease=77)["error"]["code"] == "lease_not_found"
    got = do(op="lease_revoke", id=1)
    assert got["deleted"] == 1 and do.sm.get("lock/a") is None and do.sm.get("lock/b") is not None
    assert seen == [(1, 10), (1, None)]
    assert do(op="lease_revoke", id=1)["error"]["code"] == "lease_not_found"


def test_sessions_apply_each_write_once() -> None:
    do = Log()
    first = do(op="put", key="k", value="1", client="c1", seq=1, time_ms=1000)
    rev = do.sm.kv.revision
    again = do(op="put", key="k", value="1", client="c1", seq=1, time_ms=1100)
    assert again == dict(first, retried=True) and do.sm.kv.revision == rev
    assert do(op="put", key="k", value="2", client="c1", seq=2, time_ms=1200)["revision"] == rev + 1
    assert (
        do(op="put", key="k", value="1", client="c1", seq=1, time_ms=1300)["error"]["code"]
        == "stale"
    )
    assert (
        do(op="put", key="k", value="9", client="c2", seq=5, time_ms=1300)["error"]["code"]
        == "session_expired"
    )
    later = 1300 + do.sm.sessions.ttl_ms + 1
    assert (
        do(op="put", key="k", value="3", client="c1", seq=3, time_ms=later)["error"]["code"]
        == "session_expired"
    )


def test_the_session_table_is_bounded() -> None:
    do = Log()
    do.sm.sessions.max_clients = 3
    for c in range(10):
        do(op="put", key="k", value=str(c), client=f"c{c}", seq=1, time_ms=c)
    assert list(do.sm.sessions.table) == ["c7", "c8", "c9"]


def test_snapshot_restore_is_the_same_machine() -> None:
    a = Log()
    a(op="lease_grant", id=5, ttl=3)
    for i in range(30):
        a(
            op="put",
            key=f"k{i % 7}",
            value=str(i),
            lease=5 if i % 3 == 0 else 0,
            client="c",
            seq=i + 1,
            time_ms=i,
        )
    a(op="delete", key="k1")
    b = Log(StateMachine())
    b.sm.restore(a.sm.snapshot())
    b.index = a.index
    assert b.sm.snapshot() == a.sm.snapshot()
    for do in (a, b):
        do(op="lease_revoke", id=5)
        do(op="put", key="k", value="v", client="c", seq=31, time_ms=99)
    assert a.sm.snapshot() == b.sm.snapshot()
    assert [e.revision for e in b.sm.kv.events_since(a.sm.kv.revision - 2)] == [
        e.revision for e in a.sm.kv.events_since(a.sm.kv.revision - 2)
    ]


commands = st.dictionaries(
    st.sampled_from(
        [
            "op",
            "key",
            "value",
            "lease",
            "prefix",
            "id",
            "ttl",
            "compare",
            "success",
            "client",
            "seq",
            "time_ms",
            "revision",
            "prev_revision",
        ]
    ),
    st.one_of(
        st.sampled_from(
            ["put", "delete", "txn", "lease_grant", "lease_revoke", "compact", "get", "bogus"]
        ),
        st.text(max_size=4),
        st.integers(-3, 5),
        st.none(),
        st.lists(
            st.dictionaries(
                st.sampled_from(["op", "key", "value", "target"]),
                st.text(max_size=3) | st.integers(0, 3),
                max_size=3,
            ),
            max_size=2,
        ),
    ),
    max_size=6,
)


# Nested strategies are slow to draw on a loaded machine: that is not a failure.
@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(commands | st.binary(max_size=12).map(lambda b: {"raw": b}), max_size=12))
def test_malformed_commands_get_errors_never_exceptions(cmds: list[dict[str, Any]]) -> None:
    sm = StateMachine()
    for i, cmd in enumerate(cmds, 1):
        data = cmd["raw"] if set(cmd) == {"raw"} else msgpack.packb(cmd)
        result = sm.apply(i, data)
        assert isinstance(result, dict)
    # and the machine is still consistent: snapshot and restore work
    StateMachine().restore(sm.snapshot())
