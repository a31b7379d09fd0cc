"""Writes per second and latency through the API: coord against etcd 3.4, same run.

    python -m bench.api [--seconds 5]

Three coord nodes (fsync on: one fdatasync per batch) and three etcd members
(Debian's etcd-server; it fsyncs too), all on loopback, one system at a time
on the same machine. The same aiohttp load generator drives both: N workers,
each writing 256-byte values to its own keys back to back, for a fixed time.
coord is measured over HTTP (PUT /v1/kv/{key}) and over the pipelined channel
(one WebSocket, many writes in flight); etcd through its JSON gateway
(POST /v3/kv/put). Every process is started here and stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.procutil import Procs, etcd_command, free_port_block

VALUE = "v" * 256
CHANNEL_IN_FLIGHT = (512, 2048)


@dataclass
class Result:
    system: str
    clients: int
    writes: int
    seconds: float
    latencies: list[float]
    server_cores: float = 0.0  # CPU seconds of the three servers per wall second
    client_cores: float = 0.0  # the load generator's (this process)

    @property
    def rate(self) -> float:
        return self.writes / self.seconds

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


# ---- systems under test ----------------------------------------------------------------------


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def start_coord(d: Path, base: int) -> tuple[Procs, str]:
    procs = Procs()
    secret = d / "secret"
    secret.write_text(secrets.token_hex(32))
    members = [f"{i}=127.0.0.1:{base + i}/127.0.0.1:{base + 100 + i}" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        cmd = [sys.executable, "-m", "coord", "run", "--id", str(i), "--data-dir", str(d / "coord")]
        cmd += ["--secret-file", str(secret), "--log-level", "warning"]
        for m in members:
            cmd += ["--member", m]
        procs.start(f"coord-{i}", cmd, d / f"coord-{i}.log")
    for i in (1, 2, 3):
        wait_http(f"http://127.0.0.1:{base + 100 + i}/readyz")
    import json

    with urllib.request.urlopen(f"http://127.0.0.1:{base + 101}/v1/cluster", timeout=2) as r:
        leader_api = json.loads(r.read())["leader_api"]
    return procs, f"http://{leader_api}"


def start_etcd(d: Path, base: int) -> tuple[Procs, str]:
    procs = Procs()
    peers = {i: base + 200 + i for i in (1, 2, 3)}
    for i in (1, 2, 3):
        cmd = etcd_command(d, i, base + 300 + i, peers)
        procs.start(f"etcd-{i}", cmd, d / f"etcd-{i}.log")
    for i in (1, 2, 3):
        wait_http(f"http://127.0.0.1:{base + 300 + i}/health")
    # Find the leader: the gateway's status call names it.
    import json

    for i in (1, 2, 3):
        req = urllib.request.Request(
            f"http://127.0.0.1:{base + 300 + i}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(req, timeout=2) as r:
            st = json.loads(r.read())
        if st.get("leader") == st.get("header", {}).get("member_id"):
            return procs, f"http://127.0.0.1:{base + 300 + i}"
    return procs, f"http://127.0.0.1:{base + 301}"


# ---- load ------------------------------------------------------------------------------------


async def load_http(system: str, url: str, clients: int, seconds: float, max_writes: int) -> Result:
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    count = 0

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal count
        n = 0
        while time.monotonic() < stop_at and count < max_writes:
            key = f"bench/{w}/{n}"
            n += 1
            t0 = time.perf_counter()
            if system == "etcd":
                body = {
                    "key": base64.b64encode(key.encode()).decode(),
                    "value": base64.b64encode(VALUE.encode()).decode(),
                }
                async with session.post(f"{url}/v3/kv/put", json=body) as r:
                    await r.read()
                    ok = r.status == 200
            else:
                async with session.put(f"{url}/v1/kv/{key}", json={"value": VALUE}) as r:
                    await r.read()
                    ok = r.status == 200
            if ok:
                latencies.append(time.perf_counter() - t0)
                count += 1

    started = time.monotonic()
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(w, session) for w in range(clients)))
    return Result(system, clients, count, time.monotonic() - started, latencies)


async def load_channel(url: str, in_flight: int, seconds: float, max_writes: int) -> Result:
    """``in_flight`` writers sharing one pipelined channel, through coord's own client."""
    from coord.client import Client

    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    count = 0
    started = time.monotonic()

    async def worker(w: int, ch: Any) -> None:
        nonlocal count
        n = 0
        while time.monotonic() < stop_at and count < max_writes:
            n += 1
            t0 = time.perf_counter()
            await ch.put(f"pipe/{w}/{n}", VALUE)
            latencies.append(time.perf_counter() - t0)
            count += 1

    async with Client([url]) as client, client.channel() as ch:
        await asyncio.gather(*(worker(w, ch) for w in range(in_flight)))
    return Result("coord channel", in_flight, count, time.monotonic() - started, latencies)


# ---- the run ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(procs: Procs, load: Coroutine[Any, Any, Result]) -> Result:
    """Run one load, noting the CPU it cost the servers and the load generator."""
    pids = [p.pid for p in procs.procs.values()]
    before = sum(cpu_seconds(p) for p in pids)
    mine = time.process_time()
    started = time.monotonic()
    r = asyncio.run(load)
    wall = time.monotonic() - started
    r.server_cores = (sum(cpu_seconds(p) for p in pids) - before) / wall
    r.client_cores = (time.process_time() - mine) / wall
    return r


def run(seconds: float = 5.0, max_writes: int = 200_000) -> str:
    """Measure both systems; the Markdown table."""
    # coord: base+1..3 (peers), base+101..103 (API); etcd: base+201..203, base+301..303
    base = free_port_block([o + i for o in (0, 100, 200, 300) for i in (1, 2, 3)])
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="coord-bench-") as tmp:
        d = Path(tmp)
        procs, url = start_coord(d, base)
        try:
            for c in (1, 64):
                results.append(measured(procs, load_http("coord", url, c, seconds, max_writes)))
            for k in CHANNEL_IN_FLIGHT:
                results.append(measured(procs, load_channel(url, k, seconds, max_writes)))
        finally:
            procs.stop_all()
        procs, url = start_etcd(d, base)
        try:
            for c in (1, 64):
                results.append(measured(procs, load_http("etcd", url, c, seconds, max_writes)))
        finally:
            procs.stop_all()
    return render(results)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--max-writes", type=int, default=200_000)
    args = ap.parse_args()
    if shutil.which("etcd") is None:
        print("etcd is not installed: apt-get install -y etcd-server etcd-client", file=sys.stderr)
        return 2
    print(run(args.seconds, args.max_writes))
    return 0


def render(results: list[Result]) -> str:
    by = {(r.system, r.clients): r for r in results}
    lines = [
        "| system | clients | writes/s | p50 ms | p99 ms | vs etcd (writes/s) "
        "| server cores | load cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        peer = by.get(("etcd", r.clients)) or by.get(("etcd", 64))
        ratio = f"{r.rate / peer.rate:.2f}x" if peer and r.system != "etcd" else ""
        label = f"{r.clients} in flight" if r.system == "coord channel" else str(r.clients)
        p50, p99 = r.pct(0.5), r.pct(0.99)
        lines.append(
            f"| {r.system} | {label} | {r.rate:,.0f} | {p50:.1f} | {p99:.1f} | {ratio} "
            f"| {r.server_cores:.2f} | {r.client_cores:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
