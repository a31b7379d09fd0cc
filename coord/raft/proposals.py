"""Three outcomes for every proposal: committed, rejected, or unknown.

A proposal refused by ``propose()`` (a RaftError) was never appended: it is
*rejected* and can never apply. Once appended at (index, term) it ends one way:

- an entry at that index is applied with that term: *committed*, with the
  state machine's result;
- an entry at that index is applied with another term: *rejected* — Log
  Matching makes the applied entry the only one that will ever be there;
- the leader loses leadership first: *unknown*. The entry may still commit
  under a later leader, so saying "rejected" here would be a lie. Clients
  retry unknown writes with the same (client id, sequence number); the state
  machine applies each at most once.

The tracker is pure bookkeeping for drivers (the daemon and the simulator
share it); it never guesses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from .types import Entry, Index, Term

T = TypeVar("T")


class Outcome(enum.Enum):
    COMMITTED = "committed"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Resolved(Generic[T]):
    token: T
    outcome: Outcome
    index: Index
    term: Term


class ProposalTracker(Generic[T]):
    def __init__(self) -> None:
        # index -> (term, token); indexes increase in insertion order.
        self._pending: dict[Index, tuple[Term, T]] = {}
        # term -> how many pending proposals it has: the driver asks after every Ready
        # whether any belongs to another term, and the answer is almost always "none".
        self._terms: dict[Term, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, index: Index, term: Term, token: T) -> None:
        assert index not in self._pending, f"two proposals at index {index}"
        self._pending[index] = (term, token)
        self._terms[term] = self._terms.get(term, 0) + 1

    def applied(self, entry: Entry) -> Resolved[T] | None:
        """The driver applied ``entry``: resolve the proposal at its index, if ours."""
        got = self._pending.pop(entry.index, None)
        if got is None:
            return None
        term, token = got
        self._forget(term)
        outcome = Outcome.COMMITTED if term == entry.term else Outcome.REJECTED
        return Resolved(token, outcome, entry.index, term)

    def snapshot_applied(self, index: Index) -> list[Resolved[T]]:
        """A snapshot replaced entries up to ``index``: we cannot tell which were ours."""
        gone = [i for i in self._pending if i <= index]
        return [self._resolve_unknown(i) for i in gone]

    def leadership_lost(self, keep_term: Term | None = None) -> list[Resolved[T]]:
        """Everything still pending may or may not commit under the next leader.

        ``keep_term``: we lead again in this term; its own proposals stay pending.
        """
        if keep_term is not None and self._terms.keys() <= {keep_term}:
            return []  # all of ours are of the term we still lead in
        gone = [i for i, (t, _) in self._pending.items() if t != keep_term]
        return [self._resolve_unknown(i) for i in gone]

    def _resolve_unknown(self, index: Index) -> Resolved[T]:
        term, token = self._pending.pop(index)
        self._forget(term)
        return Resolved(token, Outcome.UNKNOWN, index, term)

    def _forget(self, term: Term) -> None:
        left = self._terms[term] - 1
        if left:
            self._terms[term] = left
        else:
            del self._terms[term]
