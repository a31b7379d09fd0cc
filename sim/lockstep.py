"""A lock-step cluster: RaftNodes joined by explicit message queues, no clock.

Where the event simulator (sim/world.py) models time, delays and disks, this
harness gives a test total control: tick one node, deliver one message, drop
another, crash a node between persisting and sending. Scenario tests written
as data (tests/testdata/*.txt) and the hypothesis stateful test drive it.

Storage is in memory and always durable once a Ready is handled: a crash
keeps exactly what the node persisted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from coord.raft import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    NodeId,
    RaftNode,
    Ready,
    Restored,
    Snapshot,
    render,
)
from coord.raft.confchange import bootstrap


@dataclass
class MemStorage:
    """What a node has made durable."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.meta.index if self.snapshot else 0
            del self.entries[first - base - 1 :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        base = self.snapshot.meta.index if self.snapshot else 0
        del self.entries[: snap.meta.index - base]
        self.snapshot = snap

    def restored(self) -> Restored:
        return Restored(self.hard_state, self.snapshot, tuple(self.entries))


class LockstepCluster:
    def __init__(
        self,
        voters: list[int],
        *,
        seed: int = 0,
        config: dict[str, object] | None = None,
        node_class: type[RaftNode] = RaftNode,
    ) -> None:
        self.seed = seed
        self.config = dict(config or {})
        self.node_class = node_class
        self.voters = sorted(voters)
        self.storage: dict[NodeId, MemStorage] = {}
        self.nodes: dict[NodeId, RaftNode] = {}
        self.applied: dict[NodeId, list[Entry]] = {}
        self.inbox: list[Message] = []  # in flight, in send order
        self.cut: set[tuple[int, int]] = set()  # (src, dst) pairs that drop messages
        self.read_results: dict[NodeId, list[tuple[int, object]]] = {}
        self.restored_data: dict[NodeId, list[bytes]] = {}  # payloads from a snapshot
        first, hs = bootstrap(self.voters)
        for nid in self.voters:
            self.storage[NodeId(nid)] = MemStorage(hs, None, [first])
            self._start(NodeId(nid))

    # ---- membership of the harness --------------------------------------------

    def _start(self, nid: NodeId) -> None:
        rng = random.Random(self.seed * 1000 + nid)
        cfg = Config(id=nid, **self.config)  # type: ignore[arg-type]
        self.nodes[nid] = self.node_class(cfg, rng, self.storage[nid].restored())
        snap = self.storage[nid].snapshot
        self.applied[nid] = []
        self.restored_data[nid] = [d for d in snap.data.split(b"|") if d] if snap else []
        self.read_results.setdefault(nid, [])

    def add_empty_node(self, nid: int) -> None:
        """A brand-new member: empty disk, learns the configuration from the leader."""
        self.storage[NodeId(nid)] = MemStorage()
        self._start(NodeId(nid))

    def crash(self, nid: int) -> None:
        """Lose everything not persisted and whatever was on its way to it.

        What it already sent stays in flight: those messages left before the crash.
        """
        del self.nodes[NodeId(nid)]
        self.inbox = [m for m in self.inbox if m.dst != nid]

    def restart(self, nid: int) -> None:
        self._start(NodeId(nid))

    # ---- driving ----------------------------------------------------------------

    def handle_ready(self, nid: int) -> Ready | None:
        node = self.nodes[NodeId(nid)]
        if not node.has_ready():
            return None
        rd = node.ready()
        self.inbox.extend(rd.messages)
        self.storage[NodeId(nid)].save(rd)
        self.inbox.extend(rd.persisted_messages)
        if rd.snapshot is not None:
            # The state machine is replaced by the snapshot's (see compact()).
            self.applied[NodeId(nid)] = []
            self.restored_data[NodeId(nid)] = [d for d in rd.snapshot.data.split(b"|") if d]
        self.applied[NodeId(nid)].extend(rd.committed)
        self.read_results[NodeId(nid)].extend((rs.index, rs.context) for rs in rd.read_states)
        node.advance(rd)
        return rd

    def process_all(self) -> None:
        for nid in sorted(self.nodes):
            while self.handle_ready(nid) is not None:
                pass

    def deliver(self, m: Message) -> None:
        self.inbox.remove(m)
        if (m.src, m.dst) in self.cut or m.dst not in self.nodes:
            return
        self.nodes[m.dst].step(m)

    def deliver_all(self) -> list[Message]:
        """Deliver what is in flight now (not what that provokes); return it."""
        batch, self.inbox = self.inbox, []
        for m in batch:
            if (m.src, m.dst) in self.cut or m.dst not in self.nodes:
                continue
            self.nodes[m.dst].step(m)
        return batch

    def stabilize(self, max_rounds: int = 1000) -> list[str]:
        """Handle Readys and deliver messages until nothing moves; the trace."""
        trace: list[str] = []
        for _ in range(max_rounds):
            self.process_all()
            if not self.inbox:
                return trace
            trace.extend(render(m) for m in self.deliver_all())
        raise AssertionError("cluster did not stabilize")

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[NodeId(nid)].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for nid in sorted(self.nodes):
                self.nodes[nid].tick()

    def elect(self, nid: int) -> None:
        """Make ``nid`` leader: campaign and let the cluster settle."""
        self.nodes[NodeId(nid)].campaign()
        self.stabilize()

    def propose(self, nid: int, data: bytes) -> int:
        return int(self.nodes[NodeId(nid)].propose(data))

    def compact(self, nid: int) -> Snapshot:
        """Snapshot the node's applied state (the applied payloads, joined) and compact."""
        node = self.nodes[NodeId(nid)]
        data = b"|".join(self.data_applied(nid))
        snap = node.compact(node.log.applied, data)
        self.storage[NodeId(nid)].compact(snap)
        return snap

    # ---- looking ----------------------------------------------------------------

    def leader(self) -> NodeId | None:
        leaders = [nid for nid, n in sorted(self.nodes.items()) if n.role.name == "LEADER"]
        return leaders[-1] if leaders else None

    def data_applied(self, nid: int) -> list[bytes]:
        ours = [e.data for e in self.applied[NodeId(nid)] if e.kind is EntryKind.NORMAL]
        return self.restored_data.get(NodeId(nid), []) + ours

    def conf(self, nid: int) -> ConfState:
        return self.nodes[NodeId(nid)].conf

    def describe(self, nid: int) -> str:
        n = self.nodes[NodeId(nid)]
        return (
            f"{nid}: {n.role.value} term={n.term} vote={n.vote} leader={n.leader} "
            f"last={n.log.last_index()} commit={n.log.committed} applied={n.log.applied}"
        )
