"""The shared backing store of development mode: one sparse file per volume.

In development every target node on the machine exports the same file for a
volume (the "distributed backend" is the local disk), so tgtds on several
loopback portals serve one set of bytes. A file is created at the volume's size,
grown when the volume grows, and never shrunk or truncated: an existing file is
data. Growing takes an exclusive ``flock`` so two agents preparing the same
volume at once cannot race (one reads 10 GiB and grows to 20 while the other,
with an older view of the map, would otherwise cut it back to 10).

tgtd reads a LUN's size when the LUN is created; a file grown under a live
export is seen only once the target is unexported (ending its sessions) and
exported again: ``Tgtd.export`` of an existing target changes nothing.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

# The map's volume names (coord/clustermap/model.py): also safe as a file name.
_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


def backing_path(dir: Path, volume: str) -> Path:
    if not _VOLUME.match(volume):
        raise ValueError(f"not a volume name: {volume!r}")
    return dir / f"{volume}.img"


def ensure_backing(dir: Path, volume: str, size_bytes: int) -> Path:
    """The file for ``volume`` under ``dir``, at least ``size_bytes`` long (sparse)."""
    if size_bytes <= 0:
        raise ValueError(f"size_bytes must be positive, not {size_bytes}")
    path = backing_path(dir, volume)
    dir.mkdir(parents=True, exist_ok=True)
    # O_CREAT without O_TRUNC: an existing file keeps every byte.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size < size_bytes:
            os.ftruncate(fd, size_bytes)  # grows with a hole: nothing is written
    finally:
        os.close(fd)  # releases the lock
    return path
