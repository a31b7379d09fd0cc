"""The client side of the cluster map in the simulator: requests to nodes, leader hints.

Target agents, initiators and the scenario's operator all talk to the
coordinator the same way a portal or agent would: send a ``MapRequest`` to
the node believed to lead, follow ``not_leader`` hints, try another node when
an answer does not come in time or its outcome is unknown (unless that node
answered something else lately), and propose again after a refusal. Map
commands are safe to repeat (a second registration replaces the first, a
second release report is refused, an assignment already made is answered
again), so no exactly-once session is needed.

Every timer belongs to an incarnation: a process that dies (its host is
killed) takes its pending requests and timers with it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .loop import MS
from .services import MapRequest
from .workload import ClientReply

if TYPE_CHECKING:
    from .world import World

Answered = Callable[[ClientReply | None], None]  # None: no answer in time


class MapClient:
    TIMEOUT_US = 1000 * MS
    RETRY_US = 50 * MS

    def __init__(self, cid: int, host: int, world: World, rng: random.Random) -> None:
        self.id = cid
        self.host = host
        self.world = world
        self.loop = world.loop
        self.rng = rng
        self.target = rng.choice(world.member_ids())
        self.req = 0
        self.calls: dict[int, Answered] = {}
        self.heard_us = -self.TIMEOUT_US  # when the target last answered ok
        self.alive = True
        self.incarnation = 0

    # ---- timers of this incarnation -------------------------------------------------

    def later(self, dt_us: int, fn: Callable[..., None], *args: Any) -> None:
        self.loop.after(max(0, dt_us), self._event, self.incarnation, fn, args)

    def at(self, t_us: int, fn: Callable[..., None], *args: Any) -> None:
        self.loop.at(max(t_us, self.loop.now), self._event, self.incarnation, fn, args)

    def _event(self, inc: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if inc == self.incarnation and self.alive:
            fn(*args)

    def new_incarnation(self) -> None:
        self.incarnation += 1
        self.calls = {}

    # ---- requests -------------------------------------------------------------------

    def request(
        self, kind: str, answered: Answered, timeout_us: int | None = None, **kw: Any
    ) -> None:
        self.req += 1
        self.calls[self.req] = answered
        msg = MapRequest(self.id, self.host, self.req, kind, **kw)
        self.world.net.send(self.host, self.target, msg)
        self.later(self.TIMEOUT_US if timeout_us is None else timeout_us, self._timeout, self.req)

    def propose(self, cmd: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        """Propose ``cmd`` until it is applied; ``done`` gets the map's answer (which may be
        a refusal: ``{"error": ...}``)."""

        def answered(rep: ClientReply | None) -> None:
            if rep is not None and rep.status == "ok":
                done(rep.result)
                return
            if rep is None or rep.status == "unknown":
                self.maybe_pick_other()
            elif rep.status == "not_leader" and not rep.leader:
                self.pick_other()
            self.later(self.RETRY_US, self.propose, cmd, done)

        self.request("propose", answered, cmd=cmd)

    def _timeout(self, req: int) -> None:
        answered = self.calls.pop(req, None)
        if answered is not None:
            answered(None)

    def on_reply(self, rep: ClientReply) -> None:
        if not self.alive:
            return
        answered = self.calls.pop(rep.req, None)
        if answered is None:
            return  # late, duplicated, or from before a restart
        if rep.leader:
            self.set_target(rep.leader)
        elif rep.status == "ok":
            self.heard_us = self.loop.now  # the target answers: it is worth keeping
        answered(rep)

    def maybe_pick_other(self) -> None:
        """A request went unanswered (or its outcome is unknown): try another node,
        unless the target answered something else lately. A slow commit is not a dead
        leader, and leaving a live one sends every later request to a follower."""
        if self.loop.now - self.heard_us > self.TIMEOUT_US:
            self.pick_other()

    def pick_other(self) -> None:
        others = [n for n in self.world.member_ids() if n != self.target]
        if others:
            self.set_target(self.rng.choice(others))

    def set_target(self, node: int) -> None:
        if node != self.target:
            self.target = node
            self.heard_us = -self.TIMEOUT_US
