"""proxyd.links.gwtext: a judged SMPP part in the gateways' terms, and their reports and MO in
SMPP's."""
from __future__ import annotations

import pytest

from proxyd.delivery.text import parse_receipt, receipt_state
from proxyd.links import gwtext as T
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P


def _sm(**kw):
    base = dict(source_addr=b"10655001", destination_addr=b"13312345678")
    base.update(kw)
    return P.SubmitSm(**base)


def test_formats():
    # IA5, UCS-2, GBK and binary keep their octets
    assert T.gateway_content(_sm(data_coding=1, short_message=b"Hi")) == (0, b"Hi", 0, 1, 1)
    ucs = "你好".encode("utf-16-be")
    assert T.gateway_content(_sm(data_coding=8, short_message=ucs)).fmt == T.FMT_UCS2
    gbk = "你好".encode("gbk")
    assert T.gateway_content(_sm(data_coding=15, short_message=gbk)) == (15, gbk, 0, 1, 1)
    assert T.gateway_content(_sm(data_coding=4, short_message=b"\xff\x00")).fmt == 4
    # GSM 03.38: "@" is 0x00 there, "@" (0x40) in ASCII
    assert T.gateway_content(_sm(data_coding=0, short_message=b"\x00ok")) == \
        (0, b"@ok", 0, 1, 1)
    # GSM text with a character ASCII lacks goes as GB18030
    got = T.gateway_content(_sm(data_coding=0, short_message=b"\x01"))      # "£"
    assert got.fmt == T.FMT_GBK and got.data.decode("gb18030") == "£"
    got = T.gateway_content(_sm(data_coding=3, short_message="é".encode("latin-1")))
    assert got.fmt == T.FMT_GBK and got.data.decode("gb18030") == "é"


def test_long_parts_udh_and_sar():
    udh = bytes.fromhex("050003a70302")
    got = T.gateway_content(_sm(esm_class=C.ESM_UDHI, data_coding=8,
                                short_message=udh + b"\x4f\x60"))
    assert got == (8, udh + b"\x4f\x60", 1, 3, 2)
    # SAR TLVs become the equivalent 8-bit UDH (the gateways know no SAR)
    sar = _sm(data_coding=8, short_message=b"\x4f\x60",
              tlvs=((C.TAG_SAR_MSG_REF_NUM, b"\x01\x2c"), (C.TAG_SAR_TOTAL_SEGMENTS, b"\x02"),
                    (C.TAG_SAR_SEGMENT_SEQNUM, b"\x02")))
    assert T.gateway_content(sar) == (8, bytes.fromhex("0500032c0202") + b"\x4f\x60", 1, 2, 2)
    # the payload TLV is the content when short_message is empty
    data = P.DataSm(source_addr=b"1", destination_addr=b"2", data_coding=1,
                    tlvs=((C.TAG_MESSAGE_PAYLOAD, b"hello"),))
    assert T.gateway_content(data).data == b"hello"


def test_what_cannot_be_carried():
    with pytest.raises(T.ContentError) as e:
        T.gateway_content(_sm(esm_class=C.ESM_UDHI, short_message=b"\x09\x00"))
    assert e.value.status == C.STATUS["ESME_RINVESMCLASS"]
    with pytest.raises(T.ContentError) as e:
        T.gateway_content(_sm(data_coding=8, short_message=b"\0" * 142))
    assert e.value.status == C.STATUS["ESME_RINVMSGLEN"]
    # 160 ASCII characters fit (the SMSC packs them); 161 do not
    assert len(T.gateway_content(_sm(data_coding=1, short_message=b"a" * 160)).data) == 160
    with pytest.raises(T.ContentError):
        T.gateway_content(_sm(data_coding=1, short_message=b"a" * 161))


def test_receipt_pdu_reads_as_an_smpp_receipt():
    r = T.receipt_pdu(b"01006101161700012345", b"13312345678", b"10655001", b"UNDELIV",
                      b"005", 0.0, b"2612011200", b"2612011201", b"hello")
    assert r.esm_class == C.ESM_DELIVERY_RECEIPT
    assert r.tlv(C.TAG_RECEIPTED_MESSAGE_ID) == b"01006101161700012345\0"
    assert receipt_state(r) == (5, "005")
    f = parse_receipt(P.decode(r.encode()))
    assert (f["stat"], f["err"], f["subdate"], f["donedate"], f["text"]) == \
        ("UNDELIV", "005", "2612011200", "2612011201", "hello")
    ok = T.receipt_pdu(b"1", b"2", b"3", b"DELIVRD", b"000", 0.0)
    assert receipt_state(ok) == (2, "000") and b"dlvrd:001" in ok.short_message
    odd = T.receipt_pdu(b"1", b"2", b"3", b"WHATEVR", b"999", 0.0)
    assert receipt_state(odd) == (7, "999")


def test_mo_pdu():
    mo = T.mo_pdu(b"8613312345678", b"10655001", 15, 0, "退订".encode("gbk"))
    assert (mo.data_coding, mo.esm_class, mo.short_message) == (15, 0, "退订".encode("gbk"))
    assert T.mo_pdu(b"1", b"2", 0, 1, b"\x05\x00\x03\x01\x02\x01x").esm_class == C.ESM_UDHI
    assert T.mo_pdu(b"1", b"2", 8, 0, b"").data_coding == 8
    assert T.mo_pdu(b"1", b"2", 0, 0, b"").data_coding == 1
    assert T.mo_pdu(b"1", b"2", 246, 0, b"").data_coding == 4
    big = T.mo_pdu(b"1", b"2", 4, 0, b"x" * 300)
    assert big.short_message == b"" and big.payload == b"x" * 300


def test_numbers():
    assert T.with_86(b"13312345678") == b"8613312345678"
    assert T.with_86(b"+8613312345678") == b"8613312345678"
    assert T.with_86(b"008613312345678") == b"8613312345678"
    assert T.with_86(b"8613312345678") == b"8613312345678"
    assert T.national(b"8613312345678") == b"13312345678"
    assert T.national(b"+8613312345678") == b"13312345678"
    assert T.national(b"10655001") == b"10655001"


def test_the_gsm_fast_path_is_exact():
    from proxyd.text.gsm import decode_gsm
    same = T._GSM_AS_ASCII
    assert decode_gsm(same) == same.decode("ascii")
    # every other octet under 0x80 means something else in GSM 03.38 (or is an escape)
    for b in set(range(128)) - set(same):
        assert decode_gsm(bytes((b,))) != chr(b)
