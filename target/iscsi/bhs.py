"""The basic header segment's vocabulary: lengths, opcodes, stages, field access.

Shared by the PDU modules (:mod:`.pdu`, :mod:`.scsi`): the checks every PDU
constructor runs on its fields, and big-endian reads and writes at offsets
of a 48-byte header.
"""

from __future__ import annotations

from enum import Enum, IntEnum

from .errors import PDUError

BHS_LEN = 48
MAX_AHS_LEN = 255 * 4
MAX_DATA_SEGMENT = (1 << 24) - 1
RESERVED_TAG = 0xFFFFFFFF  # "no task" ITT / "no transfer" TTT


class Opcode(IntEnum):
    # Initiator to target.
    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    SCSI_DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    # Target to initiator.
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    SCSI_DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


class Role(Enum):
    """Who sent the bytes being decoded: each side accepts only the other's PDUs."""

    INITIATOR = "initiator"
    TARGET = "target"


class Stage(IntEnum):
    """Login stages (CSG/NSG, §11.12.3); 2 is reserved."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


def check_uints(pdu: object, *spec: tuple[str, int]) -> None:
    for name, bits in spec:
        v = getattr(pdu, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >> bits:
            raise PDUError(f"{type(pdu).__name__}.{name}: not an unsigned {bits}-bit int: {v!r}")


def check_bools(pdu: object, *names: str) -> None:
    for name in names:
        if type(getattr(pdu, name)) is not bool:
            raise PDUError(f"{type(pdu).__name__}.{name}: not a bool")


def check_data(pdu: object, data: object, allowed: bool = True) -> None:
    if type(data) is not bytes:
        raise PDUError(f"{type(pdu).__name__}.data: not bytes")
    if len(data) > MAX_DATA_SEGMENT:
        raise PDUError(f"{type(pdu).__name__}: data segment longer than 2**24 - 1 bytes")
    if data and not allowed:
        raise PDUError(f"{type(pdu).__name__} carries no data segment")


def check_stage(pdu: object, name: str) -> Stage:
    v = getattr(pdu, name)
    if type(v) is not Stage:
        raise PDUError(f"{type(pdu).__name__}.{name}: not a Stage: {v!r}")
    return v


def get16(h: bytes, off: int) -> int:
    return int.from_bytes(h[off : off + 2], "big")


def get32(h: bytes, off: int) -> int:
    return int.from_bytes(h[off : off + 4], "big")


def get64(h: bytes, off: int) -> int:
    return int.from_bytes(h[off : off + 8], "big")


def put16(h: bytearray, off: int, v: int) -> None:
    h[off : off + 2] = v.to_bytes(2, "big")


def put32(h: bytearray, off: int, v: int) -> None:
    h[off : off + 4] = v.to_bytes(4, "big")


def put64(h: bytearray, off: int, v: int) -> None:
    h[off : off + 8] = v.to_bytes(8, "big")


def stage_of(bits: int) -> Stage:
    if bits == 2:
        raise PDUError("login stage 2 is reserved")
    return Stage(bits)
