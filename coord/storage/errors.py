"""Storage errors stop the node (etcd's "inoperable" rule): never guess past damage."""

from __future__ import annotations

from pathlib import Path


class CorruptStorage(Exception):
    """Damage that may hide acknowledged data: the node must not start."""

    def __init__(self, path: Path | str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: offset {offset}: {reason}")
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
