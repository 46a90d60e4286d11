"""What the Chinese operator gateways (SGIP, SMGP; CMPP alike) need of a judged SMPP part, and
the SMPP shape of what they send back: pure functions, no I/O.

Outbound (`gateway_content`): the gateways know four content formats: 0 ASCII, 8 UCS-2,
15 GB18030/GBK, 4 binary. A part keeps its octets where the format exists (UCS-2, GBK,
binary, IA5); GSM 03.38 and Latin-1 text is re-encoded: to ASCII when every character is
ASCII (the same length), else to GB18030. A concatenated part keeps its UDH (TP_udhi = 1);
a part concatenated with SAR TLVs gets the equivalent 8-bit UDH, since the gateways have no
SAR. The part's number and total (Pk_number / Pk_total) come from either.

Inbound: a status report becomes a deliver_sm receipt in the SMPP 3.4 Appendix B form
(`receipt_pdu`: receipted_message_id and message_state TLVs, the operator's own error code
kept in ``err:``); an MO becomes a deliver_sm (`mo_pdu`) with the SMPP data_coding of its
format (ASCII as IA5, GB18030/GBK as 15, which proxyd reads as GBK).
"""
from __future__ import annotations

import time
from typing import Any, NamedTuple

from ..smpp import constants as C
from ..smpp import pdu as P
from ..store.messages import STATE
from ..text.codec import text_kind
from ..text.gsm import decode_gsm
from ..text.udh import concat_udh, parse_concat, split_udh

FMT_ASCII = 0
FMT_BINARY = 4
FMT_UCS2 = 8
FMT_GBK = 15

# SMPP data_coding -> gateway format for octets that need no re-encoding
_SAME = {0x01: FMT_ASCII, 0x02: FMT_BINARY, 0x04: FMT_BINARY, 0x08: FMT_UCS2, 0x0F: FMT_GBK}
_KIND_FMT = {"ucs2": FMT_UCS2, "gbk": FMT_GBK, "ascii": FMT_ASCII, "binary": FMT_BINARY}


class Content(NamedTuple):
    fmt: int            # gateway content format
    data: bytes         # the octets to send (UDH first when udhi)
    udhi: int           # 1 when data starts with a UDH
    pk_total: int       # parts of the message (1 when not concatenated)
    pk_number: int      # this part's number, from 1


class ContentError(ValueError):
    """The part cannot be carried (its SMPP status is `status`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# octets that mean the same character in GSM 03.38 (unpacked) and in ASCII
_GSM_AS_ASCII = bytes(b for b in range(128) if b in (10, 13) or 0x20 <= b <= 0x7A and (
    b not in (0x24, 0x40) and not 0x5B <= b <= 0x60))


def _reencode(data: bytes, kind: str) -> tuple[int, bytes]:
    if not data.translate(None, _GSM_AS_ASCII):
        return FMT_ASCII, data                  # the common case: nothing to change
    text = decode_gsm(data) if kind == "gsm" else data.decode("latin-1")
    if text.isascii():
        return FMT_ASCII, text.encode("ascii")
    return FMT_GBK, text.encode("gb18030", "replace")


def gateway_content(pdu: Any, max_octets: int = 140) -> Content:
    """The content of one judged part (a submit_sm/data_sm value) in gateway terms; raises
    `ContentError` when it cannot be carried."""
    dc = pdu.data_coding
    if not pdu.tlvs and not pdu.esm_class & C.ESM_UDHI:
        # the common case (one part, no TLVs): short_message as it is, or as ASCII
        data = getattr(pdu, "short_message", b"")
        if len(data) <= max_octets and (dc == 0 or dc == 1) and \
                not data.translate(None, _GSM_AS_ASCII):
            return Content(FMT_ASCII, data, 0, 1, 1)
    data = pdu.payload
    total = number = 1
    udh = b""
    if pdu.esm_class & C.ESM_UDHI:
        try:
            udh, data = split_udh(data)
            concat = parse_concat(udh)
        except ValueError as e:
            raise ContentError(C.STATUS["ESME_RINVESMCLASS"], "UDH: %s" % e) from None
        if concat is not None:
            total, number = concat[1], concat[2]
    else:
        sar_total = pdu.tlv(C.TAG_SAR_TOTAL_SEGMENTS)
        if sar_total:
            ref = pdu.tlv(C.TAG_SAR_MSG_REF_NUM, b"\0") or b"\0"
            seq = pdu.tlv(C.TAG_SAR_SEGMENT_SEQNUM, b"\x01") or b"\x01"
            total, number = sar_total[0], seq[0]
            try:
                udh = concat_udh(int.from_bytes(ref[-2:], "big") & 0xFF, total, number)
            except ValueError as e:
                raise ContentError(C.STATUS["ESME_RINVOPTPARAMVAL"], "SAR: %s" % e) from None
    fmt = _SAME.get(dc)
    if fmt is None:
        kind = text_kind(dc)
        if kind == "gsm" or kind == "latin1":
            fmt, data = _reencode(data, kind)
        else:
            fmt = _KIND_FMT.get(kind, FMT_BINARY)
    out = udh + data
    if len(out) > max_octets and not (fmt == FMT_ASCII and len(out) <= 160):
        raise ContentError(C.STATUS["ESME_RINVMSGLEN"],
                           "%d octets in format %d: the gateway takes at most %d"
                           % (len(out), fmt, max_octets))
    return Content(fmt, out, 1 if udh else 0, total, number)


def part_content(pdu: Any, source: bytes, dest: bytes) -> Content:
    """`gateway_content`, and the addresses checked against the gateways' 21 octets."""
    if len(source) > 21:
        raise ContentError(C.STATUS["ESME_RINVSRCADR"], "source over 21 octets")
    if len(dest) > 21:
        raise ContentError(C.STATUS["ESME_RINVDSTADR"], "destination over 21 octets")
    return gateway_content(pdu)


def gateway_format(data_coding: int) -> int:
    """The gateway format for octets given with an SMPP data_coding as they are (the
    simulators' injected MO): ASCII for 0 and 1, else UCS-2, GBK or binary."""
    return {0: FMT_ASCII, 1: FMT_ASCII, 8: FMT_UCS2, 15: FMT_GBK}.get(data_coding, FMT_BINARY)


def data_coding_of(fmt: int) -> int:
    """The SMPP data_coding of an MO's gateway format (unknown formats read as binary)."""
    return {FMT_ASCII: 0x01, FMT_UCS2: 0x08, FMT_GBK: 0x0F}.get(fmt, 0x04)


def mo_pdu(source: bytes, dest: bytes, fmt: int, udhi: int, content: bytes,
           protocol_id: int = 0) -> Any:
    """An MO from a gateway as the deliver_sm the delivery side takes."""
    esm = C.ESM_UDHI if udhi else 0
    if len(content) > 255:
        return P.DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr=source[:20],
                           dest_addr_npi=1, destination_addr=dest[:20], esm_class=esm,
                           protocol_id=protocol_id, data_coding=data_coding_of(fmt),
                           tlvs=((C.TAG_MESSAGE_PAYLOAD, content),))
    return P.DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr=source[:20],
                       dest_addr_npi=1, destination_addr=dest[:20], esm_class=esm,
                       protocol_id=protocol_id, data_coding=data_coding_of(fmt),
                       short_message=content)


def _date(now: float) -> bytes:
    return time.strftime("%y%m%d%H%M", time.localtime(now)).encode()


def receipt_pdu(operator_id: bytes, source: bytes, dest: bytes, stat: bytes, err: bytes,
                now: float, submit_date: bytes = b"", done_date: bytes = b"",
                text: bytes = b"") -> Any:
    """A gateway's status report as an SMPP receipt: `operator_id` is the id the link gave
    for the part (what the receipt map knows), `source` the handset, `dest` the service code;
    `stat` a 7-letter SMPP state (DELIVRD, UNDELIV, ...), `err` the operator's code."""
    state = STATE.get(stat.decode("latin-1").upper(), STATE["UNKNOWN"])
    delivered = state == STATE["DELIVRD"]
    sm = (b"id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:%s"
          % (operator_id, b"001" if delivered else b"000", submit_date[:10] or _date(now),
             done_date[:10] or _date(now), stat, err, text[:20]))
    # (a number over SMPP's 20 octets, e.g. a pseudo-code, is left out, never cut)
    return P.DeliverSm(source_addr_ton=1, source_addr_npi=1,
                       source_addr=source if len(source) <= 20 else b"", dest_addr_npi=1,
                       destination_addr=dest if len(dest) <= 20 else b"",
                       esm_class=C.ESM_DELIVERY_RECEIPT, short_message=sm[:255],
                       tlvs=((C.TAG_RECEIPTED_MESSAGE_ID, operator_id + b"\0"),
                             (C.TAG_MESSAGE_STATE, bytes((state,)))))


def national(number: bytes) -> bytes:
    """A handset number without the international prefix (+86 / 0086 / 86 before a mobile
    number), as the gateways' MO and report fields are compared with what clients sent."""
    n = number.lstrip(b"+")
    if n.startswith(b"0086"):
        n = n[4:]
    elif n.startswith(b"86") and len(n) == 13:
        n = n[2:]
    return n


def with_86(number: bytes) -> bytes:
    """SGIP's form of a handset number: "86" then the national number."""
    n = number.lstrip(b"+")
    if n.startswith(b"0086"):
        return n[2:]
    if n.startswith(b"86") and len(n) == 13:
        return n
    return b"86" + n
