"""Splitting text into SMPP short_message payloads with concatenation UDHs.

GSM 03.38 (data_coding 0, unpacked): 160 septets in a single message, 153 per part of a
concatenated one (152 with a 16-bit reference).  UCS-2 (data_coding 8, UTF-16BE): 70 code
units single, 67 per part (66 with a 16-bit reference).  A GSM escape pair and a UTF-16
surrogate pair are never split between parts.
"""

from __future__ import annotations

from proxyd.text.codec import DC_UCS2, choose_encoding
from proxyd.text.gsm import ESC
from proxyd.text.udh import concat_udh

__all__ = [
    "GSM_SINGLE",
    "GSM_MULTI",
    "UCS2_SINGLE",
    "UCS2_MULTI",
    "MAX_PARTS",
    "TooManyParts",
    "split_text",
    "count_parts",
]

GSM_SINGLE = 160  # septets
GSM_MULTI = 153  # septets per part, 8-bit reference UDH (6 octets)
GSM_MULTI_16 = 152  # septets per part, 16-bit reference UDH (7 octets)
UCS2_SINGLE = 70  # UTF-16 code units
UCS2_MULTI = 67
UCS2_MULTI_16 = 66
MAX_PARTS = 255  # the concatenation IE's total is one octet


class TooManyParts(ValueError):
    """The text needs more parts than allowed."""

    def __init__(self, parts_needed: int, max_parts: int | None = None) -> None:
        self.parts_needed = parts_needed
        self.max_parts = max_parts
        limit = f" (at most {max_parts} allowed)" if max_parts is not None else ""
        super().__init__(f"text needs {parts_needed} parts{limit}")


def _cuts(payload: bytes, ucs2: bool, ref16: bool) -> list[tuple[int, int]]:
    """Byte ranges of each part of an encoded payload."""
    n = len(payload)
    if ucs2:
        if n <= 2 * UCS2_SINGLE:
            return [(0, n)]
        step = 2 * (UCS2_MULTI_16 if ref16 else UCS2_MULTI)
        cuts = []
        start = 0
        while start < n:
            end = start + step
            if end >= n:
                end = n
            elif 0xD8 <= payload[end - 2] <= 0xDB:  # would leave a high surrogate behind
                end -= 2
            cuts.append((start, end))
            start = end
        return cuts
    if n <= GSM_SINGLE:
        return [(0, n)]
    step = GSM_MULTI_16 if ref16 else GSM_MULTI
    cuts = []
    start = 0
    while start < n:
        end = start + step
        if end >= n:
            end = n
        elif payload[end - 1] == ESC:  # the encoder never emits a lone ESC
            end -= 1
        cuts.append((start, end))
        start = end
    return cuts


def split_text(
    text: str, max_parts: int = MAX_PARTS, ref: int = 0, ref16: bool = False
) -> tuple[int, list[bytes]]:
    """Encode and split text into short_message payloads.

    Returns (data_coding, payloads).  A single part carries no UDH; each part of a
    longer text starts with a concatenation UDH (reference ref, 8-bit unless ref16) and
    must be sent with esm_class UDHI (0x40).  Empty text gives one empty payload.

    Raises TooManyParts when more than max_parts (capped at 255) parts would be needed,
    ValueError for an out-of-range ref or a text holding lone surrogates.
    """
    if not 0 <= ref <= (0xFFFF if ref16 else 0xFF):
        raise ValueError(f"{'16' if ref16 else '8'}-bit concatenation reference out of range: {ref}")
    dc, payload = choose_encoding(text)
    cuts = _cuts(payload, dc == DC_UCS2, ref16)
    total = len(cuts)
    limit = min(max_parts, MAX_PARTS)
    if total > limit:
        raise TooManyParts(total, limit)
    if total == 1:
        return dc, [payload]
    return dc, [
        concat_udh(ref, total, seq, ref16) + payload[start:end]
        for seq, (start, end) in enumerate(cuts, 1)
    ]


def count_parts(text: str, ref16: bool = False) -> int:
    """Number of parts split_text would produce (without the max_parts limit)."""
    dc, payload = choose_encoding(text)
    return len(_cuts(payload, dc == DC_UCS2, ref16))
