"""Peer transport: asyncio TCP between nodes, one authenticated frame per batch.

Theory of operation
-------------------
Each node dials every peer it sends to and listens for peers dialing it, so a
connection carries traffic one way. On accept the listener sends a fresh
16-byte nonce; from then on every frame is

    +----------------+-----------------------------+------------------+
    | length: u32 BE | HMAC-SHA256: 32 bytes       | body (wire.py)   |
    +----------------+-----------------------------+------------------+

with the MAC over (nonce, frame counter, body) under the cluster secret: a
frame from someone without the secret, or replayed from another connection or
out of order, fails. The dialler's first frame is a hello (a batch of no
messages) of at most ``max_first_frame`` bytes: until a connection has proved
it holds the secret, a stranger can make us buffer only that much. After it,
a frame may be up to ``max_frame`` (large: a whole snapshot travels in one
InstallSnapshot). A frame that fails the MAC, is over its limit, or does not
decode into known messages closes that connection and is logged; the node
goes on serving. A connection that has not sent a valid frame within
``auth_timeout_s`` is closed, so idle strangers cannot hold the
``max_inbound`` slots. Nothing is unpickled.

Sending never blocks the caller: messages join a bounded per-peer queue
(oldest dropped when full: Raft survives loss, and a dead peer must not eat
memory), a writer task per peer batches whatever is queued into one frame and
reconnects with exponential backoff when the link breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from coord.raft import Message

from . import wire

log = logging.getLogger("coord.transport")

LENGTH = struct.Struct(">I")
MAC_SIZE = 32
NONCE_SIZE = 16


def _mac(secret: bytes, nonce: bytes, counter: int, body: bytes) -> bytes:
    h = hmac.new(secret, nonce, hashlib.sha256)
    h.update(counter.to_bytes(8, "big"))
    h.update(body)
    return h.digest()


@dataclass
class TransportStats:
    frames_sent: int = 0
    frames_received: int = 0
    messages_dropped: int = 0  # queue overflow or broken link
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class _Peer:
    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Transport:
    def __init__(
        self,
        node_id: int,
        listen: tuple[str, int],
        peers: dict[int, tuple[str, int]],
        secret: bytes,
        on_message: Callable[[Message], None],
        *,
        max_frame: int = 1 << 30,
        max_first_frame: int = 64 << 10,
        queue_limit: int = 4096,
        max_batch_bytes: int = 4 << 20,
        max_inbound: int = 64,
        auth_timeout_s: float = 5.0,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the cluster secret must be at least 16 bytes")
        self.id = node_id
        self.listen = listen
        self.secret = secret
        self.on_message = on_message
        self.max_frame = max_frame
        self.max_first_frame = max_first_frame
        self.queue_limit = queue_limit
        self.max_batch_bytes = max_batch_bytes
        self.max_inbound = max_inbound
        self.auth_timeout_s = auth_timeout_s
        self.stats = TransportStats()
        self._peers = {pid: _Peer(addr) for pid, addr in peers.items() if pid != node_id}
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.Task[None]] = set()
        self._inbound_writers: set[asyncio.StreamWriter] = set()
        self._closing = False

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.listen[0], self.listen[1])
        sock = self._server.sockets[0].getsockname()
        self.listen = (sock[0], sock[1])  # port 0 resolved
        for pid in sorted(self._peers):
            self._start_writer(pid)

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        # Inbound readers end on their own once their sockets close (cancelling them
        # instead trips asyncio's stream callback); writers are ours to cancel.
        for w in list(self._inbound_writers):
            w.close()
        if self._inbound:
            await asyncio.wait(list(self._inbound), timeout=2)
        tasks = [p.task for p in self._peers.values() if p.task] + list(self._inbound)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            await self._server.wait_closed()

    def set_peer(self, pid: int, addr: tuple[str, int]) -> None:
        """Add or re-address a peer (membership changes)."""
        if pid == self.id:
            return
        peer = self._peers.get(pid)
        if peer is None:
            self._peers[pid] = _Peer(addr)
            if self._server is not None:
                self._start_writer(pid)
        else:
            peer.addr = addr

    def remove_peer(self, pid: int) -> None:
        peer = self._peers.pop(pid, None)
        if peer is not None and peer.task is not None:
            peer.task.cancel()

    # ---- sending ------------------------------------------------------------------

    def send(self, m: Message) -> None:
        peer = self._peers.get(m.dst)
        if peer is None:
            self.stats.messages_dropped += 1
            return
        peer.queue.append(m)
        while len(peer.queue) > self.queue_limit:
            peer.queue.popleft()
            self.stats.messages_dropped += 1
        peer.wake.set()

    def _start_writer(self, pid: int) -> None:
        peer = self._peers[pid]
        peer.task = asyncio.get_running_loop().create_task(
            self._writer(pid, peer), name=f"peer-{pid}"
        )

    async def _writer(self, pid: int, peer: _Peer) -> None:
        backoff = 0.05
        while not self._closing:
            await peer.wake.wait()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*peer.addr), 2.0)
                try:
                    nonce = await asyncio.wait_for(reader.readexactly(NONCE_SIZE), 2.0)
                    backoff = 0.05
                    await self._pump(peer, reader, writer, nonce)
                finally:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
                log.debug("node %d: link to %d down: %s", self.id, pid, e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _pump(
        self,
        peer: _Peer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        nonce: bytes,
    ) -> None:
        # The listener sends nothing after its nonce, so anything readable here is the
        # peer closing (it restarted, or died). Writing into such a socket succeeds
        # locally and is lost (the peer answers with a reset, and only the write after
        # that fails): a restarted member would miss the first frames sent to it, often
        # the very vote answers it campaigns for. So watch for the close, and reconnect
        # before writing, with the queue intact.
        closed = asyncio.ensure_future(reader.read(1))

        def on_close(f: asyncio.Future[bytes]) -> None:
            if not f.cancelled():
                f.exception()  # a reset is as good as a close: retrieved, not logged
            peer.wake.set()

        closed.add_done_callback(on_close)
        try:
            await self._pump_frames(peer, writer, nonce, closed)
        finally:
            closed.cancel()

    async def _pump_frames(
        self,
        peer: _Peer,
        writer: asyncio.StreamWriter,
        nonce: bytes,
        closed: asyncio.Future[bytes],
    ) -> None:
        # The hello: proves we hold the secret before anything large follows.
        hello = wire.encode_batch(self.id, [])
        writer.write(LENGTH.pack(len(hello)) + _mac(self.secret, nonce, 0, hello) + hello)
        counter = 1
        while not self._closing:
            if closed.done():
                raise ConnectionResetError("the peer closed the link")
            if not peer.queue:
                peer.wake.clear()
                await peer.wake.wait()
                continue
            batch: list[Message] = []
            size = 0
            while peer.queue and size < self.max_batch_bytes:
                m = peer.queue.popleft()
                batch.append(m)
                size += 64 + sum(len(e.data) for e in getattr(m, "entries", ()))
            body = wire.encode_batch(self.id, batch)
            if len(body) > self.max_frame:
                log.error("node %d: dropping a %d-byte frame over the limit", self.id, len(body))
                self.stats.messages_dropped += len(batch)
                continue
            frame = LENGTH.pack(len(body)) + _mac(self.secret, nonce, counter, body) + body
            counter += 1
            try:
                writer.write(frame)
                await writer.drain()
            except (OSError, ConnectionError):
                self.stats.messages_dropped += len(batch)
                raise
            self.stats.frames_sent += 1

    # ---- receiving ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._inbound) >= self.max_inbound:
            self.stats.reject("too many connections")
            writer.close()
            return
        self._inbound.add(task)
        self._inbound_writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            await self._read_frames(reader, writer, peer)
        except asyncio.CancelledError:
            raise
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass  # the other side went away mid-frame: nothing to deliver
        finally:
            self._inbound.discard(task)
            self._inbound_writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        nonce = os.urandom(NONCE_SIZE)
        writer.write(nonce)
        await writer.drain()
        counter = 0
        while True:
            if counter == 0:
                # Until it proves it holds the secret a connection may not sit idle:
                # our dialling peers send the moment they connect.
                try:
                    head = await asyncio.wait_for(
                        reader.readexactly(LENGTH.size + MAC_SIZE), self.auth_timeout_s
                    )
                except TimeoutError:
                    self._refuse(
                        peer, "no frame in time", f"nothing valid within {self.auth_timeout_s}s"
                    )
                    return
            else:
                head = await reader.readexactly(LENGTH.size + MAC_SIZE)
            (length,) = LENGTH.unpack_from(head)
            limit = self.max_first_frame if counter == 0 else self.max_frame
            if length > limit:
                self._refuse(peer, "oversize frame", f"{length} bytes > {limit}")
                return
            # A stranger's first frame must arrive whole within the same time: a random
            # length must not let garbage hold the connection open for 30 s. A peer's
            # frame gets 30 s plus time for its size at a slow 8 MiB/s (a snapshot of
            # hundreds of MiB travels in one).
            wait = self.auth_timeout_s if counter == 0 else 30.0 + length / (8 << 20)
            try:
                body = await asyncio.wait_for(reader.readexactly(length), wait)
            except TimeoutError:
                self._refuse(peer, "no frame in time", f"a {length}-byte frame did not arrive")
                return
            if not hmac.compare_digest(
                head[LENGTH.size :], _mac(self.secret, nonce, counter, body)
            ):
                self._refuse(
                    peer, "authentication failed", "bad MAC (wrong secret, replay or garbage)"
                )
                return
            counter += 1
            try:
                src, msgs = wire.decode_batch(body)
            except wire.WireError as e:
                self._refuse(peer, "malformed frame", str(e))
                return
            self.stats.frames_received += 1
            for m in msgs:
                if m.src != src or m.dst != self.id:
                    self.stats.reject("misaddressed message")
                    continue
                self.on_message(m)

    def _refuse(self, peer: object, reason: str, detail: str) -> None:
        self.stats.reject(reason)
        log.warning("node %d: closed connection from %s: %s (%s)", self.id, peer, reason, detail)
