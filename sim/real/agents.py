"""Target agents in the real-process harness, and the VIP single-ownership check.

``--agents N`` starts N ``python -m target run`` agents (no tgtd: control port 0) on
loopback. Agent k (named ``a{k}``) reaches the coordinators only through proxies of its
own, one per coordinator node j (relaying to j's API port), so the nemesis can cut one
agent off from every coordinator without touching anything else. Its portal address
127.0.0.(40+k):3260 only appears in redirects (nothing listens there without tgtd); the
VIPs (127.0.77.x) are served on a free high port (``--vip-port``), and on loopback the
portal's listening socket *is* the holding (target/addr.py, LoopbackVips): the kernel
refuses a second process the same address and port.

The check reads each agent's log (``%(asctime)s``: wall clock, millisecond resolution)
and builds, per VIP, the intervals in which each agent served it: from ``serving VIP X``
to ``stopped serving VIP X``, or to the instant the harness saw the agent dead after a
kill -9 (taken after the reap, so never earlier than the kernel closed its sockets), or
to the end of the run. Violations:

- ``vip-cannot-listen``: an agent logged ``VIP X: cannot listen`` -- the holder rule
  let it serve X while another process still held the socket;
- ``vip-overlap``: two agents' intervals for one VIP overlap by more than
  ``OVERLAP_TOLERANCE_MS``;
- ``vip-liveness``: after the final heal, some VIP is not served by exactly one live
  agent (the one the map names) within the bound;
- ``agent-exited``: an agent stopped without the nemesis killing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from coord.client import Client, CoordError
from target.cli import agent_command

from .cluster import RealCluster, free_ports, reap
from .proxy import Proxy

AGENT_KINDS = ("agent-kill", "agent-isolate", "agent-drain")
AGENT_MUST = ("agent-kill", "agent-isolate")  # every agent lane has these first
DEFAULT_VIPS = ("127.0.77.1", "127.0.77.2")

# Both ends of a logged interval are late by the same small amount: "serving" is logged
# right after the listening socket was bound, "stopped serving" right after it was
# closed (the record's time is taken when the log call runs). A logged overlap of two
# agents is therefore only real if it exceeds the delay between the close and the log
# call of the one letting go: a few event-loop turns, well under a millisecond when
# idle, a few ms on a loaded 2-core machine. 20 ms is far above that and far below any
# hand-over the rule allows (a lease expiry takes TTL x rho + margin = 130 ms at least).
OVERLAP_TOLERANCE_MS = 20.0

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) (\S+): (.*)$")
_SERVE = re.compile(r"serving VIP (\S+) \(epoch (\d+)\)")
_STOP = re.compile(r"stopped serving VIP (\S+)$")
_RELEASED = re.compile(r"released VIP (\S+) \(epoch (\d+)\)")
_CANNOT = re.compile(r"VIP (\S+): cannot listen: (.*)$")


# ---- the log and the check (pure) ----------------------------------------------------


@dataclass(frozen=True)
class LogEvent:
    t: float  # wall clock (time.time()), from the log's asctime
    agent: str
    kind: str  # serve | stop | released | cannot
    vip: str
    epoch: int = 0
    text: str = ""


def parse_stamp(stamp: str) -> float:
    """``2026-12-02 01:38:57,123`` (logging's asctime, local time) -> time.time() seconds."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parse_log(text: str, agent: str) -> list[LogEvent]:
    """The VIP lines of one agent's log (every incarnation of it), in order."""
    out: list[LogEvent] = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m is None:
            continue
        msg = m.group(5)
        t = parse_stamp(m.group(1))
        if (s := _STOP.search(msg)) is not None:
            out.append(LogEvent(t, agent, "stop", s.group(1)))
        elif (s := _SERVE.search(msg)) is not None:
            out.append(LogEvent(t, agent, "serve", s.group(1), int(s.group(2))))
        elif (s := _RELEASED.search(msg)) is not None:
            out.append(LogEvent(t, agent, "released", s.group(1), int(s.group(2))))
        elif (s := _CANNOT.search(msg)) is not None:
            out.append(LogEvent(t, agent, "cannot", s.group(1), 0, s.group(2)))
    return out


@dataclass(frozen=True)
class Interval:
    agent: str
    vip: str
    start: float
    end: float
    epoch: int
    why_end: str  # stopped | killed | end of run


@dataclass(frozen=True)
class HandOver:
    vip: str
    src: str
    dst: str
    at: float  # when dst began serving
    gap_ms: float  # dst's start minus src's end (negative: they overlapped)


@dataclass
class VipJudgement:
    intervals: dict[str, list[Interval]]
    handovers: list[HandOver]
    violations: list[tuple[str, str]]  # (kind, detail)
    cannot: int = 0  # cannot-listen lines seen
    notes: list[str] = field(default_factory=list)


def build_intervals(
    events: Iterable[LogEvent],
    deaths: dict[str, list[float]],
    end: float,
) -> dict[str, list[Interval]]:
    """Per VIP, every serving interval of every agent. ``deaths``: per agent, the
    instants the harness saw it dead (a kill -9): whatever it served ends there."""
    marks: list[tuple[float, int, str, LogEvent | None]] = []
    for ev in events:
        marks.append((ev.t, 1, ev.agent, ev))
    for agent, ts in deaths.items():
        for t in ts:
            marks.append((t, 0, agent, None))  # a death sorts before a line at its instant
    marks.sort(key=lambda m: (m[0], m[1]))
    open_: dict[tuple[str, str], tuple[float, int]] = {}  # (agent, vip) -> start, epoch
    out: dict[str, list[Interval]] = {}

    def close(agent: str, vip: str, t: float, why: str) -> None:
        start, epoch = open_.pop((agent, vip))
        out.setdefault(vip, []).append(Interval(agent, vip, start, max(t, start), epoch, why))

    for t, _, agent, line in marks:
        if line is None:
            for a, v in [k for k in open_ if k[0] == agent]:
                close(a, v, t, "killed")
        elif line.kind == "serve":
            open_.setdefault((agent, line.vip), (t, line.epoch))
            out.setdefault(line.vip, [])
        elif line.kind == "stop" and (agent, line.vip) in open_:
            close(agent, line.vip, t, "stopped")
    for a, v in sorted(open_):
        close(a, v, max(end, open_[(a, v)][0]), "end of run")
    for ivs in out.values():
        ivs.sort(key=lambda iv: (iv.start, iv.end, iv.agent))
    return out


def serving_at(intervals: dict[str, list[Interval]], vip: str, t: float) -> list[Interval]:
    return [iv for iv in intervals.get(vip, []) if iv.start <= t < iv.end]


def judge_vips(
    events: list[LogEvent],
    deaths: dict[str, list[float]],
    end: float,
    *,
    t0: float = 0.0,
    tolerance_ms: float = OVERLAP_TOLERANCE_MS,
) -> VipJudgement:
    """Intervals, hand-overs and the safety violations (a) and (b); times in the
    details are seconds since ``t0`` (the start of the load)."""
    ivs = build_intervals(events, deaths, end)
    violations: list[tuple[str, str]] = []
    cannot = [ev for ev in events if ev.kind == "cannot"]
    # (a) one violation per episode: consecutive refusals of one agent for one VIP
    # with no successful serve of it in between.
    episodes: dict[tuple[str, str], list[LogEvent]] = {}
    done: list[list[LogEvent]] = []
    for ev in sorted(events, key=lambda e: e.t):
        key = (ev.agent, ev.vip)
        if ev.kind == "cannot":
            episodes.setdefault(key, []).append(ev)
        elif ev.kind == "serve" and key in episodes:
            done.append(episodes.pop(key))
    done.extend(episodes.values())
    for ep in sorted(done, key=lambda e: e[0].t):
        first, last = ep[0], ep[-1]
        holders = [iv for iv in serving_at(ivs, first.vip, first.t) if iv.agent != first.agent]
        held = (
            "; held by "
            + ", ".join(f"{iv.agent} (serving since {iv.start - t0:.3f}s)" for iv in holders)
            if holders
            else ""
        )
        times = f"{len(ep)} times until {last.t - t0:.3f}s" if len(ep) > 1 else "once"
        violations.append(
            (
                "vip-cannot-listen",
                f"{first.agent} could not listen on VIP {first.vip} at {first.t - t0:.3f}s "
                f"({times}): {first.text}{held} -- its holder rule let it serve while "
                "another process still held the address",
            )
        )
    # (b) overlaps of two agents' intervals, beyond the tolerance
    for vip, lst in sorted(ivs.items()):
        for i, a in enumerate(lst):
            for b in lst[i + 1 :]:
                if a.agent == b.agent:
                    continue
                over = (min(a.end, b.end) - max(a.start, b.start)) * 1000
                if over > tolerance_ms:
                    violations.append(
                        (
                            "vip-overlap",
                            f"VIP {vip}: {a.agent} [{a.start - t0:.3f}s, {a.end - t0:.3f}s] "
                            f"and {b.agent} [{b.start - t0:.3f}s, {b.end - t0:.3f}s] served "
                            f"it at once for {over:.0f} ms (tolerance {tolerance_ms:g} ms)",
                        )
                    )
    handovers: list[HandOver] = []
    for vip, lst in sorted(ivs.items()):
        for prev, cur in itertools.pairwise(lst):
            if prev.agent != cur.agent:
                gap = (cur.start - prev.end) * 1000
                handovers.append(HandOver(vip, prev.agent, cur.agent, cur.start, round(gap, 1)))
    return VipJudgement(ivs, handovers, violations, len(cannot))


def report_lines(j: VipJudgement, t0: float) -> list[str]:
    """Per VIP: who served it when, the hand-overs and their gaps."""
    lines = []
    for vip, lst in sorted(j.intervals.items()):
        spans = ", ".join(
            f"{iv.agent} [{iv.start - t0:.2f}s-{iv.end - t0:.2f}s"
            + (" killed]" if iv.why_end == "killed" else "]")
            for iv in lst
        )
        lines.append(f"  {vip}: {spans or 'never served'}")
        for h in j.handovers:
            if h.vip == vip:
                lines.append(
                    f"    hand-over {h.src} -> {h.dst} at {h.at - t0:.2f}s, gap {h.gap_ms:.0f} ms"
                )
    return lines


# ---- the processes ---------------------------------------------------------------------


@dataclass
class AgentProc:
    k: int
    name: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    deaths: list[float] = field(default_factory=list)  # wall clock, seen dead after a kill

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class AgentFleet:
    """N agents on loopback, each behind its own proxies to every coordinator node."""

    def __init__(
        self,
        workdir: Path,
        cluster: RealCluster,
        n: int,
        *,
        vips: tuple[str, ...] = DEFAULT_VIPS,
        ttl_ms: int = 1500,
        margin_s: float | None = None,
        rho: float | None = None,
    ) -> None:
        self.dir = workdir / "agents"
        self.c = cluster
        self.n = n
        self.vips = vips
        self.ttl_ms = ttl_ms
        self.margin_s = margin_s
        self.rho = rho
        self.vip_port = free_ports(1)[0]
        self.agents = {k: AgentProc(k, f"a{k}") for k in range(1, n + 1)}
        self.proxies: dict[tuple[int, int], Proxy] = {}  # (agent k, coord node j)
        self.isolated: set[int] = set()
        self.drained: set[int] = set()
        self.down: set[int] = set()
        self._client: Client | None = None

    def by_name(self, name: str) -> AgentProc:
        return self.agents[int(name.removeprefix("a"))]

    async def client(self) -> Client:
        if self._client is None:
            self._client = Client([nd.api for nd in self.c.nodes.values()], timeout=2.0, attempts=4)
            await self._client.__aenter__()
        return self._client

    def command(self, k: int) -> list[str]:
        endpoints = [f"127.0.0.1:{self.proxies[(k, j)].port}" for j in self.c.ids]
        portal = f"127.0.0.{40 + k}:3260"
        cmd = agent_command(
            f"a{k}", endpoints, portal, self.dir, control_port=0, ttl_ms=self.ttl_ms
        )
        cmd += ["--vip-port", str(self.vip_port)]
        if self.margin_s is not None:
            cmd.append(f"--margin-s={self.margin_s:g}")
        if self.rho is not None:
            cmd.append(f"--rho={self.rho:g}")
        return cmd

    def log_path(self, k: int) -> Path:
        return self.dir / f"agent-a{k}.log"

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for k in self.agents:
            for j in self.c.ids:
                p = Proxy(
                    ("127.0.0.1", self.c.nodes[j].api_port),
                    name=f"agent a{k}->n{j}",
                    seed=1000 * k + j,
                )
                await p.start()
                self.proxies[(k, j)] = p
        for k in self.agents:
            self.start_agent(k)

    def start_agent(self, k: int) -> None:
        ag = self.agents[k]
        assert not ag.running, f"agent a{k} is already running"
        log = open(self.log_path(k), "ab")  # noqa: SIM115 - the child owns it
        try:
            ag.proc = subprocess.Popen(
                self.command(k),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        ag.starts += 1

    async def wait_registered(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        names = {ag.name for ag in self.agents.values()}
        c = await self.client()
        while time.monotonic() < deadline:
            with contextlib.suppress(CoordError, OSError, TimeoutError):
                doc = await c.nodes()
                live = {str(n.get("id")) for n in doc.get("items", []) if n.get("live")}
                if names <= live:
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the agents did not all register within {timeout:g}s")

    async def create_vips(self) -> None:
        c = await self.client()
        for v in self.vips:
            await c.create_vip(v, self.vip_port)

    async def owners(self) -> dict[str, str | None]:
        """The map's owner of every VIP (a linearizable read), {} when unavailable."""
        c = await self.client()
        try:
            doc = await c.vips()
        except (CoordError, OSError, TimeoutError):
            return {}
        return {
            str(v.get("address")): (None if v.get("releasing") else v.get("owner"))
            for v in doc.get("items", [])
        }

    # ---- faults ----------------------------------------------------------------------

    async def kill9(self, k: int) -> None:
        ag = self.agents[k]
        if ag.proc is None:
            return
        self.down.add(k)  # first: the monitor must not take this death for an exit
        with contextlib.suppress(ProcessLookupError):
            os.kill(ag.proc.pid, signal.SIGKILL)
        await self._reap(ag, 5.0)
        ag.deaths.append(time.time())  # after the reap: its sockets are closed by now

    def isolate(self, k: int, mode: str) -> None:
        for j in self.c.ids:
            self.proxies[(k, j)].cut(mode=mode)
        self.isolated.add(k)

    def reconnect(self, k: int) -> None:
        for j in self.c.ids:
            self.proxies[(k, j)].heal()
        self.isolated.discard(k)

    async def drain(self, k: int) -> str:
        c = await self.client()
        try:
            await c.drain(f"a{k}")
        except (CoordError, OSError, TimeoutError) as e:
            return f"drain a{k} failed: {e}"
        self.drained.add(k)
        return f"drain a{k}"

    async def undrain(self, k: int, tries: int = 1) -> bool:
        c = await self.client()
        for n in range(tries):
            try:
                await c.undrain(f"a{k}")
                self.drained.discard(k)
                return True
            except (CoordError, OSError, TimeoutError):
                if n + 1 < tries:
                    await asyncio.sleep(0.5)
        return False

    async def heal_all(self) -> list[str]:
        did = []
        for k in sorted(self.isolated):
            self.reconnect(k)
            did.append(f"reconnect a{k}")
        for k in sorted(self.down):
            self.start_agent(k)
            did.append(f"restart a{k}")
        self.down.clear()
        for k in sorted(self.drained):
            ok = await self.undrain(k, tries=10)
            did.append(f"undrain a{k}" + ("" if ok else " FAILED"))
        return did

    def exited(self) -> list[tuple[int, int]]:
        """Agents that stopped without being killed: (k, status); they count as down."""
        out = []
        for k, ag in self.agents.items():
            if ag.proc is not None and k not in self.down and ag.proc.poll() is not None:
                code = int(ag.proc.returncode)
                ag.exits.append(code)
                ag.proc = None
                ag.deaths.append(time.time())
                self.down.add(k)
                out.append((k, code))
        return out

    def last_line(self, k: int) -> str:
        try:
            text = self.log_path(k).read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else "(no log)"

    # ---- looking ---------------------------------------------------------------------

    def events(self) -> list[LogEvent]:
        out: list[LogEvent] = []
        for k in self.agents:
            try:
                text = self.log_path(k).read_text(errors="replace")
            except OSError:
                continue
            out += parse_log(text, f"a{k}")
        return out

    def deaths(self) -> dict[str, list[float]]:
        return {ag.name: list(ag.deaths) for ag in self.agents.values()}

    def serving_now(self) -> dict[str, list[str]]:
        """Per VIP, the live agents whose logs say they serve it now."""
        now = time.time()
        ivs = build_intervals(self.events(), self.deaths(), now + 1)
        out: dict[str, list[str]] = {v: [] for v in self.vips}
        for v in self.vips:
            out[v] = sorted(
                iv.agent
                for iv in ivs.get(v, [])
                if iv.why_end == "end of run" and self.by_name(iv.agent).running
            )
        return out

    async def wait_settled(self, bound: float) -> tuple[float | None, str]:
        """Until every VIP is served by exactly one live agent, the one the map names:
        (seconds it took, or None; what was seen last)."""
        began = time.monotonic()
        seen = ""
        for _ in range(100_000):
            serving = self.serving_now()
            owners = await self.owners()
            seen = "; ".join(
                f"{v}: served by {','.join(serving[v]) or 'nobody'} (map: {owners.get(v)})"
                for v in self.vips
            )
            if all(len(serving[v]) == 1 and owners.get(v) == serving[v][0] for v in self.vips):
                return time.monotonic() - began, seen
            if time.monotonic() - began > bound:
                break
            await asyncio.sleep(0.2)
        return None, seen

    # ---- stopping (by PID) -----------------------------------------------------------

    async def _reap(self, ag: AgentProc, bound: float) -> None:
        if ag.proc is None:
            return
        ag.exits.append(await reap(ag.proc, bound))
        ag.proc = None

    async def stop_all(self) -> float:
        """SIGTERM every agent, SIGKILL what is left after 8 s; when they were all gone."""
        live = [ag for ag in self.agents.values() if ag.proc is not None]
        for ag in live:
            assert ag.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(ag.proc.pid, signal.SIGTERM)
        await asyncio.gather(*(self._reap(ag, 8.0) for ag in live))
        return time.time()

    def kill_all_sync(self) -> None:
        for ag in self.agents.values():
            if ag.proc is not None and ag.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ag.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    ag.proc.wait(5)
            ag.proc = None

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
        for p in self.proxies.values():
            await p.close()

    def stats(self) -> dict[str, Any]:
        return {ag.name: {"starts": ag.starts, "exits": ag.exits} for ag in self.agents.values()}
