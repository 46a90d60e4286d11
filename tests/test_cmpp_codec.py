"""The CMPP 3.0 / 2.0 codec: byte-exact vectors worked out from the specification's field
tables, strict decoding with precise errors, hypothesis round trips, and the SMPP part ->
CMPP_SUBMIT and CMPP_DELIVER -> deliver_sm conversions of the link."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.links.cmpp import codec as X
from proxyd.links.cmpp import link as L
from proxyd.links.cmpp.status import report_state, submit_status
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P


def z(s: bytes, n: int) -> bytes:
    """An Octet String field of n octets: the value, NUL-padded on the right."""
    return s + b"\0" * (n - len(s))


# --- byte-exact vectors -----------------------------------------------------------------------
# CMPP_CONNECT of SP 901234, shared secret "secret", at 12-01 08:30:15
TS = 1201083015                     # MMDDHHMMSS as an integer = 0x47971287
AUTH_SRC = bytes.fromhex("6e454c8557e624e02dbc83d601479e20")   # MD5 below, written out
CONNECT_FRAME = bytes.fromhex(
    "00000027"                       # Total_Length 12 + 6 + 16 + 1 + 4 = 39
    "00000001"                       # CMPP_CONNECT
    "00000005") + (                  # Sequence_Id
    b"901234" + AUTH_SRC + b"\x30"   # Source_Addr, AuthenticatorSource, Version 3.0
    + bytes.fromhex("47971287"))     # Timestamp


def test_connect_vector_and_its_digest():
    assert hashlib.md5(b"901234" + b"\0" * 9 + b"secret" + b"1201083015").digest() == AUTH_SRC
    assert X.timestamp(12, 1, 8, 30, 15) == TS
    assert X.authenticator_source(b"901234", b"secret", TS) == AUTH_SRC
    pdu = X.Connect(source_addr=b"901234", authenticator=AUTH_SRC, version=0x30, timestamp=TS)
    assert X.encode(pdu, 5, X.V3) == CONNECT_FRAME
    assert X.decode_frame(X.V3, CONNECT_FRAME) == (X.CONNECT, 5, pdu)


def test_connect_resp_authenticator_ismg_per_version():
    # MD5(Status + AuthenticatorSource + secret): Status is 4 octets in 3.0, 1 in 2.0
    assert X.authenticator_ismg(0, AUTH_SRC, b"secret", X.V3) == bytes.fromhex(
        "19cd6ff2196cb66817ffa9053490c61e")
    assert X.authenticator_ismg(0, AUTH_SRC, b"secret", X.V2) == bytes.fromhex(
        "b473a8a67f232c91309475e616f84512")
    resp = X.ConnectResp(status=0, authenticator=bytes(16), version=0x30)
    assert X.encode_body(resp, X.V3) == b"\0\0\0\0" + bytes(16) + b"\x30"
    assert X.encode_body(resp._replace(version=0x20), X.V2) == b"\0" + bytes(16) + b"\x20"


def test_msg_id_vector():
    # month 12 (bits 64-61), day 1 (60-56), hour 8 (55-51), minute 30 (50-45), second 15
    # (44-39), gateway 1001 (38-17), sequence 7 (16-1):
    #   0xC000000000000000 + 0x0080000000000000 + 0x0020000000000000 + 0x0001E00000000000
    # + 0x000003C000000000 + 0x0000000003E90000 + 7
    assert X.msg_id_pack(12, 1, 8, 30, 15, 1001, 7) == 0xC0A1E3C003E90007
    assert X.msg_id_unpack(0xC0A1E3C003E90007) == (12, 1, 8, 30, 15, 1001, 7)
    with pytest.raises(ValueError, match="Msg_Id month: 16 does not fit 4 bits"):
        X.msg_id_pack(16, 1, 0, 0, 0, 0, 0)


UDH = b"\x05\x00\x03\x2a\x02\x01"       # concatenation, ref 0x2a, 2 parts, part 1
TEXT = b"first half "


def long_submit_body_v3() -> bytes:
    return b"".join((
        b"\0" * 8,                  # Msg_Id (the gateway assigns it)
        b"\x02", b"\x01",           # Pk_total 2, Pk_number 1
        b"\x01", b"\x00",           # Registered_Delivery, Msg_level
        z(b"MTEST", 10),            # Service_Id
        b"\x02",                    # Fee_UserType: the SP pays
        z(b"", 32), b"\x00",        # Fee_terminal_Id, Fee_terminal_type
        b"\x00", b"\x01", b"\x00",  # TP_pId, TP_udhi, Msg_Fmt ASCII
        b"901234",                  # Msg_src
        b"02", z(b"10", 6),         # FeeType, FeeCode
        z(b"", 17), z(b"", 17),     # ValId_Time, At_Time
        z(b"10690001", 21),         # Src_Id: the service code
        b"\x01", z(b"13800138000", 32),   # DestUsr_tl, Dest_terminal_Id
        b"\x00",                    # Dest_terminal_type
        bytes((len(UDH + TEXT),)), UDH + TEXT,   # Msg_Length, Msg_Content
        z(b"", 20)))                # LinkID


def long_submit_body_v2() -> bytes:
    return b"".join((
        b"\0" * 8, b"\x02", b"\x01", b"\x01", b"\x00", z(b"MTEST", 10), b"\x02",
        z(b"", 21),                 # Fee_terminal_Id of 21, no type octet
        b"\x00", b"\x01", b"\x00", b"901234", b"02", z(b"10", 6), z(b"", 17), z(b"", 17),
        z(b"10690001", 21), b"\x01", z(b"13800138000", 21),   # 21-octet terminals
        bytes((len(UDH + TEXT),)), UDH + TEXT,
        z(b"", 8)))                 # Reserve


CFG = SimpleNamespace(msg_src="", sp_id="", system_id="901234", service_id="MTEST",
                      fee_type="02", fee_code="10", fee_user_type=2)


def smpp_part(**kw) -> object:
    f = dict(seq=1, source_addr=b"10690001", destination_addr=b"13800138000",
             esm_class=C.ESM_UDHI, registered_delivery=1, data_coding=0,
             short_message=UDH + TEXT)
    f.update(kw)
    return P.SubmitSm(**f)


@pytest.mark.parametrize("version,body", [(X.V3, long_submit_body_v3()),
                                          (X.V2, long_submit_body_v2())])
def test_long_message_submit_vector(version, body):
    assert len(body) == (8 + 4 + 10 + 1 + 32 + 1 + 3 + 6 + 8 + 34 + 21 + 1 + 32 + 1 + 1 + 17
                         + 20 if version == X.V3 else
                         8 + 4 + 10 + 1 + 21 + 3 + 6 + 8 + 34 + 21 + 1 + 21 + 1 + 17 + 8)
    sub = L.submit_from_part(CFG, smpp_part(), None)
    assert X.encode_body(sub, version) == body
    assert L.SubmitEncoder(CFG, version).encode(smpp_part(), None) == body
    assert X.encode(sub, 9, version) == X.HEADER.pack(12 + len(body), X.SUBMIT, 9) + body
    back = X.decode(version, X.SUBMIT, 9, body)
    assert (back.pk_total, back.pk_number, back.tp_udhi, back.msg_content) == (
        2, 1, 1, UDH + TEXT)


# --- strict decoding ------------------------------------------------------------------------
def test_decode_errors_are_values_naming_the_field():
    body = long_submit_body_v3()
    cases = [
        (X.decode(X.V3, X.SUBMIT, 1, body[:-1]),
         (X.R_LENGTH, "CMPP_SUBMIT: link_id truncated (body of %d octets)" % (len(body) - 1))),
        (X.decode(X.V3, X.SUBMIT, 1, body + b"x"),
         (X.R_LENGTH, "CMPP_SUBMIT: body is %d octets, the fields take %d"
          % (len(body) + 1, len(body)))),
        (X.decode(X.V3, X.SUBMIT, 1, body[:9] + b"\x03" + body[10:]),
         (X.R_STRUCTURE, "CMPP_SUBMIT: Pk_number 3 outside 1..Pk_total 2")),
        (X.decode(X.V3, 0x00000099, 1, b""),
         (X.R_COMMAND, "unknown Command_Id 0x00000099")),
        (X.decode(X.V3, X.ACTIVE_TEST_RESP, 1, b""),
         (X.R_LENGTH, "CMPP_ACTIVE_TEST_RESP: reserved truncated (body of 0 octets)")),
    ]
    for bad, (err, msg) in cases:
        assert isinstance(bad, X.BadPdu) and (bad.error, bad.message) == (err, msg), bad


def test_msg_length_past_the_body_and_bad_msg_fmt():
    body = bytearray(long_submit_body_v3())
    i = len(body) - 20 - len(UDH + TEXT) - 1        # Msg_Length
    body[i] = 200
    bad = X.decode(X.V3, X.SUBMIT, 1, bytes(body))
    assert (bad.error, bad.message) == (X.R_LENGTH, "CMPP_SUBMIT: Msg_Length 200 exceeds the body")
    body = bytearray(long_submit_body_v3())
    body[8 + 4 + 10 + 1 + 32 + 1 + 2] = 7           # Msg_Fmt
    bad = X.decode(X.V3, X.SUBMIT, 1, bytes(body))
    assert bad.message == "CMPP_SUBMIT: Msg_Fmt 7 is not 0, 3, 4, 8 or 15"


def test_a_status_report_must_have_the_report_length():
    d = X.Deliver(msg_id=1, dest_id=b"10690001", src_terminal_id=b"13800138000",
                  registered_delivery=1, msg_content=b"short")
    bad = X.decode(X.V3, X.DELIVER, 3, X.encode_body(d, X.V3))
    assert (bad.error, bad.message) == (
        X.R_LENGTH, "CMPP_DELIVER: a status report's Msg_Content is 71 octets, got 5")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([X.V3, X.V2]), st.sampled_from(sorted(X.PDU_CLASSES)),
       st.binary(max_size=300))
def test_decode_never_raises(version, cid, body):
    out = X.decode(version, cid, 1, body)
    assert isinstance(out, (X.BadPdu, X.PDU_CLASSES[cid]))


# --- round trips ----------------------------------------------------------------------------
_octets = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"x"))


def _field(name: str, kind: tuple) -> st.SearchStrategy:
    k = kind[0]
    if k == "u":
        return st.integers(0, (1 << (8 * kind[1])) - 1)
    if k == "s":
        return _octets.map(lambda b, n=kind[1]: b[:n])
    if k == "b":
        return st.binary(min_size=kind[1], max_size=kind[1])
    if k == "d":
        return st.lists(_octets.map(lambda b, n=kind[1]: b[:n]), min_size=1,
                        max_size=4).map(tuple)
    return st.binary(max_size=255)


@st.composite
def pdus(draw, version: int, cid: int) -> object:
    vals = {name: draw(_field(name, kind)) for name, kind in X.LAYOUTS[version][cid]}
    if cid in (X.SUBMIT, X.DELIVER):
        vals["msg_fmt"] = draw(st.sampled_from(sorted(X.MSG_FMTS)))
        vals["registered_delivery"] = draw(st.integers(0, 1))
        vals["tp_udhi"] = 0
    if cid == X.SUBMIT:
        vals["pk_total"] = draw(st.integers(1, 255))
        vals["pk_number"] = draw(st.integers(1, vals["pk_total"]))
        vals["fee_user_type"] = draw(st.integers(0, 3))
    if cid == X.DELIVER and vals["registered_delivery"]:
        rep = {n: draw(_field(n, k)) for n, k in X.REPORT_LAYOUT[version]}
        vals["msg_content"] = X.encode_report(X.Report(**rep), version)
    return X.PDU_CLASSES[cid](**vals)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_every_pdu_round_trips_in_both_versions(data):
    version = data.draw(st.sampled_from([X.V3, X.V2]))
    cid = data.draw(st.sampled_from(sorted(X.PDU_CLASSES)))
    pdu = data.draw(pdus(version, cid))
    seq = data.draw(st.integers(0, 0xFFFFFFFF))
    frame = X.encode(pdu, seq, version)
    assert X.decode_frame(version, frame) == (cid, seq, pdu)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([X.V3, X.V2]), st.data())
def test_reports_round_trip(version, data):
    rep = X.Report(**{n: data.draw(_field(n, k)) for n, k in X.REPORT_LAYOUT[version]})
    content = X.encode_report(rep, version)
    assert len(content) == X.report_len(version)
    assert X.decode_report(version, content) == rep


def test_encoding_refuses_a_value_longer_than_its_field():
    with pytest.raises(ValueError, match="service_id: at most 10 octets, got 11"):
        X.encode_body(X.Submit(pk_total=1, pk_number=1, service_id=b"x" * 11,
                               dest_terminal_ids=(b"1",)))


# --- what the link converts -------------------------------------------------------------------
def test_text_coding_and_sar_parts_become_cmpp_fields():
    # GSM 7-bit text that is ASCII goes as Msg_Fmt 0; other text as UCS2 (8)
    sub = L.submit_from_part(CFG, smpp_part(esm_class=0, short_message=b"hi"), None)
    assert (sub.msg_fmt, sub.msg_content, sub.pk_total, sub.tp_udhi) == (0, b"hi", 1, 0)
    sub = L.submit_from_part(CFG, smpp_part(esm_class=0, data_coding=3,
                                            short_message="café".encode("latin-1")), None)
    assert (sub.msg_fmt, sub.msg_content) == (8, "café".encode("utf-16-be"))
    # SAR TLVs become a UDH with TP_udhi; a prefix-mode source becomes Src_Id
    sar = smpp_part(esm_class=0, short_message=b"part", tlvs=(
        (C.TAG_SAR_MSG_REF_NUM, b"\x01\x02"), (C.TAG_SAR_TOTAL_SEGMENTS, b"\x03"),
        (C.TAG_SAR_SEGMENT_SEQNUM, b"\x02")))
    sub = L.submit_from_part(CFG, sar, b"1069000155")
    assert (sub.pk_total, sub.pk_number, sub.tp_udhi, sub.src_id) == (3, 2, 1, b"1069000155")
    assert sub.msg_content == b"\x06\x08\x04\x01\x02\x03\x02part"
    with pytest.raises(L.PartRefused) as e:
        L.submit_from_part(CFG, smpp_part(esm_class=0, data_coding=8,
                                          short_message=b"x" * 141), None)
    assert e.value.status == C.STATUS["ESME_RINVMSGLEN"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([X.V3, X.V2]), st.sampled_from([0, 1, 2, 3, 4, 8, 15, 0x11]),
       st.booleans(), st.binary(max_size=160), st.binary(min_size=1, max_size=22),
       st.integers(0, 3), st.one_of(st.none(), st.binary(max_size=22)))
def test_the_fast_encoder_equals_the_codec(version, dc, udhi, payload, dest, reg, source):
    if udhi:
        payload = b"\x05\x00\x03\x07\x03\x02" + payload
    pdu = smpp_part(esm_class=C.ESM_UDHI if udhi else 0, data_coding=dc,
                    short_message=payload, destination_addr=dest.replace(b"\0", b"1"),
                    registered_delivery=reg)
    src = source.replace(b"\0", b"1") if source is not None else None

    def run(f):
        try:
            return f()
        except L.PartRefused as e:
            return ("refused", e.status)

    fast = run(lambda: L.SubmitEncoder(CFG, version).encode(pdu, src))
    slow = run(lambda: X.encode_body(L.submit_from_part(CFG, pdu, src), version))
    assert fast == slow


def test_results_and_stats_map_to_smpp():
    assert [submit_status(r) for r in (0, 8, 10, 13, 99)] == [
        0, C.STATUS["ESME_RTHROTTLED"], C.STATUS["ESME_RINVSRCADR"],
        C.STATUS["ESME_RINVDSTADR"], C.STATUS["ESME_RSUBMITFAIL"]]
    assert report_state(b"DELIVRD") == (2, "DELIVRD", "000")
    assert report_state(b"EXPIRED") == (3, "EXPIRED", "EXPIRED")
    assert report_state(b"MB:0011") == (5, "UNDELIV", "MB:0011")


def test_a_report_becomes_a_receipt_with_the_operator_id():
    rep = X.Report(msg_id=0xC0A1E3C003E90007, stat=b"MB:0011", submit_time=b"2612010830",
                   done_time=b"2612010831", dest_terminal_id=b"13800138000", smsc_sequence=1)
    d = X.Deliver(msg_id=5, dest_id=b"10690001", src_terminal_id=b"13800138000",
                  registered_delivery=1, msg_content=X.encode_report(rep, X.V3))
    r = L.receipt_pdu(d, rep)
    mid = b"%d" % 0xC0A1E3C003E90007
    assert r.esm_class == C.ESM_DELIVERY_RECEIPT and r.source_addr == b"13800138000"
    assert r.short_message == (b"id:" + mid + b" sub:001 dlvrd:000 submit date:2612010830 "
                               b"done date:2612010831 stat:UNDELIV err:MB:0011 text:")
    assert r.tlv(C.TAG_RECEIPTED_MESSAGE_ID) == mid + b"\0"
    assert r.tlv(C.TAG_MESSAGE_STATE) == b"\x05"
    mo = L.mo_pdu(d._replace(registered_delivery=0, msg_fmt=8, msg_content="退订".encode(
        "utf-16-be")))
    assert (mo.esm_class, mo.data_coding, mo.destination_addr) == (0, 8, b"10690001")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_simulators_scan_accepts_exactly_what_decode_accepts(data):
    version = data.draw(st.sampled_from([X.V3, X.V2]))
    pdu = data.draw(pdus(version, X.SUBMIT))
    if data.draw(st.booleans()):
        udh = data.draw(st.binary(max_size=8))
        pdu = pdu._replace(tp_udhi=1, msg_content=(bytes((len(udh),)) + udh
                                                    + pdu.msg_content)[:255])
    body = bytearray(X.encode_body(pdu, version))
    # and sometimes one octet changed, or the body cut or stretched
    how = data.draw(st.sampled_from(["same", "flip", "cut", "grow"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    elif how == "cut":
        body = body[:data.draw(st.integers(0, len(body) - 1))]
    elif how == "grow":
        body += b"\0"
    body = bytes(body)
    full = X.decode(version, X.SUBMIT, 1, body)
    scan = X.scan_submit(version, body)
    if isinstance(full, X.BadPdu):
        assert scan is None
    else:
        assert scan == (full.registered_delivery, full.src_id, full.dest_terminal_ids[0],
                        full.tp_udhi, full.msg_content)
