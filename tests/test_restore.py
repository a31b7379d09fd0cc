"""`coord snapshot restore`: a saved store becomes the first state of a new cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from coord.cli import main
from coord.client import Client
from coord.raft import ConfState, NodeId
from coord.storage import Storage
from coord.store import StateMachine, encode

from .procs import ROOT, Cluster

# ---- in-process: the files a restore writes ------------------------------------------------


def members(base: int, n: int = 3) -> list[str]:
    return [f"{i}=127.0.0.1:{base + i}/127.0.0.1:{base + 100 + i}" for i in range(1, n + 1)]


def saved_store(path: Path) -> StateMachine:
    """A store with history, a deletion, a lease and a client session, saved as `save` does."""
    sm = StateMachine()
    cmds: list[dict[str, Any]] = [
        {"op": "put", "key": "a", "value": "1"},
        {"op": "put", "key": "b", "value": "2"},
        {"op": "put", "key": "a", "value": "3"},
        {"op": "lease_grant", "id": 0, "ttl": 30},
        {"op": "put", "key": "leased", "value": "x", "lease": 4},
        {"op": "delete", "key": "b"},
        {"op": "put", "key": "c", "value": "4", "client": "cli-1", "seq": 1, "time_ms": 1000},
    ]
    for index, cmd in enumerate(cmds, start=1):
        result = sm.apply(index, encode(cmd))
        assert "error" not in result, result
    sm.applied_index = 9  # as if config entries and no-ops had been applied too
    sm.members = {1: {"peer": "10.0.0.1:7001", "api": "10.0.0.1:7101"}}  # the old cluster
    path.write_bytes(sm.snapshot())
    return sm


def restore_cmd(file: Path, data_dir: Path, ident: int, ms: list[str]) -> list[str]:
    argv = ["snapshot", "restore", str(file), "--data-dir", str(data_dir), "--id", str(ident)]
    for m in ms:
        argv += ["--member", m]
    return argv


def open_node(node_dir: Path) -> Any:
    storage = Storage(node_dir)
    try:
        return storage.open()
    finally:
        storage.close()


def test_every_node_gets_the_same_snapshot_with_the_new_members(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "backup.snap"
    old = saved_store(file)
    ms = members(30000)
    for i in (1, 2, 3):
        # Node 3 lists the members in another order: the snapshot must not depend on it.
        order = ms if i != 3 else ms[::-1]
        assert main(restore_cmd(file, tmp_path / f"d{i}", i, order)) == 0
        out = capsys.readouterr().out
        assert f"revision {old.kv.revision} (3 keys)" in out
        assert str(tmp_path / f"d{i}" / f"node-{i}") in out
    got = [open_node(tmp_path / f"d{i}" / f"node-{i}") for i in (1, 2, 3)]
    snap = got[0].snapshot
    assert snap is not None
    assert all(g.snapshot == snap and not g.entries for g in got)
    assert snap.meta.index == 9 and snap.meta.term == 1
    assert snap.meta.conf == ConfState(voters=(NodeId(1), NodeId(2), NodeId(3)))
    assert all(g.hard_state.term == 1 and g.hard_state.commit == 9 for g in got)
    files = [sorted((tmp_path / f"d{i}" / f"node-{i}" / "snap").iterdir()) for i in (1, 2, 3)]
    assert len({f[0].read_bytes() for f in files}) == 1 and all(len(f) == 1 for f in files)

    sm = StateMachine()
    sm.restore(snap.data)
    assert sm.members == {
        i: {"peer": f"127.0.0.1:{30000 + i}", "api": f"127.0.0.1:{30100 + i}"} for i in (1, 2, 3)
    }
    assert sm.applied_index == 9
    assert sm.kv.revision == old.kv.revision
    assert dict(sm.kv.keys) == dict(old.kv.keys)
    assert list(sm.kv.history) == list(old.kv.history)
    assert sm.leases == old.leases and sm.sessions.dump() == old.sessions.dump()


def test_config_file_works_as_for_run(tmp_path: Path) -> None:
    file = tmp_path / "backup.snap"
    saved_store(file)
    ms = members(31000)
    conf = tmp_path / "node.toml"
    listed = ", ".join(f'"{m}"' for m in ms)
    conf.write_text(f'id = 2\ndata_dir = "{tmp_path / "d"}"\nmembers = [{listed}]\n')
    assert main(["snapshot", "restore", str(file), "--config", str(conf)]) == 0
    assert main(restore_cmd(file, tmp_path / "flags", 2, ms)) == 0
    by_conf = open_node(tmp_path / "d" / "node-2").snapshot
    assert by_conf is not None and by_conf == open_node(tmp_path / "flags" / "node-2").snapshot


def _not_a_store() -> bytes:
    doc = StateMachine().snapshot()
    wrong = msgpack.unpackb(doc, raw=False)
    wrong["keys"] = [["k", "v", 5, 3, 1, 0]]  # modified before created, beyond the revision
    return bytes(msgpack.packb(wrong, use_bin_type=True))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00garbage\xff" * 10,
        b"COORDSNP\x00\x00\x00\x00",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"revision": "ten"}),
        _not_a_store(),
        None,  # no such file
    ],
)
def test_a_file_that_is_not_a_saved_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    file = tmp_path / "backup.snap"
    if content is not None:
        file.write_bytes(content)
    assert main(restore_cmd(file, tmp_path / "d", 1, members(32000))) == 1
    err = capsys.readouterr().err
    assert str(file) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


@pytest.mark.parametrize("what", ["restored node", "wal segment only", "stray file"])
def test_a_directory_holding_data_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    file = tmp_path / "backup.snap"
    saved_store(file)
    ms = members(33000)
    node = tmp_path / "d" / "node-1"
    if what == "restored node":
        assert main(restore_cmd(file, tmp_path / "d", 1, ms)) == 0
        file.write_bytes(StateMachine().snapshot())  # another store this time
    elif what == "wal segment only":
        (node / "wal").mkdir(parents=True)
        (node / "wal" / "wal-0000000000000001.log").write_bytes(b"COORDWAL\x01\x00\x00\x00")
    else:
        node.mkdir(parents=True)
        (node / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in node.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(restore_cmd(file, tmp_path / "d", 1, ms)) == 1
    err = capsys.readouterr().err
    assert str(node) in err and "refusing" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in node.rglob("*") if p.is_file()} == before
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["node-1"]  # no scratch left


@pytest.mark.parametrize(
    "argv",
    [
        ["--member", "1=127.0.0.1:7001/127.0.0.1:7101"],  # no --id
        ["--id", "1"],  # no members
        ["--id", "4", "--member", "1=127.0.0.1:7001/127.0.0.1:7101"],  # not a member
        ["--id", "1", "--member", "1=nowhere/127.0.0.1:7101"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str]) -> None:
    file = tmp_path / "backup.snap"
    saved_store(file)
    assert main(["snapshot", "restore", str(file), "--data-dir", str(tmp_path / "d"), *argv]) == 2
    assert not (tmp_path / "d").exists()


# ---- real processes: save from one cluster, restore into another -----------------------------


def coord(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coord", *argv], capture_output=True, text=True, cwd=ROOT, timeout=30
    )


async def test_a_new_cluster_starts_from_a_saved_store(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = Cluster(tmp_path / "old", 3)
    file = tmp_path / "backup.snap"
    try:
        old.start_all()
        async with Client(old.endpoints(), timeout=3.0) as c:
            for i in range(10):
                await c.put(f"k{i % 4}", f"v{i}")
            await c.delete("k3")
            lease = await c.grant(60)
            await c.put("leased", "held", lease=lease)
            revision = await c.put("last", "before save")
            # Each answer carries the store's revision too: read them all after the last write.
            saved = {k: await c.get(k) for k in ("k0", "k1", "k2", "k3", "leased", "last")}
            assert saved["k3"] is None and saved["leased"]["lease"] == lease  # type: ignore[index]
        leader = old.wait_ready()
        got = coord("snapshot", "save", str(file), "--endpoint", f"http://{old.apis[leader]}")
        assert got.returncode == 0, got.stderr
        assert f"revision {revision}" in got.stdout
    finally:
        old.stop_all()

    new = Cluster(tmp_path / "new", 3)  # other ports: a new cluster, not the old one restarted
    try:
        for i in (1, 2, 3):
            got = coord(*restore_cmd(file, new.dir / "data", i, new.members))
            assert got.returncode == 0, got.stderr
            assert f"restored revision {revision} (5 keys)" in got.stdout
        new.start_all()
        async with Client(new.endpoints(), timeout=3.0) as c:
            for key, kv in saved.items():
                assert await c.get(key) == kv  # value, create/mod revision, version, lease
            leases = new.get(new.wait_ready(), "/v1/leases")["leases"]
            assert [(x["id"], x["ttl"], x["keys"]) for x in leases] == [(lease, 60, 1)]
            assert await c.put("after", "restore") == revision + 1
            # Leases granted without an id are numbered by log index: the new cluster's
            # log must not reuse the old one's numbers, or a grant would hit `lease`.
            fresh = [await c.grant(60) for _ in range(lease + 1)]
            assert lease not in fresh and len(set(fresh)) == len(fresh)
            info = await c.cluster()
            assert {m["id"]: m["api"] for m in info["members"]} == new.apis
            assert info["term"] >= 2
    finally:
        new.stop_all()
