"""``coord snapshot restore``: a saved store becomes the first state of a new cluster.

The inverse of ``coord snapshot save`` (which downloads ``StateMachine.snapshot()``),
after ``etcdctl snapshot restore``: for one node of the new cluster, write a data
directory holding only a Raft snapshot (whose configuration is the new voters and
whose data is the saved store with the new member addresses) and a hard state
that says it is committed. ``coord run`` then starts from it like any node
restarting after a compaction: storage is not empty, so it does not bootstrap.

Every node restored from the same file with the same member list gets
byte-identical snapshot data, so together they form one consistent cluster.

The Raft index of that snapshot is the saved store's applied index (at least 1),
not 1: leases granted without an id take the index of their log entry as their
id, so a new cluster counting its log from 1 again would, a few writes later,
refuse a grant because a restored lease already has that id.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from coord.raft import (
    ConfState,
    HardState,
    Index,
    NodeId,
    Ready,
    Snapshot,
    SnapshotMeta,
    Term,
)
from coord.storage import CorruptStorage, Storage
from coord.store import StateMachine

from .server.config import Member

TERM = Term(1)  # a new cluster: the first leader elected will hold term 2


class RestoreError(Exception):
    """Why nothing was restored: one line for the operator."""


@dataclass(frozen=True)
class Restored:
    directory: Path
    revision: int
    keys: int
    index: int


def load_store(path: Path) -> StateMachine:
    """The saved store in ``path``, checked; RestoreError if it is not one."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RestoreError(f"cannot read {path}: {e.strerror or e}") from e
    sm = StateMachine()
    try:
        # msgpack only: the file may come from anywhere, and decoding it runs no code.
        sm.restore(data)
        _check(sm)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise RestoreError(
            f"{path} is not a coord store snapshot (as written by `coord snapshot save`): "
            f"{type(e).__name__}: {e}"
        ) from e
    return sm


def _check(sm: StateMachine) -> None:
    """Reject a well-formed msgpack document that would break the store after a start.

    ``StateMachine.restore`` trusts its input (it normally reads what the node
    itself wrote); a file handed in by an operator gets the invariants of mvcc.py
    checked before a cluster is built on it.
    """
    kv = sm.kv
    if not _nat(kv.revision) or not _nat(kv.compact_revision) or not _nat(sm.applied_index):
        raise ValueError("revision, compact and applied must be non-negative integers")
    if kv.compact_revision > kv.revision:
        raise ValueError(f"compact revision {kv.compact_revision} > revision {kv.revision}")
    for v in kv.keys.values():
        if type(v.key) is not str or type(v.value) is not str:
            raise ValueError(f"key {v.key!r}: keys and values must be strings")
        if not all(_nat(n) for n in (v.create_revision, v.mod_revision, v.version, v.lease)):
            raise ValueError(f"key {v.key!r}: revisions, version and lease must be integers")
        if not 0 < v.create_revision <= v.mod_revision <= kv.revision:
            raise ValueError(f"key {v.key!r}: revisions out of order or beyond {kv.revision}")
        if v.lease and v.lease not in sm.leases:
            raise ValueError(f"key {v.key!r}: lease {v.lease} does not exist")
    for lease_id, (ttl, keys) in sm.leases.items():
        if not _nat(lease_id) or lease_id < 1 or not _nat(ttl) or ttl < 1:
            raise ValueError(f"lease {lease_id!r}: id and ttl must be positive integers")
        if not all(type(k) is str for k in keys):
            raise ValueError(f"lease {lease_id}: keys must be strings")


def _nat(v: object) -> bool:
    return type(v) is int and v >= 0


def raft_snapshot(sm: StateMachine, members: list[Member]) -> Snapshot:
    """The snapshot every node of the new cluster starts from (``sm`` is consumed).

    A pure function of the saved bytes and the member set (not of their order on
    the command line). The saved members are the old cluster's addresses: replace
    them by the new ones, in the form the daemon keeps (node.py ``_store_config``),
    since a node learns addresses from the snapshot at start (``_members_from_store``).
    """
    index = Index(max(1, sm.applied_index))
    sm.members = {m.id: m.context() for m in sorted(members, key=lambda m: m.id)}
    sm.applied_index = index
    conf = ConfState(voters=tuple(sorted(NodeId(m.id) for m in members)))
    return Snapshot(SnapshotMeta(index, TERM, conf), sm.snapshot())


def node_dir(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"node-{node_id}"  # where coord.server.node.Node keeps its storage


def refuse_if_used(directory: Path) -> None:
    """Never overwrite a node's data: a directory that holds anything is left alone."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise RestoreError(f"{directory} exists and is not a directory")
    held = sorted(
        p
        for sub in ("wal", "snap")
        if (directory / sub).is_dir()
        for p in (directory / sub).iterdir()
    )
    if held:
        raise RestoreError(
            f"{directory} already holds a node's data ({held[0]}); "
            "refusing to overwrite it (remove it first, or restore into another --data-dir)"
        )
    if any(directory.iterdir()):
        raise RestoreError(f"{directory} is not empty; refusing to restore into it")


def write_node(directory: Path, snap: Snapshot) -> None:
    """Write ``snap`` as the whole durable state of a node, appearing all at once.

    Built in a scratch directory beside the target and renamed into place: a
    restore cut short must not leave a directory that ``coord run`` would take
    for empty storage (it would bootstrap an empty store) or for a half-written one.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = directory.parent / f".{directory.name}.restoring"
    if scratch.exists():
        shutil.rmtree(scratch)  # left by an interrupted restore; never a live node's directory
    try:
        _write(scratch, snap)
        _read_back(scratch, snap)
        _fsync(scratch)
        os.rename(scratch, directory)  # fails rather than replace a directory that is not empty
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _fsync(directory.parent)


def _write(scratch: Path, snap: Snapshot) -> None:
    storage = Storage(scratch)
    storage.open()
    try:
        # The same path a follower takes for a snapshot from its leader (Storage.persist):
        # the snapshot file is durable before the log marks it, then the hard state, fsync.
        storage.persist(
            Ready(
                soft_state=None,
                hard_state=HardState(term=TERM, vote=NodeId(0), commit=snap.meta.index),
                snapshot=snap,
                entries=(),
                messages=(),
                persisted_messages=(),
                committed=(),
                read_states=(),
                must_sync=True,
            )
        )
    finally:
        storage.close()


def _read_back(directory: Path, snap: Snapshot) -> None:
    """Open what was written as a starting node will, before it is put in place."""
    storage = Storage(directory)
    try:
        got = storage.open()
    except CorruptStorage as e:
        raise RestoreError(f"the restored data does not read back: {e}") from e
    finally:
        storage.close()
    if got.snapshot != snap or got.entries or got.hard_state.commit != snap.meta.index:
        raise RestoreError(f"the restored data in {directory} does not read back as written")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore(file: Path, data_dir: Path, node_id: int, members: list[Member]) -> Restored:
    """Make ``data_dir``'s directory for node ``node_id`` of a new cluster of ``members``."""
    target = node_dir(data_dir, node_id)
    sm = load_store(file)  # first: a bad file is reported whatever the directory holds
    refuse_if_used(target)
    revision, keys = sm.kv.revision, sm.kv.count()
    snap = raft_snapshot(sm, members)
    try:
        write_node(target, snap)
    except OSError as e:
        raise RestoreError(f"cannot write {target}: {e}") from e
    return Restored(target, revision, keys, int(snap.meta.index))
