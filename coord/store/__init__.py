"""The replicated store: MVCC key-value map, transactions, leases, sessions (machine.py)."""

from .machine import StateMachine, encode, error
from .mvcc import Compacted, Event, KeyValue

__all__ = ["Compacted", "Event", "KeyValue", "StateMachine", "encode", "error"]
