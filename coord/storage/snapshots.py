"""Snapshot files: written atomically, read back only if intact.

``snap-<index:016>-<term:016>.snap``: magic, a crc32 and a msgpack body
[index, term, voters, learners, data]. Saving writes a temporary file, fsyncs
it, renames it into place and fsyncs the directory, so a crash leaves either
the old set of snapshots or the new one, never half a file under a real name.
The two newest are kept.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import msgpack

from coord.raft import ConfState, Index, NodeId, Snapshot, SnapshotMeta, Term

from .errors import CorruptStorage

MAGIC = b"COORDSNP"
HEAD = struct.Struct("<8sI")  # magic, crc32 of the body
NAME = re.compile(r"^snap-(\d{16})-(\d{16})\.snap$")
KEEP = 2


class SnapshotStore:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def save(self, snap: Snapshot) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = snap.meta
        body = msgpack.packb(
            [
                int(meta.index),
                int(meta.term),
                list(meta.conf.voters),
                list(meta.conf.learners),
                snap.data,
            ],
            use_bin_type=True,
        )
        name = f"snap-{meta.index:016d}-{meta.term:016d}.snap"
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(HEAD.pack(MAGIC, zlib.crc32(body)))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        final = self.dir / name
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        for old in self._names()[:-KEEP]:
            (self.dir / old).unlink()
        return final

    def load(self, index: int, term: int) -> Snapshot:
        """The snapshot the log says it stands on; damage or absence is fatal."""
        path = self.dir / f"snap-{index:016d}-{term:016d}.snap"
        if not path.exists():
            raise CorruptStorage(path, 0, "the log refers to this snapshot but it is missing")
        raw = path.read_bytes()
        if len(raw) < HEAD.size:
            raise CorruptStorage(path, 0, "snapshot file cut short")
        magic, crc = HEAD.unpack_from(raw)
        body = raw[HEAD.size :]
        if magic != MAGIC:
            raise CorruptStorage(path, 0, "not a coord snapshot (bad magic)")
        if zlib.crc32(body) != crc:
            raise CorruptStorage(path, HEAD.size, "snapshot checksum mismatch")
        try:
            i, t, voters, learners, data = msgpack.unpackb(body, raw=False)
            conf = ConfState(tuple(NodeId(v) for v in voters), tuple(NodeId(v) for v in learners))
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as e:
            raise CorruptStorage(path, HEAD.size, f"undecodable snapshot: {e}") from e
        if (i, t) != (index, term):
            raise CorruptStorage(path, HEAD.size, f"snapshot says {i}/{t}, its name {index}/{term}")
        return Snapshot(SnapshotMeta(Index(i), Term(t), conf), bytes(data))

    def _names(self) -> list[str]:
        if not self.dir.exists():
            return []
        names = [p.name for p in self.dir.iterdir() if NAME.match(p.name)]
        for p in self.dir.glob("*.tmp"):
            p.unlink()  # a save that did not finish before a crash
        return sorted(names)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
