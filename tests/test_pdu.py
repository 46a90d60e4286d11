"""Property and regression tests for proxyd.smpp.pdu (the sans-IO SMPP 3.4 codec).

Strategies are derived from each class's ``layout`` so every command in PDU_CLASSES is
covered; a new layout kind makes `_field` fail loudly rather than go untested.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

S = C.STATUS
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
HDR = struct.Struct(">IIII")


# --- strategies --------------------------------------------------------------------------------

def cstr(maxlen: int) -> st.SearchStrategy[bytes]:
    """Contents of a C-octet string of at most maxlen octets including the NUL."""
    return st.binary(max_size=maxlen - 1).map(lambda b: b.replace(b"\0", b"\x01"))


u8 = st.integers(0, 255)
u32 = st.integers(0, 0xFFFFFFFF)
KNOWN_TAGS = sorted(C.TLV.values())
tags = st.one_of(st.sampled_from(KNOWN_TAGS), st.integers(0, 0xFFFF))
tlv = st.tuples(tags, st.binary(max_size=300))
tlvs = st.lists(tlv, max_size=4).map(tuple)

dest = st.one_of(st.tuples(st.just(1), u8, u8, cstr(21)),
                 st.tuples(st.just(2), cstr(21)))
unsucc = st.tuples(u8, u8, cstr(21), u32)


def _field(kind: tuple) -> st.SearchStrategy:
    k = kind[0]
    if k == "c":
        return cstr(kind[1])
    if k == "b":
        return u8
    if k == "I":
        return u32
    if k == "sm":
        return st.binary(max_size=254)
    if k == "dests":
        return st.lists(dest, max_size=6).map(tuple)
    if k == "unsucc":
        return st.lists(unsucc, max_size=6).map(tuple)
    raise AssertionError("no strategy for layout kind %r" % (kind,))


def pdu_of(cls: type) -> st.SearchStrategy:
    fields = {name: _field(kind) for name, kind in cls.layout}
    return st.builds(cls, seq=u32, status=st.one_of(st.just(0), u32), tlvs=tlvs, **fields)


ALL_CLASSES = sorted(P.PDU_CLASSES.values(), key=lambda c: c.command_id)
any_pdu = st.sampled_from(ALL_CLASSES).flatmap(pdu_of)


def same(a, b) -> bool:
    """Equality that also checks the command (PDU tuples of equal fields compare equal)."""
    return type(a) is type(b) and tuple(a) == tuple(b)


def sm_body(**kw) -> bytes:
    """The body of a submit_sm built by our encoder (for hand-made malformations)."""
    return P.encode(P.SubmitSm(seq=1, **kw))[16:]


def frame(cid: int, body: bytes, seq: int = 7, status: int = 0) -> bytes:
    return P.frame(cid, status, seq, body)


# --- round trips -------------------------------------------------------------------------------

def test_every_command_has_a_class_and_layout():
    assert set(P.PDU_CLASSES) == set(P.LAYOUTS)
    for cid, cls in P.PDU_CLASSES.items():
        assert cls.command_id == cid
        assert cls().command_name == C.COMMAND_NAMES[cid]
        for _, kind in cls.layout:
            _field(kind)  # a strategy exists for every kind in use


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_round_trip_every_pdu_type(cls, data):
    pdu = data.draw(pdu_of(cls))
    wire = P.encode(pdu)
    length, cid, status, seq = HDR.unpack_from(wire)
    assert (length, cid, status, seq) == (len(wire), cls.command_id, pdu.status, pdu.seq)
    got = P.decode(wire)
    assert same(got, pdu), (got, pdu)
    # byte-exact: re-encoding what we decoded gives the same octets (unknown TLVs included)
    assert P.encode(got) == wire
    assert pdu.encode() == wire


@SETTINGS
@given(pdus=st.lists(any_pdu, min_size=1, max_size=12), data=st.data())
def test_framer_splits_a_stream_at_any_chunk_boundary(pdus, data):
    stream = b"".join(P.encode(p) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    framer = P.Framer()
    frames = []
    for chunk in chunks:
        frames.extend(framer.feed(chunk))
    assert framer.buffered == 0
    assert len(frames) == len(pdus)
    for (cid, status, seq, body), pdu in zip(frames, pdus):
        assert (cid, status, seq) == (pdu.command_id, pdu.status, pdu.seq)
        assert same(P.decode_body(cid, status, seq, body), pdu)


@SETTINGS
@given(pdus=st.lists(any_pdu, min_size=1, max_size=6))
def test_framer_one_byte_at_a_time(pdus):
    stream = b"".join(P.encode(p) for p in pdus)
    dec = P.Decoder()
    got = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i:i + 1]))
    assert len(got) == len(pdus)
    assert all(same(g, p) for g, p in zip(got, pdus))


@SETTINGS
@given(cid=st.sampled_from(sorted(P.PDU_CLASSES) + [0, 0x99, 0x80000099, 0xFFFFFFFF]),
       status=u32, seq=u32, body=st.binary(max_size=200))
def test_decode_body_never_raises(cid, status, seq, body):
    got = P.decode_body(cid, status, seq, body)
    assert got.seq == seq and got.status == status and got.command_id == cid
    if isinstance(got, P.BadPdu):
        assert got.error in C.STATUS_NAME, got
    elif not isinstance(got, P.UnknownPdu):
        # whatever decodes must re-encode to a body that decodes to the same PDU
        assert same(P.decode(P.encode(got)), got)


def _mutations():
    """A valid submit_sm body, then truncated, overwritten, or with bytes inserted."""
    base = st.builds(
        sm_body, service_type=cstr(6), source_addr=cstr(21), destination_addr=cstr(21),
        schedule_delivery_time=cstr(17), validity_period=cstr(17),
        short_message=st.binary(max_size=40), tlvs=st.lists(tlv, max_size=2).map(tuple))

    def mutate(body, data):
        op = data.draw(st.sampled_from(["cut", "set", "insert", "none"]))
        if op == "none" or not body:
            return body
        i = data.draw(st.integers(0, len(body) - 1))
        if op == "cut":
            return body[:i]
        b = bytes([data.draw(st.sampled_from([0, 1, 0x30, 0xFF]))])
        if op == "set":
            return body[:i] + b + body[i + 1:]
        return body[:i] + b * data.draw(st.integers(1, 30)) + body[i:]
    return base, mutate


@SETTINGS
@given(data=st.data())
def test_submit_sm_fast_path_agrees_with_generic_decoder(data):
    base, mutate = _mutations()
    body = mutate(data.draw(base), data)
    for cls in (P.SubmitSm, P.DeliverSm):
        fast = P.decode_body(cls.command_id, 0, 9, body)
        try:
            slow = P._decode_generic(cls, 9, 0, body)
        except P._DecodeError as e:
            assert isinstance(fast, P.BadPdu), fast
            assert fast.error == e.error, (fast, e)
        else:
            assert same(fast, slow), (fast, slow)


# --- framing errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 15])
def test_command_length_below_header_is_a_framing_error(length):
    framer = P.Framer()
    with pytest.raises(P.FramingError) as e:
        framer.feed(HDR.pack(length, C.ENQUIRE_LINK, 0, 42))
    assert e.value.seq == 42
    assert framer.buffered == 0


def test_command_length_checked_as_soon_as_the_header_is_complete():
    framer = P.Framer(max_pdu_bytes=1000)
    head = HDR.pack(5000, C.SUBMIT_SM, 0, 3)
    assert framer.feed(head[:15]) == []
    with pytest.raises(P.FramingError):
        framer.feed(head[15:])


def test_command_length_over_max_pdu_bytes_is_a_framing_error():
    body = b"x" * 84
    ok = P.frame(C.GENERIC_NACK, 0, 1, body[:84])   # exactly 100 octets
    assert len(ok) == 100
    framer = P.Framer(max_pdu_bytes=100)
    assert framer.feed(ok) == [(C.GENERIC_NACK, 0, 1, body)]
    with pytest.raises(P.FramingError) as e:
        framer.feed(P.frame(C.GENERIC_NACK, 0, 2, body + b"y"))
    assert e.value.seq == 2
    assert "max_pdu_bytes" in str(e.value)


def test_framing_error_after_good_pdus_in_one_chunk_does_not_lose_them():
    good = P.encode(P.EnquireLink(seq=1)) + P.encode(P.Unbind(seq=2))
    bad = HDR.pack(3, C.ENQUIRE_LINK, 0, 3)
    frames = []
    framer = P.Framer()
    for b in (good + bad)[:-1]:                     # byte by byte: both frames delivered
        frames.extend(framer.feed(bytes([b])))
    assert [f[2] for f in frames] == [1, 2]
    with pytest.raises(P.FramingError):
        framer.feed(bad[-1:])


def test_framing_error_carries_the_frames_completed_before_it():
    good = P.encode(P.EnquireLink(seq=1)) + P.encode(P.Unbind(seq=2))
    bad = HDR.pack(3, C.ENQUIRE_LINK, 0, 3)
    with pytest.raises(P.FramingError) as e:
        P.Framer().feed(good + bad)
    assert [f[2] for f in getattr(e.value, "frames", [])] == [1, 2]


def test_decode_requires_exactly_one_whole_pdu():
    wire = P.encode(P.EnquireLink(seq=5))
    with pytest.raises(P.FramingError):
        P.decode(wire[:15])
    with pytest.raises(P.FramingError):
        P.decode(wire + b"\0")
    with pytest.raises(P.FramingError):
        P.decode(wire[:-1] if len(wire) > 16 else HDR.pack(17, C.ENQUIRE_LINK, 0, 5))


# --- body errors -------------------------------------------------------------------------------

def bad(cid: int, body: bytes, seq: int = 7, status: int = 0) -> P.BadPdu:
    got = P.decode(frame(cid, body, seq, status))
    assert isinstance(got, P.BadPdu), got
    assert (got.command_id, got.seq, got.status) == (cid, seq, status)
    return got


@pytest.mark.parametrize("cid,body,error", [
    # string that runs to the end of the body without a NUL
    (C.BIND_TRANSMITTER, b"sys", S["ESME_RINVPARLEN"]),
    (C.SUBMIT_SM, b"CMT", S["ESME_RINVPARLEN"]),
    (C.SUBMIT_SM, b"\0\x01\x01" + b"123", S["ESME_RINVPARLEN"]),
    (C.QUERY_SM, b"abc", S["ESME_RINVPARLEN"]),
    # the body ends exactly where a string should start: the PDU is too short
    (C.SUBMIT_SM, b"\0\x01\x01", S["ESME_RINVCMDLEN"]),
    (C.SUBMIT_SM_RESP, b"", None),  # empty body: allowed, checked elsewhere
    (C.BIND_TRANSMITTER, b"", S["ESME_RINVCMDLEN"]),
    (C.OUTBIND, b"sys\0", S["ESME_RINVCMDLEN"]),
])
def test_unterminated_c_string(cid, body, error):
    if error is None:
        assert not isinstance(P.decode(frame(cid, body)), P.BadPdu)
        return
    got = bad(cid, body)
    assert got.error == error, got
    assert "not terminated" in got.message


@pytest.mark.parametrize("cls,field,maxlen,error", [
    (P.SubmitSm, "source_addr", 21, "ESME_RINVSRCADR"),
    (P.SubmitSm, "destination_addr", 21, "ESME_RINVDSTADR"),
    (P.DeliverSm, "source_addr", 21, "ESME_RINVSRCADR"),
    (P.DeliverSm, "destination_addr", 21, "ESME_RINVDSTADR"),
    (P.SubmitSm, "service_type", 6, "ESME_RINVPARLEN"),
    (P.SubmitSm, "schedule_delivery_time", 17, "ESME_RINVPARLEN"),
    (P.SubmitSm, "validity_period", 17, "ESME_RINVPARLEN"),
    (P.DataSm, "source_addr", 65, "ESME_RINVSRCADR"),
    (P.DataSm, "destination_addr", 65, "ESME_RINVDSTADR"),
    (P.QuerySm, "message_id", 65, "ESME_RINVMSGID"),
    (P.CancelSm, "message_id", 65, "ESME_RINVMSGID"),
    (P.CancelSm, "destination_addr", 21, "ESME_RINVDSTADR"),
    (P.ReplaceSm, "source_addr", 21, "ESME_RINVSRCADR"),
    (P.SubmitSmResp, "message_id", 65, "ESME_RINVMSGID"),
    (P.BindTransceiver, "system_id", 16, "ESME_RINVPARLEN"),
    (P.BindTransceiver, "address_range", 41, "ESME_RINVPARLEN"),
    (P.AlertNotification, "source_addr", 65, "ESME_RINVSRCADR"),
])
def test_over_long_c_string_names_the_status(cls, field, maxlen, error):
    # build a valid PDU with a maximal value, then lengthen that value by one octet on the wire
    at_max = cls(seq=7, **{field: b"A" * (maxlen - 1)})
    assert same(P.decode(P.encode(at_max)), at_max)
    wire = P.encode(at_max)
    marker = b"A" * (maxlen - 1) + b"\0"
    i = wire.index(marker)
    body = (wire[:i] + b"A" + wire[i:])[16:]
    got = bad(cls.command_id, body)
    assert got.error == S[error], got
    assert field in got.message
    with pytest.raises(ValueError):  # and the encoder refuses it
        P.encode(cls(seq=7, **{field: b"A" * maxlen}))


@pytest.mark.parametrize("cls", [P.SubmitSm, P.DeliverSm, P.ReplaceSm, P.SubmitMulti])
def test_sm_length_past_the_end(cls):
    body = P.encode(cls(seq=7, short_message=b"hello"))[16:]
    got = bad(cls.command_id, body[:-1])
    assert got.error == S["ESME_RINVMSGLEN"], got
    assert "sm_length" in got.message


@pytest.mark.parametrize("cls", [P.SubmitSm, P.DeliverSm, P.DataSm, P.EnquireLink,
                                 P.SubmitSmResp, P.BindReceiverResp])
@pytest.mark.parametrize("tail", [b"\x04", b"\x04\x24", b"\x04\x24\x00"])
def test_truncated_tlv_header(cls, tail):
    body = P.encode(cls(seq=7, tlvs=((0x0204, b"\x00\x01"),)))[16:] + tail
    got = bad(cls.command_id, body)
    assert got.error == S["ESME_RINVOPTPARSTREAM"], got
    assert "truncated TLV header" in got.message


@pytest.mark.parametrize("cls", [P.SubmitSm, P.DeliverSm, P.DataSm, P.EnquireLink,
                                 P.SubmitSmResp, P.DataSmResp])
def test_tlv_length_past_the_end(cls):
    body = P.encode(cls(seq=7))[16:] + struct.pack(">HH", 0x0424, 10) + b"123456789"
    got = bad(cls.command_id, body)
    assert got.error == S["ESME_RINVOPTPARSTREAM"], got
    assert "0x0424" in got.message


def test_submit_multi_errors():
    ok = P.SubmitMulti(seq=7, dest_addresses=((1, 1, 1, b"123"), (2, b"list")))
    body = P.encode(ok)[16:]
    i = body.index(b"\x02\x01\x01\x01123\0")
    assert bad(C.SUBMIT_MULTI, body[:i] + b"\x02\x03" + body[i + 2:]).error == \
        S["ESME_RINVDESTFLAG"]
    assert bad(C.SUBMIT_MULTI, body[:i] + b"\x03" + body[i + 1:]).error in (
        S["ESME_RINVDESTFLAG"], S["ESME_RINVCMDLEN"], S["ESME_RINVPARLEN"])
    assert bad(C.SUBMIT_MULTI, body[:i + 1]).error == S["ESME_RINVNUMDESTS"]


def test_missing_integer_fields_are_command_length_errors():
    body = P.encode(P.BindTransmitter(seq=7, system_id=b"a", password=b"b"))[16:]
    got = bad(C.BIND_TRANSMITTER, body[:body.index(b"b\0") + 3])  # up to system_type NUL
    assert got.error == S["ESME_RINVCMDLEN"]
    assert "interface_version" in got.message


# --- encoder validation ------------------------------------------------------------------------

@pytest.mark.parametrize("pdu", [
    P.SubmitSm(source_addr=b"a\0b"),
    P.SubmitSm(short_message=b"x" * 256),
    P.SubmitSm(esm_class=256),
    P.BindTransmitter(password=b"123456789"),
])
def test_encoder_rejects_what_cannot_round_trip(pdu):
    with pytest.raises(ValueError):
        P.encode(pdu)


def test_short_message_of_255_octets_round_trips():
    pdu = P.SubmitSm(seq=1, short_message=bytes(range(255)))
    assert same(P.decode(P.encode(pdu)), pdu)


@pytest.mark.parametrize("pdu", [
    P.SubmitMulti(dest_addresses=((1, 1, 1, b"1" * 21),)),
    P.SubmitMulti(dest_addresses=((1, 1, 1, b"12\x0034"),)),
    P.SubmitMulti(dest_addresses=((2, b"L" * 21),)),
    P.SubmitMulti(dest_addresses=((3, b"list"),)),
    P.SubmitMultiResp(message_id=b"m", unsuccess_smes=((1, 1, b"9" * 21, 0x0B),)),
], ids=["long-addr", "nul-addr", "long-dl", "flag3", "long-unsucc"])
def test_encoder_rejects_bad_submit_multi_addresses(pdu):
    with pytest.raises(ValueError):
        P.encode(pdu)


# --- regressions measured in smpp.twisted -------------------------------------------------------

def test_message_payload_after_a_longer_one():
    long = P.SubmitSm(seq=1, tlvs=((C.TAG_MESSAGE_PAYLOAD, b"L" * 1000),))
    short = P.SubmitSm(seq=2, tlvs=((C.TAG_MESSAGE_PAYLOAD, b"abc"),))
    first = P.decode(P.encode(long))
    second = P.decode(P.encode(short))
    assert first.tlv(C.TAG_MESSAGE_PAYLOAD) == b"L" * 1000
    assert second.tlv(C.TAG_MESSAGE_PAYLOAD) == b"abc"
    assert second.tlvs == ((C.TAG_MESSAGE_PAYLOAD, b"abc"),)
    # same through one connection's decoder, and in the other order
    got = P.Decoder().feed(P.encode(long) + P.encode(short) + P.encode(long))
    assert [g.tlv(C.TAG_MESSAGE_PAYLOAD) for g in got] == [b"L" * 1000, b"abc", b"L" * 1000]


def test_deliver_sm_resp_with_a_message_id_decodes():
    got = P.decode(frame(C.DELIVER_SM_RESP, b"abc123\0", seq=9))
    assert same(got, P.DeliverSmResp(seq=9, message_id=b"abc123"))
    got = P.decode(frame(C.DELIVER_SM_RESP, b"\0", seq=9))
    assert same(got, P.DeliverSmResp(seq=9))


def test_unknown_command_id_then_the_next_pdu():
    unknown = frame(0x00000099, b"\x01\x02\x03", seq=77)
    stream = unknown + P.encode(P.EnquireLink(seq=78)) + frame(0x80000200, b"", seq=79)
    got = P.Decoder().feed(stream)
    assert isinstance(got[0], P.UnknownPdu)
    assert (got[0].command_id, got[0].seq, got[0].body) == (0x99, 77, b"\x01\x02\x03")
    assert same(got[1], P.EnquireLink(seq=78))
    assert isinstance(got[2], P.UnknownPdu) and got[2].seq == 79
    assert "0x00000099" in repr(got[0])


def test_sequence_wraps_to_one():
    s = P.Sequence(0x7FFFFFFE)
    assert s.next() == 0x7FFFFFFF
    assert s.next() == 1
    assert s.next() == 2
    s = P.Sequence()
    assert [s.next() for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize("cid", [C.SUBMIT_SM_RESP, C.DATA_SM_RESP, C.DELIVER_SM_RESP,
                                 C.BIND_RECEIVER_RESP, C.BIND_TRANSMITTER_RESP,
                                 C.BIND_TRANSCEIVER_RESP, C.QUERY_SM_RESP,
                                 C.SUBMIT_MULTI_RESP])
def test_error_status_resp_with_empty_body(cid):
    err = S["ESME_RSUBMITFAIL"]
    got = P.decode(frame(cid, b"", seq=11, status=err))
    cls = P.PDU_CLASSES[cid]
    assert same(got, cls(seq=11, status=err)), got
    if cid != C.DELIVER_SM_RESP:
        assert P.encode(got) == frame(cid, b"", seq=11, status=err)
    # an error resp that does carry a body still decodes it
    first = cls.layout[0][0]
    body = P.encode(cls(seq=11, **{first: b"M1"}))[16:]
    assert getattr(P.decode(frame(cid, body, 11, err)), first) == b"M1"


def test_message_id_resp_fast_encoder_matches_encode():
    for cls in (P.SubmitSmResp, P.DataSmResp, P.DeliverSmResp):
        for status in (0, S["ESME_RTHROTTLED"]):
            mid = b"" if status and cls is not P.DeliverSmResp else b"abc"
            want = P.encode(cls(seq=3, status=status, message_id=mid))
            assert P.message_id_resp(cls.command_id, 3, status, mid) == want
    assert P.decode(P.generic_nack(5, S["ESME_RINVCMDLEN"])) == \
        P.GenericNack(seq=5, status=S["ESME_RINVCMDLEN"])


def test_bad_pdu_repr_names_command_and_status():
    got = bad(C.SUBMIT_SM, b"CMT")
    assert "submit_sm" in repr(got) and "ESME_RINVPARLEN" in repr(got)


def test_resp_class():
    assert P.resp_class(C.SUBMIT_SM) is P.SubmitSmResp
    assert P.resp_class(C.ENQUIRE_LINK) is P.EnquireLinkResp
    assert P.resp_class(C.SUBMIT_SM_RESP) is None
    assert P.resp_class(C.OUTBIND) is None


def test_tlv_lookup_is_first_match_and_unknown_tags_byte_exact():
    pdu = P.SubmitSm(seq=1, tlvs=((0x1400, b"\x00"), (0x0424, b"a"), (0x0424, b"b"),
                                  (0xFFFF, b"")))
    got = P.decode(P.encode(pdu))
    assert got.tlv(0x0424) == b"a"
    assert got.tlv(0x9999, b"dflt") == b"dflt"
    assert got.tlvs == pdu.tlvs


def test_pdus_of_different_commands_are_not_equal():
    assert P.EnquireLink(seq=1) != P.Unbind(seq=1)
    assert P.SubmitSm(seq=1) != P.DeliverSm(seq=1)
    assert len({P.EnquireLink(seq=1), P.EnquireLinkResp(seq=1)}) == 2
