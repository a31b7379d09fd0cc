"""What every coordctl subcommand shares: its context, how it is declared, how it fails.

A subcommand is ``async def fn(ctx: Ctx, args) -> int`` (the exit status),
declared with ``leaf(...)``, which also says whether it writes: a write that
ends in an unknown outcome gets the warning of ``report`` below.

Exit status: 0 ok; 1 the operation failed (not found, precondition failed,
conflict, bad request, a lock wait that timed out); 2 usage (bad arguments,
unreadable input, bad configuration); 3 unavailable (no endpoint answered, no
leader) or unknown outcome (a write that may or may not have been applied).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coord.client import Client, CoordError, Unavailable, UnknownOutcome

from .output import Output, error

OK, FAILED, USAGE, UNAVAILABLE = 0, 1, 2, 3

# How a command writes, for the unknown-outcome warning.
SESSION = "session"  # through the exactly-once path (a client id and sequence number)
PLAIN = "plain"  # membership and leadership changes: not deduplicated by the store

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


@dataclass
class Ctx:
    client: Client
    out: Output
    endpoints: list[str]
    source: str  # where the endpoints came from: "--endpoints", "$COORD_ENDPOINTS", a file, ...
    timeout: float


Command = Callable[[Ctx, argparse.Namespace], Awaitable[int]]


class Failed(Exception):
    """An operation refused on the client side (exit 1 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


def group(sub: Subparsers, name: str, help: str) -> Subparsers:
    p = sub.add_parser(name, help=help, description=help)
    actions: Subparsers = p.add_subparsers(dest=f"{name}_action", required=True, metavar="ACTION")
    return actions


def leaf(
    sub: Subparsers,
    common: argparse.ArgumentParser,
    name: str,
    help: str,
    fn: Command,
    write: str | None = None,
    **kw: Any,
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=kw.pop("description", help), parents=[common], **kw
    )
    p.set_defaults(fn=fn, write=write)
    return p


def exit_status(e: CoordError) -> int:
    if isinstance(e, Unavailable | UnknownOutcome):
        return UNAVAILABLE
    if e.status >= 500 or e.status == 0:
        return UNAVAILABLE
    return FAILED


def report(e: CoordError, ctx: Ctx | None, write: str | None) -> int:
    """One line on stderr for an error the API (or the client) gave; the exit status."""
    status = exit_status(e)
    tried = ""
    if ctx is not None:
        tried = f"tried {', '.join(ctx.endpoints)} (from {ctx.source})"
    if isinstance(e, UnknownOutcome) and write is not None:
        error(f"unknown outcome: {e.message}")
        if write == SESSION:
            error(
                "warning: the write may or may not have been applied. The client retried it "
                "with the same sequence number, so it was applied at most once, but the outcome "
                "is still unknown: check (e.g. with a get) before running the command again, "
                "which is a new write, safe only if doing it twice is harmless"
            )
        else:
            error(
                "warning: the change may or may not have been applied (membership and "
                "leadership changes are not deduplicated): check `coordctl status` before "
                "running the command again"
            )
        return status
    if e.status == 0 and isinstance(e, Unavailable | UnknownOutcome):
        # Made by the client after its attempts: nothing answered, or no leader did.
        error(f"unavailable: no endpoint could serve it; {tried}; last error: {e.message}")
        return status
    error(describe(e) + (f" ({tried})" if status == UNAVAILABLE and tried else ""))
    return status


def describe(e: CoordError) -> str:
    text = f"{e.code.replace('_', ' ')}: {e.message}" if e.message else e.code.replace("_", " ")
    leader = e.details.get("leader")
    if isinstance(leader, dict) and leader.get("api"):
        text += f" (leader: node {leader.get('id', '?')} at {leader['api']})"
    return text
