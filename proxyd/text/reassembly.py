"""Pure helpers for reassembling concatenated messages (UDH or SAR TLVs).

The stateful part (buffering parts, timeouts) lives elsewhere; these functions only
identify a part and join complete sets.
"""

from __future__ import annotations

from proxyd.text.codec import decode_text
from proxyd.text.udh import IEI_CONCAT_8, IEI_CONCAT_16, iter_ies, parse_concat, split_udh

__all__ = [
    "ESM_UDHI",
    "TAG_SAR_MSG_REF_NUM",
    "TAG_SAR_TOTAL_SEGMENTS",
    "TAG_SAR_SEGMENT_SEQNUM",
    "TAG_MESSAGE_PAYLOAD",
    "concat_key",
    "concat_ident",
    "strip_udh",
    "message_text",
    "join_parts",
]

ESM_UDHI = 0x40
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_MESSAGE_PAYLOAD = 0x0424

_SAR_TAGS = (TAG_SAR_MSG_REF_NUM, TAG_SAR_TOTAL_SEGMENTS, TAG_SAR_SEGMENT_SEQNUM)


def _sar_key(tlvs: dict[int, bytes]) -> tuple[int, int, int] | None:
    present = [tag for tag in _SAR_TAGS if tag in tlvs]
    if not present:
        return None
    if len(present) != len(_SAR_TAGS):
        missing = ", ".join(f"0x{t:04X}" for t in _SAR_TAGS if t not in tlvs)
        raise ValueError(f"incomplete SAR TLVs: missing {missing}")
    ref = tlvs[TAG_SAR_MSG_REF_NUM]
    total = tlvs[TAG_SAR_TOTAL_SEGMENTS]
    seq = tlvs[TAG_SAR_SEGMENT_SEQNUM]
    if len(ref) != 2:
        raise ValueError(f"sar_msg_ref_num must be 2 octets, got {len(ref)}")
    if len(total) != 1:
        raise ValueError(f"sar_total_segments must be 1 octet, got {len(total)}")
    if len(seq) != 1:
        raise ValueError(f"sar_segment_seqnum must be 1 octet, got {len(seq)}")
    t, s = total[0], seq[0]
    if t < 1:
        raise ValueError("sar_total_segments must be >= 1")
    if s < 1 or s > t:
        raise ValueError(f"sar_segment_seqnum {s} is outside 1..{t}")
    return (ref[0] << 8) | ref[1], t, s


def concat_key(
    esm_class: int, short_message: bytes, tlvs: dict[int, bytes]
) -> tuple[int, int, int] | None:
    """(ref, total, seq) of a concatenated part, or None for a standalone message.

    Looks at the UDH concatenation IE when esm_class has UDHI (0x40) set, and at the SAR
    TLVs (0x020C/0x020E/0x020F).  When short_message is empty, the message_payload TLV
    (0x0424) is used as the user data.  Raises ValueError for a malformed UDH, incomplete
    or malformed SAR TLVs, or a UDH and SAR TLVs that disagree (ambiguous: the operator
    might follow either).
    """
    udh_key = None
    if esm_class & ESM_UDHI:
        data = short_message
        if not data:
            data = tlvs.get(TAG_MESSAGE_PAYLOAD, b"")
        udh, _ = split_udh(data)
        udh_key = parse_concat(udh)
    sar_key = _sar_key(tlvs)
    if udh_key is not None and sar_key is not None and udh_key != sar_key:
        raise ValueError(f"UDH concatenation {udh_key} and SAR TLVs {sar_key} disagree")
    return udh_key if udh_key is not None else sar_key


def concat_ident(
    esm_class: int, payload: bytes, tlvs: dict[int, bytes]
) -> tuple[str, int, int, int] | None:
    """(kind, ref, total, seq) of a concatenated part, or None: `concat_key` plus the kind
    of reference ("u8" or "u16" for a UDH, "sar" for the TLVs), so that two messages whose
    references are equal numbers of different kinds are never joined."""
    key = concat_key(esm_class, payload, tlvs)
    if key is None:
        return None
    if esm_class & ESM_UDHI:
        udh, _ = split_udh(payload)
        if any(iei == IEI_CONCAT_16 for iei, _d in iter_ies(udh)):
            return ("u16",) + key
        if any(iei == IEI_CONCAT_8 for iei, _d in iter_ies(udh)):
            return ("u8",) + key
    return ("sar",) + key


def message_text(pdu) -> str | None:  # noqa: ANN001 (any PDU with a payload)
    """The decoded text of a submit_sm/deliver_sm/data_sm (UDH stripped, message_payload
    used when short_message is empty); None for binary data codings."""
    data = pdu.payload
    if pdu.esm_class & ESM_UDHI and data:
        data = data[data[0] + 1:]
    return decode_text(data, pdu.data_coding)


def strip_udh(esm_class: int, short_message: bytes) -> bytes:
    """The user data without its UDH when esm_class has UDHI set; ValueError if malformed."""
    if esm_class & ESM_UDHI:
        return split_udh(short_message)[1]
    return short_message


def join_parts(parts: list[tuple[int, bytes]], data_coding: int) -> str | None:
    """Join (seq, payload) parts, UDH already stripped, into one text in seq order.

    The payloads are joined as bytes before decoding, so a GSM escape pair or a UTF-16
    surrogate pair (or even a single UCS-2 code unit) split across parts by a sloppy
    client still decodes correctly.  Returns None for binary data codings.  Raises
    ValueError when a sequence number appears twice (the parts would be ambiguous).
    """
    ordered = sorted(parts, key=lambda p: p[0])
    for (a, _), (b, _) in zip(ordered, ordered[1:]):
        if a == b:
            raise ValueError(f"duplicate part sequence number {a}")
    return decode_text(b"".join(p for _, p in ordered), data_coding)
