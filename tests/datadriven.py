"""Scenario tests as data: tests/testdata/*.txt, after etcd-io/raft's datadriven tests.

A file is a list of cases separated by blank lines:

    # a comment
    command arg arg
    ----
    expected output, one or more lines

Commands drive a LockstepCluster (sim/lockstep.py); the output is the stable
one-line rendering of every message delivered (``1->2 App t2 prev=1/1 c=1
[2/2]``) and of node states. ``pytest --rewrite`` regenerates the expected
output in place; the diff is then reviewed like code.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from coord.raft import ChangeType, ConfChange, EntryKind, NodeId, RaftError, render
from sim.lockstep import LockstepCluster


@dataclass
class Case:
    line: int
    command: str
    expected: str


def parse(text: str) -> list[tuple[list[str], Case | None]]:
    """Chunks of (leading comment/blank lines, case)."""
    lines = text.split("\n")
    out: list[tuple[list[str], Case | None]] = []
    pre: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            pre.append(line)
            i += 1
            continue
        start = i
        command = line
        i += 1
        assert i < len(lines) and lines[i] == "----", (
            f"line {start + 1}: expected ---- after command"
        )
        i += 1
        body = []
        while i < len(lines) and lines[i].strip():
            body.append(lines[i])
            i += 1
        out.append((pre, Case(start + 1, command, "\n".join(body))))
        pre = []
    if pre:
        out.append((pre, None))
    return out


def render_file(chunks: list[tuple[list[str], Case | None]], outputs: list[str]) -> str:
    parts: list[str] = []
    k = 0
    for pre, case in chunks:
        parts.extend(pre)
        if case is not None:
            parts.append(case.command)
            parts.append("----")
            parts.append(outputs[k] or "ok")
            k += 1
    return "\n".join(parts)


class Driver:
    def __init__(self) -> None:
        self.c: LockstepCluster | None = None

    @property
    def cluster(self) -> LockstepCluster:
        assert self.c is not None, "no cluster yet: start with `cluster 1 2 3`"
        return self.c

    def run(self, command: str) -> str:
        words = shlex.split(command)
        name, args = words[0], words[1:]
        fn = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"unknown command {name!r}")
        return str(fn(*args)).rstrip()

    # ---- commands -------------------------------------------------------------------

    def cmd_cluster(self, *args: str) -> str:
        ids = [int(a) for a in args if "=" not in a]
        opts: dict[str, object] = {}
        for a in args:
            if "=" in a:
                k, v = a.split("=", 1)
                opts[k] = v == "true" if v in ("true", "false") else int(v)
        self.c = LockstepCluster(ids, config={"election_ticks": 10, "heartbeat_ticks": 1, **opts})
        return "ok"

    def cmd_campaign(self, nid: str) -> str:
        self.cluster.nodes[NodeId(int(nid))].campaign()
        return "ok"

    def cmd_stabilize(self) -> str:
        return "\n".join(self._stabilize()) or "ok"

    def _stabilize(self) -> list[str]:
        c = self.cluster
        out: list[str] = []
        for _ in range(200):
            c.process_all()
            if not c.inbox:
                return out
            for m in c.deliver_all():
                cut = (m.src, m.dst) in c.cut or m.dst not in c.nodes
                out.append(render(m) + ("  (dropped)" if cut else ""))
        raise AssertionError("did not stabilize")

    def cmd_process(self) -> str:
        self.cluster.process_all()
        return "ok"

    def cmd_deliver(self) -> str:
        c = self.cluster
        out = []
        for m in c.deliver_all():
            cut = (m.src, m.dst) in c.cut or m.dst not in c.nodes
            out.append(render(m) + ("  (dropped)" if cut else ""))
        return "\n".join(out) or "nothing in flight"

    def cmd_tick(self, nid: str, count: str = "1") -> str:
        self.cluster.tick(int(nid), int(count))
        return "ok"

    def cmd_tick_all(self, count: str = "1") -> str:
        self.cluster.tick_all(int(count))
        return "ok"

    def cmd_elapse(self, count: str) -> str:
        """``count`` rounds of: every node ticks once, then all traffic settles.
        Prints who changed role or term along the way."""
        c = self.cluster
        seen = {n: (c.nodes[n].role, c.nodes[n].term) for n in sorted(c.nodes)}
        out = []
        for k in range(int(count)):
            c.tick_all(1)
            self._stabilize()
            for n in sorted(c.nodes):
                now = (c.nodes[n].role, c.nodes[n].term)
                if seen.get(n) != now:
                    out.append(f"tick {k + 1}: {n} {now[0].value} t{now[1]}")
                    seen[n] = now
        return "\n".join(out) or "no change"

    def cmd_status(self, *nids: str) -> str:
        c = self.cluster
        ids = [int(n) for n in nids] or sorted(c.nodes)
        return "\n".join(c.describe(n) for n in ids)

    def cmd_propose(self, nid: str, data: str) -> str:
        try:
            return f"index {self.cluster.propose(int(nid), data.encode())}"
        except RaftError as e:
            return f"{type(e).__name__}: {e}"

    def cmd_isolate(self, nid: str) -> str:
        c, n = self.cluster, int(nid)
        for o in list(c.storage):
            if o != n:
                c.cut |= {(n, o), (o, n)}
        return "ok"

    def cmd_cut(self, a: str, b: str) -> str:
        self.cluster.cut |= {(int(a), int(b)), (int(b), int(a))}
        return "ok"

    def cmd_cut_one_way(self, a: str, b: str) -> str:
        self.cluster.cut.add((int(a), int(b)))
        return "ok"

    def cmd_heal(self) -> str:
        self.cluster.cut = set()
        return "ok"

    def cmd_crash(self, nid: str) -> str:
        self.cluster.crash(int(nid))
        return "ok"

    def cmd_restart(self, nid: str) -> str:
        self.cluster.restart(int(nid))
        return self.cluster.describe(int(nid))

    def cmd_log(self, nid: str) -> str:
        log = self.cluster.nodes[NodeId(int(nid))].log
        kinds = {EntryKind.NORMAL: "", EntryKind.NOOP: " noop", EntryKind.CONFIG: " conf"}
        parts = [
            f"{e.index}/{e.term}{kinds[e.kind]}"
            + (" " + e.data.decode() if e.kind is EntryKind.NORMAL else "")
            for e in log.entries
        ]
        head = f"snapshot {log.offset}/{log.offset_term}; " if log.offset else ""
        return head + (" | ".join(parts) if parts else "empty")

    def cmd_applied(self, nid: str) -> str:
        data = self.cluster.data_applied(int(nid))
        return " ".join(d.decode() for d in data) or "nothing"

    def cmd_read_index(self, nid: str, ctx: str) -> str:
        try:
            self.cluster.nodes[NodeId(int(nid))].read_index(ctx)
        except RaftError as e:
            return f"{type(e).__name__}: {e}"
        return "ok"

    def cmd_read_states(self, nid: str) -> str:
        got = self.cluster.read_results[NodeId(int(nid))]
        out = " ".join(f"{ctx}@{index}" for index, ctx in got) or "none"
        got.clear()
        return out

    def cmd_transfer(self, nid: str, to: str) -> str:
        try:
            self.cluster.nodes[NodeId(int(nid))].transfer_leadership(NodeId(int(to)))
        except RaftError as e:
            return f"{type(e).__name__}: {e}"
        return "ok"

    def cmd_compact(self, nid: str) -> str:
        snap = self.cluster.compact(int(nid))
        return f"snapshot at {snap.meta.index}/{snap.meta.term}"

    def cmd_add_node(self, nid: str) -> str:
        self.cluster.add_empty_node(int(nid))
        return "ok"

    def cmd_conf(self, nid: str, change: str, node: str) -> str:
        kinds = {
            "add-learner": ChangeType.ADD_LEARNER,
            "promote": ChangeType.PROMOTE,
            "remove": ChangeType.REMOVE,
            "add-voter": ChangeType.ADD_VOTER,
        }
        try:
            idx = self.cluster.nodes[NodeId(int(nid))].propose_conf_change(
                ConfChange(kinds[change], NodeId(int(node)))
            )
        except RaftError as e:
            return f"{type(e).__name__}: {e}"
        return f"index {idx}"

    def cmd_conf_state(self, nid: str) -> str:
        conf = self.cluster.conf(int(nid))
        return f"voters={list(conf.voters)} learners={list(conf.learners)}"

    def cmd_progress(self, nid: str) -> str:
        node = self.cluster.nodes[NodeId(int(nid))]
        return "\n".join(f"{p}: {pr!r}" for p, pr in sorted(node.progress.items())) or "not leader"


def run_file(path: Path, rewrite: bool) -> list[str]:
    """Run every case; return mismatch reports (and rewrite the file if asked)."""
    chunks = parse(path.read_text())
    d = Driver()
    outputs: list[str] = []
    problems: list[str] = []
    for _, case in chunks:
        if case is None:
            continue
        try:
            got = d.run(case.command)
        except Exception as e:  # a failing case must show up as a mismatch, with context
            got = f"error: {type(e).__name__}: {e}"
        outputs.append(got)
        if got != (case.expected or "ok") and not rewrite:
            where = f"{path.name}:{case.line}: {case.command}"
            problems.append(f"{where}\n--- expected\n{case.expected}\n--- got\n{got}")
    if rewrite:
        path.write_text(render_file(chunks, outputs))
    return problems
