"""What a scenario promises beyond the universal invariants, by name.

A scenario lists names in ``expect``; each maps to a function that reads the
finished run and returns problems (empty: kept). Arguments follow a colon:
``final-voters:1,2,3,4,6``. Each expectation also guards against vacuity: a
split that produced no minority writes cannot show that they fail.
"""

from __future__ import annotations

from collections.abc import Callable

from coord.raft import Role

from .history import Op, OpKind, Outcome
from .loop import MS, S
from .scenario import Scenario, ScenarioRun

Check = Callable[[ScenarioRun, Scenario, str], list[str]]
EXPECTATIONS: dict[str, Check] = {}


def expectation(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        EXPECTATIONS[name] = fn
        return fn

    return register


def _quorum(run: ScenarioRun) -> int:
    return len(run.world.nodes) // 2 + 1


def _timeout_us(run: ScenarioRun) -> int:
    p = run.world.p
    return p.election_ticks * p.tick_us


def _leader_spans(run: ScenarioRun, nid: int) -> list[tuple[int, int | None, int]]:
    """(from, to, term) for each stretch ``nid`` was leader."""
    spans: list[tuple[int, int | None, int]] = []
    for ev in run.world.timeline:
        if ev.kind != "role" or ev.node != nid:
            continue
        if spans and spans[-1][1] is None:
            start, _, term = spans[-1]
            spans[-1] = (start, ev.time_us, term)
        if ev.role is Role.LEADER:
            spans.append((ev.time_us, None, ev.term))
    return spans


@expectation("minority-never-ok")
def minority_never_ok(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """While split, an operation sent only to nodes without a majority cannot succeed."""
    problems, tried = [], 0
    minority_ops: list[Op] = []
    grace = 100 * MS  # replies already on the wire when the split began
    for start, end, groups in run.splits:
        minority = {n for g in groups if len(g) < _quorum(run) for n in g}
        stop = end if end is not None else run.world.loop.now
        for op in run.world.history.ops:
            if op.invoke_us < start + grace or not op.nodes or not set(op.nodes) <= minority:
                continue
            if op.complete_us is not None and op.complete_us > stop:
                continue
            tried += 1
            minority_ops.append(op)
            if op.outcome is Outcome.OK:
                problems.append(f"minority op succeeded during the split: {op.render()}")
    if not tried:
        problems.append("vacuous: no operation was sent to the minority during a split")
    outcomes = [op.outcome.value for op in run.world.history.ops if op in minority_ops]
    run.evidence.append(
        f"minority-never-ok: {tried} ops sent only to the minority while split: "
        f"{outcomes.count('ok')} ok, {outcomes.count('fail')} fail, {outcomes.count('info')} info"
    )
    return problems


@expectation("majority-elects")
def majority_elects(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """After the split the majority side elects a leader of a newer term, quickly."""
    if not run.splits:
        return ["no split happened"]
    start, _, groups = run.splits[0]
    bound = int(float(arg) * S) if arg else 3 * S
    majority = next((set(g) for g in groups if len(g) >= _quorum(run)), set())
    before = max((t for time, t, _ in run.world.leaders if time < start), default=0)
    for time, term, node in run.world.leaders:
        if start <= time <= start + bound and node in majority and term > before:
            after_ms = (time - start) / MS
            run.evidence.append(f"majority-elects: n{node} leads term {term}, {after_ms:.0f}ms in")
            return []
    return [
        f"no leader of a newer term on the majority side {sorted(majority)} within {bound / S:.1f}s"
    ]


@expectation("old-leader-steps-down")
def old_leader_steps_down(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """CheckQuorum: a leader cut off from the majority stops leading within an election timeout."""
    old = run.names.get("old")
    if old is None or not run.splits:
        return ["scenario did not name the old leader ('old') or split"]
    start = run.splits[0][0]
    # One timeout of silence, plus a tick of granularity and a heartbeat in flight.
    p = run.world.p
    bound = _timeout_us(run) + 2 * p.tick_us
    for s, e, term in _leader_spans(run, old):
        if s <= start and (e is None or e > start):
            if e is None or e - start > bound:
                took = "never" if e is None else f"after {(e - start) / MS:.0f}ms"
                return [
                    f"old leader n{old} (term {term}) stepped down {took}; bound {bound / MS:.0f}ms"
                ]
            run.evidence.append(
                f"old-leader-steps-down: n{old} stopped leading {(e - start) / MS:.0f}ms "
                f"after the split (bound {bound / MS:.0f}ms)"
            )
            return []
    return [f"n{old} was not leading when the split began"]


@expectation("tail-replaced")
def tail_replaced(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """The cut-off leader's uncommitted entries are replaced by the majority's after heal."""
    old = run.names.get("old")
    if old is None or not run.split_logs:
        return ["no recorded split for the old leader"]
    _, tail = run.split_logs[0].get(old, (0, {}))
    # Entries from before the split may have reached the majority and commit
    # legitimately; those appended while cut off cannot.
    first_new = run.split_last[0].get(old, 0) + 1
    tail = {i: t for i, t in tail.items() if i >= first_new}
    if not tail:
        return [f"vacuous: n{old} appended nothing while cut off"]
    # What the cluster finally applied at those indexes (every node agrees, or
    # state-machine-safety says otherwise) must come from a newer term.
    applied = run.world.checker.applied
    missing = [i for i in sorted(tail) if i not in applied]
    if missing:
        return [f"indexes {missing} of n{old}'s old tail were never applied by anyone"]
    kept = [i for i, t in sorted(tail.items()) if applied[i][0] == t]
    if kept:
        return [f"entries {kept} that n{old} appended while cut off were applied after all"]
    run.evidence.append(
        f"tail-replaced: n{old} appended {min(tail)}..{max(tail)} while cut off; "
        "newer terms' entries were applied there"
    )
    return []


@expectation("stable-leader")
def stable_leader(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """After ``settled`` (a mark), the same leader stays and writes keep succeeding."""
    settled = run.marks.get("settled")
    if settled is None:
        return ["scenario has no 'settled' mark"]
    changes = [(t, term, n) for t, term, n in run.world.leaders if t > settled]
    problems = []
    if changes:
        _, term, node = changes[0]
        problems.append(f"{len(changes)} leader change(s) after settling, first n{node} t{term}")
    if run.world.stable_leader() is None:
        problems.append("no stable leader at the end")
    oks = [
        op
        for op in run.world.history.ops
        if op.kind is not OpKind.READ and op.outcome is Outcome.OK and op.invoke_us > settled
    ]
    if len(oks) < 5:
        problems.append(f"only {len(oks)} writes succeeded after settling")
    run.evidence.append(
        f"stable-leader: {len(changes)} leader changes after settling; {len(oks)} writes ok since"
    )
    return problems


@expectation("bounded-terms")
def bounded_terms(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """No endless term growth: terms rise by at most ``arg`` (default 2) after the fault."""
    limit = int(arg or 2)
    start = run.splits[0][0] if run.splits else run.marks.get("fault", 0)
    before = max((t for time, t, _ in run.world.leaders if time <= start), default=1)
    top = max(
        (ev.term for ev in run.world.timeline if ev.kind == "role"),
        default=0,
    )
    if top > before + limit:
        return [f"terms grew from {before} to {top} (limit +{limit})"]
    run.evidence.append(f"bounded-terms: term {before} before the fault, at most {top} after")
    return []


@expectation("no-disruption")
def no_disruption(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """A node returning after isolation does not depose the leader (PreVote + CheckQuorum)."""
    rejoin = run.marks.get("rejoin")
    if rejoin is None:
        return ["scenario has no 'rejoin' mark"]
    after = [(t, term, n) for t, term, n in run.world.leaders if t >= rejoin]
    if after:
        t, term, n = after[0]
        return [f"leader changed after the rejoin: n{n} t{term} at {t / S:.3f}s"]
    run.evidence.append("no-disruption: no election after the node returned")
    return []


@expectation("snapshot-installed")
def snapshot_installed(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    got = sum(n.snapshots_installed for n in run.world.nodes.values())
    run.evidence.append(f"snapshot-installed: {got} snapshot(s) installed from a leader")
    return [] if got else ["no node installed a snapshot from a leader"]


@expectation("retries-deduplicated")
def retries_deduplicated(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """Exactly-once was exercised: some retried write was answered from the session table."""
    hits = len(run.world.dedup_entries)
    if hits == 0:
        return ["vacuous: no retry reached the session table"]
    run.evidence.append(f"retries-deduplicated: {hits} retried writes answered from sessions")
    return []


@expectation("batched-writes")
def batched_writes(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """Batch entries were exercised: some writes came while the leader persisted and
    went into one entry together (coord/store/batch.py), under the same checkers."""
    n = run.world.batched_writes
    if n == 0:
        return ["vacuous: every write went into an entry of its own"]
    run.evidence.append(f"batched-writes: {n} writes proposed in shared entries")
    return []


@expectation("lost-unsynced")
def lost_unsynced(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """The crashes really took unsynced records (the run's other checks then show that
    no acknowledged write went with them); torn tails are counted, as half of such
    crashes leave one."""
    w = run.world
    if w.unsynced_lost == 0:
        return ["vacuous: no crash found unsynced records to lose"]
    run.evidence.append(
        f"lost-unsynced: {w.unsynced_lost} unsynced records lost, {w.torn_tails} torn tails"
    )
    return []


@expectation("prevoted-in-vain")
def prevoted_in_vain(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """``prevoted-in-vain:4,5``: after ``settled``, each named node lost touch with the
    leader long enough to ask for pre-votes, and no term began (PreVote kept it)."""
    settled = run.marks.get("settled", 0)
    nodes = [int(x) for x in arg.split(",") if x]
    events = [e for e in run.world.timeline if e.kind == "role" and e.time_us > settled]
    tried = {
        n: sum(1 for e in events if e.node == n and e.role is Role.PRE_CANDIDATE) for n in nodes
    }
    problems = [f"vacuous: n{n} never asked for pre-votes" for n in nodes if not tried[n]]
    terms = {e.term for e in events if e.role is Role.CANDIDATE or e.role is Role.LEADER}
    if terms:
        problems.append(f"a new term began after settling: {sorted(terms)}")
    if not problems:
        counts = ", ".join(f"n{n} {tried[n]} times" for n in nodes)
        run.evidence.append(f"prevoted-in-vain: {counts}; no new term")
    return problems


@expectation("final-voters")
def final_voters(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    """``final-voters:-gone,+6``: the founders, less bound name ``gone``, plus node 6."""
    voters = set(range(1, sc.nodes + 1))
    for tok in arg.split(","):
        ref = tok[1:]
        nid = int(ref) if ref.isdigit() else run.names.get(ref)
        if nid is None:
            return [f"final-voters: unknown name {ref!r}"]
        if tok.startswith("-"):
            voters.discard(nid)
        else:
            voters.add(nid)
    want = tuple(sorted(voters))
    lead = run.world.stable_leader()
    if lead is None or lead.core is None:
        return ["no leader at the end"]
    idx, conf = lead.core.log.latest_conf()
    run.evidence.append(f"final-voters: {list(conf.voters)}, want {list(want)}")
    if conf.voters != want or idx > lead.core.log.committed:
        committed = idx <= lead.core.log.committed
        return [f"voters {list(conf.voters)} (committed: {committed}), want {list(want)}"]
    return []


@expectation("progress")
def progress(run: ScenarioRun, sc: Scenario, arg: str) -> list[str]:
    need = int(arg or 20)
    oks = sum(
        1 for op in run.world.history.ops if op.outcome is Outcome.OK and op.kind is not OpKind.READ
    )
    run.evidence.append(f"progress: {oks} writes ok (want at least {need})")
    return [] if oks >= need else [f"only {oks} writes succeeded (want {need})"]


def check(run: ScenarioRun, sc: Scenario) -> list[tuple[str, str]]:
    out = []
    for spec in sc.expect:
        name, _, arg = spec.partition(":")
        fn = EXPECTATIONS.get(name)
        if fn is None:
            out.append((name, f"unknown expectation {name!r}"))
            continue
        out.extend((name, p) for p in fn(run, sc, arg))
    return out


# The target side's expectations register themselves here (VIPs, sessions, replicas).
from . import expectations_map  # noqa: E402, F401
