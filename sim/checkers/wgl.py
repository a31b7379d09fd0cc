"""Linearizability of a register-per-key history: Wing & Gong's search, Lowe's memo.

Theory of operation
-------------------
A history is linearizable if every operation can be given a point between its
invocation and its completion such that, in the order of those points, each
result is what a single register would have answered. Keys are independent
registers, so each key is checked alone (P-compositionality).

The search places operations one at a time (Wing & Gong 1993): an op may go
next if it began before the earliest end among the ops not yet placed, and if
the register allows its result. Lowe's memoization (2017) remembers every
(ops placed, register value) already explored: a second path to the same
pair can only end the same way. On top of that, the history is cut at quiet
instants — moments no operation spans — into segments. Each segment is
searched exhaustively from every register value the previous one can end
with, and passes on the values it can end with. So the work grows with how
much overlaps, not with the length of the history, and a history that is not
linearizable is reported by the segment in which no order works.

Outcomes: ``ok`` operations must be placed in their interval with their
result. ``fail`` ones had no effect and are dropped. ``info`` ones (unknown,
or still pending) end at +infinity: they may be placed anywhere after their
invocation, or never. An info read observes nothing and is dropped.

Unknown writes would otherwise defeat the cutting (they never end) and make
the search exponential. Two reductions, both sound:

- An info write or CAS that is the only writer of its value, when an ok
  operation observed that value, certainly took effect, and before the first
  such observer completed: it becomes an ordinary operation ending there.
  (Uniqueness is checked, not assumed; the simulator's clients make it so.)
- An info write or CAS whose value nobody observed — no ok read returned it,
  no non-failed CAS expected it — can only have mattered in one way: by being
  the value in the register when a CAS reported False. It leaves the search
  for a pool that such a CAS may draw on. Placed anywhere else it would change
  nothing anyone saw; "never" covers that.

A cheap pre-check catches the plainest violations outright: a read of a value
nobody wrote, or of one first written after the read returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..history import Op, OpKind, Outcome

INF = float("inf")


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    key: str
    linearizable: bool | None  # None: the search budget ran out (inconclusive)
    ops: int
    explored: int
    detail: str = ""
    at_us: int = 0  # when the history stopped fitting: the last end among the ops named
    nodes: tuple[int, ...] = ()  # the nodes that answered those ops


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    linearizable: bool | None
    keys: tuple[KeyVerdict, ...]

    def failures(self) -> list[KeyVerdict]:
        return [k for k in self.keys if k.linearizable is False]


def check_history(ops: Iterable[Op], *, budget_per_key: int = 200_000) -> LinearizabilityResult:
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    verdicts = tuple(check_key(k, by_key[k], budget_per_key) for k in sorted(by_key))
    if any(v.linearizable is False for v in verdicts):
        overall: bool | None = False
    elif any(v.linearizable is None for v in verdicts):
        overall = None
    else:
        overall = True
    return LinearizabilityResult(overall, verdicts)


def _is_ok(op: Op) -> bool:
    return op.outcome is Outcome.OK


def _is_unknown(op: Op) -> bool:
    return op.outcome in (Outcome.INFO, Outcome.PENDING)


def _cas_args(op: Op) -> tuple[Any, Any]:
    expected, new = op.value
    return expected, new


def relevant(ops: list[Op]) -> tuple[list[Op], list[Op]]:
    """Split a key's ops into those the search walks, and a pool of unseen writes.

    Failed ops and unknown reads are dropped. An unknown write or CAS that is
    the only writer of its value, when an ok op observed that value, took
    effect before that observer finished: it joins the search as an ok op
    ending there. An unknown write or CAS whose value nobody observed goes to
    the pool (see check_key): it can only ever matter to a CAS that reported
    False.
    """
    kept = [op for op in ops if op.outcome is not Outcome.FAIL]
    kept = [op for op in kept if not (op.kind is OpKind.READ and not _is_ok(op))]
    observed: set[Any] = set()
    writers: dict[Any, int] = {}
    for op in kept:
        if op.kind is OpKind.READ:
            observed.add(_hashable(op.result))
        else:
            w = _hashable(_written(op))
            writers[w] = writers.get(w, 0) + 1
            if op.kind is OpKind.CAS:
                observed.add(_hashable(_cas_args(op)[0]))
    searched: list[Op] = []
    unseen: list[Op] = []
    for op in kept:
        if _is_unknown(op) and op.kind is not OpKind.READ:
            new = _hashable(_written(op))
            if new not in observed:
                unseen.append(op)
                continue
            seen_by = _first_observer_end(new, kept)
            if writers[new] == 1 and seen_by is not None:
                op = replace(
                    op,
                    outcome=Outcome.OK,
                    complete_us=max(seen_by, op.invoke_us),
                    result=True if op.kind is OpKind.CAS else None,
                )
        searched.append(op)
    unseen.sort(key=lambda o: (o.invoke_us, o.id))
    return searched, unseen


def _written(op: Op) -> Any:
    return op.value if op.kind is OpKind.WRITE else _cas_args(op)[1]


def _first_observer_end(value: Any, ops: list[Op]) -> int | None:
    """When the first ok op that observed ``value`` completed (None: nobody did)."""
    ends = [
        op.complete_us
        for op in ops
        if _is_ok(op)
        and op.complete_us is not None
        and (
            (op.kind is OpKind.READ and _hashable(op.result) == value)
            or (
                op.kind is OpKind.CAS and op.result is True and _hashable(_cas_args(op)[0]) == value
            )
        )
    ]
    return min(ends, default=None)


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _step(state: Any, op: Op) -> tuple[bool, Any]:
    """Can ``op`` take effect on a register holding ``state``? And the value after."""
    kind = op.kind
    if kind is OpKind.WRITE:
        return True, op.value
    if kind is OpKind.READ:
        return op.result == state, state
    expected, new = _cas_args(op)
    if _is_unknown(op):
        return True, new if state == expected else state
    if op.result is True:
        return state == expected, new
    return state != expected, state


# The value an unseen write leaves behind: equal to nothing any client reads or expects.
UNSEEN = ("<value nobody observed>",)

# Between segments: (register value, pool items spent so far).
Config = tuple[Any, frozenset[int]]


def segments(ops: list[Op]) -> list[list[Op]]:
    """Split at quiet instants: every op of a segment began after every op of the
    previous one had ended (touching intervals count as overlapping)."""
    out: list[list[Op]] = []
    reach = -INF
    for op in sorted(ops, key=lambda o: (o.invoke_us, o.id)):
        if out and op.invoke_us <= reach:
            out[-1].append(op)
        else:
            out.append([op])
        reach = max(reach, _end(op))
    return out


def _end(op: Op) -> float:
    return INF if _is_unknown(op) or op.complete_us is None else op.complete_us


def check_key(key: str, ops: list[Op], budget: int = 200_000) -> KeyVerdict:
    """Search one key's history, a segment at a time (see the module docstring).

    Each segment is searched exhaustively from every configuration the previous
    one can end in; the configurations it can end in carry over. A segment
    with no way through proves the history non-linearizable, and is the
    report. The memo (ops placed, value, pool spent) bounds the work by what
    overlaps, not by the length of the history.
    """
    impossible, culprit = _impossible_read(ops)
    if impossible:
        return KeyVerdict(key, False, len(ops), 0, impossible, *_where([culprit]))
    searched, pool = relevant(ops)
    configs: set[Config] = {(None, frozenset())}
    explored = 0
    for seg in segments(searched):
        configs, n, why = _search_segment(seg, configs, pool, budget - explored)
        explored += n
        if why == "budget":
            return KeyVerdict(key, None, len(searched), explored, "search budget exhausted")
        if not configs:
            return KeyVerdict(key, False, len(searched), explored, why, *_where(seg))
    return KeyVerdict(key, True, len(searched), explored)


def _search_segment(
    seg: list[Op], starts: set[Config], pool: list[Op], budget: int
) -> tuple[set[Config], int, str]:
    """Every configuration the segment can end in; states explored; why none, if none.

    A candidate to place next must have begun before the earliest end among
    the ops not yet placed (the horizon). Unknown ops may be left out. A CAS
    that reported False while the register holds exactly what it expected may
    still be explained by a pool item taking effect just before it: an unspent
    unseen write, or an unseen CAS whose own expectation matches, invoked
    before the horizon. The register then holds UNSEEN, which no read or
    successful CAS accepts.

    Each step looks only at the frontier: ``seg`` is in invocation order and
    ``by_end`` in end order, and a search state carries the position of the
    first unplaced op in each, so a long segment costs what overlaps, not its
    length. The order found so far is a parent-linked chain (for the report).
    """
    n = len(seg)
    ends_at = [_end(op) for op in seg]
    by_end = sorted(range(n), key=lambda k: (ends_at[k], k))
    must = 0  # ok ops must be placed; unknown ones may stay out
    for k, op in enumerate(seg):
        if not _is_unknown(op):
            must |= 1 << k
    results: set[Config] = set()
    seen: set[tuple[int, Any, frozenset[int]]] = set()
    explored = 0
    best: tuple[int, Chain, Any] = (0, None, None)  # deepest partial order, for the report
    for start_state, start_spent in sorted(starts, key=repr):
        # (placed, value, spent, first unplaced by invocation, ... by end, depth, chain)
        stack: list[tuple[int, Any, frozenset[int], int, int, int, Chain]] = [
            (0, start_state, start_spent, 0, 0, 0, None)
        ]
        while stack:
            placed, state, spent, fi, fe, depth, chain = stack.pop()
            explored += 1
            if explored > budget:
                return set(), explored, "budget"
            if placed & must == must:
                results.add((state, spent))
            if depth > best[0]:
                best = (depth, chain, start_state)
            horizon = ends_at[by_end[fe]] if fe < n else INF
            k = fi
            while k < n and seg[k].invoke_us <= horizon:
                if placed >> k & 1:
                    k += 1
                    continue
                op = seg[k]
                ok, new_state = _step(state, op)
                new_spent = spent
                if not ok and op.kind is OpKind.CAS and op.result is False and _is_ok(op):
                    item = _spare(pool, spent, state, horizon)
                    if item >= 0:
                        ok, new_state, new_spent = True, UNSEEN, spent | {item}
                if ok:
                    now = placed | 1 << k
                    memo = (now, _hashable(new_state), new_spent)
                    if memo not in seen:
                        seen.add(memo)
                        nfi, nfe = fi, fe
                        while nfi < n and now >> nfi & 1:
                            nfi += 1
                        while nfe < n and now >> by_end[nfe] & 1:
                            nfe += 1
                        stack.append((now, new_state, new_spent, nfi, nfe, depth + 1, (k, chain)))
                k += 1
    if results:
        return results, explored, ""
    return results, explored, _explain_segment(seg, starts, best)


Chain = tuple[int, "Chain"] | None


def _unchain(chain: Chain) -> list[int]:
    out: list[int] = []
    while chain is not None:
        k, chain = chain
        out.append(k)
    return out[::-1]


def _spare(pool: list[Op], spent: frozenset[int], state: Any, horizon: float) -> int:
    """An unspent pool item that can take effect before ``horizon``, or -1.

    Any qualifying one will do: what qualifies only grows as the search goes
    on (the horizon moves later), so spending one never strands another.
    """
    for k, w in enumerate(pool):
        if w.invoke_us > horizon:
            return -1  # sorted by invocation: none later qualifies either
        if k not in spent and (w.kind is OpKind.WRITE or _cas_args(w)[0] == state):
            return k
    return -1


def _where(ops: list[Op]) -> tuple[int, tuple[int, ...]]:
    """For a report: the latest end among ``ops``, and the nodes that answered them."""
    at = max((o.complete_us or o.invoke_us for o in ops), default=0)
    return at, tuple(sorted({o.nodes[-1] for o in ops if o.nodes}))


def _impossible_read(ops: list[Op]) -> tuple[str, Op]:
    """A read no search can explain (a value nobody wrote, or written only later),
    and that read; ("", any op) if there is none."""
    first_write: dict[Any, int] = {}
    for op in ops:
        if op.kind is not OpKind.READ and op.outcome is not Outcome.FAIL:
            v = _hashable(_written(op))
            first_write[v] = min(first_write.get(v, op.invoke_us), op.invoke_us)
    for op in ops:
        if op.kind is not OpKind.READ or not _is_ok(op) or op.result is None:
            continue
        v = _hashable(op.result)
        if v not in first_write:
            return f"{op.render()} read a value no (non-failed) operation wrote", op
        if op.complete_us is not None and first_write[v] > op.complete_us:
            return f"{op.render()} read a value first written after it returned", op
    return "", ops[0]


def _explain_segment(seg: list[Op], starts: set[Config], best: tuple[int, Chain, Any]) -> str:
    """Which overlapping ops admit no order, from which values, and how far the best got."""
    values = sorted({repr(s) for s, _ in starts})
    t0 = min(o.invoke_us for o in seg) / 1e6
    t1 = max(o.complete_us or o.invoke_us for o in seg) / 1e6
    lines = [
        f"no order of these {len(seg)} overlapping ops ({t0:.3f}s-{t1:.3f}s) fits a register "
        f"holding {' or '.join(values)} before them"
    ]
    _, chain, start = best
    order = _unchain(chain)
    if order:
        lines.append(
            f"best order from {start!r}: " + "; ".join(seg[k].render() for k in order[-5:])
        )
    done = set(order)
    rest = [o for k, o in enumerate(seg) if k not in done and not _is_unknown(o)]
    if rest:
        lines.append("cannot place: " + "; ".join(o.render() for o in rest[:5]))
    return " | ".join(lines)
