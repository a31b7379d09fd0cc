"""The contract between the pure core and its driver.

The core never performs I/O. After feeding it input (``step``, ``tick``,
``propose``, ...), the driver asks ``has_ready()`` and, if so, takes one
``Ready`` and handles it **in this order**:

1. send ``messages`` now (a leader's replication traffic: it may go out while
   the leader's own disk write is in progress, Raft thesis §10.2.1);
2. persist ``snapshot`` (if any), then ``entries`` (an append that overwrites
   the stored log from ``entries[0].index`` on), then ``hard_state``; make them
   durable (fsync) if ``must_sync``;
3. only then send ``persisted_messages`` (votes, acknowledgements: they promise
   durability);
4. restore the state machine from ``snapshot`` (if any), then apply
   ``committed`` in order;
5. answer ``read_states`` once the state machine has applied their index;
6. call ``advance(ready)``.

Only one Ready is outstanding at a time: the core refuses to make a new one
before ``advance``. Everything the driver does not do in this order is a bug
the simulator is there to catch (see sim/mutants.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import Message
from .types import Entry, HardState, Index, NodeId, Role, Snapshot


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile facts the driver may want to show or act on (not persisted)."""

    role: Role
    leader: NodeId


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex request is safe to serve once the state machine applied ``index``."""

    index: Index
    context: object


@dataclass(frozen=True, slots=True)
class Ready:
    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    persisted_messages: tuple[Message, ...]
    committed: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]
    # Term or vote changed, or entries/snapshot to store: fsync before step 3.
    must_sync: bool
