"""Simulated iSCSI initiators: ask where to log in, log in there, notice when it dies.

An initiator does what a host's initiator and the portal's least-active
redirect do together: ``map.session_assign`` through a coordinator node (as
the portal on the VIP would), then a login at the chosen node's agent, then a
NOP every second. When a NOP or the login goes unanswered, or the agent says
it does not know the session (it restarted), the initiator waits a moment and
asks for an assignment again. The map answers with the same node while that
node is live, so a dead node's initiators keep coming back until its lease
expires and its sessions are dropped; then they spread over the live nodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .loop import MS, S
from .mapclient import MapClient

if TYPE_CHECKING:
    from .agents import Agent
    from .fleet import Fleet

NOP_EVERY_US = 1 * S
# iSCSI runs over TCP: a lost segment is sent again, not lost. So one NOP going
# unanswered means little; nothing heard for this long means the connection is dead.
DEAD_US = 3 * S
LOGIN_US = 2 * S


@dataclass(frozen=True, slots=True)
class IscsiMsg:
    """Between an initiator and an agent (standing in for tgtd's side of iSCSI)."""

    to: int  # receiver's client id
    frm: int  # sender's client id
    host: int  # sender's host: where answers go
    kind: str  # login | login_ok | nop | nop_ok | gone
    volume: str
    initiator: str
    seq: int = 0


class Initiator(MapClient):
    def __init__(
        self, fleet: Fleet, cid: int, host: int, volume: str, iqn: str, rng: random.Random
    ) -> None:
        super().__init__(cid, host, fleet.world, rng)
        self.fleet = fleet
        self.volume = volume
        self.iqn = iqn
        self.agent: Agent | None = None  # where we are logged in
        self.seq = 0
        self.answered_seq = 0
        self.gave_up_seq = 0
        self.heard_us = 0
        self.connects = 0
        self.logins: list[int] = []  # when each login succeeded
        self.started = False

    def start(self, delay_us: int) -> None:
        self.started = True
        self.later(delay_us, self._assign)

    def _assign(self) -> None:
        cmd = {"op": "map.session_assign", "volume": self.volume, "initiator": self.iqn}
        self.propose(cmd, self._assigned)

    def _assigned(self, result: dict[str, Any]) -> None:
        if "error" in result:  # no live node yet, or no such volume yet
            self.later(500 * MS, self._assign)
            return
        agent = self.fleet.agent_by_portal(result["portal"])
        if agent is None:
            self.later(500 * MS, self._assign)
            return
        self._send(agent, "login")

    def _send(self, agent: Agent, kind: str) -> None:
        self.seq += 1
        msg = IscsiMsg(agent.id, self.id, self.host, kind, self.volume, self.iqn, self.seq)
        self.world.net.send(self.host, agent.host, msg)
        if kind == "login":
            self.agent = None
            self.later(LOGIN_US, self._login_timeout, agent, self.seq)

    def _login_timeout(self, agent: Agent, seq: int) -> None:
        if self.agent is None and self.answered_seq < seq and self.seq == seq:
            self._reconnect(f"no answer from {agent.name} to the login")

    def on_iscsi(self, msg: IscsiMsg) -> None:
        if msg.seq <= self.answered_seq or msg.seq <= self.gave_up_seq:
            return  # a duplicate, or an answer on a connection we gave up on
        self.answered_seq = msg.seq
        self.heard_us = self.loop.now
        agent = self.fleet.agents.get(msg.host)
        if agent is None:
            return
        if msg.kind == "login_ok":
            if self.agent is None:
                self.agent = agent
                self.connects += 1
                self.logins.append(self.loop.now)
                self.later(NOP_EVERY_US, self._nop, agent, self.connects)
        elif msg.kind == "gone":
            self._reconnect(f"{agent.name} does not know us")

    def _nop(self, agent: Agent, connection: int) -> None:
        if self.agent is not agent or self.connects != connection:
            return  # that connection is over
        if self.loop.now - self.heard_us > DEAD_US:
            self._reconnect(f"nothing from {agent.name} for {DEAD_US // S}s")
            return
        self._send(agent, "nop")
        self.later(NOP_EVERY_US, self._nop, agent, connection)

    def _reconnect(self, why: str) -> None:
        self.agent = None
        self.gave_up_seq = self.seq  # answers to what was in flight no longer count
        self.fleet.trace(f"{self.iqn} reconnects: {why}")
        self.later(self.rng.randint(100, 600) * MS, self._assign)
