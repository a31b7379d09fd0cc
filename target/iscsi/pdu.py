"""iSCSI PDUs (RFC 7143 §11) as frozen dataclasses, and their wire form.

Theory of operation. A PDU on the wire is a 48-byte basic header segment
(BHS), then ``TotalAHSLength`` 4-byte words of additional header segments
(AHS), then ``DataSegmentLength`` bytes of data padded with zeros to a
multiple of 4. No digests: this codec is only ever used with
HeaderDigest=None and DataDigest=None, which the login code insists on.

Every PDU type is a frozen, slotted, keyword-only dataclass whose constructor
checks each field (widths, flag combinations the RFC forbids, a data segment
where none may be). So a PDU object that exists is one that can be encoded,
and decoding is only "read the fields, build the object": the constructor's
:class:`~target.iscsi.errors.PDUError` is what a peer's bad field becomes.
``decode(encode(p)) == p`` for every PDU ``p`` (the fuzz tests check it);
the reverse does not hold, because reserved bits are ignored on receipt and
written as zero, as §11.2 asks.

Not here: Task Management, SNACK (no error recovery: ErrorRecoveryLevel=0),
iSER. Their opcodes decode to :class:`~target.iscsi.errors.UnsupportedOpcode`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeAlias

from .bhs import (
    BHS_LEN,
    MAX_AHS_LEN,
    MAX_DATA_SEGMENT,
    RESERVED_TAG,
    Opcode,
    Role,
    Stage,
    check_bools,
    check_data,
    check_stage,
    check_uints,
    get16,
    get32,
    get64,
    put16,
    put32,
    put64,
    stage_of,
)
from .errors import FramingError, PDUError, UnsupportedOpcode
from .scsi import (
    R2T,
    AdditionalHeader,
    AsyncMessage,
    DataIn,
    DataOut,
    ScsiCommand,
    ScsiResponse,
    parse_ahs,
)

__all__ = [
    "BHS_LEN",
    "MAX_AHS_LEN",
    "MAX_DATA_SEGMENT",
    "PDU",
    "R2T",
    "RESERVED_TAG",
    "AdditionalHeader",
    "AsyncMessage",
    "DataIn",
    "DataOut",
    "InitiatorPDU",
    "LoginRequest",
    "LoginResponse",
    "LogoutReason",
    "LogoutRequest",
    "LogoutResponse",
    "NopIn",
    "NopOut",
    "Opcode",
    "Reject",
    "Role",
    "ScsiCommand",
    "ScsiResponse",
    "Stage",
    "TargetPDU",
    "TextRequest",
    "TextResponse",
    "decode",
    "decode_parts",
    "encode",
    "header_lengths",
]


def _login_flags(transit: bool, cont: bool, csg: Stage, nsg: Stage) -> int:
    return (0x80 if transit else 0) | (0x40 if cont else 0) | (csg << 2) | nsg


def _check_login(pdu: LoginRequest | LoginResponse) -> None:
    csg, nsg = check_stage(pdu, "csg"), check_stage(pdu, "nsg")
    if type(pdu.isid) is not bytes or len(pdu.isid) != 6:
        raise PDUError(f"{type(pdu).__name__}.isid: not 6 bytes")
    if pdu.transit and pdu.cont:
        raise PDUError(f"{type(pdu).__name__}: T and C bits both set")
    if csg is Stage.FULL_FEATURE:
        raise PDUError(f"{type(pdu).__name__}: CSG cannot be full feature phase")
    if pdu.transit and nsg <= csg:
        raise PDUError(f"{type(pdu).__name__}: transit to stage {nsg} from {csg}")


# ---- login -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginRequest:
    """§11.12. Always immediate; CmdSN is not advanced by it."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_REQUEST
    transit: bool = False
    cont: bool = False
    csg: Stage = Stage.SECURITY
    nsg: Stage = Stage.SECURITY
    version_max: int = 0
    version_min: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "transit", "cont")
        check_uints(self, ("version_max", 8), ("version_min", 8), ("tsih", 16), ("itt", 32))
        check_uints(self, ("cid", 16), ("cmdsn", 32), ("exp_statsn", 32))
        _check_login(self)
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return True

    def _put(self, h: bytearray) -> None:
        h[1] = _login_flags(self.transit, self.cont, self.csg, self.nsg)
        h[2], h[3] = self.version_max, self.version_min
        h[8:14] = self.isid
        put16(h, 14, self.tsih)
        put32(h, 16, self.itt)
        put16(h, 20, self.cid)
        put32(h, 24, self.cmdsn)
        put32(h, 28, self.exp_statsn)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> LoginRequest:
        return cls(
            transit=bool(h[1] & 0x80),
            cont=bool(h[1] & 0x40),
            csg=stage_of((h[1] >> 2) & 3),
            nsg=stage_of(h[1] & 3),
            version_max=h[2],
            version_min=h[3],
            isid=bytes(h[8:14]),
            tsih=get16(h, 14),
            itt=get32(h, 16),
            cid=get16(h, 20),
            cmdsn=get32(h, 24),
            exp_statsn=get32(h, 28),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginResponse:
    """§11.13. ``status`` is Status-Class << 8 | Status-Detail (0x0101: moved)."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_RESPONSE
    transit: bool = False
    cont: bool = False
    csg: Stage = Stage.SECURITY
    nsg: Stage = Stage.SECURITY
    version_max: int = 0
    version_active: int = 0
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    status: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "transit", "cont")
        check_uints(self, ("version_max", 8), ("version_active", 8), ("tsih", 16), ("itt", 32))
        check_uints(self, ("statsn", 32), ("exp_cmdsn", 32), ("max_cmdsn", 32), ("status", 16))
        _check_login(self)
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = _login_flags(self.transit, self.cont, self.csg, self.nsg)
        h[2], h[3] = self.version_max, self.version_active
        h[8:14] = self.isid
        put16(h, 14, self.tsih)
        put32(h, 16, self.itt)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)
        put16(h, 36, self.status)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> LoginResponse:
        return cls(
            transit=bool(h[1] & 0x80),
            cont=bool(h[1] & 0x40),
            csg=stage_of((h[1] >> 2) & 3),
            nsg=stage_of(h[1] & 3),
            version_max=h[2],
            version_active=h[3],
            isid=bytes(h[8:14]),
            tsih=get16(h, 14),
            itt=get32(h, 16),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            status=get16(h, 36),
            data=data,
        )


# ---- text --------------------------------------------------------------------------


def _check_fc(pdu: TextRequest | TextResponse) -> None:
    check_bools(pdu, "final", "cont")
    if pdu.final and pdu.cont:
        raise PDUError(f"{type(pdu).__name__}: F and C bits both set")


@dataclass(frozen=True, slots=True, kw_only=True)
class TextRequest:
    """§11.10. A ``ttt`` other than RESERVED_TAG continues the target's answer."""

    OPCODE: ClassVar[Opcode] = Opcode.TEXT_REQUEST
    immediate: bool = False
    final: bool = True
    cont: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    exp_statsn: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "immediate")
        _check_fc(self)
        check_uints(self, ("lun", 64), ("itt", 32), ("ttt", 32), ("cmdsn", 32), ("exp_statsn", 32))
        check_data(self, self.data)

    def _put(self, h: bytearray) -> None:
        h[1] = (0x80 if self.final else 0) | (0x40 if self.cont else 0)
        put64(h, 8, self.lun)
        put32(h, 16, self.itt)
        put32(h, 20, self.ttt)
        put32(h, 24, self.cmdsn)
        put32(h, 28, self.exp_statsn)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> TextRequest:
        return cls(
            immediate=bool(h[0] & 0x40),
            final=bool(h[1] & 0x80),
            cont=bool(h[1] & 0x40),
            lun=get64(h, 8),
            itt=get32(h, 16),
            ttt=get32(h, 20),
            cmdsn=get32(h, 24),
            exp_statsn=get32(h, 28),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TextResponse:
    """§11.11. With C set, ``ttt`` names the rest of the answer."""

    OPCODE: ClassVar[Opcode] = Opcode.TEXT_RESPONSE
    final: bool = True
    cont: bool = False
    lun: int = 0
    itt: int = 0
    ttt: int = RESERVED_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_fc(self)
        check_uints(self, ("lun", 64), ("itt", 32), ("ttt", 32), ("statsn", 32))
        check_uints(self, ("exp_cmdsn", 32), ("max_cmdsn", 32))
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = (0x80 if self.final else 0) | (0x40 if self.cont else 0)
        put64(h, 8, self.lun)
        put32(h, 16, self.itt)
        put32(h, 20, self.ttt)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> TextResponse:
        return cls(
            final=bool(h[1] & 0x80),
            cont=bool(h[1] & 0x40),
            lun=get64(h, 8),
            itt=get32(h, 16),
            ttt=get32(h, 20),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            data=data,
        )


# ---- logout ------------------------------------------------------------------------


class LogoutReason(IntEnum):
    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_FOR_RECOVERY = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutRequest:
    """§11.14. ``reason`` is 7 bits; 0 closes the session."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_REQUEST
    immediate: bool = True
    reason: int = 0  # a LogoutReason
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "immediate")
        check_uints(
            self, ("reason", 7), ("itt", 32), ("cid", 16), ("cmdsn", 32), ("exp_statsn", 32)
        )
        check_data(self, self.data, allowed=False)

    def _put(self, h: bytearray) -> None:
        h[1] = 0x80 | self.reason
        put32(h, 16, self.itt)
        put16(h, 20, self.cid)
        put32(h, 24, self.cmdsn)
        put32(h, 28, self.exp_statsn)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> LogoutRequest:
        return cls(
            immediate=bool(h[0] & 0x40),
            reason=h[1] & 0x7F,
            itt=get32(h, 16),
            cid=get16(h, 20),
            cmdsn=get32(h, 24),
            exp_statsn=get32(h, 28),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutResponse:
    """§11.15. ``response`` 0: closed successfully."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_RESPONSE
    response: int = 0
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    time2wait: int = 0
    time2retain: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_uints(self, ("response", 8), ("itt", 32), ("statsn", 32), ("exp_cmdsn", 32))
        check_uints(self, ("max_cmdsn", 32), ("time2wait", 16), ("time2retain", 16))
        check_data(self, self.data, allowed=False)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = 0x80
        h[2] = self.response
        put32(h, 16, self.itt)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)
        put16(h, 40, self.time2wait)
        put16(h, 42, self.time2retain)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> LogoutResponse:
        return cls(
            response=h[2],
            itt=get32(h, 16),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            time2wait=get16(h, 40),
            time2retain=get16(h, 42),
            data=data,
        )


# ---- reject, NOP -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """§11.17. ``data`` is the rejected PDU's header; ITT is always RESERVED_TAG."""

    OPCODE: ClassVar[Opcode] = Opcode.REJECT
    reason: int = 0x04
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    datasn: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_uints(self, ("reason", 8), ("statsn", 32), ("exp_cmdsn", 32), ("max_cmdsn", 32))
        check_uints(self, ("datasn", 32))
        check_data(self, self.data)

    @property
    def immediate(self) -> bool:
        return False

    def _put(self, h: bytearray) -> None:
        h[1] = 0x80
        h[2] = self.reason
        put32(h, 16, RESERVED_TAG)
        put32(h, 24, self.statsn)
        put32(h, 28, self.exp_cmdsn)
        put32(h, 32, self.max_cmdsn)
        put32(h, 36, self.datasn)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> Reject:
        return cls(
            reason=h[2],
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            datasn=get32(h, 36),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NopOut:
    """§11.18. ITT RESERVED_TAG: an answer to the target's ping, needing none."""

    OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
    immediate: bool = True
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    cmdsn: int = 0
    exp_statsn: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_bools(self, "immediate")
        check_uints(self, ("lun", 64), ("itt", 32), ("ttt", 32), ("cmdsn", 32), ("exp_statsn", 32))
        check_data(self, self.data)

    def _put(self, h: bytearray) -> None:
        h[1] = 0x80
        put64(h, 8, self.lun)
        put32(h, 16, self.itt)
        put32(h, 20, self.ttt)
        put32(h, 24, self.cmdsn)
        put32(h, 28, self.exp_statsn)

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> NopOut:
        return cls(
            immediate=bool(h[0] & 0x40),
            lun=get64(h, 8),
            itt=get32(h, 16),
            ttt=get32(h, 20),
            cmdsn=get32(h, 24),
            exp_statsn=get32(h, 28),
            data=data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NopIn:
    """§11.19. TTT other than RESERVED_TAG: the target pings and wants a NOP-Out back."""

    OPCODE: ClassVar[Opcode] = Opcode.NOP_IN
    lun: int = 0
    itt: int = RESERVED_TAG
    ttt: int = RESERVED_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        check_uints(self, ("lun", 64), ("itt", 32), ("ttt", 32), ("statsn", 32))
        check_uints(self, ("exp_cmdsn", 32), ("max_cmdsn", 32))
        check_data(self, self.data)

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

    @classmethod
    def _get(cls, h: bytes, data: bytes) -> NopIn:
        return cls(
            lun=get64(h, 8),
            itt=get32(h, 16),
            ttt=get32(h, 20),
            statsn=get32(h, 24),
            exp_cmdsn=get32(h, 28),
            max_cmdsn=get32(h, 32),
            data=data,
        )


InitiatorPDU: TypeAlias = (
    LoginRequest | TextRequest | LogoutRequest | NopOut | ScsiCommand | DataOut
)
TargetPDU: TypeAlias = (
    LoginResponse
    | TextResponse
    | LogoutResponse
    | Reject
    | NopIn
    | ScsiResponse
    | DataIn
    | R2T
    | AsyncMessage
)
PDU: TypeAlias = InitiatorPDU | TargetPDU

_GETTERS: dict[Role, dict[int, Callable[[bytes, bytes], PDU]]] = {
    Role.INITIATOR: {
        t.OPCODE: t._get for t in (LoginRequest, TextRequest, LogoutRequest, NopOut, DataOut)
    },
    Role.TARGET: {
        t.OPCODE: t._get
        for t in (
            LoginResponse,
            TextResponse,
            LogoutResponse,
            Reject,
            NopIn,
            ScsiResponse,
            DataIn,
            R2T,
            AsyncMessage,
        )
    },
}


# ---- the wire form -----------------------------------------------------------------


def encode(pdu: PDU) -> bytes:
    """The PDU's bytes: BHS, AHS, data padded to 4 bytes."""
    h = bytearray(BHS_LEN)
    pdu._put(h)
    h[0] = pdu.OPCODE | (0x40 if pdu.immediate else 0)
    ahs = b"".join(a.encoded() for a in pdu.ahs) if isinstance(pdu, ScsiCommand) else b""
    h[4] = len(ahs) // 4
    h[5:8] = len(pdu.data).to_bytes(3, "big")
    return bytes(h) + ahs + pdu.data + bytes(-len(pdu.data) % 4)


def header_lengths(bhs: bytes) -> tuple[int, int]:
    """(AHS bytes, data segment bytes without padding) a basic header announces."""
    return bhs[4] * 4, int.from_bytes(bhs[5:8], "big")


def decode_parts(bhs: bytes, ahs: bytes, data: bytes, sender: Role) -> PDU:
    """One framed PDU: header, AHS bytes, data segment without its padding."""
    if len(bhs) != BHS_LEN:
        raise FramingError(f"basic header of {len(bhs)} bytes", bytes(bhs))
    opcode = bhs[0] & 0x3F
    try:
        if opcode == Opcode.SCSI_COMMAND and sender is Role.INITIATOR:
            return ScsiCommand._get(bhs, data, parse_ahs(ahs))
        get = _GETTERS[sender].get(opcode)
        if get is None:
            raise UnsupportedOpcode(f"opcode {opcode:#04x} from the {sender.value}")
        if ahs:
            raise PDUError(f"opcode {opcode:#04x} with an additional header segment")
        return get(bhs, data)
    except PDUError as e:
        e.header = bytes(bhs)
        raise


def decode(raw: bytes, sender: Role) -> PDU:
    """Exactly one whole PDU (with padding). Raises ProtocolError."""
    if len(raw) < BHS_LEN:
        raise FramingError(f"{len(raw)} bytes is shorter than a basic header", bytes(raw))
    ahs_len, data_len = header_lengths(raw)
    end = BHS_LEN + ahs_len + data_len
    if len(raw) != end + (-data_len % 4):
        raise FramingError("PDU length does not match its header", bytes(raw[:BHS_LEN]))
    return decode_parts(
        raw[:BHS_LEN], raw[BHS_LEN : BHS_LEN + ahs_len], raw[BHS_LEN + ahs_len : end], sender
    )
