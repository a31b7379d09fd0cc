"""The target side of a simulated run: agents, initiators, the operator, and their checkers.

Hosts and client ids (nodes are hosts 1..N; clients of the store use small ids):

    agent k          host 100 + k    client 10_000 + k    node name "t{k}", portal 10.0.0.k
    initiator j      host 201 + j % initiator_hosts        client 20_001 + j
    operator         host 0                                client 30_000

Partitions cut only the hosts they name (World.partition), so an agent's host
stays connected unless a scenario puts it in a group: ``isolate`` an agent's
host, or list it beside some nodes to leave it with a minority.

The operator stands for an administrator and for the data path: it creates
the VIPs at the start, and scenario steps send map commands through it
(policies, volumes, drains, accusations).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .agents import Agent, AgentParams
from .checkers.vip import MapChecker, VipChecker
from .initiators import Initiator, IscsiMsg
from .loop import MS
from .mapclient import MapClient
from .services import WatchMsg
from .workload import ClientReply

if TYPE_CHECKING:
    from .world import World

AGENT_HOST = 100
INITIATOR_HOST = 201
OPERATOR_HOST = 0
AGENT_CLIENT = 10_000
INITIATOR_CLIENT = 20_001
OPERATOR_CLIENT = 30_000
VIP_PREFIX = "10.0.100."
VIPS_AFTER_US = 1000 * MS


class Fleet:
    def __init__(self, world: World, p: AgentParams) -> None:
        self.world = world
        self.p = p
        rng = world.agent_rng
        drift = p.drift if p.drift is not None else world.p.drift
        # VIP safety needs rho to bound how much faster one clock runs than another:
        # with rates in [1 - d, 1 + d], (1 - rho) = (1 - d) / (1 + d).
        d = max(drift, world.p.drift)
        self.rho = p.rho if p.rho is not None else 2 * d / (1 + d)
        self.vip_checker = VipChecker(world.report)
        self.map_checker = MapChecker(world.report, self.vip_checker)
        self.agents: dict[int, Agent] = {}  # by host
        for k in range(1, p.count + 1):
            rate = 1.0 + rng.uniform(-drift, drift) if drift else 1.0
            agent = Agent(self, k, rate, random.Random(rng.getrandbits(64)))
            self.agents[agent.host] = agent
        self.by_portal = {a.portal: a for a in self.agents.values()}
        self.initiators: list[Initiator] = []
        hosts = max(1, p.initiator_hosts)
        for j in range(p.initiators):
            volume = p.volumes[j % len(p.volumes)] if p.volumes else "v1"
            self.initiators.append(
                Initiator(
                    self,
                    INITIATOR_CLIENT + j,
                    INITIATOR_HOST + j % hosts,
                    volume,
                    f"iqn.2026-01.sim.h{j + 1}",
                    random.Random(rng.getrandbits(64)),
                )
            )
        self.operator = MapClient(
            OPERATOR_CLIENT, OPERATOR_HOST, world, random.Random(rng.getrandbits(64))
        )
        self.by_client: dict[int, MapClient] = {a.id: a for a in self.agents.values()}
        self.by_client.update((i.id, i) for i in self.initiators)
        self.by_client[self.operator.id] = self.operator
        self.vips = [f"{VIP_PREFIX}{i}" for i in range(1, p.vips + 1)]
        self.deaths: list[tuple[int, str]] = []  # (time, agent) of every host kill
        self.sessions_at_death: list[dict[str, int]] = []  # active sessions per node then
        self.orphans: list[list[Initiator]] = []  # initiators logged in there then
        self.rng = rng
        self.queue: list[tuple[dict[str, Any], Callable[[dict[str, Any]], None]]] = []

    @staticmethod
    def agent_host(k: int) -> int:
        return AGENT_HOST + k

    @staticmethod
    def agent_client(k: int) -> int:
        return AGENT_CLIENT + k

    def start(self) -> None:
        for host in sorted(self.agents):
            self.agents[host].start(self.rng.randint(0, 300 * MS))
        # VIPs go to the node with the fewest when created, and stay: create them once
        # the agents have had time to register, so they spread.
        self.operator.later(VIPS_AFTER_US, self._create_vips)

    def _create_vips(self) -> None:
        for addr in self.vips:
            self.submit({"op": "map.vip_create", "address": addr}, lambda r: None)
        if self.p.setup:
            cmds: list[dict[str, Any]] = [{"op": "map.policy_put", "name": "std", "replicas": 1}]
            cmds += [
                {"op": "map.volume_create", "name": v, "size_bytes": 1 << 30, "policy": "std"}
                for v in self.p.volumes
            ]
            self._setup(cmds)

    def _setup(self, cmds: list[dict[str, Any]]) -> None:
        """One command after another (a volume needs its policy), then the initiators."""
        if not cmds:
            self.start_initiators(1000 * MS)
            return

        def done(result: dict[str, Any]) -> None:
            if "error" in result and result["error"]["code"] not in ("exists", "unplaceable"):
                self.world.report("script-map", (), f"setup {cmds[0]['op']}: {result}")
            if result.get("error", {}).get("code") == "unplaceable":
                # No node registered yet (all down?): try this one again shortly.
                self.operator.later(500 * MS, self._setup, cmds)
                return
            self._setup(cmds[1:])

        self.submit(cmds[0], done)

    def start_initiators(self, spread_us: int) -> None:
        for ini in self.initiators:
            if not ini.started:
                ini.start(self.rng.randint(0, spread_us))

    # ---- messages ---------------------------------------------------------------------

    def deliver(self, dst: int, payload: Any) -> None:
        """A message arrived at a host of the target side."""
        if isinstance(payload, IscsiMsg):
            who = self.by_client.get(payload.to)
            if isinstance(who, Agent | Initiator) and who.host == dst:
                who.on_iscsi(payload)
            return
        assert isinstance(payload, ClientReply | WatchMsg), payload
        client = self.by_client.get(payload.client)
        if client is None or client.host != dst:
            return
        if isinstance(payload, WatchMsg):
            if isinstance(client, Agent):
                client.on_watch(payload)
        else:
            client.on_reply(payload)

    # ---- what scenarios do ------------------------------------------------------------

    def agent(self, sel: Any) -> Agent:
        if isinstance(sel, int) and sel in self.agents:
            return self.agents[sel]
        for a in self.agents.values():
            if a.name == sel:
                return a
        raise KeyError(f"no agent {sel!r}")

    def agent_by_portal(self, portal: str) -> Agent | None:
        return self.by_portal.get(portal)

    def kill(self, agent: Agent, for_good: bool = False) -> None:
        if not agent.alive:
            return
        agent.kill()
        agent.for_good = for_good
        self.deaths.append((self.world.loop.now, agent.name))
        self.sessions_at_death.append(self.active_sessions())
        self.orphans.append([i for i in self.initiators if i.agent is agent])
        self.world.note(f"kill agent host {agent.name} (h{agent.host})", "down")

    def restart(self, agent: Agent) -> None:
        if agent.alive:
            return
        self.world.note(f"restart agent {agent.name}", "up")
        agent.start(0)

    def restart_killed(self) -> None:
        for host in sorted(self.agents):
            a = self.agents[host]
            if not a.alive and not a.for_good:
                self.restart(a)

    def submit(self, cmd: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        """The operator's commands apply one after another, in order: a drain still being
        retried must not land after the undrain that followed it."""
        self.queue.append((cmd, done))
        if len(self.queue) == 1:
            self._next()

    def _next(self) -> None:
        cmd, done = self.queue[0]

        def applied(result: dict[str, Any]) -> None:
            self.queue.pop(0)
            if self.queue:
                self._next()
            done(result)  # which may submit more: queued behind the rest

        self.operator.propose(cmd, applied)

    # ---- looking ----------------------------------------------------------------------

    def active_sessions(self) -> dict[str, int]:
        """Active sessions per agent's node, as the leader's map counts them now."""
        counts = {a.name: 0 for _, a in sorted(self.agents.items())}
        lead = self.world.stable_leader()
        if lead is not None:
            for s in lead.sm.map.sessions.values():
                if s["state"] == "active":
                    counts[s["node"]] = counts.get(s["node"], 0) + 1
        return counts

    def holders(self, addr: str) -> list[Agent]:
        return [a for _, a in sorted(self.agents.items()) if addr in a.serving]

    def note(self, text: str) -> None:
        self.world.note(text, "note")

    def trace(self, text: str) -> None:
        self.world.trace(text)

    def finish(self) -> None:
        w = self.world
        self.vip_checker.finish(w.loop.now)
        for node in w.live():
            self.map_checker.check_indexes(node.id, node.sm.map)
