"""A small iSCSI initiator for tests, built on target.iscsi (asyncio).

    async with await Session.login("127.0.10.5:3260", iqn) as s:   # follows redirects
        s.hops                      # every address it connected to, portal first
        await s.write(0, data)      # WRITE(10) with immediate data, unsolicited data, R2Ts
        assert await s.read(0, len(data) // s.block_size) == data

One command at a time, ErrorRecoveryLevel 0, no digests: what a test needs,
done carefully (every wait has a timeout, every length and offset the
target sends is checked). ``Options`` chooses what to offer: immediate data
or not, InitialR2T or not, starting in the security stage or not, so the
tests can drive each path of a real tgtd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field
from types import TracebackType

from target.iscsi import (
    R2T,
    RESERVED_TAG,
    AsyncMessage,
    DataIn,
    DataOut,
    Framer,
    InitiatorPDU,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    ProtocolError,
    Reject,
    Role,
    ScsiCommand,
    ScsiResponse,
    Stage,
    TargetPDU,
    TextRequest,
    TextResponse,
    encode,
    encode_text,
    parse_pairs,
)

GOOD, CHECK_CONDITION = 0x00, 0x02
UNIT_ATTENTION = 0x6
MAX_COMMAND_BYTES = 1 << 20  # READ/WRITE are split into commands of at most this


class InitiatorError(Exception):
    """The target or the network did not do what the test initiator expected."""


class ConnectionLost(InitiatorError):
    """Could not connect, or the connection broke or timed out."""


class LoginFailed(InitiatorError):
    def __init__(self, status: int, hops: list[str]) -> None:
        super().__init__(f"login failed with status {status:#06x} after {hops}")
        self.status = status
        self.hops = hops


class ScsiError(InitiatorError):
    def __init__(self, status: int, sense: bytes) -> None:
        self.status = status
        self.sense = sense
        self.sense_key, self.asc, self.ascq = _parse_sense(sense)
        super().__init__(
            f"SCSI status {status:#04x}, sense key {self.sense_key:#x} "
            f"asc/ascq {self.asc:#04x}/{self.ascq:#04x}"
        )


def _parse_sense(sense: bytes) -> tuple[int, int, int]:
    if len(sense) >= 4 and sense[0] & 0x7F in (0x72, 0x73):  # descriptor format
        return sense[1] & 0xF, sense[2], sense[3]
    if len(sense) >= 14:  # fixed format
        return sense[2] & 0xF, sense[12], sense[13]
    return 0, 0, 0


def parse_target_address(value: str) -> tuple[str, int]:
    """``ip:port[,tpgt]`` (IPv6 in brackets) as (host, port)."""
    m = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:,\[\]]+))(?::(\d{1,5}))?(?:,\d+)?", value)
    if m is None:
        raise InitiatorError(f"bad TargetAddress {value!r}")
    return m.group(1) or m.group(2), int(m.group(3) or 3260)


def lun_field(lun: int) -> int:
    """The 8-byte LUN field for LUN ``lun`` (SAM: peripheral, or flat above 255)."""
    if lun < 256:
        return lun << 48
    if lun < 1 << 14:
        return (0x4000 | lun) << 48
    raise ValueError("LUN too large")


@dataclass(frozen=True)
class Options:
    initiator_name: str = "iqn.2026-01.test.coord:initiator"
    max_recv_data_segment_length: int = 64 * 1024
    immediate_data: bool = True
    initial_r2t: bool = False
    first_burst_length: int = 64 * 1024
    max_burst_length: int = 256 * 1024
    security_stage: bool = False  # start in CSG=0 with AuthMethod=None
    timeout_s: float = 5.0
    max_hops: int = 8


@dataclass(frozen=True)
class Inquiry:
    peripheral_type: int
    vendor: str
    product: str
    revision: str
    raw: bytes


@dataclass(frozen=True)
class Capacity:
    blocks: int
    block_size: int


class Connection:
    """One TCP connection carrying PDUs, every wait bounded by ``timeout_s``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout_s: float,
        max_data_segment: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout_s = timeout_s
        self.framer = Framer(Role.TARGET, max_data_segment=max_data_segment)

    @classmethod
    async def open(
        cls, address: str, timeout_s: float = 5.0, max_data_segment: int = 1 << 20
    ) -> Connection:
        host, port = parse_target_address(address)
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except (OSError, TimeoutError) as e:
            raise ConnectionLost(f"cannot connect to {address}: {e!r}") from e
        return cls(reader, writer, timeout_s, max_data_segment)

    async def send(self, pdu: InitiatorPDU) -> None:
        await self.send_raw(encode(pdu))

    async def send_raw(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout_s):
                await self.writer.drain()
        except (OSError, TimeoutError) as e:
            raise ConnectionLost(f"send failed: {e!r}") from e

    async def recv_or_eof(self) -> TargetPDU | None:
        """The next PDU, or None once the target closed cleanly."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._recv_or_eof()
        except (OSError, TimeoutError) as e:
            raise ConnectionLost(f"receive failed: {e!r}") from e
        except ProtocolError as e:
            raise InitiatorError(f"bad PDU from the target: {e}") from e

    async def _recv_or_eof(self) -> TargetPDU | None:
        while True:  # each turn frames a PDU or reads; the caller's timeout bounds it
            pdu = self.framer.next_pdu()
            if pdu is not None:
                if not isinstance(pdu, TargetPDU):
                    raise InitiatorError(f"{type(pdu).__name__} from a target")
                return pdu
            if self.framer.at_eof:
                return None
            data = await self.reader.read(1 << 16)
            if data:
                self.framer.feed(data)
            else:
                self.framer.feed_eof()

    async def recv(self) -> TargetPDU:
        pdu = await self.recv_or_eof()
        if pdu is None:
            raise ConnectionLost("the target closed the connection")
        return pdu

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        self.writer.transport.abort()


def _next(sn: int) -> int:
    return (sn + 1) & 0xFFFFFFFF


@dataclass
class _Negotiated:
    target_mrdsl: int = 8192
    immediate_data: bool = True
    initial_r2t: bool = True
    first_burst_length: int = 64 * 1024
    max_burst_length: int = 256 * 1024
    keys: dict[str, str] = field(default_factory=dict)


class Session:
    """A logged-in session (normal or discovery) on one connection."""

    def __init__(self, conn: Connection, options: Options, hops: list[str], lun: int) -> None:
        self.conn = conn
        self.options = options
        self.hops = hops
        self.address = hops[-1]
        self.lun = lun
        self.negotiated = _Negotiated()
        self.block_size = 0
        self._isid = bytes([0x80]) + os.urandom(3) + b"\0\0"
        self._itt = int.from_bytes(os.urandom(2), "big")
        self._cmdsn = int.from_bytes(os.urandom(4), "big")
        self._exp_statsn = 0
        self._max_cmdsn = self._cmdsn
        self._lock = asyncio.Lock()  # one task at a time on the wire

    # ---- login -------------------------------------------------------------------

    @classmethod
    async def login(
        cls, portal: str, target: str, *, lun: int = 1, options: Options | None = None
    ) -> Session:
        """Log in to ``target`` through ``portal``, following 0x01xx redirects."""
        return await cls._login(portal, target, lun, options or Options())

    @classmethod
    async def discovery(cls, portal: str, *, options: Options | None = None) -> Session:
        return await cls._login(portal, None, 0, options or Options())

    @classmethod
    async def _login(cls, portal: str, target: str | None, lun: int, options: Options) -> Session:
        hops: list[str] = []
        address = portal
        for _ in range(options.max_hops + 1):
            hops.append(address)
            conn = await Connection.open(
                address, options.timeout_s, options.max_recv_data_segment_length
            )
            session = cls(conn, options, hops, lun)
            try:
                status, keys = await session._negotiate(target)
            except BaseException:
                await conn.close()
                raise
            if status == 0:
                return session
            await conn.close()
            if status >> 8 != 1 or "TargetAddress" not in keys:
                raise LoginFailed(status, hops)
            host, port = parse_target_address(keys["TargetAddress"])
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise LoginFailed(0x0101, hops)

    def _offer(self, target: str | None) -> list[tuple[str, str]]:
        o = self.options
        keys = [("InitiatorName", o.initiator_name)]
        if target is None:
            keys.append(("SessionType", "Discovery"))
        else:
            keys += [("TargetName", target), ("SessionType", "Normal")]
        if o.security_stage:
            return [*keys, ("AuthMethod", "None")]
        return keys + self._operational()

    def _operational(self) -> list[tuple[str, str]]:
        o = self.options
        yes_no = {True: "Yes", False: "No"}
        return [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", yes_no[o.initial_r2t]),
            ("ImmediateData", yes_no[o.immediate_data]),
            ("MaxBurstLength", str(o.max_burst_length)),
            ("FirstBurstLength", str(o.first_burst_length)),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxConnections", "1"),
            ("MaxRecvDataSegmentLength", str(o.max_recv_data_segment_length)),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
        ]

    async def _negotiate(self, target: str | None) -> tuple[int, dict[str, str]]:
        """Login PDUs until full feature phase or a non-zero status; (status, keys)."""
        stage = Stage.SECURITY if self.options.security_stage else Stage.OPERATIONAL
        pending = self._offer(target)
        received = bytearray()
        keys: dict[str, str] = {}
        cont = False
        for _ in range(16):  # security, operational, a few continuations: plenty
            data = b"" if cont else encode_text(pending)
            pending = []
            await self.conn.send(
                LoginRequest(
                    transit=not cont,
                    csg=stage,
                    nsg=Stage.FULL_FEATURE if stage is Stage.OPERATIONAL else Stage.OPERATIONAL,
                    isid=self._isid,
                    itt=self._itt,
                    cmdsn=self._cmdsn,
                    exp_statsn=self._exp_statsn,
                    data=data,
                )
            )
            resp = await self.conn.recv()
            if not isinstance(resp, LoginResponse):
                raise InitiatorError(f"{type(resp).__name__} during login")
            received += resp.data
            if resp.status or not resp.cont:
                keys.update(parse_pairs(bytes(received)))
                received.clear()
            if resp.status:
                return resp.status, keys
            self._exp_statsn = _next(resp.statsn)
            self._max_cmdsn = resp.max_cmdsn
            cont = resp.cont
            if cont:
                continue
            if resp.transit and resp.nsg is Stage.FULL_FEATURE:
                self._cmdsn = resp.exp_cmdsn
                self._take(keys)
                return 0, keys
            if resp.transit:
                stage = resp.nsg
                pending = self._operational() if stage is Stage.OPERATIONAL else []
        raise InitiatorError("login did not finish in 16 exchanges")

    def _take(self, keys: dict[str, str]) -> None:
        n, o = self.negotiated, self.options
        n.keys = keys
        n.target_mrdsl = int(keys.get("MaxRecvDataSegmentLength", "8192"), 0)
        n.immediate_data = o.immediate_data and keys.get("ImmediateData", "Yes") == "Yes"
        n.initial_r2t = o.initial_r2t or keys.get("InitialR2T", "Yes") == "Yes"
        n.first_burst_length = int(keys.get("FirstBurstLength", "65536"), 0)
        n.max_burst_length = int(keys.get("MaxBurstLength", "262144"), 0)
        if not 512 <= n.target_mrdsl < 1 << 24 or n.first_burst_length < 512:
            raise InitiatorError(f"unusable negotiated values {keys}")

    # ---- receiving -----------------------------------------------------------------

    def _new_itt(self) -> int:
        self._itt = (self._itt + 1) % RESERVED_TAG
        return self._itt

    async def _recv(self) -> TargetPDU:
        """The next PDU for a task, answering the target's pings on the way."""
        for _ in range(1000):  # pings and async messages between answers: bounded
            pdu = await self.conn.recv()
            self._max_cmdsn = getattr(pdu, "max_cmdsn", self._max_cmdsn)
            match pdu:
                case NopIn(ttt=ttt) if ttt != RESERVED_TAG:
                    await self.conn.send(
                        NopOut(lun=pdu.lun, ttt=ttt, cmdsn=self._cmdsn, exp_statsn=self._exp_statsn)
                    )
                case AsyncMessage():
                    self._exp_statsn = _next(pdu.statsn)
                case Reject():
                    raise InitiatorError(f"the target rejected a PDU, reason {pdu.reason:#x}")
                case _:
                    return pdu
        raise InitiatorError("the target keeps pinging")

    def _status(self, statsn: int) -> None:
        self._exp_statsn = _next(statsn)

    # ---- SCSI ----------------------------------------------------------------------

    async def command(self, cdb: bytes, *, read_len: int = 0, data: bytes = b"") -> bytes:
        """One SCSI command; retried (at most 3 times) on UNIT ATTENTION."""
        for attempt in range(4):
            try:
                async with self._lock:
                    return await self._command(cdb, read_len, data)
            except ScsiError as e:
                if e.sense_key != UNIT_ATTENTION or attempt == 3:
                    raise
        raise AssertionError("unreachable")

    async def _command(self, cdb: bytes, read_len: int, data: bytes) -> bytes:
        n = self.negotiated
        itt = self._new_itt()
        lun = lun_field(self.lun)
        immediate = b""
        if data and n.immediate_data:
            immediate = data[: min(n.first_burst_length, n.target_mrdsl)]
        unsolicited_end = len(immediate) if n.initial_r2t else min(len(data), n.first_burst_length)
        cmdsn = self._cmdsn
        self._cmdsn = _next(self._cmdsn)
        await self.conn.send(
            ScsiCommand(
                final=unsolicited_end <= len(immediate),
                read=read_len > 0,
                write=bool(data),
                lun=lun,
                itt=itt,
                edtl=len(data) or read_len,
                cmdsn=cmdsn,
                exp_statsn=self._exp_statsn,
                cdb=cdb.ljust(16, b"\0"),
                data=immediate,
            )
        )
        if unsolicited_end > len(immediate):
            await self._data_out(itt, RESERVED_TAG, data, len(immediate), unsolicited_end)
        buf = bytearray(read_len)
        received = 0
        for _ in range(1 << 20):  # each turn consumes a PDU of this command
            pdu = await self._recv()
            if getattr(pdu, "itt", itt) != itt:
                raise InitiatorError(f"{type(pdu).__name__} for another task")
            match pdu:
                case R2T():
                    end = pdu.buffer_offset + pdu.desired_length
                    if not data or end > len(data):
                        raise InitiatorError(f"R2T for bytes {pdu.buffer_offset}..{end}")
                    await self._data_out(itt, pdu.ttt, data, pdu.buffer_offset, end)
                case DataIn():
                    end = pdu.buffer_offset + len(pdu.data)
                    if end > read_len:
                        raise InitiatorError(f"Data-In for bytes {pdu.buffer_offset}..{end}")
                    buf[pdu.buffer_offset : end] = pdu.data
                    received += len(pdu.data)
                    if pdu.has_status:
                        self._status(pdu.statsn)
                        return self._finish(pdu.status, b"", buf, received, pdu.residual)
                case ScsiResponse():
                    self._status(pdu.statsn)
                    if pdu.response != 0:
                        raise InitiatorError(f"iSCSI response {pdu.response:#x}")
                    return self._finish(pdu.status, pdu.sense, buf, received, pdu.residual)
                case _:
                    raise InitiatorError(f"unexpected {type(pdu).__name__}")
        raise InitiatorError("command did not end")

    def _finish(
        self, status: int, sense: bytes, buf: bytearray, received: int, residual: int
    ) -> bytes:
        if status != GOOD:
            raise ScsiError(status, sense)
        return bytes(buf[: max(0, len(buf) - residual)]) if residual else bytes(buf)

    async def _data_out(self, itt: int, ttt: int, data: bytes, start: int, end: int) -> None:
        """Data-Out PDUs for data[start:end], each within the target's MaxRecvDataSegmentLength."""
        step = self.negotiated.target_mrdsl
        for datasn, off in enumerate(range(start, end, step)):
            chunk = data[off : min(off + step, end)]
            await self.conn.send(
                DataOut(
                    final=off + len(chunk) >= end,
                    lun=lun_field(self.lun),
                    itt=itt,
                    ttt=ttt,
                    exp_statsn=self._exp_statsn,
                    datasn=datasn,
                    buffer_offset=off,
                    data=chunk,
                )
            )

    async def inquiry(self) -> Inquiry:
        raw = await self.command(bytes([0x12, 0, 0, 0, 96, 0]), read_len=96)
        if len(raw) < 36:
            raise InitiatorError(f"INQUIRY returned {len(raw)} bytes")
        text = [
            raw[a:b].decode("ascii", "replace").strip() for a, b in ((8, 16), (16, 32), (32, 36))
        ]
        return Inquiry(raw[0] & 0x1F, text[0], text[1], text[2], raw)

    async def read_capacity16(self) -> Capacity:
        cdb = bytes([0x9E, 0x10]) + bytes(8) + (32).to_bytes(4, "big") + bytes(2)
        raw = await self.command(cdb, read_len=32)
        if len(raw) < 12:
            raise InitiatorError(f"READ CAPACITY(16) returned {len(raw)} bytes")
        cap = Capacity(int.from_bytes(raw[0:8], "big") + 1, int.from_bytes(raw[8:12], "big"))
        self.block_size = cap.block_size
        return cap

    async def _blocks(self) -> int:
        if not self.block_size:
            await self.read_capacity16()
        return self.block_size

    async def write(self, lba: int, data: bytes) -> None:
        """WRITE(10) (WRITE(16) past 2**32 blocks), split into 1 MiB commands."""
        bs = await self._blocks()
        if len(data) % bs:
            raise ValueError(f"{len(data)} bytes is not a multiple of the block size {bs}")
        per = max(1, min(0xFFFF, MAX_COMMAND_BYTES // bs))
        for first in range(0, len(data) // bs, per):
            chunk = data[first * bs : (first + per) * bs]
            await self.command(_rw_cdb(0x2A, 0x8A, lba + first, len(chunk) // bs), data=chunk)

    async def read(self, lba: int, blocks: int) -> bytes:
        """READ(10) (READ(16) past 2**32 blocks), split into 1 MiB commands."""
        bs = await self._blocks()
        per = max(1, min(0xFFFF, MAX_COMMAND_BYTES // bs))
        out = bytearray()
        for first in range(0, blocks, per):
            n = min(per, blocks - first)
            got = await self.command(_rw_cdb(0x28, 0x88, lba + first, n), read_len=n * bs)
            if len(got) != n * bs:
                raise InitiatorError(f"READ returned {len(got)} bytes, not {n * bs}")
            out += got
        return bytes(out)

    # ---- discovery, logout -----------------------------------------------------------

    async def send_targets(self, value: str = "All") -> list[tuple[str, str]]:
        """SendTargets: (key, value) pairs as answered (TargetName, TargetAddress, ...)."""
        async with self._lock:
            return await self._send_targets(value)

    async def _send_targets(self, value: str) -> list[tuple[str, str]]:
        itt = self._new_itt()
        text = bytearray()
        ttt = RESERVED_TAG
        data = encode_text([("SendTargets", value)])
        for _ in range(1 << 12):  # continuations of a long answer: bounded
            await self.conn.send(
                TextRequest(
                    immediate=True,
                    itt=itt,
                    ttt=ttt,
                    cmdsn=self._cmdsn,
                    exp_statsn=self._exp_statsn,
                    data=data,
                )
            )
            resp = await self._recv()
            if not isinstance(resp, TextResponse) or resp.itt != itt:
                raise InitiatorError(f"unexpected {type(resp).__name__} to SendTargets")
            self._status(resp.statsn)
            text += resp.data
            if resp.final:
                return parse_pairs(bytes(text), max_pairs=1 << 20)
            ttt, data = resp.ttt, b""
        raise InitiatorError("SendTargets answer never ended")

    async def logout(self) -> None:
        async with self._lock:
            await self._logout()

    async def _logout(self) -> None:
        await self.conn.send(
            LogoutRequest(itt=self._new_itt(), cmdsn=self._cmdsn, exp_statsn=self._exp_statsn)
        )
        resp = await self._recv()
        if not isinstance(resp, LogoutResponse) or resp.response != 0:
            raise InitiatorError(f"logout answered {resp}")
        await self.conn.close()

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if et is None:
                await self.logout()
        finally:
            await self.close()


def _rw_cdb(op10: int, op16: int, lba: int, blocks: int) -> bytes:
    if lba + blocks <= 0xFFFFFFFF and blocks <= 0xFFFF:
        return bytes([op10, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"
    return bytes([op16, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"


async def discover(portal: str, *, options: Options | None = None) -> list[tuple[str, str]]:
    """(TargetName, TargetAddress) for each target the portal announces."""
    async with await Session.discovery(portal, options=options) as s:
        pairs = await s.send_targets()
    out: list[tuple[str, str]] = []
    name = None
    for key, value in pairs:
        if key == "TargetName":
            name = value
        elif key == "TargetAddress" and name is not None:
            out.append((name, value))
    return out
