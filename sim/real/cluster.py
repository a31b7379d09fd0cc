"""Real coord processes on loopback, every directed link through its own proxy.

Theory of operation
-------------------
Node i listens for peers on R_i and for clients on A_i (free loopback ports).
For every ordered pair (i, j) there are two proxies: a peer proxy relaying to
R_j and an API proxy relaying to A_j. Every node is started with the real
member list (R_j/A_j: what the cluster records and clients are told), and with
``--dial j=<peer proxy of (i, j)>/<API proxy of (i, j)>`` for every other node
j: coord's own way to reach a member at other addresses than its recorded ones
(coord/server/config.py). The recorded addresses travel in snapshots; the dial
routes are this node's flags, so a snapshot installed from the leader cannot
reroute a node around its proxies, and snapshots stay on.

Direction is real because of how coord's transport works (coord/transport.py):
each node dials every peer it sends to, and a connection carries only the
dialler's frames (the listener answers with nothing but a 16-byte nonce). So
the connections through the peer proxy of (i, j) carry exactly i's Raft
messages to j, and cutting that proxy, both byte directions, cuts i -> j and
nothing else: j's messages to i travel on j's own connection, through (j, i).

The API proxies carry what a follower forwards to the leader over HTTP (a
write or a linearizable read, coord/server/api.py). That is a request and an
answer on one connection, so the forward direction belongs to link i -> j and
the backward one (the answer) to link j -> i.

Clients and the harness's own observers talk to A_i directly: a client is
"on node i's host", cut off exactly when node i is.

Every process is started in its own session (Ctrl-C reaches only the harness)
and stopped by its PID: SIGCONT if paused, SIGTERM, SIGKILL after a bound.

"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .proxy import Proxy

# Small, so that a short run takes snapshots and a restarted node catches up by one.
SNAPSHOT_EVERY = 50
SNAPSHOT_KEEP = 10


async def reap(proc: subprocess.Popen[bytes], bound: float) -> int:
    """Wait up to ``bound`` seconds for ``proc`` to end, then SIGKILL it (by PID); its status."""
    deadline = time.monotonic() + bound
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 5)
    return int(proc.returncode)


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (bound to port 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class NodeProc:
    id: int
    peer_port: int
    api_port: int
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # exit codes seen (kill -9: -9)

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RealCluster:
    def __init__(
        self,
        workdir: Path,
        n: int,
        *,
        tick_ms: int = 50,
        election_ticks: int = 6,
        snapshot_every: int = SNAPSHOT_EVERY,
        seed: int = 0,
    ) -> None:
        self.dir = workdir
        self.n = n
        self.ids = list(range(1, n + 1))
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.snapshot_every = snapshot_every
        self.seed = seed
        ports = free_ports(2 * n)
        self.nodes = {i: NodeProc(i, ports[2 * (i - 1)], ports[2 * (i - 1) + 1]) for i in self.ids}
        self.peer_proxies: dict[tuple[int, int], Proxy] = {}
        self.api_proxies: dict[tuple[int, int], Proxy] = {}
        self.secret = workdir / "secret"
        self._http: aiohttp.ClientSession | None = None

    # ---- setup ---------------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> int:
        """Proxies, then every node; the leader's id once all agree on one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.secret.write_text(secrets.token_hex(32))
        self.secret.chmod(0o600)
        k = 0
        for i in self.ids:
            for j in self.ids:
                if i == j:
                    continue
                k += 1
                p = Proxy(("127.0.0.1", self.nodes[j].peer_port), name=f"peer {i}->{j}", seed=k)
                a = Proxy(("127.0.0.1", self.nodes[j].api_port), name=f"api {i}->{j}", seed=-k)
                await p.start()
                await a.start()
                self.peer_proxies[(i, j)] = p
                self.api_proxies[(i, j)] = a
        for i in self.ids:
            self.start_node(i)
        return await self.wait_leader(timeout)

    def members(self) -> list[str]:
        return [
            f"{j}=127.0.0.1:{self.nodes[j].peer_port}/127.0.0.1:{self.nodes[j].api_port}"
            for j in self.ids
        ]

    def dials_for(self, i: int) -> list[str]:
        """Node i reaches every other node j through the proxies of (i, j)."""
        out = []
        for j in self.ids:
            if j != i:
                pp, ap = self.peer_proxies[(i, j)].port, self.api_proxies[(i, j)].port
                out.append(f"{j}=127.0.0.1:{pp}/127.0.0.1:{ap}")
        return out

    def command(self, i: int) -> list[str]:
        cmd = [sys.executable, "-m", "coord", "run", "--id", str(i)]
        cmd += ["--data-dir", str(self.dir / "data"), "--secret-file", str(self.secret)]
        for m in self.members():
            cmd += ["--member", m]
        for d in self.dials_for(i):
            cmd += ["--dial", d]
        cmd += ["--tick-ms", str(self.tick_ms), "--election-ticks", str(self.election_ticks)]
        cmd += ["--snapshot-every", str(self.snapshot_every)]
        cmd += ["--snapshot-keep", str(min(SNAPSHOT_KEEP, self.snapshot_every))]
        return cmd

    def data_dir(self, i: int) -> Path:
        return self.dir / "data" / f"node-{i}"

    # ---- process control (by PID, always) ------------------------------------------

    def start_node(self, i: int) -> None:
        nd = self.nodes[i]
        assert not nd.running, f"node {i} is already running"
        log = open(self.dir / f"node-{i}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            nd.proc = subprocess.Popen(
                self.command(i),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the harness, which stops us by PID
            )
        finally:
            log.close()
        nd.paused = False
        nd.starts += 1

    async def kill9(self, i: int) -> None:
        nd = self.nodes[i]
        if nd.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(nd.proc.pid, signal.SIGKILL)
        await self._reap(nd, 5.0)

    def pause(self, i: int) -> None:
        nd = self.nodes[i]
        if nd.running and not nd.paused:
            assert nd.proc is not None
            os.kill(nd.proc.pid, signal.SIGSTOP)
            nd.paused = True

    def resume(self, i: int) -> None:
        nd = self.nodes[i]
        if nd.paused and nd.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(nd.proc.pid, signal.SIGCONT)
        nd.paused = False

    def wipe(self, i: int) -> None:
        """Forget everything node i wrote (only for --break amnesia)."""
        assert not self.nodes[i].running
        shutil.rmtree(self.data_dir(i), ignore_errors=True)

    async def _reap(self, nd: NodeProc, bound: float) -> None:
        if nd.proc is None:
            return
        nd.exits.append(await reap(nd.proc, bound))
        nd.proc = None
        nd.paused = False

    async def stop_all(self) -> None:
        """SIGCONT whatever is paused, SIGTERM everyone, SIGKILL what is left after 8 s."""
        live = [nd for nd in self.nodes.values() if nd.proc is not None]
        for nd in live:
            self.resume(nd.id)
            assert nd.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(nd.proc.pid, signal.SIGTERM)
        await asyncio.gather(*(self._reap(nd, 8.0) for nd in live))

    def kill_all_sync(self) -> None:
        """Last resort outside the event loop: SIGKILL by PID and wait."""
        for nd in self.nodes.values():
            if nd.proc is not None and nd.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(nd.proc.pid, signal.SIGCONT)
                    os.kill(nd.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    nd.proc.wait(5)
            nd.proc = None

    async def close_proxies(self) -> None:
        if self._http is not None:
            await self._http.close()
        for p in [*self.peer_proxies.values(), *self.api_proxies.values()]:
            await p.close()

    # ---- looking -------------------------------------------------------------------

    async def status(self, i: int, timeout: float = 0.5) -> dict[str, Any] | None:
        """GET /v1/cluster straight from node i (None: down, paused or not answering)."""
        nd = self.nodes[i]
        if not nd.running or nd.paused:
            return None
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.get(
                f"http://{nd.api}/v1/cluster", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                if r.status != 200:
                    return None
                doc: dict[str, Any] = await r.json(content_type=None)
                return doc
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def statuses(self, timeout: float = 0.5) -> dict[int, dict[str, Any] | None]:
        got = await asyncio.gather(*(self.status(i, timeout) for i in self.ids))
        return dict(zip(self.ids, got, strict=True))

    async def leader(self) -> int | None:
        """The leader of the highest term any reachable node reports, or None."""
        best: tuple[int, int] | None = None
        for i, st in (await self.statuses()).items():
            if st is not None and st.get("role") == "leader":
                cand = (int(st["term"]), i)
                best = cand if best is None or cand > best else best
        return best[1] if best else None

    async def wait_leader(self, timeout: float, nodes: list[int] | None = None) -> int:
        """Until every running node (or those named) names the same leader, and it leads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = await self.statuses()
            ask = nodes or [i for i in self.ids if self.nodes[i].running]
            named = {(sts[i] or {}).get("leader") for i in ask}
            if len(named) == 1:
                (lead,) = named
                if lead in self.nodes and (sts[int(lead)] or {}).get("role") == "leader":
                    return int(lead)
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no agreed leader within {timeout:.0f}s")

    def bypassed_links(self) -> list[str]:
        """Nodes none of whose peer traffic went through their proxies: it went around
        them. (Per node, not per link: a follower that never campaigns never sends to
        another follower.)"""
        return [
            f"n{i}: none of its peer traffic went through its proxies"
            for i in self.ids
            if not any(self.peer_proxies[(i, j)].stats.bytes_forward for j in self.ids if j != i)
        ]

    def log_tail(self, i: int, chars: int = 1500) -> str:
        try:
            return (self.dir / f"node-{i}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""
