"""The watch and lease checkers bite: the store and the lease clock, each broken on
purpose in one rule, are caught within a few seeds; intact, the same runs pass."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

from coord.store.leases import LeaseClock
from coord.store.machine import StateMachine
from sim.run import run_scenario
from sim.scenario import load


@contextmanager
def keepalive_counts_half_ttl() -> Iterator[None]:
    orig = LeaseClock.keepalive

    def keepalive(self: LeaseClock, lease_id: int, ttl: int, now: float) -> bool:
        return orig(self, lease_id, ttl // 2, now)

    with mock.patch.object(LeaseClock, "keepalive", keepalive):
        yield


@contextmanager
def new_leader_keeps_no_full_ttl() -> Iterator[None]:
    orig = LeaseClock.lead

    def lead(self: LeaseClock, now: float, leases: Any) -> None:
        orig(self, now - 100.0, leases)  # countdowns as if they had long been running

    with mock.patch.object(LeaseClock, "lead", lead):
        yield


@contextmanager
def never_expires() -> Iterator[None]:
    with mock.patch.object(LeaseClock, "due", lambda self, now: []):
        yield


@contextmanager
def snapshot_skips_watchers() -> Iterator[None]:
    # A follower installing a snapshot no longer tells watchers what it jumped over.
    with mock.patch.object(StateMachine, "_bridge", lambda self, before: None):
        yield


@contextmanager
def revoke_keeps_keys() -> Iterator[None]:
    def revoke(self: StateMachine, lease_id: int, reason: str = "") -> dict[str, Any]:
        self.leases.pop(lease_id, None)
        if self.on_lease is not None:
            self.on_lease(lease_id, None)
        return {"revision": self.kv.revision, "deleted": 0}

    with mock.patch.object(StateMachine, "_lease_revoke", revoke):
        yield


CASES: dict[str, tuple[Callable[[], Any], str, range, str]] = {
    "keepalive-half-ttl": (
        keepalive_counts_half_ttl,
        "isolate-leader",
        range(1, 4),
        "lease-early-expiry",
    ),
    "no-restart-on-election": (
        new_leader_keeps_no_full_ttl,
        "isolate-leader",
        range(1, 4),
        "lease-early-expiry",
    ),
    "never-expires": (never_expires, "isolate-leader", range(1, 4), "lease-not-expired"),
    "revoke-keeps-keys": (revoke_keeps_keys, "isolate-leader", range(1, 4), "lease-keys-left"),
    "snapshot-skips-watchers": (
        snapshot_skips_watchers,
        "snapshot-under-faults",
        range(1, 13),
        "watch",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_rule_is_caught_and_the_real_one_passes(name: str) -> None:
    broken, scenario, seeds, kind = CASES[name]
    sc = load(scenario)
    caught = None
    for seed in seeds:
        with broken():
            res = run_scenario(sc, seed, check_linearizability=False)
        if any(v.kind == kind for v in res.violations):
            caught = seed
            break
    assert caught is not None, f"{name}: no {kind} violation in seeds {seeds}"
    clean = run_scenario(sc, caught, check_linearizability=False)
    assert clean.ok, [v.render() for v in clean.violations]


def test_runs_exercise_watches_and_leases() -> None:
    """Not vacuous: watchers receive events and resume; leases are kept and expire."""
    res = run_scenario(load("snapshot-under-faults"), 1, check_linearizability=False)
    w = res.world
    assert res.ok
    watchers = [s for s in w.services.values() if hasattr(s, "segments")]
    assert watchers and all(sum(len(g.events) for g in s.segments) > 50 for s in watchers)
    assert sum(s.reopens for s in watchers) > 0  # type: ignore[union-attr]
    lc = w.lease_checker
    assert len(lc.acked) >= 2 and set(lc.abandoned) & set(lc.revoked)
