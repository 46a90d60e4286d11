"""SGIP 1.2 codec: round trips of every PDU, byte-exact vectors worked out by hand from the
specification's field tables, strict decoding with the specification's error codes."""
from __future__ import annotations

import struct
import time

from hypothesis import given, settings, strategies as st

from proxyd.links import fixed
from proxyd.links.sgip import pdu as G

from .codec_strategies import pdu as any_pdu

SEQS = st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF),
                 st.integers(0, 0xFFFFFFFF))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(G.CODEC.classes)).flatmap(
    lambda cid: any_pdu(G.CODEC.classes[cid], SEQS)))
def test_round_trip_every_pdu(p):
    data = p.encode()
    assert struct.unpack(">I", data[:4])[0] == len(data)
    assert G.decode(data) == p


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from([G.Unbind(seq=(1, 2, 3)), G.BindResp(seq=(4, 5, 6)),
                                 G.ReportResp(seq=(7, 8, 9), result=1)]),
                min_size=1, max_size=6), st.integers(1, 50))
def test_framer_any_chunking(pdus, chunk):
    stream = b"".join(p.encode() for p in pdus)
    framer = G.CODEC.framer()
    frames = []
    for i in range(0, len(stream), chunk):
        frames += framer.feed(stream[i:i + chunk])
    assert [G.decode_body(c, s, b) for c, s, b in frames] == pdus


# --- vectors -----------------------------------------------------------------------------------

NODE = 3075512345       # 3.3: an SP is 3AAAAQQQQQ: area code 0755, corp code 12345
STAMP = 1120203225      # 3.4: 20 November 20:32:25 is mmddhhmmss = 1120203225


def test_sequence_number_vector():
    t = time.mktime((2026, 11, 20, 20, 32, 25, 0, 0, -1))
    seq = G.Sequencer(NODE, start=41).next(t)
    assert seq == (NODE, STAMP, 42)
    # an Unbind carries nothing but the header: length, command, the three integers
    assert G.Unbind(seq=seq).encode().hex() == (
        "00000014" "00000002" "b7509819" "42c4f1d9" "0000002a")
    assert G.seq_text(seq) == b"307551234511202032250000000042"


def test_sequencer_counter_wraps():
    s = G.Sequencer(1, start=0xFFFFFFFF)
    assert s.next(0).counter == 0


def test_bind_vector():
    bind = G.Bind(seq=(NODE, STAMP, 1), login_type=G.LOGIN_SP_TO_SMG, login_name=b"sp01",
                  login_password=b"pw")
    z = lambda n: "00" * n  # noqa: E731
    assert bind.encode().hex() == (
        "0000003d" "00000001" "b7509819" "42c4f1d9" "00000001"   # 20 + 41 octets
        "01" "73703031" + z(12) + "7077" + z(14) + z(8))


def test_long_message_submit_vector():
    udh = bytes.fromhex("050003a70201")
    sub = G.Submit(seq=(NODE, STAMP, 2), sp_number=b"10655", charge_number=b"0" * 21,
                   user_numbers=(b"8613001125453",), corp_id=b"12345",
                   service_type=b"NEWS", fee_type=2, fee_value=b"10", given_value=b"0",
                   morelate_to_mt_flag=2, priority=0, report_flag=1, tp_udhi=1,
                   message_coding=8, message_content=udh + "你好".encode("utf-16-be"))
    z = lambda n: "00" * n  # noqa: E731
    body = ("3130363535" + z(16) +                   # SPNumber "10655"
            "30" * 21 +                              # ChargeNumber: 21 zeros, the SP pays
            "01" "38363133303031313235343533" + z(8) +   # UserCount 1, UserNumber
            "3132333435" +                           # CorpId "12345"
            "4e455753" + z(6) +                      # ServiceType "NEWS"
            "02" +                                   # FeeType: per message
            "3130" + z(4) + "30" + z(5) +            # FeeValue "10", GivenValue "0"
            "00" "02" "00" +                         # AgentFlag, MorelatetoMTFlag, Priority
            z(16) + z(16) +                          # ExpireTime, ScheduleTime
            "01" "00" "01" "08" "00" +               # ReportFlag, TP_pid, TP_udhi, UCS2, type
            "0000000a" "050003a70201" "4f60597d" +   # MessageLength 10, UDH + text
            z(8))                                    # Reserve
    length = 20 + len(body) // 2
    assert sub.encode().hex() == ("%08x" % length + "00000003" + "b7509819" "42c4f1d9"
                                  "00000002" + body)
    assert G.decode(sub.encode()) == sub


def test_report_vector():
    rep = G.Report(seq=(2075500001, STAMP, 9), submit_node=NODE, submit_stamp=STAMP,
                   submit_counter=2, report_type=0, user_number=b"8613001125453",
                   state=G.STATE_FAILED, error_code=G.UNKNOWN_USER)
    z = lambda n: "00" * n  # noqa: E731
    data = bytes.fromhex(
        "00000040" "00000005" "7bb59de1" "42c4f1d9" "00000009"
        "b7509819" "42c4f1d9" "00000002" "00" "38363133303031313235343533" + z(8) +
        "02" "1d" + z(8))
    assert rep.encode() == data
    got = G.decode(data)
    assert got == rep and G.report_submit_seq(got) == (NODE, STAMP, 2)


# --- strict decoding ----------------------------------------------------------------------------

def _bad(data):
    got = G.decode(data)
    assert isinstance(got, fixed.BadPdu), got
    return got


def test_bad_values_get_the_specification_error():
    bind = G.Bind(seq=(1, 2, 3), login_type=1, login_name=b"a", login_password=b"b").encode()
    bad = _bad(bind[:20] + b"\x07" + bind[21:])
    assert bad.error == G.BAD_LOGIN_TYPE and "login_type" in bad.message
    assert bad.seq == (1, 2, 3)
    sub = G.Submit(seq=(1, 2, 3), sp_number=b"1", user_numbers=(b"86130",),
                   message_content=b"x")
    body = G.CODEC.encode_body(sub)
    assert _bad(G.frame(G.SUBMIT, (1, 2, 3), G.CODEC.encode_body(
        sub._replace(user_numbers=())))).error == G.BAD_NUMBER
    assert _bad(G.frame(G.SUBMIT, (1, 2, 3), G.CODEC.encode_body(
        sub._replace(message_content=b"x" * 161)))).error == G.BAD_LENGTH
    b = bytearray(body)
    b[len(body) - 8 - 1 - 4 - 5] = 9                   # ReportFlag: 0..3
    bad = _bad(G.frame(G.SUBMIT, (1, 2, 3), bytes(b)))
    assert bad.error == G.BAD_PARAMETER and "report_flag" in bad.message


def test_report_state_and_structure():
    good = G.Report(seq=(1, 2, 3), user_number=b"86130", state=1).encode()
    state_at = 20 + 12 + 1 + 21
    bad = _bad(good[:state_at] + b"\x03" + good[state_at + 1:])
    assert bad.error == G.BAD_PARAMETER and "state" in bad.message
    bad = _bad(G.frame(G.REPORT, (1, 2, 3), good[20:-4]))
    assert "reserve" in bad.message
    bad = _bad(G.frame(G.UNBIND, (1, 2, 3), b"\0\0"))
    assert "after the last field" in bad.message
    # MessageLength larger than the PDU
    d = G.Deliver(seq=(1, 2, 3), user_number=b"8613", sp_number=b"1065",
                  message_content=b"TD").encode()
    at = 20 + 21 + 21 + 3
    bad = _bad(d[:at] + struct.pack(">I", 1000) + d[at + 4:])
    assert bad.error == G.BAD_LENGTH and "message_content" in bad.message


def test_unknown_command_and_framing():
    got = G.decode(G.frame(0x6, (1, 2, 3), b"x"))
    assert isinstance(got, fixed.UnknownPdu) and got.seq == (1, 2, 3)
    try:
        G.CODEC.framer().feed(struct.pack(">IIIII", 5000, 3, 1, 2, 3))
    except fixed.FramingError as e:
        assert "over the limit of 4096" in str(e)
    else:
        raise AssertionError("no FramingError")


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=21), st.binary(max_size=21), st.binary(max_size=21),
       st.binary(max_size=5), st.integers(0, 4), st.integers(0, 9), st.integers(0, 3),
       st.integers(0, 1), st.sampled_from([0, 4, 8, 15]), st.binary(max_size=160))
def test_the_fast_submit_encoder_is_the_codec(sp, charge, user, corp, fee, prio, flag, udhi,
                                              coding, content):
    strip = lambda b: b.rstrip(b"\0")  # noqa: E731
    sp, charge, user, corp = map(strip, (sp, charge, user, corp))
    body = G.submit_body(sp, charge, user, corp, b"SVC", fee, b"10", prio, b"", b"", flag,
                         0, udhi, coding, content)
    assert body == G.CODEC.encode_body(G.Submit(
        (0, 0, 0), sp, charge, (user,), corp, b"SVC", fee, b"10", b"0", 0, 2, prio, b"", b"",
        flag, 0, udhi, coding, 0, content, b""))
