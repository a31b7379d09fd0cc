"""Client operation history: what each client asked, when, and how it ended.

Every operation has an invocation time and, unless its outcome is unknown, a
completion time (virtual microseconds). Outcomes follow Jepsen's vocabulary:

- ``ok``: the system says it happened, with ``result``;
- ``fail``: the system says it definitely did not happen (no effect);
- ``info``: nobody knows (timeout, leadership lost after appending): it may take
  effect at any point after its invocation, or never.

The linearizability checker reads these records; the workload writes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class OpKind(enum.Enum):
    READ = "read"
    WRITE = "write"
    CAS = "cas"


class Outcome(enum.Enum):
    PENDING = "pending"
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


@dataclass(slots=True)
class Op:
    """One client operation on a register-per-key store.

    ``value``: for WRITE the value written; for CAS the pair (expected, new);
    None for READ. ``result``: for an ok READ the value read (None = absent); for
    an ok CAS whether it swapped; None for WRITE.
    """

    id: int
    client: int
    kind: OpKind
    key: str
    value: Any
    invoke_us: int
    complete_us: int | None = None
    outcome: Outcome = Outcome.PENDING
    result: Any = None
    # The node(s) the request was sent to, in order (retries add to it).
    nodes: list[int] = field(default_factory=list)
    # Where an ok write landed in the log (index, term); for lost-write checks.
    log_pos: tuple[int, int] | None = None

    def render(self) -> str:
        val = "" if self.value is None else f" {self.value!r}"
        res = (
            "" if self.outcome is not Outcome.OK or self.result is None else f" -> {self.result!r}"
        )
        end = "…" if self.complete_us is None else f"{self.complete_us / 1e6:.3f}s"
        return (
            f"op{self.id} c{self.client} {self.kind.value} {self.key}{val}"
            f" [{self.invoke_us / 1e6:.3f}s, {end}] {self.outcome.value}{res}"
        )


class History:
    """Append-only list of operations, in invocation order."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def invoke(self, client: int, kind: OpKind, key: str, value: Any, now_us: int) -> Op:
        op = Op(id=len(self.ops), client=client, kind=kind, key=key, value=value, invoke_us=now_us)
        self.ops.append(op)
        return op

    @staticmethod
    def complete(op: Op, outcome: Outcome, now_us: int, result: Any = None) -> None:
        assert op.outcome is Outcome.PENDING, f"op{op.id} completed twice"
        op.outcome = outcome
        op.result = result
        op.complete_us = None if outcome is Outcome.INFO else now_us

    def close(self) -> None:
        """End of run: whatever is still pending is unknown."""
        for op in self.ops:
            if op.outcome is Outcome.PENDING:
                op.outcome = Outcome.INFO
                op.complete_us = None

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "fail": 0, "info": 0}
        for op in self.ops:
            if op.outcome is not Outcome.PENDING:
                out[op.outcome.value] += 1
        return out
