"""sim.checkers.linearizable: hand-made histories, a real register, a brute-force oracle."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from sim.checkers.linearizable import check_history
from sim.history import Op, OpKind, Outcome

ROOT = Path(__file__).resolve().parent.parent

READ, WRITE, CAS = OpKind.READ, OpKind.WRITE, OpKind.CAS
OK, FAIL, INFO, PENDING = Outcome.OK, Outcome.FAIL, Outcome.INFO, Outcome.PENDING


class Hist:
    """Builds ops with fresh ids; times are in microseconds."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(
        self,
        kind: OpKind,
        value: Any,
        inv: int,
        comp: int | None,
        outcome: Outcome = OK,
        result: Any = None,
        key: str = "k",
        client: int = 0,
    ) -> Op:
        if outcome in (INFO, PENDING):
            comp = None
        op = Op(len(self.ops), client, kind, key, value, inv, comp, outcome, result)
        self.ops.append(op)
        return op

    def w(self, v: Any, inv: int, comp: int | None, out: Outcome = OK, key: str = "k") -> Op:
        return self.add(WRITE, v, inv, comp, out, None, key)

    def r(self, res: Any, inv: int, comp: int | None, out: Outcome = OK, key: str = "k") -> Op:
        return self.add(READ, None, inv, comp, out, res, key)

    def cas(self, e: Any, n: Any, res: Any, inv: int, comp: int | None, out: Outcome = OK) -> Op:
        return self.add(CAS, (e, n), inv, comp, out, res if out is OK else None)

    def lin(self) -> bool | None:
        return check_history(self.ops).linearizable


# ---- hand-written histories ----------------------------------------------------------


def test_empty_and_sequential_ok() -> None:
    assert check_history([]).linearizable is True
    h = Hist()
    h.r(None, 0, 10)
    h.w(1, 20, 30)
    h.r(1, 40, 50)
    h.w(2, 60, 70)
    h.r(2, 80, 90)
    res = check_history(h.ops)
    assert res.linearizable is True
    assert res.keys[0].ops == 5 and res.keys[0].detail == ""


def test_concurrent_read_may_see_either_value() -> None:
    for seen in (1, 2):
        h = Hist()
        h.w(1, 0, 10)
        h.w(2, 20, 40)
        h.r(seen, 25, 35)
        assert h.lin() is True, seen
    h = Hist()
    h.w(1, 0, 10)
    h.w(2, 20, 40)
    h.r(3, 25, 35)  # nobody wrote 3
    assert h.lin() is False


def test_stale_read_after_completed_write() -> None:
    h = Hist()
    h.w(1, 0, 10)
    stale = h.r(None, 20, 30)
    res = check_history(h.ops)
    assert res.linearizable is False
    assert stale.render() in res.keys[0].detail


def test_lost_write() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.w(2, 20, 30)
    h.r(1, 40, 50)  # 2 was acknowledged, then vanished
    assert h.lin() is False


def test_touching_intervals_count_as_concurrent() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.r(None, 10, 20)  # invoked the instant the write completed: may precede it
    assert h.lin() is True
    h = Hist()
    h.w(1, 0, 10)
    h.r(None, 11, 20)
    assert h.lin() is False


def test_cas_success_and_failure() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.cas(1, 2, True, 20, 30)
    h.cas(1, 3, False, 40, 50)
    h.r(2, 60, 70)
    assert h.lin() is True

    h = Hist()
    h.w(1, 0, 10)
    h.cas(5, 2, True, 20, 30)  # swapped although 5 was never there
    assert h.lin() is False

    h = Hist()
    h.w(1, 0, 10)
    h.cas(1, 2, False, 20, 30)  # refused although 1 was there
    assert h.lin() is False

    h = Hist()
    h.w(1, 0, 10)
    h.cas(1, 2, True, 20, 30)
    h.r(1, 40, 50)  # the swap did not stick
    assert h.lin() is False

    h = Hist()
    h.cas(None, 7, True, 0, 10)  # CAS from absent
    h.add(CAS, [7, 8], 20, 30, OK, True)  # a 2-list works like a 2-tuple
    h.r(8, 40, 50)
    assert h.lin() is True


def test_concurrent_cas_only_one_can_win() -> None:
    h = Hist()
    h.w(0, 0, 10)
    h.cas(0, 1, True, 20, 40)
    h.cas(0, 2, True, 20, 40)
    assert h.lin() is False
    h.ops[2].result = False
    assert h.lin() is True


def test_failed_write_has_no_effect() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.w(2, 20, 30, FAIL)
    h.r(2, 40, 50)
    res = check_history(h.ops)
    assert res.linearizable is False
    assert res.keys[0].ops == 2  # the fail write is not considered
    h.ops[2].result = 1
    assert h.lin() is True


def test_failed_cas_has_no_effect() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.cas(1, 2, None, 20, 30, FAIL)
    h.r(2, 40, 50)
    assert h.lin() is False


def test_unknown_write_read_later_took_effect() -> None:
    for out in (INFO, PENDING):
        h = Hist()
        h.w(1, 0, 10)
        h.w(2, 20, None, out)
        h.r(1, 30, 40)  # not yet
        h.r(2, 100, 110)  # now
        h.r(2, 120, 130)
        assert h.lin() is True, out


def test_unknown_write_cannot_be_undone() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.w(2, 20, None, INFO)
    h.r(2, 30, 40)
    h.r(1, 50, 60)  # back to 1 with nobody writing 1 again
    assert h.lin() is False


def test_unknown_write_never_observed_is_dropped() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.w(2, 20, None, INFO)
    h.w(3, 30, None, PENDING)
    h.r(1, 40, 50)
    h.r(1, 60, 70)
    res = check_history(h.ops)
    assert res.linearizable is True
    assert res.keys[0].ops == 3  # both unknown writes dropped


def test_unknown_read_is_dropped() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.r(99, 20, None, INFO)  # no result to hold anyone to
    res = check_history(h.ops)
    assert res.linearizable is True and res.keys[0].ops == 1


def test_unknown_write_seen_before_its_invocation() -> None:
    h = Hist()
    h.r(5, 0, 10)
    h.w(5, 20, None, INFO)
    res = check_history(h.ops)
    assert res.linearizable is False
    assert res.keys[0].ops == 2  # observed, so kept


def test_false_cas_explained_only_by_unknown_write() -> None:
    # Only "the unknown write of 2 landed before the CAS" explains the refusal;
    # nobody ever read 2, so the drop rule must spare it because of the CAS.
    h = Hist()
    h.w(1, 0, 10)
    h.w(2, 20, None, INFO)
    h.cas(1, 3, False, 30, 40)
    h.w(4, 50, 60)
    h.r(4, 70, 80)
    res = check_history(h.ops)
    assert res.linearizable is True
    assert res.keys[0].ops == 5

    # Without the unknown write, the same refusal is a violation...
    del h.ops[1]
    assert h.lin() is False
    # ...and also when the write started only after the CAS had completed.
    h = Hist()
    h.w(1, 0, 10)
    h.cas(1, 3, False, 30, 40)
    h.w(2, 41, None, INFO)
    res = check_history(h.ops)
    assert res.linearizable is False
    assert res.keys[0].ops == 2  # dropped: no refusal after it


def test_unknown_cas() -> None:
    h = Hist()
    h.w(1, 0, 10)
    h.cas(1, 2, None, 20, None, INFO)
    h.r(2, 30, 40)
    assert h.lin() is True
    # An unknown CAS whose expectation never held cannot have written.
    h = Hist()
    h.w(1, 0, 10)
    h.cas(5, 2, None, 20, None, INFO)
    h.r(2, 30, 40)
    assert h.lin() is False


def test_unknown_cas_chain() -> None:
    # Two unknown CASes, each enabled only by the previous one.
    h = Hist()
    h.w(1, 0, 10)
    h.cas(1, 2, None, 20, None, INFO)
    h.cas(2, 3, None, 20, None, INFO)
    h.r(3, 40, 50)
    assert h.lin() is True
    h.ops[1].value = (9, 2)
    assert h.lin() is False


def test_only_the_bad_key_is_named() -> None:
    h = Hist()
    for key in ("b", "a", "c"):
        h.w(1, 0, 10, key=key)
        h.r(1, 20, 30, key=key)
    h.r(None, 40, 50, key="b")  # stale
    res = check_history(h.ops)
    assert res.linearizable is False
    assert [k.key for k in res.keys] == ["a", "b", "c"]
    assert [k.key for k in res.failures()] == ["b"]
    assert [k.linearizable for k in res.keys] == [True, False, True]
    assert res.keys[0].detail == "" and "cannot linearize" in res.keys[1].detail


def test_result_does_not_depend_on_input_order() -> None:
    rng = random.Random(7)
    ops = register_history(rng, clients=5, n=120, keys=3)
    ops[60].result = "never written" if ops[60].kind is READ else ops[60].result
    first = check_history(ops)
    for _ in range(3):
        rng.shuffle(ops)
        assert check_history(ops) == first


def test_result_does_not_depend_on_the_hash_seed() -> None:
    # String values and keys hash differently under each PYTHONHASHSEED.
    script = (
        "import random\n"
        "from tests.test_linearizable import register_history\n"
        "from sim.checkers.linearizable import check_history\n"
        "ops = register_history(random.Random(5), clients=5, n=150, keys=4)\n"
        "for op in ops:\n"
        "    op.key = 'key-' + op.key\n"
        "    if op.kind.value == 'write': op.value = f'v{op.value}'\n"
        "    if op.kind.value == 'read' and op.result is not None: op.result = f'v{op.result}'\n"
        "    if op.kind.value == 'cas':\n"
        "        e, n = op.value\n"
        "        op.value = (None if e is None else f'v{e}', f'v{n}')\n"
        "ops[100].result = 'forged' if ops[100].kind.value == 'read' else ops[100].result\n"
        "print(check_history(ops))\n"
    )
    outs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        outs.add(run.stdout)
    assert len(outs) == 1
    assert "linearizable=" in outs.pop()


def test_budget_exhausted_is_inconclusive_not_a_violation() -> None:
    # Ten concurrent writes then a read of a value nobody wrote: proving that
    # takes many orderings of the writes.
    h = Hist()
    for v in range(10):
        h.w(v, 0, 100)
    h.r(99, 0, 100)
    small = check_history(h.ops, budget_per_key=20)
    assert small.linearizable is None
    assert small.keys[0].linearizable is None and small.keys[0].explored == 20
    assert small.failures() == []
    assert check_history(h.ops).linearizable is False

    # A clear violation elsewhere still makes the whole verdict False.
    h.w(1, 0, 10, key="z")
    h.r(2, 20, 30, key="z")
    assert check_history(h.ops, budget_per_key=20).linearizable is False


# ---- generated histories: a real register never fails --------------------------------


def model(state: Any, op: Op) -> tuple[Any, Any]:
    """(new state, result) of op on an atomic register."""
    if op.kind is READ:
        return state, state
    if op.kind is WRITE:
        return op.value, None
    expected, new = op.value
    return (new, True) if state == expected else (state, False)


@st.composite
def sequential(draw: st.DrawFn) -> list[Op]:
    """One op at a time, strictly ordered in real time; fail ops do nothing."""
    ops: list[Op] = []
    state: Any = None
    t = 0
    for i in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from([READ, WRITE, CAS]))
        val: Any = None
        if kind is WRITE:
            val = draw(st.integers(0, 3))
        elif kind is CAS:
            val = (draw(st.sampled_from([None, 0, 1, 2, 3])), draw(st.integers(0, 3)))
        inv = t + draw(st.integers(1, 5))
        t = inv + draw(st.integers(0, 5))
        op = Op(i, draw(st.integers(0, 3)), kind, "k", val, inv, t, OK)
        if kind is not READ and draw(st.booleans()) and draw(st.booleans()):
            op.outcome = FAIL
        else:
            state, op.result = model(state, op)
        ops.append(op)
    return ops


@settings(max_examples=200, deadline=None)
@given(sequential(), st.data())
def test_sequential_histories(ops: list[Op], data: st.DataObject) -> None:
    assert check_history(ops).linearizable is True
    reads = [op for op in ops if op.kind is READ]
    if not reads:
        return
    victim = data.draw(st.sampled_from(reads))
    # Strictly sequential: the one value current during the read is what it got.
    others = [v for v in (None, 0, 1, 2, 3) if v != victim.result]
    victim.result = data.draw(st.sampled_from(others))
    res = check_history(ops)
    assert res.linearizable is False
    assert res.keys[0].detail


def register_history(
    rng: random.Random, clients: int, n: int, keys: int = 1, values: int = 4
) -> list[Op]:
    """Clients on a real atomic register: each op takes effect at a random instant
    inside its interval. Unknown ops take effect any time after invocation, or
    never; failed ones never. Values repeat, so nothing may rely on uniqueness."""
    t = [0] * clients
    ops: list[Op] = []
    timed: list[tuple[int, int, Op]] = []  # (instant, tie-break, op) of ops that took effect
    for i in range(n):
        c = rng.randrange(clients)
        kind = rng.choice([READ, READ, WRITE, WRITE, CAS])
        val: Any = None
        if kind is WRITE:
            val = rng.randrange(values)
        elif kind is CAS:
            val = (rng.choice([None, *range(values)]), rng.randrange(values))
        inv = t[c] + rng.randint(0, 20)
        comp = inv + rng.randint(0, 40)
        t[c] = comp
        out = rng.choice([OK] * 6 + [FAIL, INFO, PENDING])
        op = Op(i, c, kind, f"k{rng.randrange(keys)}", val, inv, comp, out)
        if out is OK:
            timed.append((rng.randint(inv, comp), i, op))
        elif out is not FAIL:
            op.complete_us = None
            if rng.random() < 0.5:  # took effect, possibly long after
                timed.append((rng.randint(inv, inv + 200), i, op))
        ops.append(op)
    state: dict[str, Any] = {}
    for _, _, op in sorted(timed, key=lambda p: p[:2]):
        state[op.key], result = model(state.get(op.key), op)
        if op.outcome is OK:
            op.result = result
    return ops


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 6), st.integers(1, 40))
def test_real_register_is_linearizable(rng: random.Random, clients: int, n: int) -> None:
    ops = register_history(rng, clients, n, keys=2)
    res = check_history(ops)
    assert res.linearizable is True, [k.detail for k in res.keys]


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 6), st.integers(1, 40), st.data())
def test_real_register_with_a_forged_read(
    rng: random.Random, clients: int, n: int, data: st.DataObject
) -> None:
    ops = register_history(rng, clients, n)
    reads = [op for op in ops if op.kind is READ and op.outcome is OK]
    if not reads:
        return
    data.draw(st.sampled_from(reads)).result = "never written"
    assert check_history(ops).linearizable is False


def test_long_register_history() -> None:
    # Many concurrent clients, hundreds of ops per key, unknown ops throughout.
    ops = register_history(random.Random(1), clients=8, n=900, keys=3, values=50)
    res = check_history(ops)
    assert res.linearizable is True, [k.detail for k in res.keys]
    assert all(k.ops > 200 for k in res.keys)


# ---- a brute-force oracle: the checker agrees on arbitrary small histories ------------


def oracle(ops: list[Op]) -> bool:
    """Straight from the definition, for one key: try every order of the ops, and
    every subset of the unknown ones; the next op may be any that no unplaced ok
    op completed before."""
    live = [op for op in ops if op.outcome is not FAIL]
    live = [op for op in live if op.kind is not READ or op.outcome is OK]

    @cache
    def go(left: frozenset[int], state: Any) -> bool:
        if all(live[i].outcome is not OK for i in left):
            return True  # unknown ops may never happen
        for i in sorted(left):
            op = live[i]
            if any(
                live[j].outcome is OK and live[j].complete_us < op.invoke_us  # type: ignore[operator]
                for j in left
            ):
                continue
            new, result = model(state, op)
            if op.outcome is OK and op.kind is not WRITE and result != op.result:
                continue
            if go(left - {i}, new):
                return True
        return False

    return go(frozenset(range(len(live))), None)


@st.composite
def small_history(draw: st.DrawFn) -> list[Op]:
    """Any shape at all: random intervals, outcomes, values and results."""
    ops = []
    vals = st.sampled_from([None, 1, 2])
    for i in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from([READ, WRITE, CAS]))
        val: Any = None
        if kind is WRITE:
            val = draw(st.sampled_from([1, 2]))
        elif kind is CAS:
            val = (draw(vals), draw(st.sampled_from([1, 2])))
        inv = draw(st.integers(0, 12))
        comp = inv + draw(st.integers(0, 8))
        out = draw(st.sampled_from([OK, OK, OK, FAIL, INFO, PENDING]))
        res: Any = None
        if out is OK and kind is READ:
            res = draw(vals)
        elif out is OK and kind is CAS:
            res = draw(st.booleans())
        ops.append(Op(i, i, kind, "k", val, inv, comp if out in (OK, FAIL) else None, out, res))
    return ops


@settings(max_examples=1500, deadline=None)
@given(small_history())
def test_agrees_with_brute_force(ops: list[Op]) -> None:
    expected = oracle(ops)
    event(f"linearizable={expected}")
    assert check_history(ops).linearizable is expected
