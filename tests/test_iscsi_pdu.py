"""The iSCSI codec: round trips, known bytes, the framer's bounds, and the fuzz.

The rule under test (STYLE.md, after h11): for any input whatsoever, the
only exception out of target.iscsi is ProtocolError.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target.iscsi import (
    BHS_LEN,
    PDU,
    R2T,
    RESERVED_TAG,
    AdditionalHeader,
    Assign,
    AsyncMessage,
    Close,
    DataIn,
    DataOut,
    Framer,
    FramingError,
    LoginError,
    LoginRequest,
    LoginResponse,
    LoginStatus,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Outcome,
    PDUError,
    PortalConnection,
    ProtocolError,
    Reject,
    Role,
    ScsiCommand,
    ScsiResponse,
    Send,
    Stage,
    TargetParams,
    TextError,
    TextRequest,
    TextResponse,
    UnsupportedOpcode,
    decode,
    encode,
    encode_text,
    parse_pairs,
    parse_text,
)
from target.iscsi.login import Negotiated, answer_keys

# ---- strategies --------------------------------------------------------------------

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
data = st.binary(max_size=300)
stages = st.sampled_from([Stage.SECURITY, Stage.OPERATIONAL])


@st.composite
def login_flags(draw: st.DrawFn) -> dict[str, Any]:
    csg = draw(stages)
    transit = draw(st.booleans())
    nsg = draw(st.sampled_from([s for s in Stage if s > csg])) if transit else csg
    return {
        "transit": transit,
        "cont": False if transit else draw(st.booleans()),
        "csg": csg,
        "nsg": nsg,
    }


def _login(cls: type[LoginRequest] | type[LoginResponse], **fields: Any) -> Any:
    return st.builds(lambda f, kw: cls(**f, **kw), login_flags(), st.fixed_dictionaries(fields))


fc = st.sampled_from([(True, False), (False, True), (False, False)])
initiator_pdus: st.SearchStrategy[PDU] = st.one_of(
    _login(
        LoginRequest,
        version_max=u8,
        version_min=u8,
        isid=st.binary(min_size=6, max_size=6),
        tsih=u16,
        itt=u32,
        cid=u16,
        cmdsn=u32,
        exp_statsn=u32,
        data=data,
    ),
    st.builds(
        lambda f, **kw: TextRequest(final=f[0], cont=f[1], **kw),
        fc,
        immediate=st.booleans(),
        lun=u64,
        itt=u32,
        ttt=u32,
        cmdsn=u32,
        exp_statsn=u32,
        data=data,
    ),
    st.builds(
        LogoutRequest,
        immediate=st.booleans(),
        reason=st.integers(0, 127),
        itt=u32,
        cid=u16,
        cmdsn=u32,
        exp_statsn=u32,
    ),
    st.builds(
        NopOut, immediate=st.booleans(), lun=u64, itt=u32, ttt=u32, cmdsn=u32, exp_statsn=u32
    ),
    st.builds(
        ScsiCommand,
        immediate=st.booleans(),
        final=st.booleans(),
        read=st.booleans(),
        write=st.just(True),
        attr=st.integers(0, 7),
        lun=u64,
        itt=u32,
        edtl=u32,
        cmdsn=u32,
        exp_statsn=u32,
        cdb=st.binary(min_size=16, max_size=16),
        ahs=st.lists(
            st.builds(AdditionalHeader, type=u8, specific=st.binary(max_size=40)), max_size=3
        ).map(tuple),
        data=data,
    ),
    st.builds(
        DataOut,
        final=st.booleans(),
        lun=u64,
        itt=u32,
        ttt=u32,
        exp_statsn=u32,
        datasn=u32,
        buffer_offset=u32,
        data=data,
    ),
)
over_under = st.sampled_from([(False, False), (True, False), (False, True)])
target_pdus: st.SearchStrategy[PDU] = st.one_of(
    _login(
        LoginResponse,
        version_max=u8,
        version_active=u8,
        isid=st.binary(min_size=6, max_size=6),
        tsih=u16,
        itt=u32,
        statsn=u32,
        exp_cmdsn=u32,
        max_cmdsn=u32,
        status=u16,
        data=data,
    ),
    st.builds(
        lambda f, **kw: TextResponse(final=f[0], cont=f[1], **kw),
        fc,
        lun=u64,
        itt=u32,
        ttt=u32,
        statsn=u32,
        exp_cmdsn=u32,
        max_cmdsn=u32,
        data=data,
    ),
    st.builds(
        LogoutResponse,
        response=u8,
        itt=u32,
        statsn=u32,
        exp_cmdsn=u32,
        max_cmdsn=u32,
        time2wait=u16,
        time2retain=u16,
    ),
    st.builds(Reject, reason=u8, statsn=u32, exp_cmdsn=u32, max_cmdsn=u32, datasn=u32, data=data),
    st.builds(
        NopIn, lun=u64, itt=u32, ttt=u32, statsn=u32, exp_cmdsn=u32, max_cmdsn=u32, data=data
    ),
    st.builds(
        lambda bi, ou, **kw: ScsiResponse(
            bidi_overflow=bi[0], bidi_underflow=bi[1], overflow=ou[0], underflow=ou[1], **kw
        ),
        over_under,
        over_under,
        response=u8,
        status=u8,
        itt=u32,
        snack_tag=u32,
        statsn=u32,
        exp_cmdsn=u32,
        max_cmdsn=u32,
        exp_datasn=u32,
        bidi_residual=u32,
        residual=u32,
        data=data,
    ),
    st.builds(
        lambda ou, fs, **kw: DataIn(
            overflow=ou[0], underflow=ou[1], final=fs[0] or fs[1], has_status=fs[1], **kw
        ),
        over_under,
        st.tuples(st.booleans(), st.booleans()),
        ack=st.booleans(),
        status=u8,
        lun=u64,
        itt=u32,
        ttt=u32,
        statsn=u32,
        exp_cmdsn=u32,
        max_cmdsn=u32,
        datasn=u32,
        buffer_offset=u32,
        residual=u32,
        data=data,
    ),
    st.builds(
        R2T,
        lun=u64,
        itt=u32,
        ttt=st.integers(0, RESERVED_TAG - 1),
        statsn=u32,
        exp_cmdsn=u32,
        max_cmdsn=u32,
        r2tsn=u32,
        buffer_offset=u32,
        desired_length=st.integers(1, 0xFFFFFFFF),
    ),
    st.builds(
        AsyncMessage,
        lun=u64,
        statsn=u32,
        exp_cmdsn=u32,
        max_cmdsn=u32,
        event=u8,
        vcode=u8,
        parameter1=u16,
        parameter2=u16,
        parameter3=u16,
        data=data,
    ),
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- round trips and known bytes ---------------------------------------------------


@FUZZ
@given(initiator_pdus)
def test_initiator_pdus_round_trip(pdu: PDU) -> None:
    raw = encode(pdu)
    assert len(raw) % 4 == 0
    assert decode(raw, Role.INITIATOR) == pdu


@FUZZ
@given(target_pdus)
def test_target_pdus_round_trip(pdu: PDU) -> None:
    raw = encode(pdu)
    assert len(raw) % 4 == 0
    assert decode(raw, Role.TARGET) == pdu


# The first PDU iscsi-inq (libiscsi 1.19) sends, as captured on this machine.
LIBISCSI_LOGIN_BHS = bytes.fromhex(
    "43870000000001af806ccd830000000000f3962900000000248a807f00000001" + "00" * 16
)
LIBISCSI_KEYS = [
    ("InitiatorName", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq"),
    ("TargetName", "iqn.2026-01.test:t1"),
    ("SessionType", "Normal"),
    ("HeaderDigest", "None,CRC32C"),
    ("DataDigest", "None"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "262144"),
    ("FirstBurstLength", "262144"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("MaxOutstandingR2T", "1"),
    ("ErrorRecoveryLevel", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("MaxConnections", "1"),
    ("MaxRecvDataSegmentLength", "262144"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
]


def test_libiscsi_first_login_decodes() -> None:
    text = encode_text(LIBISCSI_KEYS)
    assert len(text) == 0x1AF
    pdu = decode(LIBISCSI_LOGIN_BHS + text + bytes(-len(text) % 4), Role.INITIATOR)
    assert pdu == LoginRequest(
        transit=True,
        csg=Stage.OPERATIONAL,
        nsg=Stage.FULL_FEATURE,
        isid=bytes.fromhex("806ccd830000"),
        itt=0x00F39629,
        cmdsn=0x248A807F,
        exp_statsn=1,
        data=text,
    )
    assert parse_text(pdu.data) == dict(LIBISCSI_KEYS)
    assert encode(pdu)[:BHS_LEN] == LIBISCSI_LOGIN_BHS


def test_known_encodings() -> None:
    resp = LoginResponse(
        csg=Stage.OPERATIONAL, nsg=Stage.OPERATIONAL, itt=7, status=0x0101, data=b"A=1\0"
    )
    raw = encode(resp)
    assert raw[0] == 0x23 and raw[1] == 0x05 and raw[36:38] == b"\x01\x01"
    assert raw[5:8] == b"\x00\x00\x04" and len(raw) == 52
    reject = encode(Reject(reason=0x09, data=bytes(48)))
    assert reject[0] == 0x3F and reject[2] == 0x09 and reject[16:20] == b"\xff" * 4
    cmd = ScsiCommand(write=True, cdb=bytes(16), ahs=(AdditionalHeader(type=1, specific=b"xy"),))
    raw = encode(cmd)
    assert raw[4] == 2 and raw[48:56] == b"\x00\x02\x01xy\x00\x00\x00"
    assert encode(NopOut(itt=5))[0] == 0x40  # immediate


@pytest.mark.parametrize(
    "make",
    [
        lambda: LoginRequest(transit=True, cont=True, csg=Stage.SECURITY, nsg=Stage.OPERATIONAL),
        lambda: LoginRequest(transit=True, csg=Stage.OPERATIONAL, nsg=Stage.SECURITY),
        lambda: LoginRequest(csg=Stage.FULL_FEATURE),
        lambda: LoginRequest(isid=b"short"),
        lambda: LoginRequest(itt=2**32),
        lambda: LoginRequest(itt=-1),
        lambda: LoginRequest(transit=1),  # type: ignore[arg-type]
        lambda: TextRequest(final=True, cont=True),
        lambda: LogoutRequest(data=b"x"),
        lambda: LogoutRequest(reason=128),
        lambda: R2T(ttt=1, desired_length=0),
        lambda: R2T(ttt=RESERVED_TAG),
        lambda: DataIn(has_status=True, final=False),
        lambda: ScsiResponse(overflow=True, underflow=True),
        lambda: ScsiCommand(cdb=b"\x12"),
        lambda: ScsiCommand(data=b"x"),  # data without W
        lambda: ScsiCommand(write=True, ahs=(AdditionalHeader(type=1, specific=bytes(1017)),) * 2),
        lambda: NopOut(data="text"),  # type: ignore[arg-type]
    ],
)
def test_constructors_validate(make: Any) -> None:
    with pytest.raises(PDUError):
        make()


# ---- text ----------------------------------------------------------------------------


def test_text_rules() -> None:
    assert parse_text(b"") == {}
    assert parse_text(b"A=1\0B=\0") == {"A": "1", "B": ""}
    assert parse_pairs(b"TargetName=a\0TargetAddress=x\0TargetName=b\0") == [
        ("TargetName", "a"),
        ("TargetAddress", "x"),
        ("TargetName", "b"),
    ]
    assert parse_text(encode_text({"X-vendor.key": "é ü"})) == {"X-vendor.key": "é ü"}
    bad = [
        b"A=1",  # no final NUL
        b"A=1\0\0",  # an empty record
        b"A\0",  # no '='
        b"=1\0",  # empty key
        b"A B=1\0",  # bad key character
        b"A=1\0A=2\0",  # duplicate
        b"A=\xff\0",  # not UTF-8
        b"K" * 64 + b"=1\0",  # key too long
        b"A=" + b"v" * 8193 + b"\0",  # value too long
        b"A=1\0" * 1 + b"".join(b"K%d=1\0" % i for i in range(300)),  # too many pairs
    ]
    for raw in bad:
        with pytest.raises(TextError):
            parse_text(raw)
    for pairs in ([("A B", "1")], [("A", "x\0y")], [("", "1")], [("A", "\ud800")]):
        with pytest.raises(TextError):
            encode_text(pairs)


@FUZZ
@given(st.binary(max_size=400))
def test_text_fuzz(raw: bytes) -> None:
    try:
        keys = parse_text(raw)
    except TextError:
        return
    assert parse_text(encode_text(keys)) == keys


# ---- framer --------------------------------------------------------------------------


def _frame_all(framer: Framer, chunks: list[bytes]) -> list[PDU]:
    out: list[PDU] = []
    for chunk in chunks:
        framer.feed(chunk)
        while (pdu := framer.next_pdu()) is not None:
            out.append(pdu)
    framer.feed_eof()
    assert framer.next_pdu() is None and framer.at_eof
    return out


@FUZZ
@given(st.lists(initiator_pdus, max_size=5), st.integers(1, 97))
def test_framer_any_split(pdus: list[PDU], step: int) -> None:
    raw = b"".join(encode(p) for p in pdus)
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
    assert _frame_all(Framer(Role.INITIATOR), chunks) == pdus


def test_framer_refuses_oversize_data_segment_from_its_header() -> None:
    framer = Framer(Role.INITIATOR, max_data_segment=1024)
    header = bytearray(encode(NopOut(itt=1)))
    header[5:8] = (1025).to_bytes(3, "big")
    framer.feed(bytes(header))
    with pytest.raises(FramingError) as e:
        framer.next_pdu()
    assert e.value.header == bytes(header)
    with pytest.raises(FramingError):  # broken for good
        framer.next_pdu()
    with pytest.raises(FramingError):
        framer.feed(b"more")


def test_framer_bounds_buffered_bytes() -> None:
    framer = Framer(Role.INITIATOR, max_data_segment=1024, max_buffer=2000)
    framer.feed(bytes(1500))
    with pytest.raises(FramingError):
        framer.feed(bytes(501))


def test_framer_end_of_stream_inside_a_pdu() -> None:
    raw = encode(NopOut(itt=1, data=b"ping"))
    for cut in (1, 20, BHS_LEN, len(raw) - 1):
        framer = Framer(Role.INITIATOR)
        framer.feed(raw[:cut])
        assert framer.next_pdu() is None
        framer.feed_eof()
        with pytest.raises(FramingError):
            framer.next_pdu()


def test_framer_pdu_error_consumes_only_that_pdu() -> None:
    framer = Framer(Role.INITIATOR)
    bad = bytearray(encode(LogoutRequest(itt=1)))
    bad[1] = 0x80  # fine
    bad[0] = 0x20  # NOP-In: a target's PDU, not accepted from an initiator
    framer.feed(bytes(bad) + encode(NopOut(itt=9)))
    with pytest.raises(UnsupportedOpcode) as e:
        framer.next_pdu()
    assert e.value.header == bytes(bad[:48]) and e.value.reject_reason == 0x05
    assert framer.next_pdu() == NopOut(itt=9)


def test_framer_rejects_ahs_where_none_belongs() -> None:
    raw = bytearray(encode(NopOut(itt=1)))
    raw[4] = 1
    raw[48:48] = b"\x00\x01\x01\x00"
    with pytest.raises(PDUError):
        decode(bytes(raw), Role.INITIATOR)


# ---- the fuzz: only ProtocolError, for any bytes ---------------------------------------


def _drain(framer: Framer, chunks: list[bytes]) -> None:
    """Feed everything; ProtocolError is the only acceptable exception."""
    try:
        for chunk in chunks:
            framer.feed(chunk)
            for _ in range(len(chunk) + 1):
                try:
                    if framer.next_pdu() is None:
                        break
                except PDUError:
                    continue  # the stream goes on after a bad PDU
        framer.feed_eof()
        for _ in range(1000):
            try:
                if framer.next_pdu() is None:
                    break
            except PDUError:
                continue
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8), st.sampled_from(list(Role)))
def test_fuzz_random_bytes(chunks: list[bytes], role: Role) -> None:
    _drain(Framer(role, max_data_segment=512, max_buffer=2048), chunks)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, Role]:
    role = draw(st.sampled_from(list(Role)))
    pdu = draw(initiator_pdus if role is Role.INITIATOR else target_pdus)
    raw = bytearray(encode(pdu))
    for _ in range(draw(st.integers(1, 6))):
        match draw(st.integers(0, 3)):
            case 0 if raw:
                raw[draw(st.integers(0, len(raw) - 1))] = draw(u8)
            case 1 if len(raw) >= 8:
                raw[draw(st.integers(0, 7))] = draw(u8)  # opcode, flags, lengths
            case 2:
                del raw[draw(st.integers(0, len(raw))) :]
            case _:
                raw += draw(st.binary(max_size=64))
    return bytes(raw), role


@FUZZ
@given(mutated(), st.integers(1, 64))
def test_fuzz_mutated_pdus(case: tuple[bytes, Role], step: int) -> None:
    raw, role = case
    _drain(
        Framer(role, max_data_segment=1024), [raw[i : i + step] for i in range(0, len(raw), step)]
    )
    with contextlib.suppress(ProtocolError):
        decode(raw, role)


# ---- negotiation and the portal's connection logic, sans-IO ----------------------------


def test_answers_to_libiscsi() -> None:
    state = Negotiated()
    answers = dict(answer_keys(dict(LIBISCSI_KEYS), Stage.OPERATIONAL, TargetParams(), state))
    assert answers == {
        "HeaderDigest": "None",
        "DataDigest": "None",
        "InitialR2T": "Yes",
        "ImmediateData": "Yes",
        "MaxBurstLength": "262144",
        "FirstBurstLength": "65536",
        "DefaultTime2Wait": "2",
        "DefaultTime2Retain": "0",
        "MaxOutstandingR2T": "1",
        "ErrorRecoveryLevel": "0",
        "IFMarker": "No",
        "OFMarker": "No",
        "MaxConnections": "1",
        "MaxRecvDataSegmentLength": "65536",
        "DataPDUInOrder": "Yes",
        "DataSequenceInOrder": "Yes",
    }
    assert state.initiator_mrdsl == 262144
    unknown = answer_keys({"X-com.example.Foo": "1"}, Stage.OPERATIONAL, TargetParams(), state)
    assert unknown == [("X-com.example.Foo", "NotUnderstood")]


@pytest.mark.parametrize(
    ("keys", "stage", "status"),
    [
        ({"HeaderDigest": "CRC32C"}, Stage.OPERATIONAL, LoginStatus.INITIATOR_ERROR),
        ({"AuthMethod": "CHAP"}, Stage.SECURITY, LoginStatus.AUTHENTICATION_FAILURE),
        ({"AuthMethod": "None"}, Stage.OPERATIONAL, LoginStatus.INITIATOR_ERROR),
        ({"MaxRecvDataSegmentLength": "511"}, Stage.OPERATIONAL, LoginStatus.INITIATOR_ERROR),
        ({"MaxBurstLength": "lots"}, Stage.OPERATIONAL, LoginStatus.INITIATOR_ERROR),
        ({"ErrorRecoveryLevel": "3"}, Stage.OPERATIONAL, LoginStatus.INITIATOR_ERROR),
        ({"InitialR2T": "Maybe"}, Stage.OPERATIONAL, LoginStatus.INITIATOR_ERROR),
    ],
)
def test_negotiation_refusals(keys: dict[str, str], stage: Stage, status: LoginStatus) -> None:
    with pytest.raises(LoginError) as e:
        answer_keys(keys, stage, TargetParams(), Negotiated())
    assert e.value.status == status


def _conn() -> PortalConnection:
    return PortalConnection(
        targets=lambda: ["iqn.t:b", "iqn.t:a"], address="127.0.0.9:3260", tpgt=3, tsih=1
    )


def test_connection_discovery_then_logout() -> None:
    c = _conn()
    keys = [("InitiatorName", "iqn.i:1"), ("SessionType", "Discovery"), ("AuthMethod", "None")]
    (send,) = c.receive_pdu(
        LoginRequest(
            transit=True, csg=Stage.SECURITY, nsg=Stage.OPERATIONAL, itt=4, data=encode_text(keys)
        )
    )
    assert isinstance(send, Send) and isinstance(send.pdu, LoginResponse)
    assert send.pdu.transit and send.pdu.nsg is Stage.OPERATIONAL and send.pdu.tsih == 0
    assert parse_text(send.pdu.data) == {"AuthMethod": "None"}
    (send,) = c.receive_pdu(
        LoginRequest(transit=True, csg=Stage.OPERATIONAL, nsg=Stage.FULL_FEATURE, itt=4)
    )
    assert isinstance(send, Send) and isinstance(send.pdu, LoginResponse)
    assert send.pdu.status == 0 and send.pdu.tsih == 1 and send.pdu.statsn == 1
    (send,) = c.receive_pdu(TextRequest(immediate=True, itt=5, data=b"SendTargets=All\0"))
    assert isinstance(send, Send) and isinstance(send.pdu, TextResponse) and send.pdu.final
    assert parse_pairs(send.pdu.data) == [
        ("TargetName", "iqn.t:a"),
        ("TargetAddress", "127.0.0.9:3260,3"),
        ("TargetName", "iqn.t:b"),
        ("TargetAddress", "127.0.0.9:3260,3"),
    ]
    send, close = c.receive_pdu(LogoutRequest(itt=6))
    assert isinstance(send, Send) and isinstance(send.pdu, LogoutResponse)
    assert send.pdu.response == 0 and send.pdu.itt == 6
    assert close == Close(Outcome.DISCOVERY_DONE)
    assert c.receive_pdu(NopOut(itt=1)) == []


def test_connection_normal_login_asks_then_redirects() -> None:
    c = _conn()
    keys = [("InitiatorName", "iqn.i:1"), ("TargetName", "iqn.t:a")]
    req = LoginRequest(
        transit=True, csg=Stage.OPERATIONAL, nsg=Stage.FULL_FEATURE, itt=4, data=encode_text(keys)
    )
    assert c.receive_pdu(req) == [Assign("iqn.t:a", "iqn.i:1")]
    send, close = c.assigned("10.0.0.1:3260")
    assert isinstance(send, Send) and isinstance(send.pdu, LoginResponse)
    assert send.pdu.status == 0x0101 and send.pdu.itt == 4
    assert parse_text(send.pdu.data) == {"TargetAddress": "10.0.0.1:3260,3"}
    assert isinstance(close, Close) and close.outcome.value == "redirected"
    assert c.receive_pdu(req) == [] and c.assigned("x:1") == []


def _logged_in_discovery() -> PortalConnection:
    c = _conn()
    keys = encode_text([("InitiatorName", "iqn.i:1"), ("SessionType", "Discovery")])
    req = LoginRequest(transit=True, csg=Stage.OPERATIONAL, nsg=Stage.FULL_FEATURE, data=keys)
    c.receive_pdu(req)
    assert c.phase.value == "full_feature"
    return c


def test_connection_text_request_in_pieces() -> None:
    c = _logged_in_discovery()
    (send,) = c.receive_pdu(TextRequest(final=False, cont=True, itt=3, data=b"SendTar"))
    assert isinstance(send, Send) and isinstance(send.pdu, TextResponse)
    assert not send.pdu.final and send.pdu.data == b"" and send.pdu.ttt != RESERVED_TAG
    (send,) = c.receive_pdu(TextRequest(itt=3, ttt=send.pdu.ttt, data=b"gets=iqn.t:b\0"))
    assert isinstance(send, Send) and isinstance(send.pdu, TextResponse) and send.pdu.final
    assert parse_pairs(send.pdu.data) == [
        ("TargetName", "iqn.t:b"),
        ("TargetAddress", "127.0.0.9:3260,3"),
    ]
    (send,) = c.receive_pdu(TextRequest(itt=4, data=b"Foo=1\0"))
    assert isinstance(send, Send) and isinstance(send.pdu, TextResponse)
    assert parse_text(send.pdu.data) == {"Foo": "NotUnderstood"}


def test_connection_login_pdus_are_bounded() -> None:
    c = _conn()
    keys = encode_text([("InitiatorName", "iqn.i:1"), ("SessionType", "Discovery")])
    actions: list[Any] = []
    for _ in range(100):
        actions = c.receive_pdu(
            LoginRequest(csg=Stage.OPERATIONAL, nsg=Stage.OPERATIONAL, data=keys)
        )
        if isinstance(actions[-1], Close):
            break
    send, close = actions
    assert isinstance(send, Send) and isinstance(send.pdu, LoginResponse)
    assert send.pdu.status == 0x0200 and close == Close(Outcome.INITIATOR_ERROR)


KEY_POOL = {
    "InitiatorName": st.sampled_from(["iqn.i:1", "", "a b", "x" * 300]),
    "TargetName": st.sampled_from(["iqn.t:a", "iqn.t:zz", ""]),
    "SessionType": st.sampled_from(["Normal", "Discovery", "Other"]),
    "AuthMethod": st.sampled_from(["None", "CHAP", "CHAP,None"]),
    "HeaderDigest": st.sampled_from(["None", "CRC32C", "CRC32C,None"]),
    "MaxRecvDataSegmentLength": st.sampled_from(["512", "262144", "0", "0x1000", "x"]),
    "MaxBurstLength": st.sampled_from(["512", "16777216", "-1"]),
    "InitialR2T": st.sampled_from(["Yes", "No", ""]),
    "X-foo": st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=5),
}
logins_with_keys = st.builds(
    lambda flags, keys, itt: LoginRequest(**flags, itt=itt, data=encode_text(keys)),
    login_flags(),
    st.dictionaries(st.sampled_from(sorted(KEY_POOL)), st.just(""), max_size=6).flatmap(
        lambda d: st.fixed_dictionaries({k: KEY_POOL[k] for k in d})
    ),
    u32,
)
connection_inputs = st.one_of(
    logins_with_keys,
    initiator_pdus,
    st.builds(lambda: TextRequest(immediate=True, data=b"SendTargets=All\0")),
    st.builds(lambda m: FramingError(m, bytes(48)), st.text(max_size=3)),
)


@FUZZ
@given(st.lists(connection_inputs, max_size=8))
def test_connection_never_raises(inputs: list[Any]) -> None:
    """Any sequence of PDUs (and errors) gives actions, never an exception."""
    c = _conn()
    closed = False
    for item in inputs:
        error = isinstance(item, ProtocolError)
        actions = c.receive_error(item) if error else c.receive_pdu(item)
        if actions and isinstance(actions[-1], Assign):
            actions = actions[:-1] + c.refused(LoginStatus.NOT_FOUND, Outcome.NOT_FOUND)
        for a in actions:
            assert not closed, "nothing after Close"
            closed = isinstance(a, Close)
            if isinstance(a, Send):
                assert decode(encode(a.pdu), Role.TARGET) == a.pdu
    if not closed:
        assert c.timed_out() or c.phase.value == "closed"
