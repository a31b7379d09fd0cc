"""The node agent: beside one tgtd, it makes the cluster map true on this node.

    register ──► heartbeat every TTL/5 ──► VipHolder (target/vip.py) ──► serve loop
                     ▲                        ▲                            │
                  lease                map watch (MapCache)         addresses + portals
                                              │
                                     exports to tgtd, session reports

- Registration gives the node a liveness lease; heartbeats keep it and say,
  at a revision, which VIPs the node may serve. The watch of the map says the
  same sooner. The VipHolder turns both, with the agent's own monotonic
  clock, into the set of VIPs to serve right now; the serve loop makes the
  addresses and portals match, dropping before anything else, and wakes
  itself at the instant the holder's window closes, whatever else is going on.
- Exports: every volume of the map is a target on this tgtd (tgtd forwards to
  a shared backing store, so any node can serve any volume); targets that left
  the map are removed.
- Sessions: what tgtd really has is reported (on change, and every 10 s), so
  the map's least-active counts are real, not estimates.
- The portal on each VIP redirects every login to the node the map picks
  (least-active), through a pipelined channel to the leader.

Where tgtd is missing (not installed, not root) the agent still registers,
holds VIPs and runs portals, and says once, plainly, that it exports nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coord.client import (
    Channel,
    Client,
    Conflict,
    CoordError,
    MapCache,
    NotFound,
)
from coord.client import Unavailable as CoordUnavailable
from coord.client import UnknownOutcome as CoordUnknown

from .addr import LoopbackVips, VipAddresses
from .backing import ensure_backing
from .portal import Portal, Unavailable, UnknownTarget
from .tgt import Target, Tgtd, TgtError, unavailable
from .vip import Assignment, VipHolder

log = logging.getLogger("coord.target")

REPORT_EVERY_S = 10.0  # sessions are reported on change, and at least this often


@dataclass
class AgentConfig:
    node: str
    endpoints: list[str]
    portal: str  # ip:port where this node's tgtd listens (its own address, never 0.0.0.0)
    backing_dir: Path  # the shared backing store: one sparse file per volume
    tgt_control_port: int = 0  # 0: do not run tgtd (portal and VIPs only)
    disks: list[dict[str, Any]] = field(default_factory=list)
    ttl_ms: int = 1500
    rho: float = 0.02  # clock drift bound between any two machines over a TTL
    margin_s: float = 0.1  # deciding to drop a VIP until it is really gone
    vip_port: int = 3260
    sync_every_s: float = 1.0  # exports and session reports
    log_dir: Path | None = None


class Agent:
    def __init__(self, cfg: AgentConfig, addrs: VipAddresses | None = None) -> None:
        self.cfg = cfg
        self.addrs: VipAddresses = addrs or LoopbackVips()
        self.holder = VipHolder(cfg.node, cfg.ttl_ms / 1000, cfg.rho, cfg.margin_s)
        self.client = Client(cfg.endpoints, timeout=2.0, attempts=3)
        self.cache: MapCache | None = None
        self.tgtd: Tgtd | None = None
        self.missing: list[str] = []  # what this agent runs without, said plainly
        self.lease = 0
        self.leases_held: set[int] = set()  # every lease this process served VIPs under
        self.portals: dict[str, Portal] = {}  # VIP address -> its running portal
        self.serving: dict[str, int] = {}  # VIP address -> epoch it is served at
        self.released: set[tuple[str, int]] = set()
        self.releasing: list[dict[str, Any]] = []  # from the last heartbeat answer
        self._wake = asyncio.Event()
        self._registered = asyncio.Event()
        self._sync_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: Channel | None = None
        self._channel_lock = asyncio.Lock()
        self._reported: tuple[set[tuple[str, str]], float] | None = None
        self._iqns: tuple[int, dict[str, str]] = (-1, {})
        self._synced_volumes = -1  # the volumes generation the exports were woken for
        self._grown_busy: set[str] = set()  # grown volumes waiting for their sessions to end
        self._kept_until = 0.0  # the served addresses' lifetimes end about then
        self.stopped = asyncio.Event()
        self.events: list[tuple[float, str]] = []  # (monotonic, what): VIP up/down, for tests

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        await self.client.__aenter__()
        for addr in sorted(await self.addrs.held()):  # a crashed predecessor's leftovers
            log.warning("%s: dropping leftover VIP %s", cfg.node, addr)
            await self.addrs.down(addr)
        if cfg.tgt_control_port:
            why = unavailable()
            if why is None:
                log_path = cfg.log_dir / f"tgtd-{cfg.node}.log" if cfg.log_dir else None
                self.tgtd = Tgtd(cfg.tgt_control_port, cfg.portal, log_path)
                left = await self.tgtd.stop_leftover()  # ours, from a run that crashed
                if left is not None:
                    log.warning("%s: stopped a leftover tgtd (PID %d)", cfg.node, left)
                await self.tgtd.start()
            else:
                self.missing.append(f"tgtd: {why}; volumes are not exported on {cfg.node}")
        else:
            self.missing.append(
                f"tgtd: not asked to run one; volumes are not exported on {cfg.node}"
            )
        for line in self.missing:
            log.warning("%s: %s", cfg.node, line)
        if cfg.log_dir is not None:
            # Who to kill to kill this node (tests, the harness): the agent and its tgtd.
            pids = {"agent": os.getpid(), "tgtd": self.tgtd.pid if self.tgtd else None}
            (cfg.log_dir / f"{cfg.node}.pids").write_text(json.dumps(pids))
        self.cache = MapCache(self.client, on_change=self._on_map)
        delay = 0.1
        while True:  # the coordinators may come up after us: wait for them, saying so
            try:
                await self.cache.start()
                break
            except CoordError as e:
                log.warning("%s: reading the map: %s", cfg.node, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await self._register()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeats(), name=f"heartbeat-{cfg.node}"),
            loop.create_task(self._serve(), name=f"serve-{cfg.node}"),
            loop.create_task(self._sync(), name=f"sync-{cfg.node}"),
        ]

    async def stop(self) -> None:
        """A clean stop: VIPs first, then everything else."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        serve = [t for t in tasks if t.get_name().startswith("serve-")]
        await asyncio.wait(serve, timeout=1.0)  # it only ever waits on its own wake-up
        await self._set_serving({})
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
        if self.cache is not None:
            await self.cache.close()
        if self.tgtd is not None and self.tgtd.pid is not None:
            await self.tgtd.stop()
        await self.client.close()
        self.stopped.set()

    # ---- lease and heartbeats -------------------------------------------------------------

    async def _register(self) -> None:
        cfg = self.cfg
        delay = 0.1
        while True:
            try:
                ans = await self.client.register_node(cfg.node, cfg.portal, cfg.disks, cfg.ttl_ms)
                break
            except CoordError as e:
                log.warning("%s: registering: %s", cfg.node, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.lease = int(ans["lease"])
        self.holder.registered(int(ans["revision"]))
        self._registered.set()
        log.info(
            "%s: registered with lease %d at revision %s", cfg.node, self.lease, ans["revision"]
        )
        self._wake.set()

    async def _heartbeats(self) -> None:
        period = self.cfg.ttl_ms / 1000 / 5
        while True:
            started = time.monotonic()
            lease = self.lease
            try:
                ans = await asyncio.wait_for(
                    self.client.heartbeat(self.cfg.node, lease), period * 2
                )
            except (Conflict, NotFound) as e:
                # stale_lease or lease_not_found: this lease is over. Stop serving now.
                log.warning("%s: lease %d: %s; registering again", self.cfg.node, lease, e)
                self.holder.lease_lost()
                self._wake.set()
                await self._register()
                continue
            except (CoordError, TimeoutError, OSError) as e:
                log.info("%s: heartbeat: %s", self.cfg.node, e)
            else:
                if lease == self.lease:
                    self.leases_held.add(lease)
                    owned = {v["address"]: int(v["epoch"]) for v in ans["vips"]}
                    self.holder.heartbeat_acked(started, int(ans["revision"]), owned)
                    self.releasing = list(ans.get("releasing", []))
                    self._wake.set()
            await asyncio.sleep(max(0.0, started + period - time.monotonic()))

    def _on_map(self, cache: MapCache) -> None:
        vips = [
            Assignment(a, v.get("owner"), int(v.get("epoch", 0)), bool(v.get("releasing")))
            for a, v in sorted(cache.vips.items())
        ]
        self.holder.map_seen(cache.revision, vips)
        self.releasing = [
            {"address": a, "epoch": v["epoch"], "lease": v.get("release_lease", 0)}
            for a, v in sorted(cache.vips.items())
            if v.get("owner") == self.cfg.node and v.get("releasing")
        ]
        self._wake.set()
        if cache.generation["volumes"] != self._synced_volumes:  # exports follow volumes
            self._synced_volumes = cache.generation["volumes"]
            self._sync_wake.set()

    # ---- VIPs: the serve loop -------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            now = time.monotonic()
            await self._set_serving(self.holder.serving(now))
            await self._keep_addresses(now)
            await self._acknowledge_releases()
            until = self.holder.serve_until()
            timeout = None if until is None or not self.serving else max(0.0, until - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _set_serving(self, want: dict[str, int]) -> None:
        """Drop first (the safety rule), then take up what is newly ours."""
        for addr in sorted(set(self.serving) - set(want)):
            portal = self.portals.pop(addr, None)
            if portal is not None:
                await portal.stop()
            await self.addrs.down(addr)
            del self.serving[addr]
            self.events.append((time.monotonic(), f"down {addr}"))
            log.info("%s: stopped serving VIP %s", self.cfg.node, addr)
        for addr, epoch in sorted(want.items()):
            if addr in self.serving:
                self.serving[addr] = epoch
                continue
            until = self.holder.serve_until()
            await self.addrs.up(addr, None if until is None else until - time.monotonic())
            portal = Portal(MapDirectory(self))
            try:
                await portal.start(addr, self.cfg.vip_port)
            except OSError as e:
                # Another process still has it (our predecessor?): not ours to serve yet.
                await self.addrs.down(addr)
                log.error("%s: VIP %s: cannot listen: %s", self.cfg.node, addr, e)
                continue
            self.portals[addr] = portal
            self.serving[addr] = epoch
            self.events.append((time.monotonic(), f"up {addr}"))
            log.info("%s: serving VIP %s (epoch %d)", self.cfg.node, addr, epoch)

    async def _keep_addresses(self, now: float) -> None:
        """Renew the served addresses' lifetimes to the end of the holder's window, so
        the kernel drops them if this process dies (a second's rounding at most)."""
        until = self.holder.serve_until()
        if until is None or until <= self._kept_until + 0.25:
            return  # renewed recently enough: a heartbeat every TTL/5 moves it on
        for addr in sorted(self.serving):
            await self.addrs.keep(addr, until - now)
        self._kept_until = until

    async def _acknowledge_releases(self) -> None:
        for r in list(self.releasing):
            addr, epoch, lease = r["address"], int(r["epoch"]), int(r["lease"])
            if addr in self.serving or lease not in self.leases_held:
                continue  # still ours to drop, or a lease we cannot vouch for
            if (addr, epoch) in self.released:
                continue
            self.released.add((addr, epoch))
            try:
                await self.client.vip_released(addr, epoch, lease)
                log.info("%s: released VIP %s (epoch %d)", self.cfg.node, addr, epoch)
            except CoordError as e:
                log.info("%s: releasing VIP %s: %s", self.cfg.node, addr, e)

    # ---- exports and session reports ------------------------------------------------------

    async def _sync(self) -> None:
        while True:
            try:
                if self.tgtd is not None and self.cache is not None:
                    have = await self.tgtd.targets()  # one look at tgtd serves both
                    await self._sync_exports(have)
                    await self._report_sessions(have)
            except (TgtError, CoordError, OSError) as e:
                log.warning("%s: sync: %s", self.cfg.node, e)
            self._sync_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sync_wake.wait(), self.cfg.sync_every_s)

    async def _sync_exports(self, have: dict[str, Target]) -> None:
        assert self.tgtd is not None and self.cache is not None
        want = {v["iqn"]: v for v in self.cache.volumes.values()}
        for iqn in sorted(set(have) - set(want)):
            await self.tgtd.unexport(iqn)
            log.info("%s: unexported %s", self.cfg.node, iqn)
        for iqn, vol in sorted(want.items()):
            size = int(vol["size_bytes"])
            if iqn not in have:
                path = ensure_backing(self.cfg.backing_dir, vol["name"], size)
                await self.tgtd.export(iqn, path)
                log.info("%s: exported %s", self.cfg.node, iqn)
                continue
            lun = have[iqn].lun(1)
            # tgtd reads a LUN's size once: a grown volume shows its new size only when
            # exported again, which would end its sessions. So: when it has none.
            if lun is not None and (lun.size_mb + 1) * 1_000_000 < size:
                if have[iqn].sessions:
                    if iqn not in self._grown_busy:
                        self._grown_busy.add(iqn)
                        log.warning(
                            "%s: %s grew to %d bytes; its sessions see the old size until "
                            "they end (then it is exported again)",
                            self.cfg.node,
                            iqn,
                            size,
                        )
                    continue
                path = ensure_backing(self.cfg.backing_dir, vol["name"], size)  # grow it
                await self.tgtd.unexport(iqn)
                await self.tgtd.export(iqn, path)
                self._grown_busy.discard(iqn)
                log.info("%s: exported %s again at its new size", self.cfg.node, iqn)

    async def _report_sessions(self, have: dict[str, Target]) -> None:
        if not self.lease:
            return
        by_iqn = self.iqns()
        now = {
            (by_iqn[t.iqn], s.initiator)
            for t in have.values()
            if t.iqn in by_iqn  # a target whose volume just left the map: not reported
            for s in t.sessions
        }
        last = self._reported
        if last is not None and last[0] == now and time.monotonic() - last[1] < REPORT_EVERY_S:
            return
        await self.client.report_sessions(self.cfg.node, self.lease, sorted(now))
        self._reported = (now, time.monotonic())

    # ---- the portals' way to the map ------------------------------------------------------

    def iqns(self) -> dict[str, str]:
        """IQN -> volume name, as the map copy shows it (rebuilt when the volumes change:
        every login is a revision of its own, so not once per revision)."""
        cache = self.cache
        if cache is None:
            return {}
        gen = cache.generation["volumes"]
        if self._iqns[0] != gen:
            self._iqns = (gen, {v["iqn"]: n for n, v in cache.volumes.items()})
        return self._iqns[1]

    async def assign(self, volume: str, initiator: str) -> dict[str, Any]:
        """Least-active assignment through a pipelined channel to the leader (reopened
        when it breaks), so many logins can be in flight at once."""
        ch = await self._open_channel()
        try:
            return await ch.assign_session(volume, initiator)
        except (CoordUnavailable, CoordUnknown):
            # The leader moved or the link broke. Asking again is harmless: the same
            # initiator and volume get the same node while it can still serve them.
            await self._drop_channel(ch)
            ch = await self._open_channel()
            return await ch.assign_session(volume, initiator)

    async def _open_channel(self) -> Channel:
        async with self._channel_lock:
            if self._channel is None or self._channel.ws.closed:
                self._channel = await self.client.open_channel()
            return self._channel

    async def _drop_channel(self, ch: Channel) -> None:
        async with self._channel_lock:
            if self._channel is ch:
                self._channel = None
        with contextlib.suppress(Exception):
            await ch.close()


class MapDirectory:
    """What a portal asks: the targets to announce, and where a login should go."""

    def __init__(self, agent: Agent, timeout_s: float = 3.0) -> None:
        self.agent = agent
        self.timeout_s = timeout_s

    def targets(self) -> list[str]:
        return sorted(self.agent.iqns())

    async def assign(self, iqn: str, initiator: str) -> str:
        volume = self.agent.iqns().get(iqn)
        if volume is None:
            raise UnknownTarget(iqn)
        try:
            ans = await asyncio.wait_for(self.agent.assign(volume, initiator), self.timeout_s)
        except NotFound as e:
            raise UnknownTarget(iqn) from e
        except (CoordError, TimeoutError, OSError) as e:
            raise Unavailable(str(e)) from e
        return str(ans["portal"])
