"""A fault-injecting TCP proxy (asyncio, loopback only) for one directed link.

Theory of operation
-------------------
A ``Proxy`` listens on 127.0.0.1 and relays every connection it accepts to
one upstream address. The two byte directions of a connection are governed
separately: ``forward`` (from whoever dialled the proxy to the upstream) and
``backward`` (the answers). Each direction is a ``Flow``:

- open: bytes pass, after ``delay_s`` (plus up to ``jitter_s``), in order;
- blocked, mode ``stall``: bytes stop where they are. The proxy keeps reading
  a bounded amount, then stops reading, so TCP flow control backs up to the
  sender, as in a real partition where packets vanish and TCP retransmits. A
  connection dialled while the forward flow is stalled gets no upstream
  connection until it opens (a SYN into the void; the kernel's accept cannot
  be withheld, so the dialler sees a connection that carries nothing). When
  the flow opens again everything held is delivered, late, like a TCP
  retransmission after the partition heals;
- blocked, mode ``reset``: every connection is reset (RST, not FIN) and new
  ones are reset as soon as they are accepted ("connection refused").

``reset_connections()`` resets what is open now and lets new connections in:
the "lossy link" of a TCP world, where loss shows as broken connections.

Nothing here decodes what it relays. Every loop stops when the proxy closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field

CHUNK = 65536
HOLD_LIMIT = 1 << 20  # bytes a stalled direction buffers before it stops reading


@dataclass(frozen=True)
class Flow:
    """One direction's condition."""

    blocked: bool = False
    mode: str = "stall"  # stall | reset (only when blocked)
    delay_s: float = 0.0
    jitter_s: float = 0.0

    def describe(self) -> str:
        if self.blocked:
            return f"cut ({self.mode})"
        if self.delay_s or self.jitter_s:
            return f"delay {self.delay_s * 1000:.0f}+{self.jitter_s * 1000:.0f}ms"
        return "open"


OPEN = Flow()


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0  # accepted and reset at once (reset mode)
    resets: int = 0  # live connections reset
    bytes_forward: int = 0
    bytes_backward: int = 0


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a reset: SO_LINGER 0, then abort (no FIN, no flushing)."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _rst(self.client)
        _rst(self.upstream)
        for t in self.tasks:
            t.cancel()


class Proxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        name: str = "",
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int = 0,
    ) -> None:
        if not upstream[0].startswith("127.") or not listen[0].startswith("127."):
            raise ValueError("the proxy only relays between loopback addresses")
        self.upstream = upstream
        self.name = name or f"->{upstream[1]}"
        self.listen = listen
        self.rng = random.Random(seed)  # jitter only: timing is not deterministic anyway
        self.forward = OPEN
        self.backward = OPEN
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._opened = {"forward": asyncio.Event(), "backward": asyncio.Event()}
        for ev in self._opened.values():
            ev.set()
        self._closing = False

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1])
        host, port = self._server.sockets[0].getsockname()[:2]
        self.listen = (host, port)
        return int(port)

    @property
    def port(self) -> int:
        return self.listen[1]

    async def close(self) -> None:
        self._closing = True
        for ev in self._opened.values():
            ev.set()  # wake stalled writers so they notice the close
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.reset()
        tasks = [t for c in list(self._conns) for t in c.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # ---- faults --------------------------------------------------------------------

    def set(self, forward: Flow = OPEN, backward: Flow = OPEN) -> None:
        """Set both directions' conditions (a reset-mode block resets what is open)."""
        self.forward, self.backward = forward, backward
        for name, flow in (("forward", forward), ("backward", backward)):
            if flow.blocked:
                self._opened[name].clear()
            else:
                self._opened[name].set()
        if self._refusing():
            self.reset_connections()

    def cut(self, *, forward: bool = True, backward: bool = True, mode: str = "stall") -> None:
        self.set(
            Flow(blocked=True, mode=mode) if forward else self.forward,
            Flow(blocked=True, mode=mode) if backward else self.backward,
        )

    def heal(self) -> None:
        self.set(OPEN, OPEN)

    def reset_connections(self) -> int:
        n = 0
        for c in list(self._conns):
            if not c.closed:
                c.reset()
                n += 1
        self.stats.resets += n
        return n

    def describe(self) -> str:
        f, b = self.forward.describe(), self.backward.describe()
        return f if f == b else f"forward {f}, backward {b}"

    def _gone(self, conn: _Conn) -> bool:
        return conn.closed or self._closing

    def _refusing(self) -> bool:
        return any(f.blocked and f.mode == "reset" for f in (self.forward, self.backward))

    # ---- relaying ------------------------------------------------------------------

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        if self._closing or self._refusing():
            self.stats.refused += 1
            _rst(cwriter)
            return
        self.stats.accepted += 1
        conn = _Conn(cwriter)
        self._conns.add(conn)
        held: deque[bytes] = deque()
        try:
            # The forward flow stalled: no upstream connection yet (the SYN goes
            # nowhere). Hold what the dialler sends; give up if it leaves.
            size = 0
            while self.forward.blocked and not conn.closed and not self._closing:
                if size >= HOLD_LIMIT:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    chunk = await asyncio.wait_for(creader.read(CHUNK), 0.1)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                held.append(chunk)
                size += len(chunk)
            if self._gone(conn):
                return
            try:
                ureader, uwriter = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), 2.0
                )
            except (OSError, TimeoutError):
                _rst(cwriter)  # upstream down: the dialler sees its connection refused
                return
            conn.upstream = uwriter
            if self._gone(conn):
                _rst(uwriter)
                return
            loop = asyncio.get_running_loop()
            conn.tasks = [
                loop.create_task(self._pipe(conn, creader, uwriter, "forward", held)),
                loop.create_task(self._pipe(conn, ureader, cwriter, "backward", deque())),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            conn.reset()
        finally:
            self._conns.discard(conn)
            if not conn.closed:
                conn.closed = True
                for w in (cwriter, conn.upstream):
                    if w is not None:
                        w.close()

    async def _pipe(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        queue: deque[bytes],
    ) -> None:
        """Relay one direction: a reader filling a queue (bounded), a writer draining it
        when the flow is open, each chunk after its delay, in order."""
        due: deque[float] = deque(time.monotonic() for _ in queue)
        more = asyncio.Event()
        room = asyncio.Event()
        room.set()
        eof = False
        pending = sum(len(c) for c in queue)

        async def feed() -> None:
            nonlocal eof, pending
            last = 0.0
            while not conn.closed:
                if pending >= HOLD_LIMIT:
                    room.clear()
                    await room.wait()
                    continue
                try:
                    chunk = await reader.read(CHUNK)
                except (OSError, ConnectionError):
                    conn.reset()
                    break
                if not chunk:
                    break
                flow: Flow = getattr(self, direction)
                t = time.monotonic() + flow.delay_s
                if flow.jitter_s:
                    t += self.rng.random() * flow.jitter_s
                last = max(last, t)  # delays never reorder bytes
                queue.append(chunk)
                due.append(last)
                pending += len(chunk)
                more.set()
            eof = True
            more.set()

        feeder = asyncio.get_running_loop().create_task(feed())
        try:
            while not conn.closed:
                if not queue:
                    if eof:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    more.clear()
                    await more.wait()
                    continue
                await self._opened[direction].wait()
                if conn.closed or self._closing:
                    return
                wait = due[0] - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                chunk = queue.popleft()
                due.popleft()
                pending -= len(chunk)
                room.set()
                writer.write(chunk)
                await writer.drain()
                if direction == "forward":
                    self.stats.bytes_forward += len(chunk)
                else:
                    self.stats.bytes_backward += len(chunk)
        except (OSError, ConnectionError):
            conn.reset()
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await feeder
