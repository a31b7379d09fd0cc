"""Runs tests/testdata/*.txt (see tests/datadriven.py); ``pytest --rewrite`` regenerates them."""

from __future__ import annotations

from pathlib import Path

import pytest

from .datadriven import run_file

DATA = Path(__file__).parent / "testdata"


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario_file(path: Path, rewrite: bool) -> None:
    problems = run_file(path, rewrite)
    assert not problems, "\n\n".join(problems)
