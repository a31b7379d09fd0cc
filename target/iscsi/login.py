"""Login statuses and the target's side of operational key negotiation.

RFC 7143 §6.2 (negotiation) and §13 (the keys). A key is *declarative*
(each side states its own value: MaxRecvDataSegmentLength, InitiatorName,
...) or *negotiated* (the initiator offers, the target answers with the
result, computed by the key's rule: the minimum, the maximum, a boolean OR
or AND, or the first value of an offered list that the target accepts).

This target's answers are the rules below applied to its own limits
(:class:`TargetParams`). What it refuses outright:
- digests: HeaderDigest and DataDigest are answered None, and a list
  without None fails the login (0x0200) -- this codec has no CRC32C;
- authentication: AuthMethod is answered None, and a list without None
  fails the login (0x0201); AuthMethod outside the security stage is 0x0200;
- values that are not values: a number out of the key's range or not a
  number, a boolean other than Yes/No, fail the login (0x0200).
Keys it does not know (vendor ``X-`` keys included) are answered
NotUnderstood, as §6.2.1 allows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import ProtocolError
from .pdu import Stage

MAX_NAME_BYTES = 223  # §4.2.7.1: an iSCSI name is at most 223 bytes


class LoginStatus(IntEnum):
    """Status-Class << 8 | Status-Detail (§11.13.5)."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302


class LoginError(ProtocolError):
    """The initiator's login cannot go on; answer ``status`` and close."""

    def __init__(self, status: LoginStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class TargetParams:
    """What this target declares and accepts."""

    max_recv_data_segment_length: int = 64 * 1024
    max_burst_length: int = 256 * 1024
    first_burst_length: int = 64 * 1024
    default_time2wait: int = 2
    default_time2retain: int = 0
    max_outstanding_r2t: int = 1
    max_connections: int = 1
    error_recovery_level: int = 0


@dataclass(slots=True)
class Negotiated:
    """What the initiator declared so far (the rest this target never needs)."""

    initiator_mrdsl: int = 8192  # §13.12 default until declared
    keys_seen: set[str] = field(default_factory=set)


_NUMBER = re.compile(r"[0-9]{1,10}|0[xX][0-9a-fA-F]{1,8}")
_DECLARATIVES = frozenset({"InitiatorName", "InitiatorAlias", "TargetName", "SessionType"})
# key -> (rule, our value): OR with our Yes is Yes; AND with our No is No.
_BOOLEANS: dict[str, tuple[str, bool]] = {
    "InitialR2T": ("or", True),
    "ImmediateData": ("and", True),
    "DataPDUInOrder": ("or", True),
    "DataSequenceInOrder": ("or", True),
    "IFMarker": ("and", False),
    "OFMarker": ("and", False),
}
# key -> (rule, low, high, attribute of TargetParams)
_NUMBERS: dict[str, tuple[str, int, int, str]] = {
    "MaxBurstLength": ("min", 512, (1 << 24) - 1, "max_burst_length"),
    "FirstBurstLength": ("min", 512, (1 << 24) - 1, "first_burst_length"),
    "MaxOutstandingR2T": ("min", 1, 65535, "max_outstanding_r2t"),
    "MaxConnections": ("min", 1, 65535, "max_connections"),
    "DefaultTime2Wait": ("max", 0, 3600, "default_time2wait"),
    "DefaultTime2Retain": ("min", 0, 3600, "default_time2retain"),
    "ErrorRecoveryLevel": ("min", 0, 2, "error_recovery_level"),
}


def parse_number(key: str, value: str, low: int, high: int) -> int:
    """A §5.1 numerical value (decimal or 0x hex) within [low, high], else LoginError."""
    if not _NUMBER.fullmatch(value):
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key}={value[:40]!r} is not a number")
    n = int(value, 0) if value[:2] in ("0x", "0X") else int(value, 10)
    if not low <= n <= high:
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key}={n} is outside [{low}, {high}]")
    return n


def _boolean(key: str, value: str) -> bool:
    if value not in ("Yes", "No"):
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key}={value[:40]!r} is not Yes or No")
    return value == "Yes"


def _choose_none(key: str, value: str, status: LoginStatus) -> str:
    if "None" not in value.split(","):
        raise LoginError(status, f"{key}={value[:60]!r} does not offer None")
    return "None"


def check_name(key: str, value: str) -> str:
    """An iSCSI name as sent: present, at most 223 bytes, no spaces or controls."""
    if not value or len(value.encode()) > MAX_NAME_BYTES or not value.isprintable():
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key}={value[:60]!r} is not a name")
    if " " in value:
        raise LoginError(LoginStatus.INITIATOR_ERROR, f"{key} contains a space")
    return value


def answer_keys(
    keys: Mapping[str, str], stage: Stage, params: TargetParams, state: Negotiated
) -> list[tuple[str, str]]:
    """The target's answers to one request's keys, in the order offered.

    Raises LoginError for what ends the login. The declarative
    MaxRecvDataSegmentLength is answered with our own value.
    """
    out: list[tuple[str, str]] = []
    for key, value in keys.items():
        state.keys_seen.add(key)
        if key in _DECLARATIVES:
            continue
        if value in ("NotUnderstood", "Irrelevant", "Reject"):
            continue  # an answer to an offer of ours; we offer nothing
        if key == "AuthMethod":
            if stage is not Stage.SECURITY:
                raise LoginError(LoginStatus.INITIATOR_ERROR, "AuthMethod after the security stage")
            out.append((key, _choose_none(key, value, LoginStatus.AUTHENTICATION_FAILURE)))
        elif key in ("HeaderDigest", "DataDigest"):
            out.append((key, _choose_none(key, value, LoginStatus.INITIATOR_ERROR)))
        elif key == "MaxRecvDataSegmentLength":
            state.initiator_mrdsl = parse_number(key, value, 512, (1 << 24) - 1)
            out.append((key, str(params.max_recv_data_segment_length)))
        elif key in _BOOLEANS:
            rule, ours = _BOOLEANS[key]
            yes = _boolean(key, value)
            result = (yes or ours) if rule == "or" else (yes and ours)
            out.append((key, "Yes" if result else "No"))
        elif key in _NUMBERS:
            rule, low, high, attr = _NUMBERS[key]
            n = parse_number(key, value, low, high)
            mine: int = getattr(params, attr)
            out.append((key, str(min(n, mine) if rule == "min" else max(n, mine))))
        else:
            out.append((key, "NotUnderstood"))
    return out
