"""Simulated target agents: one per target node, each on its own host, with its own clock.

An agent does what the real one will: register its node (portal, disks,
lease TTL), heartbeat every TTL/4 through the leader, watch the map under
``/coord/map/``, and decide from both — through the same VipHolder as the
real agent (target/vip.py) — which VIPs it serves. It serves exactly
``VipHolder.serving(local_now)`` and no longer than ``serve_until()``: an
event is scheduled at that instant of its own clock, converted to real time
through its rate (local seconds = real seconds / rate, as for the nodes).
Everything it serves is reported, as it happens, to the VipChecker.

It also: registers again when told its lease is gone or stale; reports that
it let go of a VIP being released (``map.vip_released``, for a lease it held,
once it no longer serves it); accepts iSCSI logins and reports its sessions
(``map.sessions_report``); heals accused replicas on its disks and copies
rebuilds placed on it, failing heals on disks a scenario marked bad.

Killing the host takes everything down at once (nothing served, sessions
gone); a restart is a new process that knows nothing of the old one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coord.clustermap import model as m
from target.vip import Assignment, VipHolder

from .initiators import IscsiMsg
from .loop import MS, S
from .mapclient import MapClient
from .services import WatchMsg, WatchRequest
from .workload import ClientReply

if TYPE_CHECKING:
    from .fleet import Fleet

SESSION_IDLE_US = 5 * S  # no NOP from an initiator for this long: tgtd drops the connection
SWEEP_US = 1 * S
# A full report now and then repairs one that arrived out of order (a retry after an
# unknown outcome can land after a newer report).
REPORT_EVERY_US = 3 * S
WATCH_SILENCE_US = 1500 * MS  # progress comes every 500 ms
HEAL_BACKOFF_US = 300 * MS


@dataclass
class AgentParams:
    count: int = 0  # target agents (0: none in this run)
    ttl_ms: int = 2000  # each node's lease TTL
    heartbeat_every: float = 0.25  # of the TTL, by the agent's clock
    margin_ms: int = 50  # VipHolder margin
    rho: float | None = None  # VipHolder drift bound (None: from the clocks' drift)
    drift: float | None = None  # agents' clock rates in [1 - d, 1 + d] (None: the sim's)
    vips: int = 0  # VIPs the operator creates at the start
    disks: int = 2
    disk_gib: int = 100
    initiators: int = 0
    initiator_hosts: int = 10
    volumes: list[str] = field(default_factory=list)  # what initiators log in to
    setup: bool = False  # the operator creates a policy and the volumes; initiators start
    heal_ms: list[int] = field(default_factory=lambda: [100, 300])
    rebuild_ms: list[int] = field(default_factory=lambda: [300, 800])


class Agent(MapClient):
    def __init__(self, fleet: Fleet, k: int, rate: float, rng: random.Random) -> None:
        super().__init__(fleet.agent_client(k), fleet.agent_host(k), fleet.world, rng)
        self.fleet = fleet
        self.p = fleet.p
        self.k = k
        self.name = f"t{k}"
        self.portal = f"10.0.0.{k}:3260"
        self.rate = rate
        self.disks = [
            {"id": f"d{i + 1}", "size_bytes": self.p.disk_gib << 30, "tier": "standard"}
            for i in range(self.p.disks)
        ]
        self.bad_disks: set[str] = set()  # heals of replicas here fail
        self.alive = False
        self.for_good = False  # killed and not to be restarted at the final heal
        self.serving: dict[str, int] = {}
        self._fresh_process()

    def _fresh_process(self) -> None:
        ttl_s = self.p.ttl_ms / 1000
        self.holder = VipHolder(self.name, ttl_s, self.fleet.rho, self.p.margin_ms / 1000)
        self.lease = 0
        self.leases_held: set[int] = set()  # this process's leases: it may vouch for them
        self.registering = False
        self.released: set[tuple[str, int]] = set()  # (address, epoch) reported let go
        self.records: dict[str, m.Record] = {}  # the map as the watch shows it
        self.w_target = self.rng.choice(self.world.member_ids())
        self.w_stream = self.w_expect = 0
        self.w_next = 1
        self.w_last = 0
        self.sessions: dict[tuple[str, str], tuple[int, int, int]] = {}  # -> (client, host, seen)
        self.report_due = self.reporting = False
        self.reported = False  # the last report accepted named some sessions
        self.jobs: set[tuple[str, int]] = set()  # (volume, replica) healing or rebuilding
        self.hb_budget = 0
        self.sweeps = 0
        self._stop_at = -1

    # ---- clock ----------------------------------------------------------------------

    def local_s(self) -> float:
        return self.loop.now / self.rate / 1e6

    def real_us(self, local_dt_s: float) -> int:
        return int(local_dt_s * self.rate * 1e6)

    # ---- life -----------------------------------------------------------------------

    def start(self, delay_us: int) -> None:
        self.alive, self.for_good = True, False
        self.new_incarnation()
        self._fresh_process()
        self.later(delay_us, self._boot)

    def _boot(self) -> None:
        self.fleet.note(f"{self.name} starts (clock rate {self.rate:.3f})")
        self._register()
        self._watch_open()
        self._hb_tick()
        self.later(SWEEP_US, self._sweep)
        self.later(WATCH_SILENCE_US // 3, self._watch_silence)

    def kill(self) -> None:
        if not self.alive:
            return
        self._set_serving({})  # the host is gone: so are its addresses
        self.alive = False
        self.new_incarnation()
        self.sessions = {}

    # ---- registration and heartbeats --------------------------------------------------

    def _register(self) -> None:
        self.registering = True
        cmd = {
            "op": "map.node_register",
            "node": self.name,
            "portal": self.portal,
            "disks": self.disks,
            "ttl_ms": self.p.ttl_ms,
        }
        self.propose(cmd, self._registered)

    def _registered(self, result: dict[str, Any]) -> None:
        self.registering = False
        if "error" in result:
            self.fleet.trace(f"{self.name} register refused: {result['error']['message']}")
            self.later(500 * MS, self._register)
            return
        self.lease = int(result["lease"])
        self.leases_held.add(self.lease)
        self.holder.registered(int(result["revision"]))
        self.fleet.note(f"{self.name} registered, lease {self.lease}")
        self._refresh()
        self._heartbeat()
        self.report_due = True
        self._report()

    def _lease_gone(self, why: str) -> None:
        self.fleet.trace(f"{self.name} lease {self.lease} {why}: registering again")
        self.holder.lease_lost()
        self._refresh()
        self.lease = 0
        if not self.registering:
            self._register()

    def _hb_tick(self) -> None:
        self.hb_budget = 2  # follow at most this many leader hints at once per period
        if self.lease:
            self._heartbeat()
        self.later(self.real_us(self.holder.ttl_s * self.p.heartbeat_every), self._hb_tick)

    def _heartbeat(self) -> None:
        sent, lease = self.local_s(), self.lease

        def answered(rep: ClientReply | None) -> None:
            if lease != self.lease:
                return  # about a lease we no longer hold
            if rep is None:
                self.maybe_pick_other()
            elif rep.status == "ok":
                r = rep.result
                owned = {v["address"]: int(v["epoch"]) for v in r["vips"]}
                self.holder.heartbeat_acked(sent, int(r["revision"]), owned)
                self._refresh()
                for row in r["releasing"]:
                    self._let_go(row["address"], int(row["epoch"]), int(row["lease"]))
            elif rep.status in ("lease_not_found", "stale_lease"):
                self._lease_gone(rep.status)
            elif rep.status == "not_leader":
                if not rep.leader:
                    self.pick_other()
                if self.hb_budget > 0:
                    self.hb_budget -= 1
                    self._heartbeat()

        timeout = self.real_us(self.holder.ttl_s * self.p.heartbeat_every)
        self.request("heartbeat", answered, timeout, node=self.name, lease=lease)

    # ---- what is served -----------------------------------------------------------------

    def _refresh(self) -> None:
        """Serve what the holder allows now, and be back at the instant that ends."""
        self._set_serving(self.holder.serving(self.local_s()))
        until = self.holder.serve_until()
        if not self.serving or until is None:
            return
        t = math.ceil(until * self.rate * 1e6)
        if t < self.loop.now:
            return  # already over: serving() judged now
        if t == self.loop.now:
            t += 1  # the instant fell inside this microsecond (float rounding)
        if t != self._stop_at:
            self._stop_at = t
            self.at(t, self._refresh)

    def _set_serving(self, new: dict[str, int]) -> None:
        if new == self.serving:
            return
        old, self.serving = self.serving, dict(new)
        self.fleet.vip_checker.changed(self.name, old, self.serving, self.loop.now)
        for addr in sorted(set(old) | set(new)):
            if old.get(addr) != new.get(addr):
                what = f"serves {addr} (epoch {new[addr]})" if addr in new else f"stops {addr}"
                self.fleet.note(f"{self.name} {what}")

    def _let_go(self, addr: str, epoch: int, lease: int) -> None:
        """A VIP of ours is being released: once we do not serve it, say so."""
        if lease not in self.leases_held or addr in self.serving or (addr, epoch) in self.released:
            return
        self.released.add((addr, epoch))
        cmd = {"op": "map.vip_released", "address": addr, "epoch": epoch, "lease": lease}
        self.propose(cmd, lambda r: self.fleet.trace(f"{self.name} released {addr}: {r}"))

    # ---- the watch ----------------------------------------------------------------------

    def _watch_open(self) -> None:
        self.w_stream += 1
        self.w_expect = 0
        self.w_last = self.loop.now
        req = WatchRequest(self.id, self.host, self.w_stream, m.PREFIX, self.w_next)
        self.world.net.send(self.host, self.w_target, req)

    def _watch_reopen(self, why: str) -> None:
        others = [n for n in self.world.member_ids() if n != self.w_target]
        if others:
            self.w_target = self.rng.choice(others)
        self.fleet.trace(f"{self.name} watch reopens at {self.w_next} on n{self.w_target} ({why})")
        self._watch_open()

    def _watch_silence(self) -> None:
        if self.loop.now - self.w_last > WATCH_SILENCE_US:
            self._watch_reopen("silence")
        self.later(WATCH_SILENCE_US // 3, self._watch_silence)

    def on_watch(self, msg: WatchMsg) -> None:
        if not self.alive or msg.stream != self.w_stream or msg.seq < self.w_expect:
            return
        if msg.seq > self.w_expect:
            self._watch_reopen("gap in the stream")
            return
        self.w_expect += 1
        self.w_last = self.loop.now
        if msg.kind == "events":
            for _, kind, key, value in msg.events:
                if kind == "put" and value is not None:
                    self.records[key] = m.decode(value)
                else:
                    self.records.pop(key, None)
            self.w_next = msg.events[-1][0] + 1
            self._view(msg.revision)
        elif msg.kind == "progress":
            # Every event up to here has arrived: the view is whole at this revision.
            self._view(max(msg.revision, self.w_next - 1))
        elif msg.kind == "compacted":
            self._relist()
        elif msg.kind == "cut":
            self._watch_reopen("cut off")

    def _relist(self) -> None:
        """History is gone: read the whole map from a node, then watch from there."""
        self.w_stream += 1  # the old stream is over

        def answered(rep: ClientReply | None) -> None:
            if rep is None or rep.status != "ok":
                self._watch_reopen("re-list failed")
                return
            self.records = {k: m.decode(v) for k, v in rep.result["kvs"]}
            self.w_next = int(rep.result["revision"]) + 1
            self._view(int(rep.result["revision"]))
            self._watch_open()

        self.request("list", answered)

    def _view(self, revision: int) -> None:
        vips = [
            Assignment(r["address"], r["owner"], int(r["epoch"]), bool(r["releasing"]))
            for k, r in sorted(self.records.items())
            if k.startswith(m.VIPS)
        ]
        self.holder.map_seen(revision, vips)
        self._refresh()
        for k, r in sorted(self.records.items()):
            if k.startswith(m.VIPS) and r["owner"] == self.name and r["releasing"]:
                self._let_go(r["address"], int(r["epoch"]), int(r["release_lease"]))
        self._replica_work()

    # ---- iSCSI sessions -----------------------------------------------------------------

    def on_iscsi(self, msg: IscsiMsg) -> None:
        if not self.alive:
            return
        key = (msg.volume, msg.initiator)
        reply = ""
        if msg.kind == "login":
            self.sessions[key] = (msg.frm, msg.host, self.loop.now)
            self._sessions_changed()
            reply = "login_ok"
        elif msg.kind == "nop":
            if key in self.sessions:
                self.sessions[key] = (msg.frm, msg.host, self.loop.now)
                reply = "nop_ok"
            else:
                reply = "gone"  # we never had it, or restarted since
        if reply:
            ans = IscsiMsg(msg.frm, self.id, self.host, reply, msg.volume, msg.initiator, msg.seq)
            self.world.net.send(self.host, msg.host, ans)

    def _sweep(self) -> None:
        idle = [
            k
            for k, (_, _, seen) in sorted(self.sessions.items())
            if self.loop.now - seen > SESSION_IDLE_US
        ]
        for k in idle:
            del self.sessions[k]
        if idle:
            self._sessions_changed()
        self.sweeps += 1
        if self.sweeps % (REPORT_EVERY_US // SWEEP_US) == 0 and (self.sessions or self.reported):
            self.report_due = True
            self._report()
        self.later(SWEEP_US, self._sweep)

    def _sessions_changed(self) -> None:
        if not self.report_due:
            self.report_due = True
            self.later(100 * MS, self._report)  # a burst of logins makes one report

    def _report(self) -> None:
        if not self.report_due or self.reporting or not self.lease:
            return
        self.report_due, self.reporting = False, True
        rows = [[v, i] for v, i in sorted(self.sessions)]
        cmd = {
            "op": "map.sessions_report",
            "node": self.name,
            "lease": self.lease,
            "sessions": rows,
        }

        def done(result: dict[str, Any]) -> None:
            self.reporting = False
            if "error" in result:
                # A stale lease: the heartbeat will find out and register us again,
                # which reports anew.
                self.report_due = True
                return
            self.reported = bool(rows)
            if self.report_due:
                self.later(100 * MS, self._report)

        self.propose(cmd, done)

    # ---- replicas: heals and rebuilds -------------------------------------------------

    def _replica_work(self) -> None:
        for key in sorted(k for k in self.records if k.startswith(m.VOLUMES)):
            vol = self.records[key]
            for r in vol["replicas"]:
                job = (vol["name"], int(r["id"]))
                if r["node"] != self.name or job in self.jobs:
                    continue
                if r["state"] == m.ACCUSED and "rebuild" not in r:
                    self.jobs.add(job)
                    self._heal(job, r["disk"])
                elif r["state"] == m.REBUILDING:
                    self.jobs.add(job)
                    self.later(self.rng.randint(*self.p.rebuild_ms) * MS, self._rebuilt, job)

    def _heal(self, job: tuple[str, int], disk: str) -> None:
        volume, rid = job
        cmd: dict[str, Any] = {"op": "map.replica_heal", "volume": volume, "replica": rid}

        def started(answer: dict[str, Any]) -> None:
            if "error" in answer:
                self._job_done(job)
                return
            result = "ok" if disk not in self.bad_disks else "failed"

            def healed(r: dict[str, Any]) -> None:
                self.fleet.note(f"{self.name} heals {volume}/{rid}: {result}")
                self._job_done(job)

            self.later(
                self.rng.randint(*self.p.heal_ms) * MS,
                self.propose,
                {**cmd, "result": result},
                healed,
            )

        self.propose({**cmd, "result": "started"}, started)

    def _rebuilt(self, job: tuple[str, int]) -> None:
        cmd = {"op": "map.rebuild_done", "volume": job[0], "replica": job[1], "ok": True}

        def done(r: dict[str, Any]) -> None:
            self.fleet.note(
                f"{self.name} rebuilt {job[0]}/{job[1]}: {'refused' if 'error' in r else 'done'}"
            )
            self._job_done(job)

        self.propose(cmd, done)

    def _job_done(self, job: tuple[str, int]) -> None:
        def free() -> None:
            self.jobs.discard(job)
            self._replica_work()

        self.later(HEAL_BACKOFF_US, free)
