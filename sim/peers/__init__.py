"""Other Raft implementations as simulated engines, under the simulator's checkers.

``run_pysyncobj(sc, seed, ...)`` runs a scenario with PySyncObj 0.3.17 on every host
(pysyncobj_engine.py: how it is made deterministic; pysyncobj_run.py: which checkers
apply). PEER_ENGINES maps an ``--engine`` name to such a run function. Importing this
package does not import PySyncObj (a test extra): a run does, and says so if it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..scenario import ScenarioError

if TYPE_CHECKING:
    from ..run import RunResult
    from ..scenario import Scenario


def run_pysyncobj(sc: Scenario, seed: int, **kw: Any) -> RunResult:
    """See pysyncobj_run.run_pysyncobj (nodes, keep_trace, replay, drop_agents, ...)."""
    try:
        from .pysyncobj_run import run_pysyncobj as run
    except ImportError as e:  # pragma: no cover - the test extra is installed in CI
        raise ScenarioError(
            f"the pysyncobj engine needs PySyncObj 0.3.17 (pip install -e '.[test]'): {e}"
        ) from e
    return run(sc, seed, **kw)


PEER_ENGINES: dict[str, Callable[..., RunResult]] = {"pysyncobj": run_pysyncobj}

__all__ = ["PEER_ENGINES", "run_pysyncobj"]
