"""Leader failover: kill -9 the leader, time until a write is acknowledged again.

    python -m bench.failover [--trials 20] [--only coord|coord-fresh|coord-etcd|etcd|etcd-coord]

Three members on 127.0.0.1 for each system, one system at a time, one cluster per
configuration; the killed member is restarted (same data directory) between trials.

A trial: the cluster is healthy (a write through every member succeeds), the
leader is found (coord: ``GET /v1/cluster``; etcd: ``/v3/maintenance/status``),
a random 0-200 ms passes, then the leader gets SIGKILL. From that instant a client
starts a new write every 20 ms, round-robin over all three endpoints (the dead one
included: it refuses at once), each a fresh key with a 2 s budget, over a new TCP
connection; followers forward writes to the leader they know (coord over HTTP,
etcd inside Raft). The outage is the time from the kill to the first
acknowledged write among attempts started after the kill; a trial gives up after
15 s (counted as failed). coord is written through ``PUT /v1/kv/{key}``, etcd
through its JSON gateway (``POST /v3/kv/put``).

Configurations: each system at its defaults (coord: tick 50 ms x 6 election
ticks = 300 ms, heartbeat every tick; etcd: heartbeat 100 ms, election timeout
1000 ms), and each at the other's timeouts. Both draw each follower's election
timeout from [T, 2T). etcd 3.4 runs without pre-vote (its default); coord always
has PreVote and CheckQuorum. ``coord-fresh``: coord at its defaults with a new
cluster for every trial, so no member has ever been restarted (a restarted
member loses the first frames its peers send it: see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procutil import Procs, etcd_command, free_port_block, http_ok, pct

PROBE_EVERY = 0.02
ATTEMPT_BUDGET = 2.0
GIVE_UP = 15.0
MAX_ATTEMPTS = 2_000


@dataclass
class Config:
    name: str  # coord | coord-etcd | etcd | etcd-coord
    system: str  # coord | etcd
    label: str
    heartbeat_ms: int
    election_ms: int
    coord_flags: list[str] = field(default_factory=list)
    etcd_flags: list[str] = field(default_factory=list)
    fresh: bool = False  # a new cluster for every trial instead of restarting the victim


def configs() -> dict[str, Config]:
    from coord.server.config import NodeConfig

    d = NodeConfig.__dataclass_fields__
    tick: int = d["tick_ms"].default  # type: ignore[assignment]
    ticks: int = d["election_ticks"].default  # type: ignore[assignment]
    hb: int = d["heartbeat_ticks"].default  # type: ignore[assignment]
    c_el, c_hb = tick * ticks, tick * hb
    return {
        "coord": Config(
            "coord", "coord", f"defaults (tick {tick} ms x {ticks})", c_hb, c_el, [], []
        ),
        "coord-fresh": Config(
            "coord-fresh",
            "coord",
            "defaults, a new cluster each trial",
            c_hb,
            c_el,
            fresh=True,
        ),
        "coord-etcd": Config(
            "coord-etcd",
            "coord",
            "etcd's timeouts (tick 100 ms x 10)",
            100,
            1000,
            ["--tick-ms", "100", "--election-ticks", "10"],
        ),
        "etcd": Config("etcd", "etcd", "defaults", 100, 1000),
        "etcd-coord": Config(
            "etcd-coord",
            "etcd",
            "coord's timeouts",
            c_hb,
            c_el,
            [],
            ["--heartbeat-interval", str(c_hb), "--election-timeout", str(c_el)],
        ),
    }


# ---- the clusters ----------------------------------------------------------------------------


class Cluster:
    system = ""

    def __init__(self, d: Path, cfg: Config) -> None:
        self.dir = d
        self.cfg = cfg
        self.procs = Procs()
        self.base = free_port_block([1, 2, 3, 101, 102, 103])

    def start(self, i: int) -> None:
        self.procs.start(str(i), self.command(i), self.dir / f"{self.system}-{i}.log")

    def command(self, i: int) -> list[str]:
        raise NotImplementedError

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base + 100 + i}"

    def write_request(self, key: str) -> tuple[str, str, dict[str, str]]:
        raise NotImplementedError

    def leader_term(self) -> tuple[int, int] | None:
        """(leader's member number, term), as one member sees it."""
        raise NotImplementedError

    def settled(self) -> tuple[int, int] | None:
        """Healthy, and the same leader in the same term half a second apart."""
        if not self.healthy():
            return None
        first = self.leader_term()
        time.sleep(0.5)
        return first if first is not None and self.leader_term() == first else None

    def up(self, i: int) -> bool:
        raise NotImplementedError

    def write_ok(self, i: int) -> bool:
        method, path, body = self.write_request(f"bench/check/{secrets.token_hex(4)}")
        data = json.dumps(body).encode()
        import urllib.request

        req = urllib.request.Request(
            self.url(i) + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def healthy(self) -> bool:
        return (
            all(self.up(i) and self.write_ok(i) for i in (1, 2, 3))
            and self.leader_term() is not None
        )


class CoordCluster(Cluster):
    system = "coord"

    def __init__(self, d: Path, cfg: Config) -> None:
        super().__init__(d, cfg)
        self.secret = d / "secret"
        self.secret.write_text(secrets.token_hex(32))
        self.members = [
            f"{i}=127.0.0.1:{self.base + i}/127.0.0.1:{self.base + 100 + i}" for i in (1, 2, 3)
        ]

    def command(self, i: int) -> list[str]:
        cmd = [sys.executable, "-m", "coord", "run", "--id", str(i), "--data-dir", str(self.dir)]
        cmd += ["--secret-file", str(self.secret), "--log-level", "warning", *self.cfg.coord_flags]
        for m in self.members:
            cmd += ["--member", m]
        return cmd

    def write_request(self, key: str) -> tuple[str, str, dict[str, str]]:
        return "PUT", f"/v1/kv/{key}", {"value": "x" * 100}

    def up(self, i: int) -> bool:
        return http_ok(self.url(i) + "/readyz") is not None

    def leader_term(self) -> tuple[int, int] | None:
        for i in (1, 2, 3):
            body = http_ok(self.url(i) + "/v1/cluster")
            if body:
                st = json.loads(body)
                if st.get("leader"):
                    return int(st["leader"]), int(st["term"])
        return None


class EtcdCluster(Cluster):
    system = "etcd"

    def command(self, i: int) -> list[str]:
        peers = {j: self.base + j for j in (1, 2, 3)}
        return etcd_command(self.dir, i, self.base + 100 + i, peers, tuple(self.cfg.etcd_flags))

    def write_request(self, key: str) -> tuple[str, str, dict[str, str]]:
        b64 = base64.b64encode
        return "POST", "/v3/kv/put", {"key": b64(key.encode()).decode(), "value": "eA=="}

    def up(self, i: int) -> bool:
        body = http_ok(self.url(i) + "/health")
        return body is not None and b'"true"' in body

    def leader_term(self) -> tuple[int, int] | None:
        for i in (1, 2, 3):
            body = http_ok(self.url(i) + "/v3/maintenance/status", data=b"{}")
            if not body:
                continue
            st = json.loads(body)
            if st.get("leader") == st.get("header", {}).get("member_id"):
                return i, int(st.get("raft_term", 0))
        return None


# ---- one trial -------------------------------------------------------------------------------


async def _outage(
    cl: Cluster, expect: tuple[int, int], rng: random.Random
) -> tuple[float | None, int]:
    """Kill ``victim``; seconds until the first acknowledged write (None: gave up)."""
    first: float | None = None
    done = asyncio.Event()
    attempts = 0
    timeout = aiohttp.ClientTimeout(total=ATTEMPT_BUDGET)
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def attempt(i: int, n: int) -> None:
            nonlocal first
            method, path, body = cl.write_request(f"bench/failover/{n}")
            try:
                async with session.request(method, cl.url(i) + path, json=body) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError, OSError):
                ok = False
            if ok and first is None:
                first = time.perf_counter()
                done.set()

        await asyncio.sleep(rng.uniform(0, 0.2))
        if cl.leader_term() != expect:
            return None, -1  # leadership moved before the kill: not a trial, settle again
        t_kill = time.perf_counter()
        cl.procs.kill9(str(expect[0]))
        tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        while not done.is_set() and attempts < MAX_ATTEMPTS:
            if time.perf_counter() - t_kill > GIVE_UP:
                break
            attempts += 1
            tasks.append(loop.create_task(attempt(1 + attempts % 3, attempts)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), PROBE_EVERY)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (None if first is None else first - t_kill), attempts


@dataclass
class Outcome:
    cfg: Config
    outages: list[float]
    failed: int
    redone: int = 0  # trials not run because leadership moved just before the kill


def run_config(cfg: Config, trials: int, seed: int = 1) -> Outcome:
    if cfg.fresh:
        outcomes = [_run_config(cfg, 1, seed + t) for t in range(trials)]
        return Outcome(
            cfg,
            [x for o in outcomes for x in o.outages],
            sum(o.failed for o in outcomes),
            sum(o.redone for o in outcomes),
        )
    return _run_config(cfg, trials, seed)


def _run_config(cfg: Config, trials: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    outages: list[float] = []
    failed = redone = 0
    with tempfile.TemporaryDirectory(prefix=f"coord-bench-failover-{cfg.name}-") as tmp:
        d = Path(tmp)
        cl: Cluster = CoordCluster(d, cfg) if cfg.system == "coord" else EtcdCluster(d, cfg)
        try:
            for i in (1, 2, 3):
                cl.start(i)
            done = 0
            for _ in range(3 * trials):  # bounded: a trial is retried if the leader moved
                if done >= trials:
                    break
                deadline = time.monotonic() + 60
                expect = cl.settled()
                while expect is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                    expect = cl.settled()
                if expect is None:
                    raise RuntimeError(f"{cfg.name}: the cluster did not settle within 60 s")
                got, attempts = asyncio.run(_outage(cl, expect, rng))
                if attempts < 0:
                    redone += 1
                    continue
                done += 1
                if got is None:
                    failed += 1
                else:
                    outages.append(got)
                if done < trials:
                    cl.start(expect[0])
        finally:
            cl.procs.stop_all()
    return Outcome(cfg, outages, failed, redone)


def run(trials: int = 20, only: list[str] | None = None) -> str:
    cfgs = configs()
    names = only or list(cfgs)
    outcomes = []
    for name in names:
        if cfgs[name].system == "etcd" and shutil.which("etcd") is None:
            continue
        outcomes.append(run_config(cfgs[name], trials))
    return render(outcomes)


def render(outcomes: list[Outcome]) -> str:
    by = {o.cfg.name: o for o in outcomes}
    lines = [
        "| system | config | heartbeat / election ms | trials | min ms | p50 ms | p99 ms "
        "| max ms | failed | p99 vs etcd, same timeouts |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        c = o.cfg
        xs = [x * 1000 for x in o.outages]
        peer = None
        if c.system == "coord":
            peer = by.get("etcd") if c.name == "coord-etcd" else by.get("etcd-coord")
        ratio = ""
        if peer is not None and peer.outages and xs:
            ratio = f"{pct(xs, 0.99) / (pct(peer.outages, 0.99) * 1000):.2f}x"
        mn = f"{min(xs):.0f}" if xs else "-"
        mx = f"{max(xs):.0f}" if xs else "-"
        lines.append(
            f"| {c.system} | {c.label} | {c.heartbeat_ms} / {c.election_ms} "
            f"| {len(xs) + o.failed} | {mn} | {pct(xs, 0.5):.0f} | {pct(xs, 0.99):.0f} | {mx} "
            f"| {o.failed} | {ratio} |"
        )
    redone = [f"{o.cfg.system} {o.cfg.label}: {o.redone}" for o in outcomes if o.redone]
    if redone:
        lines += [
            "",
            "Trials set aside because the leader changed between finding it and the kill "
            "(then the cluster settles again and the trial is redone): " + "; ".join(redone) + ".",
        ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.failover")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--only", action="append", choices=list(configs()))
    args = ap.parse_args()
    print(run(args.trials, args.only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
