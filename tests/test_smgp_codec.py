"""SMGP 3.0 codec: round trips of every PDU, byte-exact vectors worked out by hand from the
specification's field tables, strict decoding with the specification's status codes."""
from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st

from proxyd.links import fixed
from proxyd.links.smgp import pdu as M

from .codec_strategies import pdu as any_pdu


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(M.CODEC.classes)).flatmap(
    lambda cid: any_pdu(M.CODEC.classes[cid], st.integers(0, 0xFFFFFFFF))))
def test_round_trip_every_pdu(p):
    data = p.encode()
    assert struct.unpack(">I", data[:4])[0] == len(data)
    assert M.decode(data) == p


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from([M.ActiveTest(seq=1), M.ExitResp(seq=2),
                                 M.SubmitResp(seq=3, msg_id=b"\x01" * 10, status=36)]),
                min_size=1, max_size=6), st.integers(1, 40))
def test_framer_any_chunking(pdus, chunk):
    stream = b"".join(p.encode() for p in pdus)
    framer = M.CODEC.framer()
    frames = []
    for i in range(0, len(stream), chunk):
        frames += framer.feed(stream[i:i + chunk])
    assert [M.decode_body(c, s, b) for c, s, b in frames] == pdus
    assert framer.buffered == 0


# --- vectors -----------------------------------------------------------------------------------

SECRET = b"s3cret"
TS = 0x11F0E540         # 6.2.4: 1 March 00:00:00 is 0301000000 = 0x11F0E540
# md5 of "10001234" + 7 NULs + "s3cret" + "0301000000", computed outside Python (md5sum)
AUTH_CLIENT = bytes.fromhex("00c3de337bea14a25d22d8886cb12d60")
# md5 of 00000000 (Status) + AUTH_CLIENT + "s3cret"
AUTH_SERVER = bytes.fromhex("c0e77f39dd071a011ec249199795f119")


def test_login_vector():
    assert TS == 301000000
    assert M.authenticator_client(b"10001234", SECRET, TS) == AUTH_CLIENT
    assert M.authenticator_server(0, AUTH_CLIENT, SECRET) == AUTH_SERVER
    login = M.Login(seq=7, client_id=b"10001234", authenticator=AUTH_CLIENT,
                    login_mode=M.MODE_TRANSMIT, timestamp=TS, version=0x30)
    expected = (
        "0000002a" "00000001" "00000007"          # PacketLength 42, Login, SequenceID 7
        "3130303031323334"                        # ClientID "10001234"
        + AUTH_CLIENT.hex() +                     # AuthenticatorClient
        "02"                                      # LoginMode: transmit
        "11f0e540"                                # TimeStamp
        "30")                                     # ClientVersion 3.0
    assert login.encode().hex() == expected
    assert M.decode(bytes.fromhex(expected)) == login


def test_timestamp_is_mmddhhmmss_as_decimal():
    import time
    t = time.mktime((2026, 3, 1, 0, 0, 0, 0, 0, -1))
    assert M.timestamp(t) == TS


def test_msg_id_vector():
    # 6.2.26: gateway 010061, 16 January 17:00, counter 012345
    mid = M.make_msg_id("010061", 1161700, 12345)
    assert mid == bytes.fromhex("01006101161700012345")
    assert M.msg_id_text(mid) == b"01006101161700012345"


def test_long_message_submit_vector():
    udh = bytes.fromhex("050003a70201")
    text = "你好".encode("utf-16-be")
    sub = M.Submit(seq=0x10, msg_type=M.MSG_MT, need_report=1, priority=1,
                   service_id=b"PC2P", fee_type=b"01", fee_code=b"5", msg_format=8,
                   src_term_id=b"1181234", dest_term_ids=(b"13312345678",),
                   msg_content=udh + text,
                   tlvs=((M.TP_UDHI, b"\x01"), (M.PK_TOTAL, b"\x02"),
                         (M.PK_NUMBER, b"\x01")))
    z = lambda n: "00" * n  # noqa: E731
    body = ("06" "01" "01"                                  # MsgType MT, NeedReport, Priority
            "50433250" + z(6) +                             # ServiceID "PC2P"
            "3031"                                          # FeeType "01"
            "35" + z(5) +                                   # FeeCode "5"
            z(6) +                                          # FixedFee
            "08" +                                          # MsgFormat UCS2
            z(17) + z(17) +                                 # ValidTime, AtTime
            "31313831323334" + z(14) +                      # SrcTermID "1181234"
            z(21) +                                         # ChargeTermID
            "01" "3133333132333435363738" + z(10) +         # 1 DestTermID
            "0a" "050003a70201" "4f60597d" +                # MsgLength 10, UDH + text
            z(8) +                                          # Reserve
            "0002" "0001" "01"                              # TP_udhi = 1
            "0009" "0001" "02"                              # PkTotal = 2
            "000a" "0001" "01")                             # PkNumber = 1
    length = 12 + len(body) // 2
    assert sub.encode().hex() == "%08x" % length + "00000002" + "00000010" + body
    back = M.decode(sub.encode())
    assert back == sub
    assert back.tlv(M.PK_TOTAL) == b"\x02" and back.tlv(M.TP_UDHI) == b"\x01"


def test_report_content_round_trip_and_hex_ids():
    mid = bytes.fromhex("01006101161700012345")
    r = M.Report(mid, b"UNDELIV", b"005", b"2612011200", b"2612011201", text=b"hello")
    content = M.report_content(r)
    assert content.startswith(b"id:" + mid + b" sub:001 dlvrd:001 submit date:2612011200")
    assert M.parse_report(content) == r
    # a gateway that writes the id as 20 hex digits
    text_form = b"id:01006101161700012345 sub:001 dlvrd:001 submit_date:2612011200 " \
                b"done_date:2612011201 stat:DELIVRD err:000 text:x"
    got = M.parse_report(text_form)
    assert got.msg_id == mid and got.stat == b"DELIVRD" and got.err == b"000"
    assert got.submit_date == b"2612011200"
    # a raw id whose octets contain ":" and spaces still parses by position
    odd = bytes.fromhex("3a20737461743a20ff00")
    assert M.parse_report(M.report_content(r._replace(msg_id=odd))).msg_id == odd
    assert M.parse_report(b"hello there") is None
    assert M.parse_report(b"id:0123456789 no state here") is None


# --- strict decoding ----------------------------------------------------------------------------

def _submit(**kw):
    base = dict(seq=1, msg_type=6, need_report=0, priority=1, msg_format=15,
                src_term_id=b"1181234", dest_term_ids=(b"13312345678",), msg_content=b"x")
    base.update(kw)
    return M.Submit(**base)


def _bad(data):
    got = M.decode(data)
    assert isinstance(got, fixed.BadPdu), got
    return got


def test_bad_values_get_the_specification_status():
    body = M.CODEC.encode_body(_submit())
    cases = {0: (0x09, M.BAD_MSG_TYPE, "msg_type"), 2: (0x07, M.BAD_PRIORITY, "priority")}
    for offset, (value, status, name) in cases.items():
        b = bytearray(body)
        b[offset] = value
        bad = _bad(M.frame(M.SUBMIT, 9, bytes(b)))
        assert (bad.error, bad.seq) == (status, 9) and name in bad.message
    fmt_at = 3 + 10 + 2 + 6 + 6
    b = bytearray(body)
    b[fmt_at] = 5
    assert _bad(M.frame(M.SUBMIT, 1, bytes(b))).error == M.BAD_MSG_FORMAT


def test_counts_and_lengths():
    too_long = M.CODEC.encode_body(_submit(msg_content=b"x" * 141))   # GB18030: 140 at most
    bad = _bad(M.frame(M.SUBMIT, 1, too_long))
    assert bad.error == M.BAD_MSG_LENGTH and "msg_content" in bad.message
    ascii160 = _submit(msg_format=M.FORMAT_ASCII, msg_content=b"x" * 160)
    assert M.decode(ascii160.encode()) == ascii160
    bad = _bad(M.frame(M.SUBMIT, 1, M.CODEC.encode_body(ascii160._replace(
        msg_content=b"x" * 161))))
    assert bad.error == M.BAD_MSG_LENGTH and "outside 0..160" in bad.message
    no_dest = M.CODEC.encode_body(_submit(dest_term_ids=()))
    assert _bad(M.frame(M.SUBMIT, 1, no_dest)).error == M.BAD_DEST_TERM_ID
    # MsgLength says more than the packet holds
    body = bytearray(M.CODEC.encode_body(_submit(msg_content=b"abc")))
    at = body.index(b"\x03abc")
    body[at] = 100
    bad = _bad(M.frame(M.SUBMIT, 1, bytes(body)))
    assert bad.error == M.BAD_MSG_LENGTH and "exceeds" in bad.message


def test_structure_errors():
    bad = _bad(M.frame(M.LOGIN, 1, b"12345678" + b"\0" * 10))
    assert bad.error == M.BAD_STRUCTURE and "authenticator" in bad.message
    bad = _bad(M.frame(M.ACTIVE_TEST, 1, b"\0"))
    assert bad.error == M.BAD_STRUCTURE and "after the last field" in bad.message
    body = M.CODEC.encode_body(_submit())
    bad = _bad(M.frame(M.SUBMIT, 1, body + b"\x00\x09\x00\x02\x01\x01"))
    assert bad.error == M.BAD_STRUCTURE and "0x0009" in bad.message
    bad = _bad(M.frame(M.SUBMIT, 1, body + b"\x00\x09\x00"))
    assert "truncated TLV" in bad.message
    bad = _bad(M.frame(M.SUBMIT, 1, body + b"\x01\x00\x00\x09ab"))
    assert "exceeds" in bad.message
    login = M.Login(seq=1, client_id=b"a", authenticator=b"\0" * 16, login_mode=2,
                    timestamp=1, version=0x30).encode()
    bad = _bad(login[:12 + 24] + b"\x07" + login[12 + 25:])
    assert "login_mode" in bad.message


def test_unknown_command_and_framing():
    got = M.decode(M.frame(0x00000008, 3, b"abc"))
    assert isinstance(got, fixed.UnknownPdu) and got.seq == 3 and got.body == b"abc"
    framer = M.CODEC.framer(max_pdu_bytes=100)
    ok = M.ActiveTest(seq=1).encode()
    try:
        framer.feed(ok + struct.pack(">III", 5000, 2, 2))
    except fixed.FramingError as e:
        assert "over the limit of 100" in str(e)
        assert [f[0] for f in e.frames] == [M.ACTIVE_TEST]
    else:
        raise AssertionError("no FramingError")
    try:
        M.CODEC.framer().feed(struct.pack(">III", 11, 2, 2))
    except fixed.FramingError as e:
        assert "smaller than the 12-octet header" in str(e)
    else:
        raise AssertionError("no FramingError")


def test_encode_refuses_what_does_not_fit():
    for kw, word in ((dict(src_term_id=b"1" * 22), "src_term_id"),
                     (dict(msg_content=b"x" * 256), "msg_content"),
                     (dict(dest_term_ids=(b"1" * 22,)), "dest_term_ids")):
        try:
            _submit(**kw).encode()
        except ValueError as e:
            assert word in str(e)
        else:
            raise AssertionError(kw)
    try:
        M.SubmitResp(seq=1, msg_id=b"short").encode()
    except ValueError as e:
        assert "msg_id: exactly 10" in str(e)
    else:
        raise AssertionError("short msg_id encoded")


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 1), st.integers(0, 3), st.binary(max_size=10), st.binary(max_size=2),
       st.binary(max_size=6), st.sampled_from(sorted(M.MSG_FORMATS)), st.binary(max_size=17),
       st.binary(max_size=21), st.binary(max_size=21), st.binary(max_size=140),
       st.lists(st.tuples(st.sampled_from([M.TP_UDHI, M.PK_TOTAL]), st.integers(0, 255)),
                max_size=3))
def test_the_fast_submit_encoder_is_the_codec(need, prio, svc, ft, fc, fmt, vt, src, dst,
                                              content, tlvs):
    strip = lambda b: b.rstrip(b"\0")  # noqa: E731
    svc, ft, fc, vt, src, dst = map(strip, (svc, ft, fc, vt, src, dst))
    body = M.submit_body(need, prio, svc, ft, fc, fmt, vt, b"", src, dst, content,
                         b"".join(M.tlv1(t, v) for t, v in tlvs))
    assert body == M.CODEC.encode_body(M.Submit(
        0, M.MSG_MT, need, prio, svc, ft, fc, b"", fmt, vt, b"", src, b"", (dst,), content,
        b"", tuple((t, bytes((v,))) for t, v in tlvs)))
