"""Raft's safety properties (Figure 3 of the paper), checked as the run goes.

The checker watches every Ready a node produces and every entry it applies,
and keeps cross-node registries. It reads the nodes, never changes them.

- Election Safety: at most one leader per term.
- Leader Append-Only: a leader never overwrites or deletes entries of its log
  during its term.
- Log Matching: if two logs hold an entry with the same index and term, the
  logs are identical up to it. Checked inductively: every (index, term) must
  always come with the same payload and the same previous term.
- Leader Completeness: a new leader holds every entry anyone has committed.
- State Machine Safety: no two nodes apply different entries at one index.
- Exactly-once (for the KV store's sessions): a (client, seq) executes at one
  index at most.
"""

from __future__ import annotations

from collections.abc import Callable

from coord.raft import Entry, Index, NodeId, RaftNode, Ready, Role

Report = Callable[[str, tuple[int, ...], str], None]


class RaftChecker:
    def __init__(self, report: Report) -> None:
        self._report = report
        self.leaders: dict[int, int] = {}  # term -> node
        # (index, term) -> (previous term, kind, data)
        self._log: dict[tuple[int, int], tuple[int | None, int, bytes]] = {}
        # index -> (term, node that first claimed it), for entries known committed
        self.committed: dict[int, tuple[int, int]] = {}
        self._commit_seen: dict[int, int] = {}  # node -> highest commit already registered
        # index -> (term, kind, data, node) of what was applied there
        self.applied: dict[int, tuple[int, int, bytes, int]] = {}
        # node -> (term, last index) while it leads
        self._leading: dict[int, tuple[int, int, int | None]] = {}
        self._executed: dict[tuple[int, int], int] = {}  # (client, seq) -> index

    def forget_node(self, nid: int) -> None:
        """A crash: its commit knowledge restarts from disk (register again from there)."""
        self._commit_seen.pop(nid, None)
        self._leading.pop(nid, None)

    # ---- hooks --------------------------------------------------------------------

    def on_ready(self, nid: int, core: RaftNode, rd: Ready) -> None:
        log = core.log
        for e in rd.entries:
            prev = log.term(e.index - 1)
            key = (e.index, e.term)
            got = (prev, int(e.kind), e.data)
            seen = self._log.setdefault(key, got)
            if seen != got:
                self._report(
                    "log-matching",
                    (nid,),
                    f"entry {e.index}/{e.term} on n{nid} differs from the one other nodes hold "
                    f"(prev term {prev} vs {seen[0]}, data {e.data!r} vs {seen[2]!r})",
                )
        if core.role is Role.LEADER:
            self._check_append_only(nid, core, rd)
        else:
            self._leading.pop(nid, None)
        self._register_commits(nid, core)

    def on_leader(self, nid: int, core: RaftNode) -> None:
        term = core.term
        other = self.leaders.setdefault(term, nid)
        if other != nid:
            self._report(
                "election-safety", (other, nid), f"two leaders in term {term}: n{other} and n{nid}"
            )
        log = core.log
        for index in sorted(self.committed):
            if index <= log.offset:
                continue
            cterm, by = self.committed[index]
            mine = log.term(index)
            if mine != cterm:
                self._report(
                    "leader-completeness",
                    (nid, by),
                    f"n{nid} leads term {term} without committed entry {index}/{cterm} "
                    f"(committed per n{by}; n{nid} has term {mine})",
                )
                return

    def on_apply(self, nid: int, e: Entry) -> None:
        got = (int(e.term), int(e.kind), e.data, nid)
        seen = self.applied.setdefault(e.index, got)
        if seen[:3] != got[:3]:
            self._report(
                "state-machine-safety",
                (seen[3], nid),
                f"index {e.index}: n{seen[3]} applied {seen[2]!r} (term {seen[0]}), "
                f"n{nid} applied {e.data!r} (term {e.term})",
            )

    def on_executed(self, nid: int, client: int, seq: int, index: int) -> None:
        first = self._executed.setdefault((client, seq), index)
        if first != index:
            self._report(
                "exactly-once",
                (nid,),
                f"command c{client}#{seq} executed at index {first} and again at {index}",
            )

    # ---- helpers --------------------------------------------------------------------

    def _check_append_only(self, nid: int, core: RaftNode, rd: Ready) -> None:
        log = core.log
        term = core.term
        prev = self._leading.get(nid)
        if prev is not None and prev[0] == term:
            _, last, last_term = prev
            if rd.entries and rd.entries[0].index <= last:
                self._report(
                    "leader-append-only",
                    (nid,),
                    f"leader n{nid} (term {term}) rewrote its log from index "
                    f"{rd.entries[0].index} (had {last})",
                )
            elif last > log.offset and log.term(last) != last_term:
                self._report(
                    "leader-append-only",
                    (nid,),
                    f"leader n{nid} (term {term}) lost or changed entry {last}",
                )
        last = log.last_index()
        self._leading[nid] = (term, last, log.term(last))

    def _register_commits(self, nid: int, core: RaftNode) -> None:
        log = core.log
        lo = max(self._commit_seen.get(nid, 0), log.offset) + 1
        for index in range(lo, log.committed + 1):
            term = log.term(index)
            assert term is not None
            seen = self.committed.setdefault(index, (term, nid))
            if seen[0] != term:
                self._report(
                    "committed-entry-changed",
                    (seen[1], nid),
                    f"index {index} committed with term {seen[0]} on n{seen[1]} "
                    f"but with term {term} on n{nid}",
                )
        self._commit_seen[nid] = max(self._commit_seen.get(nid, 0), log.committed)

    def lost_writes(self, positions: list[tuple[int, Index, int]]) -> list[tuple[int, str]]:
        """Acknowledged writes (op id, index, term) whose entry is not what got applied:
        (op id, what is wrong)."""
        out = []
        for op_id, index, term in positions:
            seen = self.applied.get(index)
            if seen is None:
                text = f"op{op_id} acknowledged at {index}/{term} but never applied anywhere"
                out.append((op_id, text))
            elif seen[0] != term:
                text = (
                    f"op{op_id} acknowledged at {index}/{term}, but {index}/{seen[0]} was applied"
                )
                out.append((op_id, text))
        return out

    def leader_of(self, term: int) -> NodeId | None:
        n = self.leaders.get(term)
        return NodeId(n) if n is not None else None
