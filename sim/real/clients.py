"""Clients of the real cluster: reads, writes and CAS through coord.client, recorded.

Each client is one ``coord.client.Client`` (its own session: exactly-once
retries), bound to one node's API (a client on that node's host) or given
every node's. It runs one operation at a time on a few keys and records each
in the simulator's history format (sim/history.py), with invocation and
completion times in microseconds of monotonic wall time since the run began:

- ok: the call returned (a read's value, None if absent; a CAS's "succeeded");
- info (unknown): ``UnknownOutcome`` (a timeout or broken link after the
  request may have gone out, retried with the same sequence number until the
  client gave up), any other error of a write that does not say "not applied",
  or the harness's own deadline (the client is then replaced by a fresh one, so
  a sequence number is never reused after a cancelled attempt);
- fail: ``Unavailable`` (not_leader, unavailable, connection refused: the
  request was never taken), which coord.client raises only when no attempt's
  outcome was unknown; for reads, any error (a failed read changes nothing).

The client's aiohttp session is the one ``async with Client(...)`` would open,
plus a trace config that notes every send of every operation and what it met
(``Workload.sends``, in the JSON report): diagnostics only, same defaults.

Values are unique per write (client id x 1,000,000 + counter), so a value read
or found in the store's history names the write that produced it. A CAS is a
transaction: compare the value (null: absent), then put.

Watchers follow the key prefix from revision 1 with ``Client.watch`` (which
resumes across failures and failovers by itself) and keep what arrives as
segments for sim/checkers/store.py's WatchChecker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from coord.client import (
    Client,
    Compacted,
    CoordError,
    Unavailable,
    UnknownOutcome,
)

from ..history import History, Op, OpKind, Outcome
from ..services import Segment
from .cluster import RealCluster

FINAL_CLIENT = 9999


def _closable(it: AsyncIterator[dict[str, Any]]) -> AsyncGenerator[dict[str, Any], None]:
    """Client.watch is an async generator (typed as an iterator): close it when done."""
    assert isinstance(it, AsyncGenerator)
    return it


@dataclass
class WatchRecord:
    cid: int
    bound: int  # 0: every node
    segments: list[Segment] = field(default_factory=list)
    progress_rev: int = 0  # the highest revision a progress note said it was current at
    relists: int = 0


@dataclass
class WorkloadParams:
    clients: int = 4
    keys: int = 3
    prefix: str = "real/"
    read_p: float = 0.4
    cas_p: float = 0.2
    think_min_s: float = 0.01
    think_max_s: float = 0.1
    # coord.client's own retry policy (8 attempts, backoff to 1 s) with a shorter
    # per-attempt timeout than its 6 s, so an operation on a paused node ends sooner.
    attempt_timeout_s: float = 2.0
    attempts: int = 8
    op_deadline_s: float = 25.0
    watchers: int = 2
    bind: str = "mixed"  # mixed: even clients bound to one node each; all: every client to all


class Workload:
    def __init__(
        self,
        cluster: RealCluster,
        history: History,
        t0: float,
        seed: int,
        params: WorkloadParams,
    ) -> None:
        self.c = cluster
        self.history = history
        self.t0 = t0
        self.seed = seed
        self.p = params
        self.revision: dict[int, int] = {}  # op id -> revision of an ok write / swapping CAS
        self.errors: dict[int, str] = {}  # op id -> the error that ended it
        self.replaced = 0  # clients replaced after the harness's own deadline
        self.watches: list[WatchRecord] = []
        # Every HTTP send of every operation, as aiohttp reports it (op id -> lines):
        # how many times a request really went out, and what each try met.
        self.sends: dict[int, list[str]] = {}
        self._current: dict[int, int] = {}  # client -> the op it is running

    def now_us(self) -> int:
        return int((time.monotonic() - self.t0) * 1_000_000)

    def key(self, k: int) -> str:
        return f"{self.p.prefix}k{k}"

    def _endpoints(self, bound: int) -> list[str]:
        if bound:
            return [self.c.nodes[bound].api]
        return [self.c.nodes[i].api for i in self.c.ids]

    def _client(self, bound: int, traces: list[aiohttp.TraceConfig] | None = None) -> Client:
        return Client(
            self._endpoints(bound),
            timeout=self.p.attempt_timeout_s,
            attempts=self.p.attempts,
            trace_configs=traces or [],
        )

    async def _traced(self, bound: int, cid: int) -> Client:
        """A started client whose every send of every operation is noted (for the report)."""
        tc = aiohttp.TraceConfig()

        def note(text: str) -> None:
            op_id = self._current.get(cid)
            if op_id is not None:
                op = self.history.ops[op_id]
                ms = (self.now_us() - op.invoke_us) / 1000
                self.sends.setdefault(op_id, []).append(f"+{ms:.0f}ms {text}")

        async def new_conn(_s: Any, _c: Any, p: Any) -> None:
            note("new connection")

        async def sent(_s: Any, _c: Any, p: Any) -> None:
            note(f"{p.method} {p.url.host}:{p.url.port} sent")

        async def answered(_s: Any, _c: Any, p: Any) -> None:
            note(f"answer {p.response.status}")

        async def failed(_s: Any, _c: Any, p: Any) -> None:
            note(f"{type(p.exception).__name__}")

        tc.on_connection_create_end.append(new_conn)
        tc.on_request_headers_sent.append(sent)
        tc.on_request_end.append(answered)
        tc.on_request_exception.append(failed)
        return await self._client(bound, [tc]).__aenter__()

    # ---- the operation loop ----------------------------------------------------------

    async def run_client(self, cid: int, stop: asyncio.Event) -> None:
        """One client until ``stop``; the operation in flight then still ends (bounded)."""
        n = len(self.c.ids)
        # With "mixed", even clients live on one node's host; the others know every node.
        bound = 1 + cid % n if self.p.bind == "mixed" and cid % 2 == 0 else 0
        rng = random.Random(self.seed * 1000 + cid)
        recent: dict[str, list[str]] = {}
        counter = 0
        client = await self._traced(bound, cid)
        try:
            for _ in range(1_000_000):
                if stop.is_set():
                    break
                think = rng.uniform(self.p.think_min_s, self.p.think_max_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), think)
                    break
                key = self.key(rng.randrange(self.p.keys))
                r = rng.random()
                if r < self.p.read_p:
                    op = self.history.invoke(cid, OpKind.READ, key, None, self.now_us())
                else:
                    counter += 1
                    new = str(cid * 1_000_000 + counter)
                    if r < self.p.read_p + self.p.cas_p:
                        expected = rng.choice([None, *recent.get(key, [])])
                        op = self.history.invoke(
                            cid, OpKind.CAS, key, (expected, new), self.now_us()
                        )
                    else:
                        op = self.history.invoke(cid, OpKind.WRITE, key, new, self.now_us())
                if bound:
                    op.nodes.append(bound)
                self._current[cid] = op.id
                if not await self._do(client, op, recent):
                    # Our deadline cut an attempt short: a fresh session, never a reused number.
                    await client.close()
                    self.replaced += 1
                    client = await self._traced(bound, cid)
        finally:
            await client.close()

    async def _do(self, client: Client, op: Op, recent: dict[str, list[str]]) -> bool:
        """Run ``op`` and record its end; False if the harness's deadline cancelled it."""
        try:
            result = await asyncio.wait_for(self._call(client, op), self.p.op_deadline_s)
        except TimeoutError:
            self._end(op, Outcome.INFO if op.kind is not OpKind.READ else Outcome.FAIL, "deadline")
            return False
        except UnknownOutcome as e:
            self._end(op, Outcome.INFO, e.code)
        except Unavailable as e:
            self._end(op, Outcome.FAIL, e.code)
        except CoordError as e:
            # Anything else may have happened after the command reached the log.
            self._end(op, Outcome.INFO if op.kind is not OpKind.READ else Outcome.FAIL, e.code)
        else:
            self._end(op, Outcome.OK, "", result)
            seen = None
            if op.kind is OpKind.READ and result is not None:
                seen = str(result)
            elif op.kind is OpKind.WRITE:
                seen = str(op.value)
            elif op.kind is OpKind.CAS and result:
                seen = str(op.value[1])
            if seen is not None:
                lst = recent.setdefault(op.key, [])
                lst.append(seen)
                del lst[:-3]
        return True

    async def _call(self, client: Client, op: Op) -> Any:
        if op.kind is OpKind.READ:
            doc = await client.get(op.key)
            return None if doc is None else doc["value"]
        if op.kind is OpKind.WRITE:
            rev = await client.put(op.key, str(op.value))
            self.revision[op.id] = rev
            return None
        expected, new = op.value
        doc = await client.txn(
            [{"key": op.key, "target": "value", "op": "==", "value": expected}],
            [{"op": "put", "key": op.key, "value": new}],
        )
        if doc.get("succeeded"):
            self.revision[op.id] = int(doc["revision"])
            return True
        return False

    def _end(self, op: Op, outcome: Outcome, why: str, result: Any = None) -> None:
        History.complete(op, outcome, self.now_us(), result)
        if why:
            self.errors[op.id] = why

    # ---- watchers -----------------------------------------------------------------------

    async def run_watcher(self, rec: WatchRecord) -> None:
        """Follow the prefix from revision 1 until cancelled."""
        seg = Segment(self.p.prefix, 1)
        rec.segments.append(seg)
        async with self._client(rec.bound) as client:
            it = _closable(client.watch(self.p.prefix, start_revision=1, progress_ms=500))
            async with contextlib.aclosing(it):
                async for ev in it:
                    kind = ev.get("type")
                    if kind == "progress":
                        seg.progress.append((len(seg.events), int(ev["revision"])))
                        rec.progress_rev = max(rec.progress_rev, int(ev["revision"]))
                    elif kind == "relist":
                        rec.relists += 1
                        seg = Segment(self.p.prefix, int(ev["revision"]) + 1)
                        rec.segments.append(seg)
                    else:
                        kv = ev.get("kv")
                        value = kv["value"] if isinstance(kv, dict) else None
                        seg.events.append((int(ev["revision"]), str(kind), ev["key"], value))

    def watcher_records(self) -> list[WatchRecord]:
        n = len(self.c.ids)
        self.watches = [
            WatchRecord(1000 + w, 0 if w == 0 else 1 + (w - 1) % n) for w in range(self.p.watchers)
        ]
        return self.watches

    # ---- the end ----------------------------------------------------------------------

    async def final_read(self, timeout: float = 20.0) -> int:
        """After the heal: every key at once (one linearizable range), recorded as reads.

        Returns the store's revision then (0 if no read succeeded in time).
        """
        deadline = time.monotonic() + timeout
        async with self._client(0) as client:
            for _ in range(1000):
                invoke = self.now_us()
                try:
                    doc = await client.range(self.p.prefix)
                except CoordError:
                    if time.monotonic() > deadline:
                        return 0
                    await asyncio.sleep(0.2)
                    continue
                done = self.now_us()
                values = {kv["key"]: kv["value"] for kv in doc["items"]}
                for k in range(self.p.keys):
                    key = self.key(k)
                    op = self.history.invoke(FINAL_CLIENT, OpKind.READ, key, None, invoke)
                    History.complete(op, Outcome.OK, done, values.get(key))
                return int(doc["revision"])
        return 0

    async def node_history(
        self, i: int, upto: int, timeout: float
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """Node i's own history of the prefix, from revision 1 (or the oldest it kept),
        read by a watch on i alone until it says it is current at ``upto``.

        Returns (events, compacted-up-to revision, reached ``upto``)."""
        events: list[dict[str, Any]] = []
        compact = 0
        deadline = time.monotonic() + timeout
        async with self._client(i) as client:
            for _ in range(10):
                start = max(1, compact + 1)
                events = []
                it = _closable(
                    client.watch(self.p.prefix, start_revision=start, progress_ms=200, relist=False)
                )
                try:
                    async with contextlib.aclosing(it):
                        while True:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                return events, compact, False
                            ev = await asyncio.wait_for(anext(it), left)
                            if ev.get("type") == "progress":
                                if int(ev["revision"]) >= upto:
                                    return events, compact, True
                            else:
                                events.append(ev)
                except Compacted as e:
                    compact = int(e.details.get("compact_revision", 0))
                except TimeoutError:
                    return events, compact, False
        return events, compact, False
