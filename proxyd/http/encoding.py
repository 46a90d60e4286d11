"""Turning an HTTP request's text or bytes into short_message payloads.

`split_text` (proxyd.text) picks GSM 03.38 or UCS-2 by itself; the HTTP APIs also let a
client force a coding (Kannel `coding`, Jasmin `coding`/`hex-content`), so `split_payload`
cuts already-encoded bytes by the alphabet of their data_coding with the same limits:
GSM (unpacked septets) 160 single / 153 per part, never splitting an escape pair; UCS-2
140 octets single / 134 per part, never splitting a surrogate pair; 8-bit and other
one-octet codings 140 / 134. Parts of a long message start with an 8-bit concatenation UDH.
"""
from __future__ import annotations

from proxyd.text.codec import text_kind
from proxyd.text.gsm import ESC
from proxyd.text.split import MAX_PARTS, TooManyParts
from proxyd.text.udh import concat_udh

__all__ = ["split_payload", "with_class", "udh_fits", "TooManyParts"]

_LIMITS = {"gsm": (160, 153), "ucs2": (140, 134)}
_OCTETS = (140, 134)


def _cuts(payload: bytes, kind: str) -> list[tuple[int, int]]:
    single, multi = _LIMITS.get(kind, _OCTETS)
    n = len(payload)
    if n <= single:
        return [(0, n)]
    cuts = []
    start = 0
    while start < n:
        end = start + multi
        if end >= n:
            end = n
        elif kind == "ucs2" and 0xD8 <= payload[end - 2] <= 0xDB:
            end -= 2          # keep a surrogate pair together
        elif kind == "gsm" and payload[end - 1] == ESC:
            end -= 1          # keep an escape pair together
        cuts.append((start, end))
        start = end
    return cuts


def split_payload(data_coding: int, payload: bytes, max_parts: int, ref: int) -> list[bytes]:
    """short_message payloads for `payload` encoded in `data_coding`: one without a UDH when
    it fits, else parts each starting with a concatenation UDH (reference `ref`, 0..255).
    Raises TooManyParts beyond `max_parts` (never truncates)."""
    cuts = _cuts(payload, text_kind(data_coding))
    total = len(cuts)
    limit = min(max_parts, MAX_PARTS)
    if total > limit:
        raise TooManyParts(total, limit)
    if total == 1:
        return [payload]
    return [concat_udh(ref & 0xFF, total, seq) + payload[a:b]
            for seq, (a, b) in enumerate(cuts, 1)]


def with_class(data_coding: int, mclass: int | None) -> int:
    """The data_coding carrying a message class (0-3), as Kannel sets it: GSM 0xF0|class,
    8-bit 0xF4|class (coding group 1111), UCS-2 0x18|class (general group, class bit)."""
    if mclass is None:
        return data_coding
    kind = text_kind(data_coding)
    if kind == "ucs2":
        return 0x18 | mclass
    if kind == "binary":
        return 0xF4 | mclass
    return 0xF0 | mclass


def udh_fits(data_coding: int, udh: bytes, body: bytes) -> bool:
    """Whether a client-built UDH plus its body fit one short message (140 octets; for GSM
    160 septets, the UDH counting ceil(octets * 8 / 7) septets)."""
    if text_kind(data_coding) == "gsm":
        return len(body) + (len(udh) * 8 + 6) // 7 <= 160
    return len(udh) + len(body) <= 140
