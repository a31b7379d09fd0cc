"""One portal connection, sans-IO: PDUs and events in, actions out.

Theory of operation. The portal on a VIP never serves I/O. A connection is
one of two things:

- a *normal* login (SessionType=Normal, or absent): as soon as the first
  request's text is complete, and names both the initiator and the target,
  the connection asks its owner to choose a node (:class:`Assign`); the
  owner answers with :meth:`PortalConnection.assigned` (a 0x0101 redirect
  with ``TargetAddress=ip:port,tpgt``) or :meth:`PortalConnection.refused`
  (0x0203, 0x0301, ...). Either way the connection then closes: after a
  Login Response whose Status-Class is not 0 both sides must close
  (RFC 7143 §11.13.5). Operational keys are not negotiated at all: the node
  we redirect to does that.
- a *discovery* session: log in (no authentication; the security stage is
  optional, libiscsi starts straight in the operational one with flags 0x87),
  answer SendTargets with every target at this portal's own address, answer
  NOP-Outs, and close after the Logout Response.

The rules, as transitions (anything not listed ends the connection):

    LOGIN        --Login req, C=1-->           LOGIN (empty answer; text kept, bounded)
    LOGIN        --Login req, normal-->        ASSIGNING (action Assign)
    LOGIN        --Login req, discovery-->     LOGIN (answers) | FULL_FEATURE (T=1, NSG=3)
    ASSIGNING    --assigned / refused-->       CLOSED (0x0101 / the refusal)
    FULL_FEATURE --Text, NOP-Out-->            FULL_FEATURE
    FULL_FEATURE --Logout req-->               CLOSED (Logout Response first)
    any          --bad input-->                CLOSED (Login Response 0x02xx during
                                                        login, a Reject after)

Every action list that ends in :class:`Close` names the outcome, which the
owner counts. Nothing here raises on input: bad input is an outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .errors import ProtocolError, RejectReason, TextError
from .login import (
    LoginError,
    LoginStatus,
    Negotiated,
    TargetParams,
    answer_keys,
    check_name,
)
from .pdu import (
    BHS_LEN,
    PDU,
    RESERVED_TAG,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Reject,
    Stage,
    TargetPDU,
    TextRequest,
    TextResponse,
    encode,
)
from .text import encode_text, parse_text

MAX_REQUEST_TEXT = 64 * 1024  # a login's or text request's keys, over all C-bit PDUs
MAX_LOGIN_PDUS = 64  # a login takes two or three; continuations add a few


class Phase(Enum):
    LOGIN = "login"
    ASSIGNING = "assigning"
    FULL_FEATURE = "full_feature"
    CLOSED = "closed"


class Outcome(Enum):
    """How a connection ended; the portal counts them."""

    REDIRECTED = "redirected"
    DISCOVERY_DONE = "discovery_done"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    ASSIGN_TIMEOUT = "assign_timeout"
    TARGET_ERROR = "target_error"
    MISSING_PARAMETER = "missing_parameter"
    INITIATOR_ERROR = "initiator_error"
    AUTHENTICATION = "authentication"
    UNSUPPORTED_VERSION = "unsupported_version"
    SESSION_TYPE = "session_type"
    NO_SESSION = "no_session"
    MALFORMED = "malformed"
    LOGIN_TIMEOUT = "login_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    PEER_CLOSED = "peer_closed"
    BUSY = "busy"
    SHUTDOWN = "shutdown"
    INTERNAL_ERROR = "internal_error"  # a bug in the portal, logged


_OUTCOME_OF_STATUS = {
    LoginStatus.NOT_FOUND: Outcome.NOT_FOUND,
    LoginStatus.SERVICE_UNAVAILABLE: Outcome.UNAVAILABLE,
    LoginStatus.TARGET_ERROR: Outcome.TARGET_ERROR,
    LoginStatus.MISSING_PARAMETER: Outcome.MISSING_PARAMETER,
    LoginStatus.AUTHENTICATION_FAILURE: Outcome.AUTHENTICATION,
    LoginStatus.UNSUPPORTED_VERSION: Outcome.UNSUPPORTED_VERSION,
    LoginStatus.SESSION_TYPE_NOT_SUPPORTED: Outcome.SESSION_TYPE,
    LoginStatus.SESSION_DOES_NOT_EXIST: Outcome.NO_SESSION,
    LoginStatus.OUT_OF_RESOURCES: Outcome.BUSY,
}


@dataclass(frozen=True, slots=True)
class Send:
    pdu: TargetPDU


@dataclass(frozen=True, slots=True)
class Assign:
    """Choose a node for ``target``; answer with assigned() or refused()."""

    target: str
    initiator: str


@dataclass(frozen=True, slots=True)
class Close:
    outcome: Outcome


Action = Send | Assign | Close


def _next(sn: int) -> int:
    return (sn + 1) & 0xFFFFFFFF


class PortalConnection:
    """The portal's side of one TCP connection.

    ``targets`` lists the IQNs to announce; ``address`` is this portal's own
    ``ip:port`` (what SendTargets announces); ``tsih`` the session handle a
    discovery session gets (non-zero).
    """

    def __init__(
        self,
        *,
        targets: Callable[[], list[str]],
        address: str,
        tpgt: int,
        tsih: int,
        params: TargetParams | None = None,
    ) -> None:
        if not 0 < tsih < 1 << 16:
            raise ValueError("tsih must be in [1, 65535]")
        self.phase = Phase.LOGIN
        self.initiator: str | None = None
        self.target: str | None = None
        self._targets = targets
        self._address = address
        self._tpgt = tpgt
        self._tsih = tsih
        self._params = params or TargetParams()
        self._state = Negotiated()
        self._first: LoginRequest | None = None  # for ISID, ITT
        self._last: LoginRequest | None = None  # the request to answer
        self._stage: Stage | None = None
        self._login_pdus = 0
        self._text = bytearray()  # C-bit pieces of the current request
        self._statsn = 0
        self._exp_cmdsn = 0
        self._pending: list[bytes] = []  # rest of a SendTargets answer
        self._pending_ttt = RESERVED_TAG
        self._next_ttt = 1

    # ---- input -------------------------------------------------------------------

    def receive_pdu(self, pdu: PDU) -> list[Action]:
        match self.phase:
            case Phase.LOGIN:
                if not isinstance(pdu, LoginRequest):
                    return self._fail_login(
                        LoginStatus.INVALID_DURING_LOGIN, Outcome.INITIATOR_ERROR
                    )
                try:
                    return self._handle_login(pdu)
                except LoginError as e:
                    return self._fail_login(e.status, _OUTCOME_OF_STATUS.get(e.status))
                except TextError:
                    return self._fail_login(LoginStatus.INITIATOR_ERROR, Outcome.MALFORMED)
            case Phase.ASSIGNING:
                # Nothing may come while the initiator waits for our answer.
                return self._fail_login(LoginStatus.INITIATOR_ERROR, Outcome.INITIATOR_ERROR)
            case Phase.FULL_FEATURE:
                return self._step_full_feature(pdu)
            case Phase.CLOSED:
                return []

    def receive_error(self, error: ProtocolError) -> list[Action]:
        """Bytes that were not a valid PDU: refuse and close."""
        if self.phase in (Phase.LOGIN, Phase.ASSIGNING):
            return self._fail_login(LoginStatus.INITIATOR_ERROR, Outcome.MALFORMED)
        if self.phase is Phase.FULL_FEATURE:
            return self._reject(error.reject_reason, error.header, Outcome.MALFORMED)
        return []

    def assigned(self, address: str) -> list[Action]:
        """The node chosen for the login: redirect there (0x0101)."""
        if self.phase is not Phase.ASSIGNING:
            return []
        text = encode_text([("TargetAddress", f"{address},{self._tpgt}")])
        return self._end_login(LoginStatus.TARGET_MOVED_TEMPORARILY, Outcome.REDIRECTED, text)

    def refused(self, status: LoginStatus, outcome: Outcome) -> list[Action]:
        """No node for the login: answer ``status`` (0x0203, 0x0301, ...) and close."""
        if self.phase is not Phase.ASSIGNING:
            return []
        return self._end_login(status, outcome)

    def timed_out(self) -> list[Action]:
        """The login took too long, or a discovery session sat idle: close."""
        if self.phase is Phase.CLOSED:
            return []
        if self.phase is Phase.ASSIGNING:
            return self.refused(LoginStatus.SERVICE_UNAVAILABLE, Outcome.ASSIGN_TIMEOUT)
        outcome = (
            Outcome.IDLE_TIMEOUT if self.phase is Phase.FULL_FEATURE else Outcome.LOGIN_TIMEOUT
        )
        self.phase = Phase.CLOSED
        return [Close(outcome)]

    def peer_closed(self) -> list[Action]:
        if self.phase is Phase.CLOSED:
            return []
        self.phase = Phase.CLOSED
        return [Close(Outcome.PEER_CLOSED)]

    # ---- login -------------------------------------------------------------------

    def _handle_login(self, req: LoginRequest) -> list[Action]:
        self._last = req
        self._login_pdus += 1
        if self._login_pdus > MAX_LOGIN_PDUS:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "too many login PDUs")
        if self._first is None:
            self._first = req
            self._statsn = req.exp_statsn
            if req.version_min > 0:
                raise LoginError(LoginStatus.UNSUPPORTED_VERSION, "only iSCSI version 0")
            if req.tsih != 0:
                raise LoginError(LoginStatus.SESSION_DOES_NOT_EXIST, "no session to add to")
            self._stage = req.csg
        elif req.isid != self._first.isid or req.tsih != self._first.tsih:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "ISID or TSIH changed during login")
        if req.csg is not self._stage:
            raise LoginError(
                LoginStatus.INITIATOR_ERROR, f"login stage {req.csg}, expected {self._stage}"
            )
        self._exp_cmdsn = req.cmdsn
        if len(self._text) + len(req.data) > MAX_REQUEST_TEXT:
            raise LoginError(LoginStatus.INITIATOR_ERROR, "login text too long")
        self._text += req.data
        if req.cont:
            return [Send(self._login_response(LoginStatus.SUCCESS))]
        keys = parse_text(bytes(self._text))
        self._text.clear()
        if self.initiator is None:
            self._declare(keys)
        if self.target is not None:  # a normal session: redirect, negotiate nothing
            self.phase = Phase.ASSIGNING
            return [Assign(self.target, self.initiator or "")]
        answers = answer_keys(keys, req.csg, self._params, self._state)
        data = encode_text(answers)
        if req.transit:
            # We always agree to move on (nothing of ours is left to negotiate).
            self._stage = req.nsg
            if req.nsg is Stage.FULL_FEATURE:
                self.phase = Phase.FULL_FEATURE
        return [Send(self._login_response(LoginStatus.SUCCESS, data, transit=req.transit))]

    def _declare(self, keys: dict[str, str]) -> None:
        """The first request's declarations: who is logging in, to what, how."""
        if "InitiatorName" not in keys:
            raise LoginError(LoginStatus.MISSING_PARAMETER, "no InitiatorName")
        initiator = check_name("InitiatorName", keys["InitiatorName"])
        session_type = keys.get("SessionType", "Normal")
        if session_type == "Normal":
            if "TargetName" not in keys:
                raise LoginError(LoginStatus.MISSING_PARAMETER, "no TargetName")
            self.target = check_name("TargetName", keys["TargetName"])
        elif session_type != "Discovery":
            raise LoginError(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType {session_type}")
        self.initiator = initiator

    def _login_response(
        self, status: LoginStatus, data: bytes = b"", *, transit: bool = False
    ) -> LoginResponse:
        req = self._last
        assert req is not None
        csg = req.csg
        ff = transit and self._stage is Stage.FULL_FEATURE
        resp = LoginResponse(
            transit=transit,
            csg=csg,
            nsg=req.nsg if transit else csg,
            isid=req.isid,
            tsih=self._tsih if ff else 0,
            itt=req.itt,
            statsn=self._statsn,
            exp_cmdsn=self._exp_cmdsn,
            max_cmdsn=self._exp_cmdsn,
            status=status,
            data=data,
        )
        self._statsn = _next(self._statsn)
        return resp

    def _end_login(self, status: LoginStatus, outcome: Outcome, data: bytes = b"") -> list[Action]:
        self.phase = Phase.CLOSED
        if self._last is None:
            return [Close(outcome)]
        return [Send(self._login_response(status, data)), Close(outcome)]

    def _fail_login(self, status: LoginStatus, outcome: Outcome | None) -> list[Action]:
        if self._last is None:
            # Not even one login request: answer the next-best thing, a bare header.
            self._last = LoginRequest()
        return self._end_login(status, outcome or Outcome.INITIATOR_ERROR)

    # ---- full feature phase (discovery sessions only) -----------------------------

    def _step_full_feature(self, pdu: PDU) -> list[Action]:
        match pdu:
            case TextRequest():
                return self._handle_text(pdu)
            case NopOut():
                return self._handle_nop_out(pdu)
            case LogoutRequest():
                return self._handle_logout(pdu)
            case LoginRequest():
                return self._reject(RejectReason.PROTOCOL_ERROR, _header(pdu), Outcome.MALFORMED)
            case _:
                return self._reject(
                    RejectReason.COMMAND_NOT_SUPPORTED, _header(pdu), Outcome.MALFORMED
                )

    def _advance_cmdsn(self, pdu: TextRequest | NopOut | LogoutRequest) -> None:
        if not pdu.immediate:
            self._exp_cmdsn = _next(pdu.cmdsn)

    def _handle_text(self, req: TextRequest) -> list[Action]:
        """SendTargets. A TTT of ours continues our answer, or the initiator's request."""
        self._advance_cmdsn(req)
        if req.ttt != RESERVED_TAG:
            if req.ttt != self._pending_ttt:
                return self._reject(RejectReason.INVALID_PDU_FIELD, _header(req), Outcome.MALFORMED)
            if self._pending:  # the initiator asks for the rest of our answer
                return [Send(self._text_chunk(req))]
        else:  # a new request: whatever was going on is dropped
            self._text.clear()
        self._pending, self._pending_ttt = [], RESERVED_TAG
        if len(self._text) + len(req.data) > MAX_REQUEST_TEXT:
            return self._reject(RejectReason.PROTOCOL_ERROR, _header(req), Outcome.MALFORMED)
        self._text += req.data
        if req.cont:  # more of the request to come, under this TTT
            self._pending_ttt = self._new_ttt()
            return [Send(self._text_response(req, b"", final=False, ttt=self._pending_ttt))]
        try:
            keys = parse_text(bytes(self._text))
        except TextError:
            return self._reject(RejectReason.PROTOCOL_ERROR, _header(req), Outcome.MALFORMED)
        finally:
            self._text.clear()
        answer = encode_text(self._answer_text(keys))
        # The initiator's MaxRecvDataSegmentLength bounds what we send (libiscsi
        # declares 262144 and does not accept an answer continued with the C bit).
        limit = max(512, self._state.initiator_mrdsl)
        self._pending = [answer[i : i + limit] for i in range(0, len(answer), limit)] or [b""]
        self._pending_ttt = self._new_ttt() if len(self._pending) > 1 else RESERVED_TAG
        return [Send(self._text_chunk(req))]

    def _answer_text(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for key, value in keys.items():
            if key != "SendTargets":
                out.append((key, "NotUnderstood"))
                continue
            names = sorted(self._targets())
            if value != "All":
                names = [n for n in names if n == value]
            for name in names:
                out.append(("TargetName", name))
                out.append(("TargetAddress", f"{self._address},{self._tpgt}"))
        return out

    def _text_chunk(self, req: TextRequest) -> TextResponse:
        chunk = self._pending.pop(0)
        more = bool(self._pending)
        ttt = self._pending_ttt if more else RESERVED_TAG
        if not more:
            self._pending_ttt = RESERVED_TAG
        return self._text_response(req, chunk, final=not more, ttt=ttt, cont=more)

    def _text_response(
        self, req: TextRequest, data: bytes, *, final: bool, ttt: int, cont: bool = False
    ) -> TextResponse:
        resp = TextResponse(
            final=final,
            cont=cont,
            lun=req.lun,
            itt=req.itt,
            ttt=ttt,
            statsn=self._statsn,
            exp_cmdsn=self._exp_cmdsn,
            max_cmdsn=self._exp_cmdsn,
            data=data,
        )
        self._statsn = _next(self._statsn)
        return resp

    def _new_ttt(self) -> int:
        ttt = self._next_ttt
        self._next_ttt = self._next_ttt % 0xFFFFFFFE + 1  # never RESERVED_TAG, never 0
        return ttt

    def _handle_nop_out(self, req: NopOut) -> list[Action]:
        self._advance_cmdsn(req)
        if req.itt == RESERVED_TAG:
            return []  # an answer to a ping; we never ping
        limit = self._state.initiator_mrdsl
        resp = NopIn(
            lun=req.lun,
            itt=req.itt,
            statsn=self._statsn,
            exp_cmdsn=self._exp_cmdsn,
            max_cmdsn=self._exp_cmdsn,
            data=req.data[:limit],
        )
        self._statsn = _next(self._statsn)
        return [Send(resp)]

    def _handle_logout(self, req: LogoutRequest) -> list[Action]:
        self._advance_cmdsn(req)
        # 2 (remove the connection for recovery) is answered "recovery not supported".
        resp = LogoutResponse(
            response=2 if req.reason == 2 else 0,
            itt=req.itt,
            statsn=self._statsn,
            exp_cmdsn=self._exp_cmdsn,
            max_cmdsn=self._exp_cmdsn,
        )
        self._statsn = _next(self._statsn)
        self.phase = Phase.CLOSED
        return [Send(resp), Close(Outcome.DISCOVERY_DONE)]

    def _reject(self, reason: RejectReason, header: bytes, outcome: Outcome) -> list[Action]:
        self.phase = Phase.CLOSED
        pdu = Reject(
            reason=reason,
            statsn=self._statsn,
            exp_cmdsn=self._exp_cmdsn,
            max_cmdsn=self._exp_cmdsn,
            data=header,
        )
        return [Send(pdu), Close(outcome)]


def _header(pdu: PDU) -> bytes:
    return encode(pdu)[:BHS_LEN]
