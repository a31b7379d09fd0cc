"""The SCSI PDUs (RFC 7143 §11.3-§11.9): what a test initiator needs.

SCSI Command (with additional header segments), SCSI Response, Data-In,
Data-Out, R2T, and the Asynchronous Message a target may send. The same rules
as in :mod:`.pdu`: frozen dataclasses that check their fields on
construction; ``_put`` writes the header fields, ``_get`` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .bhs import (
    MAX_AHS_LEN,
    RESERVED_TAG,
    Opcode,
    check_bools,
    check_data,
    check_uints,
    get16,
    get32,
    get64,
    put16,
    put32,
    put64,
)
from .errors import PDUError


@dataclass(frozen=True, slots=True, kw_only=True)
class AdditionalHeader:
    """One AHS (§11.2.2): type 1 extended CDB, type 2 bidirectional read length."""

    type: int
    specific: bytes = b""

    def __post_init__(self) -> None:
        check_uints(self, ("type", 8))
        if type(self.specific) is not bytes or len(self.specific) > MAX_AHS_LEN - 3:
            raise PDUError("AdditionalHeader.specific: not bytes of at most 1017")

    def encoded(self) -> bytes:
        raw = len(self.specific).to_bytes(2, "big") + bytes([self.type]) + self.specific
        return raw + bytes(-len(raw) % 4)


def parse_ahs(raw: bytes) -> tuple[AdditionalHeader, ...]:
    out: list[AdditionalHeader] = []
    off = 0
    while off < len(raw):
        length = get16(raw, off)
        end = off + 3 + length
        if end > len(raw):
            raise PDUError("an AHS runs past TotalAHSLength")
        out.append(AdditionalHeader(type=raw[off + 2], specific=bytes(raw[off + 3 : end])))
        off = end + (-end % 4)
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScsiCommand:
    """§11.3. ``cdb`` is the 16 CDB bytes of the header (pad shorter CDBs with zeros)."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_COMMAND
    immediate: bool = False
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = 1  # simple task
    lun: int = 0
    itt: int = 0
    edtl: int = 0  # expected data transfer length
    cmdsn: int = 0
    exp_statsn: int = 0
    cdb: bytes = bytes(16)
    ahs: tuple[AdditionalHeader, ...] = ()
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "immediate", "final", "read", "write")
        check_uints(self, ("attr", 3), ("lun", 64), ("itt", 32), ("edtl", 32), ("cmdsn", 32))
        check_uints(self, ("exp_statsn", 32))
        if type(self.cdb) is not bytes or len(self.cdb) != 16:
            raise PDUError("ScsiCommand.cdb: not 16 bytes")
        if type(self.ahs) is not tuple or not all(type(a) is AdditionalHeader for a in self.ahs):
            raise PDUError("ScsiCommand.ahs: not a tuple of AdditionalHeader")
        if sum(len(a.encoded()) for a in self.ahs) > MAX_AHS_LEN:
            raise PDUError("ScsiCommand.ahs: longer than 1020 bytes")
        if self.data and not self.write:
            raise PDUError("ScsiCommand: immediate data without the W bit")
        check_data(self, self.data)

    def _put(self, h: bytearray) -> None:
        h[1] = (
            (0x80 if self.final else 0)
            | (0x40 if self.read else 0)
            | (0x20 if self.write else 0)
            | self.attr
        )
        put64(h, 8, self.lun)
        put32(h, 16, self.itt)
        put32(h, 20, self.edtl)
        put32(h, 24, self.cmdsn)
        put32(h, 28, self.exp_statsn)
        h[32:48] = self.cdb

    @classmethod
    def _get(cls, h: bytes, data: bytes, ahs: tuple[AdditionalHeader, ...]) -> ScsiCommand:
        return cls(
            immediate=bool(h[0] & 0x40),
            final=bool(h[1] & 0x80),
            read=bool(h[1] & 0x40),
            write=bool(h[1] & 0x20),
            attr=h[1] & 7,
            lun=get64(h, 8),
            itt=get32(h, 16),
            edtl=get32(h, 20),
            cmdsn=get32(h, 24),
            exp_statsn=get32(h, 28),
            cdb=bytes(h[32:48]),
            ahs=ahs,
            data=data,
        )


def _check_residual_flags(pdu: ScsiResponse | DataIn) -> None:
    if pdu.overflow and pdu.underflow:
        raise PDUError(f"{type(pdu).__name__}: both residual overflow and underflow")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScsiResponse:
    """§11.4. ``data``: SenseLength (2 bytes), sense data, then response data."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_RESPONSE
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    overflow: bool = False
    underflow: bool = False
    response: int = 0
    status: int = 0
    itt: int = 0
    snack_tag: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    exp_datasn: int = 0
    bidi_residual: int = 0
    residual: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "bidi_overflow", "bidi_underflow", "overflow", "underflow")
        check_uints(self, ("response", 8), ("status", 8), ("itt", 32), ("snack_tag", 32))
        check_uints(self, ("statsn", 32), ("exp_cmdsn", 32), ("max_cmdsn", 32), ("exp_datasn", 32))
        check_uints(self, ("bidi_residual", 32), ("residual", 32))
        _check_residual_flags(self)
        if self.bidi_overflow and self.bidi_underflow:
            raise PDUError("ScsiResponse: both bidi overflow and underflow")
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return False

    @property
    def sense(self) -> bytes:
        """The sense data (empty if none, or if the segment is shorter than it claims)."""
        if len(self.data) < 2:
            return b""
        return self.data[2 : 2 + get16(self.data, 0)]

    def _put(self, h: bytearray) -> None:
        h[1] = (
            0x80
            | (0x10 if self.bidi_overflow else 0)
            | (0x08 if self.bidi_underflow else 0)
            | (0x04 if self.overflow else 0)
            | (0x02 if self.underflow else 0)
        )
        h[2], h[3] = self.response, self.status
        put32(h, 16, self.itt)
        put32(h, 20, self.snack_tag)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)
        put32(h, 36, self.exp_datasn)
        put32(h, 40, self.bidi_residual)
        put32(h, 44, self.residual)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> ScsiResponse:
        return cls(
            bidi_overflow=bool(h[1] & 0x10),
            bidi_underflow=bool(h[1] & 0x08),
            overflow=bool(h[1] & 0x04),
            underflow=bool(h[1] & 0x02),
            response=h[2],
            status=h[3],
            itt=get32(h, 16),
            snack_tag=get32(h, 20),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            exp_datasn=get32(h, 36),
            bidi_residual=get32(h, 40),
            residual=get32(h, 44),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataIn:
    """§11.7. With ``has_status`` (S bit, only with F) it also ends the command."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_IN
    final: bool = False
    ack: bool = False
    overflow: bool = False
    underflow: bool = False
    has_status: bool = False
    status: int = 0
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0
    residual: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "final", "ack", "overflow", "underflow", "has_status")
        check_uints(self, ("status", 8), ("lun", 64), ("itt", 32), ("ttt", 32), ("statsn", 32))
        check_uints(self, ("exp_cmdsn", 32), ("max_cmdsn", 32), ("datasn", 32))
        check_uints(self, ("buffer_offset", 32), ("residual", 32))
        _check_residual_flags(self)
        if self.has_status and not self.final:
            raise PDUError("DataIn: S bit without F bit")
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = (
            (0x80 if self.final else 0)
            | (0x40 if self.ack else 0)
            | (0x04 if self.overflow else 0)
            | (0x02 if self.underflow else 0)
            | (0x01 if self.has_status else 0)
        )
        h[3] = self.status
        put64(h, 8, self.lun)
        put32(h, 16, self.itt)
        put32(h, 20, self.ttt)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)
        put32(h, 36, self.datasn)
        put32(h, 40, self.buffer_offset)
        put32(h, 44, self.residual)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> DataIn:
        return cls(
            final=bool(h[1] & 0x80),
            ack=bool(h[1] & 0x40),
            overflow=bool(h[1] & 0x04),
            underflow=bool(h[1] & 0x02),
            has_status=bool(h[1] & 0x01),
            status=h[3],
            lun=get64(h, 8),
            itt=get32(h, 16),
            ttt=get32(h, 20),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            datasn=get32(h, 36),
            buffer_offset=get32(h, 40),
            residual=get32(h, 44),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataOut:
    """§11.7. Unsolicited data has ``ttt`` RESERVED_TAG; solicited data the R2T's TTT."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_DATA_OUT
    final: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    exp_statsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "final")
        check_uints(self, ("lun", 64), ("itt", 32), ("ttt", 32), ("exp_statsn", 32))
        check_uints(self, ("datasn", 32), ("buffer_offset", 32))
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = 0x80 if self.final else 0
        put64(h, 8, self.lun)
        put32(h, 16, self.itt)
        put32(h, 20, self.ttt)
        put32(h, 28, self.exp_statsn)
        put32(h, 36, self.datasn)
        put32(h, 40, self.buffer_offset)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> DataOut:
        return cls(
            final=bool(h[1] & 0x80),
            lun=get64(h, 8),
            itt=get32(h, 16),
            ttt=get32(h, 20),
            exp_statsn=get32(h, 28),
            datasn=get32(h, 36),
            buffer_offset=get32(h, 40),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class R2T:
    """§11.8. Ready to transfer ``desired_length`` bytes from ``buffer_offset``."""

    OPCODE: ClassVar[Opcode] = Opcode.R2T
    lun: int = 0
    itt: int = 0
    ttt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    r2tsn: int = 0
    buffer_offset: int = 0
    desired_length: int = 1
    data: bytes = b""

    def __post_init__(self) -> None:
        check_uints(self, ("lun", 64), ("itt", 32), ("ttt", 32), ("statsn", 32), ("exp_cmdsn", 32))
        check_uints(self, ("max_cmdsn", 32), ("r2tsn", 32), ("buffer_offset", 32))
        check_uints(self, ("desired_length", 32))
        if self.desired_length == 0:
            raise PDUError("R2T: desired data transfer length 0")
        if self.ttt == RESERVED_TAG:
            raise PDUError("R2T: reserved target transfer tag")
        check_data(self, self.data, allowed=False)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = 0x80
        put64(h, 8, self.lun)
        put32(h, 16, self.itt)
        put32(h, 20, self.ttt)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)
        put32(h, 36, self.r2tsn)
        put32(h, 40, self.buffer_offset)
        put32(h, 44, self.desired_length)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> R2T:
        return cls(
            lun=get64(h, 8),
            itt=get32(h, 16),
            ttt=get32(h, 20),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            r2tsn=get32(h, 36),
            buffer_offset=get32(h, 40),
            desired_length=get32(h, 44),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AsyncMessage:
    """§11.9. tgtd may send one (e.g. event 1: "please log out"); initiators read it."""

    OPCODE: ClassVar[Opcode] = Opcode.ASYNC_MESSAGE
    lun: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    event: int = 0
    vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_uints(self, ("lun", 64), ("statsn", 32), ("exp_cmdsn", 32), ("max_cmdsn", 32))
        check_uints(self, ("event", 8), ("vcode", 8), ("parameter1", 16), ("parameter2", 16))
        check_uints(self, ("parameter3", 16))
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = 0x80
        put64(h, 8, self.lun)
        put32(h, 16, RESERVED_TAG)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)
        h[36], h[37] = self.event, self.vcode
        put16(h, 38, self.parameter1)
        put16(h, 40, self.parameter2)
        put16(h, 42, self.parameter3)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> AsyncMessage:
        return cls(
            lun=get64(h, 8),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            event=h[36],
            vcode=h[37],
            parameter1=get16(h, 38),
            parameter2=get16(h, 40),
            parameter3=get16(h, 42),
            data=data,
        )
