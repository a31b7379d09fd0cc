"""target/backing.py: development mode's shared backing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from target.backing import ensure_backing


def test_created_sparse_grown_never_shrunk_or_truncated(tmp_path: Path) -> None:
    store = tmp_path / "store" / "deeper"  # made if missing
    path = ensure_backing(store, "db1", 1 << 30)
    assert path == store / "db1.img"
    st = path.stat()
    assert st.st_size == 1 << 30
    assert st.st_blocks * 512 < 1 << 20  # a hole, not a gibibyte of zeros
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(b"data")
    assert ensure_backing(store, "db1", 1 << 30) == path  # again: untouched
    assert ensure_backing(store, "db1", 4096) == path  # smaller: never shrunk
    assert path.stat().st_size == 1 << 30
    assert ensure_backing(store, "db1", 2 << 30) == path  # the volume grew
    assert path.stat().st_size == 2 << 30
    with path.open("rb") as f:
        f.seek(4096)
        assert f.read(4) == b"data"


def test_refuses_names_that_are_not_volume_names(tmp_path: Path) -> None:
    for bad in ("", "../x", "a/b", ".hidden", "x" * 64):
        with pytest.raises(ValueError):
            ensure_backing(tmp_path, bad, 4096)
    with pytest.raises(ValueError):
        ensure_backing(tmp_path, "ok", 0)
    assert list(tmp_path.iterdir()) == []
