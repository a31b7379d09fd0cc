"""An iSCSI PDU codec after RFC 7143, sans-IO, and the portal's login logic.

- :mod:`.pdu`: the PDUs as frozen dataclasses, ``encode`` and ``decode``
  (the SCSI ones in :mod:`.scsi`, the header's vocabulary in :mod:`.bhs`);
- :mod:`.framer`: bytes in, PDUs out, with bounds;
- :mod:`.text`: ``key=value`` data segments;
- :mod:`.login`: login statuses and the target's key negotiation;
- :mod:`.connection`: one portal connection as a state machine.

Errors: everything a peer can get wrong is a :class:`ProtocolError`; any
other exception for any input is a bug.
"""

from .connection import Action, Assign, Close, Outcome, Phase, PortalConnection, Send
from .errors import (
    FramingError,
    PDUError,
    ProtocolError,
    RejectReason,
    TextError,
    UnsupportedOpcode,
)
from .framer import Framer
from .login import LoginError, LoginStatus, TargetParams
from .pdu import (
    BHS_LEN,
    PDU,
    R2T,
    RESERVED_TAG,
    AdditionalHeader,
    AsyncMessage,
    DataIn,
    DataOut,
    InitiatorPDU,
    LoginRequest,
    LoginResponse,
    LogoutReason,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Opcode,
    Reject,
    Role,
    ScsiCommand,
    ScsiResponse,
    Stage,
    TargetPDU,
    TextRequest,
    TextResponse,
    decode,
    encode,
)
from .text import encode_text, parse_pairs, parse_text

__all__ = [
    "BHS_LEN",
    "PDU",
    "R2T",
    "RESERVED_TAG",
    "Action",
    "AdditionalHeader",
    "Assign",
    "AsyncMessage",
    "Close",
    "DataIn",
    "DataOut",
    "Framer",
    "FramingError",
    "InitiatorPDU",
    "LoginError",
    "LoginRequest",
    "LoginResponse",
    "LoginStatus",
    "LogoutReason",
    "LogoutRequest",
    "LogoutResponse",
    "NopIn",
    "NopOut",
    "Opcode",
    "Outcome",
    "PDUError",
    "Phase",
    "PortalConnection",
    "ProtocolError",
    "Reject",
    "RejectReason",
    "Role",
    "ScsiCommand",
    "ScsiResponse",
    "Send",
    "Stage",
    "TargetPDU",
    "TargetParams",
    "TextError",
    "TextRequest",
    "TextResponse",
    "UnsupportedOpcode",
    "decode",
    "encode",
    "encode_text",
    "parse_pairs",
    "parse_text",
]
