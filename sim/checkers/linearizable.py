"""Linearizability checker for a store of independent registers (one per key).

Theory of operation
-------------------
A history is linearizable when each operation can be given a single instant
inside its [invoke, complete] interval such that, replayed in the order of those
instants, every operation returns what one atomic register would have returned.
Registers on different keys do not interact, so a history is linearizable iff
each key's sub-history is (P-compositionality): keys are checked one at a time.

Per key we run Wing & Gong's search with Lowe's memoization ("WGL"):

1. Every operation contributes a *call* entry at its invocation time and a
   *return* entry at its completion time; the entries form one doubly linked
   list sorted by time (calls before returns at equal times, so touching
   intervals count as concurrent - the forgiving reading).
2. Walk the list from the front. A call is a candidate: if the register model
   accepts it in the current state, *lift* it (unlink its call and return),
   push a backtrack point, and restart from the front. Meeting a return means
   that operation could not be placed before it completed under the choices
   made so far: pop the last choice, relink it, and try the next candidate.
3. (set of linearized operations as an int bitset, register state) fully
   determines the rest of the search, so such pairs already seen are skipped.

Outcomes. ``ok`` operations must be linearized with their recorded result.
``fail`` ones had no effect and are dropped. ``info`` (and ``pending``, which
is an unclosed ``info``) ones may take effect at any instant after invocation,
or never: they get a call entry but no return entry (return at +infinity), and
the search succeeds as soon as every ``ok`` operation has been linearized. An
unknown read observes nothing and changes nothing, so it is dropped.

Unknown writes are what make the search explode: with no deadline, each one
can be placed at every step, doubling the states around it. Two reductions
keep it tractable, each removing only linearizations for which an equivalent
one remains (the arguments are at the code; the tests hold the checker to a
brute-force oracle and to a real register):

- ``_keep`` drops unknown writes that nobody could have noticed;
- ``_search`` explores a normal form only: an unknown op is placed only where
  it changes the state and the very next op needs that change (*fresh* rule).

Verdicts are per key: True, False (with the deepest dead end as explanation)
or None when ``budget_per_key`` new states did not settle it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..history import Op, OpKind, Outcome

_INF = float("inf")

# Operation codes for the search loop (one small int per op, no enum lookups).
_READ = 0  # ok read: needs state == a
_WRITE = 1  # ok write: state := a
_WRITE_INFO = 2  # unknown write: state := a, optional
_CAS_TRUE = 3  # ok cas that swapped: needs state == a, state := b
_CAS_FALSE = 4  # ok cas that did not swap: needs state != a
_CAS_INFO = 5  # unknown cas: optional; only worth placing when state == a (then := b)
_UNKNOWN = (_WRITE_INFO, _CAS_INFO)
_CLEAN = object()  # "fresh" marker: the last op placed was not an unknown one


def _written(code: int, a: Any, b: Any) -> Any:
    return b if code == _CAS_INFO else a


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    key: str
    linearizable: bool | None  # None: search budget exhausted (inconclusive)
    ops: int  # ops considered for this key after dropping
    explored: int  # states explored
    detail: str  # "" when linearizable; else a short explanation


@dataclass(frozen=True, slots=True)
class LinearizabilityResult:
    linearizable: bool | None  # False if any key is; else None if any key is; else True
    keys: tuple[KeyVerdict, ...]  # sorted by key

    def failures(self) -> list[KeyVerdict]:
        return [k for k in self.keys if k.linearizable is False]


def check_history(ops: Iterable[Op], *, budget_per_key: int = 200_000) -> LinearizabilityResult:
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    verdicts = tuple(_check_key(k, by_key[k], budget_per_key) for k in sorted(by_key))
    overall: bool | None = True
    if any(v.linearizable is False for v in verdicts):
        overall = False
    elif any(v.linearizable is None for v in verdicts):
        overall = None
    return LinearizabilityResult(overall, verdicts)


def _unknown(op: Op) -> bool:
    return op.outcome is Outcome.INFO or op.outcome is Outcome.PENDING


def _cas_pair(op: Op) -> tuple[Any, Any]:
    expected, new = op.value  # a 2-tuple or a 2-list
    return expected, new


def _keep(ops: Sequence[Op]) -> list[Op]:
    """The ops of one key that the search must consider, in (invoke, id) order.

    Drop rule for an unknown write/CAS X that writes v. Suppose some valid
    linearization places X. Nobody observed v: no ok read returned it and no
    non-failed CAS expected it. So until the next effective write, the ops after
    X see v and (a) no ok read is there (it would return v), (b) no CAS
    succeeds there (it would expect v), (c) no ok CAS that returned False is
    there, because every such CAS completed before X was even invoked. Only
    unknown CASes that did nothing can be there; remove them with X (unknown ops
    may never happen). Every remaining op sees exactly the states it saw before,
    so "X never took effect" is consistent too, and X can be dropped. The rule
    reads observations only, never assumes values are unique, and does not
    depend on which other unknown ops are kept, so all such X drop at once.
    """
    observed: set[Any] = set()
    last_false_cas = -_INF  # latest completion of an ok CAS that returned False
    for op in ops:
        if op.outcome is Outcome.FAIL:
            continue
        if op.kind is OpKind.READ and op.outcome is Outcome.OK:
            observed.add(op.result)
        elif op.kind is OpKind.CAS:
            observed.add(_cas_pair(op)[0])
            if op.outcome is Outcome.OK and not op.result:
                end = _INF if op.complete_us is None else op.complete_us
                last_false_cas = max(last_false_cas, end)
    kept: list[Op] = []
    for op in ops:
        if op.outcome is Outcome.FAIL:
            continue
        if _unknown(op):
            if op.kind is OpKind.READ:
                continue  # no result to check, no effect
            if op.kind is OpKind.CAS:
                expected, written = _cas_pair(op)
                if expected == written:
                    continue  # can never change the state
            else:
                written = op.value
            # Kept if a False CAS completed at or after X's invocation: touching
            # intervals are concurrent, so X may precede that CAS.
            if written not in observed and last_false_cas < op.invoke_us:
                continue
        kept.append(op)
    kept.sort(key=lambda o: (o.invoke_us, o.id))
    return kept


def _check_key(key: str, ops: Sequence[Op], budget: int) -> KeyVerdict:
    kept = _keep(ops)
    verdict, explored, detail = _search(kept, budget)
    return KeyVerdict(key, verdict, len(kept), explored, detail)


def _search(ops: list[Op], budget: int) -> tuple[bool | None, int, str]:
    n = len(ops)
    code: list[int] = []
    arg_a: list[Any] = []
    arg_b: list[Any] = []
    events: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op index)
    for i, op in enumerate(ops):
        unknown = _unknown(op)
        b: Any = None
        if op.kind is OpKind.READ:
            c, a = _READ, op.result
        elif op.kind is OpKind.WRITE:
            c, a = (_WRITE_INFO if unknown else _WRITE), op.value
        else:
            a, b = _cas_pair(op)
            c = _CAS_INFO if unknown else (_CAS_TRUE if op.result else _CAS_FALSE)
        code.append(c)
        arg_a.append(a)
        arg_b.append(b)
        events.append((op.invoke_us, 0, i))
        if not unknown:
            events.append((_INF if op.complete_us is None else op.complete_us, 1, i))
    events.sort()
    ok_left = len(events) - n  # ops with a return entry must all be linearized
    if ok_left == 0:
        return True, 0, ""

    # Linked list over entries 1..E; 0 is the head and also marks the end.
    # Writing prv[0] on unlink/relink at the tail is harmless: it is never read.
    e_count = len(events)
    nxt = [*range(1, e_count + 1), 0]
    prv = [e_count, *range(e_count)]
    ent_op = [0] * (e_count + 1)
    is_call = [False] * (e_count + 1)
    ret_of = [0] * n  # op index -> its return entry, 0 if none
    call_of = [0] * n  # op index -> its call entry
    for pos, (_, kind, i) in enumerate(events, start=1):
        ent_op[pos] = i
        if kind == 0:
            is_call[pos] = True
            call_of[i] = pos
        else:
            ret_of[i] = pos
    bits = [1 << i for i in range(n)]
    # For unknown ops: is the value they write read or CAS-expected by anyone
    # here? And which values did an ok CAS find absent? See the model below.
    observed = {arg_a[i] for i in range(n) if code[i] != _WRITE and code[i] != _WRITE_INFO}
    seen_val = [
        code[i] in _UNKNOWN and _written(code[i], arg_a[i], arg_b[i]) in observed for i in range(n)
    ]
    false_exp = {arg_a[i] for i in range(n) if code[i] == _CAS_FALSE}

    state: Any = None
    fresh: Any = _CLEAN  # after an unknown op took effect: the state it replaced
    lin = 0
    stack: list[tuple[int, Any, Any]] = []  # (lifted call entry, previous state, fresh)
    seen: set[tuple[Any, ...]] = set()
    explored = 0
    # The deepest dead end (then the fewest ops stuck there): what to report.
    best_depth = -1
    best_stuck: list[int] = []
    best_prefix: list[int] = []
    best_state: Any = None

    x = nxt[0]
    while True:
        if x == 0 or not is_call[x]:
            # An ok op's return (x) was reached before it could be placed.
            depth = len(stack)
            if depth >= best_depth:
                # The op out of time, then its rivals: the calls still open.
                own = call_of[ent_op[x]] if x else 0
                stuck = [ent_op[x]] if x else []
                stuck += [ent_op[y] for y in _walk(nxt, x) if is_call[y] and y != own]
                if depth > best_depth or len(stuck) < len(best_stuck):
                    best_depth, best_stuck, best_state = depth, stuck, state
                    best_prefix = [ent_op[s[0]] for s in stack]
            if not stack:
                break
            x, state, fresh = stack.pop()
            i = ent_op[x]
            lin ^= bits[i]
            r = ret_of[i]
            if r:  # relink in the reverse order of unlinking
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                ok_left += 1
            nxt[prv[x]] = x
            prv[nxt[x]] = x
            x = nxt[x]
            continue

        i = ent_op[x]
        c = code[i]
        a = arg_a[i]
        # The register model, restricted to a normal form of linearizations.
        # Unknown ops have no deadline and constrain nobody, so any valid order
        # can be rewritten (shorter, or with unknown ops later) until:
        # - an unknown op is placed only if it changes the state (else drop it);
        # - the op right after an unknown op X needs X's effect: it could not
        #   have run in the state X replaced (``fresh``). A write right after X
        #   hides X: drop X. An op valid in both states and not changing the
        #   state (a CAS reporting False) can swap ahead of X. Reads and CASes
        #   that need X's value, or a False CAS expecting the replaced value,
        #   are what X is good for;
        # - so X is placed only if its value is observed by someone, or a
        #   False CAS expects the current state (static ``seen_val``/``false_exp``).
        # Swapping ahead is always allowed: X has no return, so it precedes
        # nothing in real time, and lifting X changed no other op's candidacy.
        if c == _READ:
            good, new = state == a, state
        elif c == _WRITE:
            good, new = fresh is _CLEAN, a
        elif c == _CAS_TRUE:
            good, new = state == a, arg_b[i]
        elif c == _CAS_FALSE:
            good, new = state != a and (fresh is _CLEAN or fresh == a), state
        elif c == _WRITE_INFO:
            good = fresh is _CLEAN and state != a and (seen_val[i] or state in false_exp)
            new = a
        else:
            good, new = state == a and (seen_val[i] or a in false_exp), arg_b[i]
        if good:
            nlin = lin | bits[i]
            nfresh = state if c in _UNKNOWN else _CLEAN
            # A fresh state allows less than the same clean one: either having
            # been explored settles it.
            ck = (nlin, new) if nfresh is _CLEAN else (nlin, new, nfresh)
            if ck not in seen and (nfresh is _CLEAN or (nlin, new) not in seen):
                explored += 1
                if explored > budget:
                    return None, budget, f"inconclusive: search budget of {budget} states exhausted"
                seen.add(ck)
                stack.append((x, state, fresh))
                state, fresh, lin = new, nfresh, nlin
                nxt[prv[x]] = nxt[x]
                prv[nxt[x]] = prv[x]
                r = ret_of[i]
                if r:
                    nxt[prv[r]] = nxt[r]
                    prv[nxt[r]] = prv[r]
                    ok_left -= 1
                    if ok_left == 0:
                        return True, explored, ""
                x = nxt[0]
                continue
        x = nxt[x]

    return False, explored, _explain(ops, best_stuck, best_prefix, best_state)


def _walk(nxt: list[int], stop: int) -> list[int]:
    """Entries from the front of the list up to (excluding) ``stop``."""
    out = []
    y = nxt[0]
    while y != stop and y != 0:
        out.append(y)
        y = nxt[y]
    return out


def _explain(ops: list[Op], stuck: list[int], prefix: list[int], state: Any) -> str:
    """Name the deepest dead end: the op that ran out of time and its rivals."""

    def some(idx: list[int], limit: int) -> str:
        shown = [ops[i].render() for i in idx[:limit]]
        if len(idx) > limit:
            shown.append(f"… {len(idx) - limit} more")
        return "; ".join(shown)

    tail = prefix[-8:]
    order = " ".join(f"op{ops[i].id}" for i in tail)
    if len(prefix) > len(tail):
        order = "… " + order
    return (
        f"cannot linearize {{{some(stuck, 6)}}}"
        f" after the longest linearizable prefix ({len(prefix)} of {len(ops)} ops:"
        f" {order or 'none'}), which leaves the register at {state!r}"
    )
