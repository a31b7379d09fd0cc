"""The iSCSI portal on a VIP: discovery, and logins redirected to a chosen node.

An asyncio shell around the sans-IO :class:`~target.iscsi.PortalConnection`
(which holds every protocol rule): it reads bytes into a
:class:`~target.iscsi.Framer`, hands PDUs to the connection, writes what it
answers, and performs the one action that needs the outside world, asking
the :class:`Directory` for a node. What this shell adds is bounds:

- at most ``max_connections`` at once; one more is closed at once (``busy``);
- a login must be over (redirected, refused, or a discovery session logged
  in) within ``login_timeout_s``, the directory's answer included, which may
  take at most ``assign_timeout_s`` (an initiator waiting longer than that is
  better served by 0x0301, "try again", than by silence);
- a discovery session is closed after ``idle_timeout_s`` without a PDU, and
  after ``session_timeout_s`` in all; a peer that does not read our answers
  is dropped after ``write_timeout_s``;
- data segments longer than ``max_data_segment`` are refused from their
  header on, and the framer holds at most one PDU plus one read.

No exception leaves a connection's handler: bad input is an outcome of the
connection (answered, counted, closed), a broken directory is answered
0x0300 and logged, and a bug in this file is logged and counted as
``internal_error`` -- other connections carry on in every case.

Closing is "lingering": after our last answer the write side is shut and
whatever the peer still sends is read and dropped (a bounded amount, for a
bounded time) until it closes, so that unread input does not turn our close
into a reset that could destroy the answer in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from .iscsi import (
    Assign,
    Close,
    Framer,
    LoginStatus,
    Outcome,
    Phase,
    PortalConnection,
    ProtocolError,
    Role,
    Send,
    TargetParams,
    encode,
)
from .iscsi.connection import Action

log = logging.getLogger("coord.portal")


class UnknownTarget(Exception):
    """No such target: the login is answered 0x0203 (not found)."""


class Unavailable(Exception):
    """No node can take the login now: answered 0x0301 (service unavailable)."""


class Directory(Protocol):
    def targets(self) -> list[str]:
        """IQNs to announce in SendTargets, sorted."""
        ...

    async def assign(self, iqn: str, initiator: str) -> str:
        """``ip:port`` of the chosen node's tgtd; raises UnknownTarget or Unavailable."""
        ...


# A refusal of a login, as opposed to a login that went somewhere.
REFUSALS = frozenset(Outcome) - {
    Outcome.REDIRECTED,
    Outcome.DISCOVERY_DONE,
    Outcome.PEER_CLOSED,
    Outcome.IDLE_TIMEOUT,
    Outcome.SHUTDOWN,
    Outcome.INTERNAL_ERROR,
}

_NAME = re.compile(r"[\x21-\x7e]{1,223}")  # what an announced iSCSI name may be
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,253}):([0-9]{1,5})")


@dataclass
class PortalStats:
    """Counters for the benchmark: every connection's outcome, by reason."""

    accepted: int = 0
    active: int = 0
    internal_errors: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def redirected(self) -> int:
        return self.outcomes[Outcome.REDIRECTED.value]

    @property
    def refused(self) -> Counter[str]:
        return Counter(
            {o.value: self.outcomes[o.value] for o in REFUSALS if self.outcomes[o.value]}
        )

    def snapshot(self) -> dict[str, int]:
        out = {
            "accepted": self.accepted,
            "active": self.active,
            "internal_errors": self.internal_errors,
            "redirected": self.redirected,
            "discovery": self.outcomes[Outcome.DISCOVERY_DONE.value],
            "refused": sum(self.refused.values()),
        }
        out.update({f"refused.{k}": v for k, v in sorted(self.refused.items())})
        return out


def check_address(address: object) -> str:
    """``ip:port`` as a directory returns it (IPv6 in brackets), else ValueError."""
    if not isinstance(address, str):
        raise ValueError(f"not a string: {address!r}")
    m = _ADDRESS.fullmatch(address)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"not ip:port: {address[:80]!r}")
    return address


class Portal:
    def __init__(
        self,
        directory: Directory,
        tpgt: int = 1,
        *,
        max_connections: int = 256,
        login_timeout_s: float = 5.0,
        assign_timeout_s: float = 3.0,
        idle_timeout_s: float = 30.0,
        session_timeout_s: float = 120.0,
        write_timeout_s: float = 5.0,
        linger_s: float = 1.0,
        max_data_segment: int = 64 * 1024,
        read_size: int = 64 * 1024,
    ) -> None:
        if not 0 <= tpgt < 1 << 16:
            raise ValueError("tpgt must be in [0, 65535]")
        self.directory = directory
        self.tpgt = tpgt
        self.max_connections = max_connections
        self.login_timeout_s = login_timeout_s
        self.assign_timeout_s = assign_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.session_timeout_s = session_timeout_s
        self.write_timeout_s = write_timeout_s
        self.linger_s = linger_s
        self.max_data_segment = max_data_segment
        self.read_size = read_size
        self.params = TargetParams(max_recv_data_segment_length=max_data_segment)
        self.stats = PortalStats()
        self._server: asyncio.Server | None = None
        self._address: str | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._orphans: set[asyncio.Task[str]] = set()  # assigns that would not stop
        self._tsih = 0

    @property
    def address(self) -> str:
        """``ip:port`` this portal listens on (what SendTargets announces)."""
        if self._address is None:
            raise RuntimeError("portal not started")
        return self._address

    async def start(self, host: str, port: int) -> None:
        """Listen on exactly ``host:port`` (port 0: any free port)."""
        if self._server is not None:
            raise RuntimeError("portal already started")
        self._server = await asyncio.start_server(
            self._on_connect, host, port, reuse_address=True, limit=self.read_size
        )
        name = self._server.sockets[0].getsockname()
        ip, bound = str(name[0]), int(name[1])
        self._address = f"[{ip}]:{bound}" if ":" in ip else f"{ip}:{bound}"
        log.info("portal listening on %s (tpgt %d)", self._address, self.tpgt)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for orphan in list(self._orphans):
            orphan.cancel()
        if server is not None:
            await server.wait_closed()

    # ---- one connection -----------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.stats.accepted += 1
        if self._server is None or len(self._handlers) >= self.max_connections:
            busy = Outcome.BUSY if self._server is not None else Outcome.SHUTDOWN
            self.stats.outcomes[busy.value] += 1
            writer.transport.abort()
            return
        self._handlers.add(task)
        self.stats.active += 1
        outcome: Outcome | None = None
        try:
            outcome = await self._serve(reader, writer)
            self.stats.outcomes[outcome.value] += 1  # counted before the linger
            if outcome is not Outcome.PEER_CLOSED:
                await self._linger(reader, writer)
        except asyncio.CancelledError:
            pass  # stop()
        except Exception:
            self.stats.internal_errors += 1
            log.exception("portal connection failed")
            if outcome is None:
                outcome = Outcome.INTERNAL_ERROR
                self.stats.outcomes[outcome.value] += 1
        finally:
            if outcome is None:
                outcome = Outcome.SHUTDOWN
                self.stats.outcomes[outcome.value] += 1
            self.stats.active -= 1
            self._handlers.discard(task)
            if outcome in (Outcome.SHUTDOWN, Outcome.INTERNAL_ERROR):
                writer.transport.abort()
            else:
                await self._close(writer)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close after what we wrote is sent, but wait at most write_timeout_s for it."""
        try:
            writer.close()
            async with asyncio.timeout(self.write_timeout_s):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.transport.abort()  # a no-op once closed

    def _targets(self) -> list[str]:
        """The directory's targets that can be announced (a broken one announces none)."""
        try:
            names = self.directory.targets()
            return [n for n in names if isinstance(n, str) and _NAME.fullmatch(n)]
        except Exception:
            log.exception("directory failed to list its targets")
            return []

    def _new_tsih(self) -> int:
        self._tsih = self._tsih % 0xFFFF + 1
        return self._tsih

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Outcome:
        loop = asyncio.get_running_loop()
        conn = PortalConnection(
            targets=self._targets,
            address=self.address,
            tpgt=self.tpgt,
            tsih=self._new_tsih(),
            params=self.params,
        )
        framer = Framer(Role.INITIATOR, max_data_segment=self.max_data_segment)
        started = loop.time()
        login_deadline = started + self.login_timeout_s
        # Bounded: each turn either consumes a PDU (at most max_buffer bytes
        # each), reads (each read waits at most until a deadline), or ends.
        while True:
            actions: list[Action]
            try:
                pdu = framer.next_pdu()
            except ProtocolError as e:
                actions = conn.receive_error(e)
            else:
                if pdu is not None:
                    actions = conn.receive_pdu(pdu)
                elif framer.at_eof:
                    actions = conn.peer_closed()
                else:
                    now = loop.time()
                    if conn.phase is Phase.FULL_FEATURE:
                        end = started + self.session_timeout_s
                        wait = min(self.idle_timeout_s, end - now)
                    else:
                        wait = login_deadline - now
                    actions = await self._read(reader, framer, conn, wait)
            outcome = await self._perform(actions, conn, writer, login_deadline)
            if outcome is not None:
                return outcome

    async def _read(
        self, reader: asyncio.StreamReader, framer: Framer, conn: PortalConnection, wait: float
    ) -> list[Action]:
        try:
            async with asyncio.timeout(max(0.0, wait)):
                data = await reader.read(self.read_size)
        except TimeoutError:
            return conn.timed_out()
        except OSError:
            return conn.peer_closed()
        try:
            if data:
                framer.feed(data)
            else:
                framer.feed_eof()
        except ProtocolError as e:
            return conn.receive_error(e)
        return []

    async def _perform(
        self,
        actions: list[Action],
        conn: PortalConnection,
        writer: asyncio.StreamWriter,
        login_deadline: float,
    ) -> Outcome | None:
        """Carry out the actions in order; the outcome if they close the connection."""
        queue = list(actions)
        while queue:  # an Assign adds the answer's actions once, so this ends
            action = queue.pop(0)
            match action:
                case Send(pdu):
                    writer.write(encode(pdu))
                    try:
                        async with asyncio.timeout(self.write_timeout_s):
                            await writer.drain()
                    except (TimeoutError, OSError):
                        return Outcome.PEER_CLOSED
                case Assign(target, initiator):
                    queue.extend(await self._assign(conn, target, initiator, login_deadline))
                case Close(outcome):
                    return outcome
        return None

    async def _assign(
        self, conn: PortalConnection, target: str, initiator: str, login_deadline: float
    ) -> list[Action]:
        loop = asyncio.get_running_loop()
        # At least a second, even for a login sent just before the connection's login
        # deadline (libiscsi's stalled reconnects do that): refusing it for want of time
        # would only make the initiator come back later.
        wait = min(self.assign_timeout_s, max(1.0, login_deadline - loop.time()))
        # A task of its own, so that a directory that ignores cancellation
        # cannot hold this connection past the timeout.
        task = asyncio.ensure_future(self.directory.assign(target, initiator))
        try:
            done, _ = await asyncio.wait({task}, timeout=wait)
        finally:
            if not task.done():  # timed out, or stop() cancelled us
                task.cancel()
                self._orphans.add(task)
                task.add_done_callback(self._orphan_done)
        if not done:
            log.warning("assign(%s, %s) took more than %.1fs", target, initiator, wait)
            return conn.refused(LoginStatus.SERVICE_UNAVAILABLE, Outcome.ASSIGN_TIMEOUT)
        try:
            address = check_address(task.result())
        except UnknownTarget:
            return conn.refused(LoginStatus.NOT_FOUND, Outcome.NOT_FOUND)
        except Unavailable:
            return conn.refused(LoginStatus.SERVICE_UNAVAILABLE, Outcome.UNAVAILABLE)
        except Exception:
            log.exception("directory failed to assign %s for %s", target, initiator)
            return conn.refused(LoginStatus.TARGET_ERROR, Outcome.TARGET_ERROR)
        log.debug("redirect %s for %s to %s", target, initiator, address)
        return conn.assigned(address)

    def _orphan_done(self, task: asyncio.Task[str]) -> None:
        self._orphans.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure is not "never retrieved"

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Shut our side, then read and drop the peer's rest until it closes (bounded)."""
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
        budget = 4 * self.read_size
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(self.linger_s):
                while budget > 0:
                    data = await reader.read(self.read_size)
                    if not data:
                        return
                    budget -= len(data)
