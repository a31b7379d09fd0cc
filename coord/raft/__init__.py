"""Pure Raft core: no I/O, no clocks, no global randomness (see node.py and ready.py)."""

from .confchange import ChangeType, ConfChange
from .errors import (
    Compacted,
    ConfChangeRejected,
    InvalidChange,
    NotLeader,
    ProposalDropped,
    RaftError,
)
from .messages import Message, render
from .node import Config, RaftNode, Status
from .ready import ReadState, Ready, SoftState
from .types import (
    NONE,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Index,
    NodeId,
    Restored,
    Role,
    Snapshot,
    SnapshotMeta,
    Term,
)

__all__ = [
    "NONE",
    "ChangeType",
    "Compacted",
    "ConfChange",
    "ConfChangeRejected",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "Index",
    "InvalidChange",
    "Message",
    "NodeId",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "RaftNode",
    "ReadState",
    "Ready",
    "Restored",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "Term",
    "render",
]
