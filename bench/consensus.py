"""Consensus throughput: committed proposals per second, coord against PySyncObj.

    python -m bench.consensus [--seconds 5] [--inflight 1,64,512] [--only coord|pysyncobj]

Three replicas in three processes on 127.0.0.1 for each system, one system at a
time. Proposals are injected at the leader, inside the leader's own process (no
HTTP, no client protocol): what is measured is the replication engine with its
driver, its disk and its state machine.

- coord: each process runs the real daemon's ``coord.server.node.Node`` (the Raft
  core, the TCP peer transport with its HMAC, the WAL with one fdatasync per Ready,
  the store), as shipped. On the leader, K asyncio tasks each call
  ``Node.propose({"op": "put", ...})`` back to back; a proposal counts when its
  future resolves with the state machine's result (committed by a majority that
  has it durable, then applied on the leader).
- PySyncObj 0.3.17: a ``SyncObj`` with one ``@replicated`` method storing a
  key/value pair, bound to 127.0.0.1, defaults otherwise (its auto-tick thread,
  batched AppendEntries). On the leader, the main thread keeps K calls in flight
  with ``callback=``; a call counts when the callback reports success. PySyncObj
  keeps its log in memory and never fsyncs (no ``journalFile``; even with one it
  does not fsync).

Every command carries a 100-byte payload: coord's put is a msgpack map whose
value is sized so the encoded command is 100 bytes; PySyncObj's call gets a
100-byte value (it pickles the call, so its log entries are a little larger).
Keys cycle over 10,000 names, so the stores (and coord's snapshots, taken every
10,000 entries as shipped) stay the same size however long the run. Commit
latency is the time from the call to its acknowledgement at the leader.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procutil import Procs, free_port_block, pct, wait_until

KEYSPACE = 10_000
WHY: dict[int, dict[str, int]] = {}  # in flight -> failure reason -> count
MAX_PROPOSALS = 2_000_000  # per load phase: every loop is bounded in count and time
PAYLOAD = 100


@dataclass
class Phase:
    inflight: int
    commits: int
    seconds: float
    failures: int
    p50_ms: float
    p99_ms: float
    stall_ms: float = 0.0  # coord: the longest the leader's event loop was late (10 ms probe)
    led_s: float = 0.0  # coord: how long into the phase the driving node was still leader

    @property
    def rate(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0


# ---- coord: the real Node in each process --------------------------------------------------


def _coord_value() -> str:
    """A value such that coord's encoded put is PAYLOAD bytes for a typical key."""
    from coord.store import encode

    probe = {"op": "put", "key": "b/0063/0009999", "value": "", "time_ms": int(time.time() * 1000)}
    return "v" * (PAYLOAD - len(encode(probe)))


async def _coord_load(node: Any, k: int, seconds: float) -> Phase:
    from coord.server.node import NodeError

    value = _coord_value()
    why = WHY.setdefault(k, {})
    lat: list[float] = []
    failures = 0
    started = time.perf_counter()
    end = started + seconds
    issued = 0

    async def worker(w: int) -> None:
        nonlocal failures, issued
        n = 0
        while issued < MAX_PROPOSALS:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            issued += 1
            n += 1
            key = f"b/{w:04d}/{(n * k + w) % KEYSPACE:07d}"
            try:
                result = await node.propose({"op": "put", "key": key, "value": value})
            except NodeError as e:
                failures += 1
                why[f"{type(e).__name__}: {e}"] = why.get(f"{type(e).__name__}: {e}", 0) + 1
                if not node.is_leader:
                    return  # leadership moved away: nothing more commits through here
                continue
            t1 = time.perf_counter()
            if "error" in result:
                failures += 1
            elif t1 <= end:
                lat.append(t1 - t0)

    lost_at: float | None = None

    term = node.core.term

    async def watch_leadership() -> None:
        nonlocal lost_at
        while time.perf_counter() < end:
            if not node.is_leader or node.core.term != term:
                lost_at = time.perf_counter() - started
                return
            await asyncio.sleep(0.005)

    watcher = asyncio.get_running_loop().create_task(watch_leadership())
    await asyncio.gather(*(worker(w) for w in range(k)))
    watcher.cancel()
    phase = Phase(k, len(lat), seconds, failures, pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3)
    phase.led_s = seconds if lost_at is None else lost_at
    return phase


class LagProbe:
    """How late a 10 ms sleep wakes up: the longest the event loop was kept busy."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - t0 - 0.01)


async def _coord_worker(args: argparse.Namespace) -> int:
    from coord.server.config import build
    from coord.server.node import Node, NodeError

    base = args.base
    members = [f"{i}=127.0.0.1:{base + i}/127.0.0.1:{base + 100 + i}" for i in (1, 2, 3)]
    cfg = build(
        id=args.id,
        data_dir=args.dir,
        members=members,
        secret=Path(args.secret).read_bytes().strip(),
        **args.pso_conf,  # for coord: NodeConfig settings (experiments only; none by default)
    )
    node = Node(cfg)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    lag = LagProbe()
    probe = loop.create_task(lag.run())
    try:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            if node.is_leader:
                try:
                    await node.propose({"op": "put", "key": "warmup", "value": "x"})
                    break
                except NodeError:
                    pass
            elif node.core is not None and node.core.leader:
                break  # another node leads: this one follows
            await asyncio.sleep(0.05)
        if node.is_leader and not stop.is_set():
            await asyncio.sleep(0.5)
            prof = cProfile.Profile() if args.profile else None
            phases = []
            for k in args.inflight:
                if prof is not None:
                    prof.enable()
                lag.worst = 0.0
                phase = await _coord_load(node, k, args.seconds)
                phase.stall_ms = lag.worst * 1e3
                phases.append(phase)
                if prof is not None:
                    prof.disable()
                await asyncio.sleep(0.3)
            if prof is not None:
                prof.dump_stats(args.profile)
            fs: list[float] = node.metrics["fsync_seconds"]  # type: ignore[assignment]
            _write(
                args.out,
                phases,
                {
                    "leader_changes": node.metrics["leader_changes"],
                    "fsync_p50_ms": pct(fs, 0.5) * 1e3,
                    "failures": WHY,
                },
            )
        elif args.profile:
            # A follower: profile it from here to the end, to see where its time goes.
            prof = cProfile.Profile()
            prof.enable()
            await stop.wait()
            prof.disable()
            prof.dump_stats(f"{args.profile}.follower-{args.id}")
        else:
            lag.worst = 0.0
        await stop.wait()
        if not node.is_leader:
            Path(f"{args.out}.follower-{args.id}").write_text(
                json.dumps({"stall_ms": lag.worst * 1e3, "leader": node.is_leader})
            )
    finally:
        probe.cancel()
        await node.stop()
    return 0


# ---- PySyncObj -------------------------------------------------------------------------------


def _pysyncobj_worker(args: argparse.Namespace) -> int:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, others: list[str], conf: Any) -> None:
            super().__init__(me, others, conf)
            self.kv: dict[str, bytes] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: bytes) -> int:
            self.kv[key] = value
            return len(self.kv)

    base = args.base
    addrs = {i: f"127.0.0.1:{base + i}" for i in (1, 2, 3)}
    conf = SyncObjConf(bindAddress=addrs[args.id], **args.pso_conf)
    obj = KV(addrs[args.id], [a for i, a in addrs.items() if i != args.id], conf)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        deadline = time.monotonic() + 30
        while not stopping.is_set() and time.monotonic() < deadline:
            if obj._isLeader():
                try:
                    obj.put("warmup", b"x", sync=True, timeout=2)
                    break
                except Exception:  # not ready yet: try again
                    time.sleep(0.05)
            time.sleep(0.05)
        if obj._isLeader() and not stopping.is_set():
            time.sleep(0.5)
            prof = cProfile.Profile() if args.profile else None
            phases = []
            for k in args.inflight:
                if prof is not None:
                    prof.enable()
                phases.append(_pysyncobj_load(obj, k, args.seconds))
                if prof is not None:
                    prof.disable()
                time.sleep(0.3)
            if prof is not None:
                prof.dump_stats(args.profile)
            _write(args.out, phases, {"conf": args.pso_conf, "failures": WHY})
        stopping.wait(600)
    finally:
        obj.destroy()
    return 0


def _pysyncobj_load(obj: Any, k: int, seconds: float) -> Phase:
    from pysyncobj import FAIL_REASON

    reasons = {v: n for n, v in vars(FAIL_REASON).items() if n.isupper()}
    value = b"v" * PAYLOAD
    slots = threading.BoundedSemaphore(k)
    lock = threading.Lock()
    lat: list[float] = []
    failures = 0
    started = time.perf_counter()
    end = started + seconds

    def done(t0: float, result: Any, error: int) -> None:
        nonlocal failures
        t1 = time.perf_counter()
        with lock:
            if error != 0:
                failures += 1
                why = WHY.setdefault(k, {})
                name = reasons.get(error, f"FAIL_REASON {error}")
                why[name] = why.get(name, 0) + 1
            elif t1 <= end:
                lat.append(t1 - t0)
        slots.release()

    n = 0
    while n < MAX_PROPOSALS:
        if not slots.acquire(timeout=1.0):
            if time.perf_counter() >= end:
                break
            continue
        t0 = time.perf_counter()
        if t0 >= end:
            slots.release()
            break
        n += 1
        obj.put(f"b/{n % KEYSPACE:07d}", value, callback=lambda r, e, t0=t0: done(t0, r, e))
    # Let the calls in flight finish (bounded), so none is answered after the process goes.
    for _ in range(k):
        if not slots.acquire(timeout=5.0):
            break
    with lock:
        got = list(lat)
    return Phase(k, len(got), seconds, failures, pct(got, 0.5) * 1e3, pct(got, 0.99) * 1e3)


def _write(path: str, phases: list[Phase], extra: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps({"phases": [p.__dict__ for p in phases], **extra}))
    os.replace(tmp, path)


# ---- the parent: start three processes, wait for the leader's figures, stop them ----------


@dataclass
class SystemResult:
    system: str
    phases: list[Phase]
    extra: dict[str, Any]
    label: str = "defaults"


def run_system(
    system: str,
    seconds: float,
    inflight: list[int],
    profile: str = "",
    pso_conf: dict[str, Any] | None = None,
) -> SystemResult:
    """One fresh cluster per K, so a leadership change in one phase spoils only that one."""
    phases: list[Phase] = []
    extra: dict[str, Any] = {"failures": {}, "leader_changes": 0, "fsync_p50_ms": []}
    extra["follower_stall_ms"] = []
    for k in inflight:
        r = _run_cluster(system, seconds, [k], profile, pso_conf)
        phases += r.phases
        for key, v in r.extra.items():
            if key == "failures":
                extra["failures"].update(v)
            elif key == "leader_changes":
                extra["leader_changes"] += v
            elif key in ("fsync_p50_ms", "follower_stall_ms"):
                extra[key].append(v)
            else:
                extra[key] = v
    return SystemResult(system, phases, extra)


def _run_cluster(
    system: str,
    seconds: float,
    inflight: list[int],
    profile: str = "",
    pso_conf: dict[str, Any] | None = None,
) -> SystemResult:
    base = free_port_block([1, 2, 3, 101, 102, 103])
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="coord-bench-consensus-") as tmp:
        d = Path(tmp)
        secret = d / "secret"
        secret.write_text(secrets.token_hex(32))
        out = d / "result.json"
        try:
            for i in (1, 2, 3):
                cmd = [sys.executable, "-m", "bench.consensus", "worker", "--system", system]
                cmd += ["--id", str(i), "--base", str(base), "--dir", str(d / "data")]
                cmd += ["--secret", str(secret), "--seconds", str(seconds), "--out", str(out)]
                cmd += ["--inflight", ",".join(map(str, inflight))]
                cmd += ["--pso-conf", json.dumps(pso_conf or {})]
                if profile:
                    cmd += ["--profile", profile]
                procs.start(f"{system}-{i}", cmd, d / f"{system}-{i}.log")
            budget = 40 + len(inflight) * (seconds + 8)
            wait_until(f"{system}'s leader to report", out.exists, timeout=budget, every=0.1)
            doc = json.loads(out.read_text())
        except RuntimeError:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(d.glob("*.log"))
            )
            raise RuntimeError(f"{system}: no result\n{logs}") from None
        finally:
            procs.stop_all()
        stalls = [json.loads(p.read_text())["stall_ms"] for p in d.glob("result.json.follower-*")]
    if stalls:
        doc["follower_stall_ms"] = max(stalls)
    phases = [Phase(**p) for p in doc.pop("phases")]
    return SystemResult(system, phases, doc)


TUNED = {"appendEntriesPeriod": 0.01, "autoTickPeriod": 0.005}
INFLIGHT = [1, 64, 512, 4096, 16384]


def run(
    seconds: float = 5.0, inflight: list[int] | None = None, systems: list[str] | None = None
) -> str:
    ks = inflight or INFLIGHT
    results: list[SystemResult] = []
    for system in systems or ["coord", "pysyncobj"]:
        if system == "pysyncobj":
            if not have_pysyncobj():
                continue
            for label, conf in (("defaults", {}), ("tuned", TUNED)):
                r = run_system(system, seconds, ks, pso_conf=conf)
                r.label = label
                results.append(r)
        else:
            results.append(run_system(system, seconds, ks))
    return render(results)


def have_pysyncobj() -> bool:
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return False
    return True


def _ms(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"  # NaN: nothing committed


def render(results: list[SystemResult]) -> str:
    best: dict[int, float] = {}
    for r in results:
        if r.system == "pysyncobj":
            for p in r.phases:
                best[p.inflight] = max(best.get(p.inflight, 0.0), p.rate)
    lines = [
        "| system | config | in flight | committed/s | p50 ms | p99 ms | failed "
        "| leader loop stall ms | lost leadership after s | vs PySyncObj (better config, same K) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        name = "coord (fsync)" if r.system == "coord" else "PySyncObj 0.3.17 (no fsync)"
        label = r.label
        if r.system == "pysyncobj" and r.extra.get("conf"):
            label += " (" + ", ".join(f"{k} {v}" for k, v in r.extra["conf"].items()) + ")"
        for p in r.phases:
            other = best.get(p.inflight)
            ratio = f"{p.rate / other:.2f}x" if r.system == "coord" and other else ""
            stall = f"{p.stall_ms:.0f}" if r.system == "coord" else ""
            lost = f"{p.led_s:.1f}" if r.system == "coord" and p.led_s < p.seconds else ""
            lines.append(
                f"| {name} | {label} | {p.inflight} | {p.rate:,.0f} | {_ms(p.p50_ms)} "
                f"| {_ms(p.p99_ms)} | {p.failures} | {stall} | {lost} | {ratio} |"
            )
    notes = []
    tops: dict[str, tuple[float, int, str]] = {}
    for r in results:
        for p in r.phases:
            if p.rate > tops.get(r.system, (0.0, 0, ""))[0]:
                tops[r.system] = (p.rate, p.inflight, r.label)
    if "coord" in tops and "pysyncobj" in tops:
        c, o = tops["coord"], tops["pysyncobj"]
        notes.append(
            f"Best of each: coord {c[0]:,.0f}/s at {c[1]} in flight, PySyncObj {o[0]:,.0f}/s "
            f"({o[2]}, {o[1]} in flight): {c[0] / o[0]:.2f}x."
        )
    for r in results:
        if r.system == "coord":
            fs = r.extra.get("fsync_p50_ms") or [0.0]
            fs = fs if isinstance(fs, list) else [fs]
            st = r.extra.get("follower_stall_ms") or []
            st = st if isinstance(st, list) else [st]
            notes.append(
                f"coord, one fresh cluster per K: the leader's median fdatasync "
                f"{min(fs):.2f} to {max(fs):.2f} ms; elections won by the driving process: "
                f"{r.extra.get('leader_changes', 0)} (one per cluster is its first)"
                + (f"; the followers' event loops stalled at most {max(st):.0f} ms" if st else "")
                + ". *Leader loop stall*: the longest a 10 ms sleep on the leader's event "
                "loop overslept during the phase (coord's election timeout is 300-600 ms)."
            )
            for k, why in sorted(r.extra.get("failures", {}).items(), key=lambda kv: int(kv[0])):
                if why:
                    top = ", ".join(f"{n} x {w!r}" for w, n in sorted(why.items())[:3])
                    notes.append(f"Failed at {k} in flight: {top}.")
    for r in results:
        if r.system == "pysyncobj":
            for k, why in sorted(r.extra.get("failures", {}).items(), key=lambda kv: int(kv[0])):
                if why:
                    top = ", ".join(f"{n} x {w}" for w, n in sorted(why.items())[:3])
                    notes.append(f"PySyncObj ({r.label}) failed at {k} in flight: {top}.")
    return "\n".join(lines) + ("\n\n" + " ".join(notes) if notes else "")


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.consensus")
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--system", choices=["coord", "pysyncobj"], required=True)
    w.add_argument("--id", type=int, required=True)
    w.add_argument("--base", type=int, required=True)
    w.add_argument("--dir", required=True)
    w.add_argument("--secret", required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--inflight", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--profile", default="")
    w.add_argument("--pso-conf", default="{}")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--inflight", default=",".join(map(str, INFLIGHT)))
    ap.add_argument("--only", choices=["coord", "pysyncobj"])
    ap.add_argument("--profile", default="", help="write the leader's cProfile stats here")
    ap.add_argument(
        "--pso-conf",
        default="{}",
        help="extra SyncObjConf settings (JSON); with --only coord, NodeConfig settings",
    )
    args = ap.parse_args()
    ks = [int(x) for x in args.inflight.split(",")]
    if args.cmd == "worker":
        args.inflight = ks
        args.pso_conf = json.loads(args.pso_conf)
        if args.system == "coord":
            return asyncio.run(_coord_worker(args))
        return _pysyncobj_worker(args)
    if args.profile or args.pso_conf != "{}":
        results = []
        for system in [args.only] if args.only else ["coord", "pysyncobj"]:
            results.append(
                run_system(system, args.seconds, ks, args.profile, json.loads(args.pso_conf))
            )
        print(render(results))
        return 0
    print(run(args.seconds, ks, [args.only] if args.only else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
