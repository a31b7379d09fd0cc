"""The codec's one error tree.

Every way a peer's bytes can be wrong ends as a :class:`ProtocolError`;
any other exception escaping this package for any input is a bug (the fuzz
tests in ``tests/test_iscsi_pdu.py`` hold us to it). The subclasses tell the
caller how much of the stream is still usable and what to answer:

- :class:`FramingError`: the byte stream itself is broken (a header that
  cannot be framed, a length beyond our bounds, too many buffered bytes, end
  of stream inside a PDU). Nothing after it can be trusted: close.
- :class:`PDUError`: a well-framed PDU whose fields are invalid, or whose
  opcode this side does not accept. ``header`` is its 48-byte basic header
  segment, which a Reject PDU quotes back.
- :class:`TextError`: a ``key=value`` data segment that breaks the rules
  (syntax, limits, duplicate keys).

``reject_reason`` is the RFC 7143 §11.17.1 reason a target would put in a
Reject PDU for this error.
"""

from __future__ import annotations

from enum import IntEnum


class RejectReason(IntEnum):
    """RFC 7143 §11.17.1."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OP_REJECT = 0x0A
    WAITING_FOR_LOGOUT = 0x0C


class ProtocolError(Exception):
    """The peer broke the protocol. The only exception this package raises on input."""

    reject_reason: RejectReason = RejectReason.PROTOCOL_ERROR

    def __init__(self, message: str, header: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        # The rejected PDU's basic header segment when known (at most 48 bytes).
        self.header = header[:48]


class FramingError(ProtocolError):
    """The stream cannot be framed any further: the connection must close."""


class PDUError(ProtocolError):
    """A framed PDU with an invalid field."""

    reject_reason = RejectReason.INVALID_PDU_FIELD


class UnsupportedOpcode(PDUError):
    """An opcode that is not defined, or not one this side ever receives."""

    reject_reason = RejectReason.COMMAND_NOT_SUPPORTED


class TextError(ProtocolError):
    """A text (``key=value``) data segment that breaks the rules."""
