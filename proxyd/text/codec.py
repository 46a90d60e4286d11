"""Decoding SMPP short_message bytes by data_coding, and choosing an encoding for text.

SMPP 3.4 data_coding values 0x00-0x0F have SMPP-specific meanings (section 5.2.19);
the other values follow the GSM 03.38 (TS 23.038) data coding groups.  Decoding never
raises: client bytes are untrusted.  Binary payloads decode to None.
"""

from __future__ import annotations

from typing import Callable

from proxyd.text.gsm import decode_gsm, encode_gsm, is_gsm

__all__ = [
    "DC_DEFAULT",
    "DC_IA5",
    "DC_BINARY",
    "DC_LATIN1",
    "DC_BINARY2",
    "DC_UCS2",
    "decode_text",
    "choose_encoding",
    "text_kind",
]

DC_DEFAULT = 0x00  # SMSC default alphabet, taken as GSM 03.38 unpacked
DC_IA5 = 0x01  # IA5 (CCITT T.50) / ASCII
DC_BINARY = 0x02  # 8-bit binary
DC_LATIN1 = 0x03  # ISO-8859-1
DC_BINARY2 = 0x04  # 8-bit binary
DC_UCS2 = 0x08  # UCS-2 (decoded as UTF-16BE)

# Text "kinds": how bytes of a given data_coding are turned into text.
GSM = "gsm"
ASCII = "ascii"
LATIN1 = "latin1"
UCS2 = "ucs2"
GBK = "gbk"
BINARY = "binary"


def _decode_ascii(data: bytes) -> str:
    return data.decode("ascii", "replace")


def _decode_latin1(data: bytes) -> str:
    return data.decode("latin-1")


def _decode_ucs2(data: bytes) -> str:
    # UTF-16BE is a superset of UCS-2; 'replace' turns lone surrogates and an odd
    # trailing byte into U+FFFD instead of raising.
    return data.decode("utf-16-be", "replace")


def _decode_gbk(data: bytes) -> str:
    # GB18030 is a superset of GBK and GB2312
    return data.decode("gb18030", "replace")


def _kind_for(dc: int) -> str:
    """Map a data_coding value 0..255 to a text kind."""
    if dc == 0x00:
        return GSM
    if dc == 0x01:
        return ASCII
    if dc in (0x02, 0x04):
        return BINARY
    if dc == 0x03:
        return LATIN1
    if dc == 0x08:
        return UCS2
    if dc == 0x0F:
        # Chinese gateways (CMPP, and SMPP clients written for them) use 15 for GBK text:
        # read it as such so the content filter sees what the handset will show.
        return GBK
    if dc <= 0x0F:
        # 5 JIS, 6 Cyrillic, 7 Hebrew, 9 pictogram, 10 ISO-2022-JP, 13 JIS X 0212,
        # 14 KS C 5601 and reserved values: not supported, read byte-for-byte.
        return LATIN1
    if dc <= 0x7F:
        # 00xxxxxx general data coding / 01xxxxxx automatic deletion group:
        # bit 5 = compressed, bits 3..2 = alphabet.
        if dc & 0x20:
            return BINARY  # compressed (TS 23.042): not text we can read
        alphabet = (dc >> 2) & 0x03
        if alphabet == 0:
            return GSM
        if alphabet == 1:
            return BINARY
        if alphabet == 2:
            return UCS2
        return LATIN1  # reserved alphabet
    if dc <= 0xBF:
        return LATIN1  # reserved coding groups
    if dc <= 0xDF:
        return GSM  # message waiting indication, discard / store, default alphabet
    if dc <= 0xEF:
        return UCS2  # message waiting indication, store, UCS2
    # 1111xxxx data coding / message class: bit 2 = 8-bit data, else default alphabet.
    return BINARY if dc & 0x04 else GSM


_DECODERS: dict[str, Callable[[bytes], str] | None] = {
    GSM: decode_gsm,
    ASCII: _decode_ascii,
    LATIN1: _decode_latin1,
    UCS2: _decode_ucs2,
    GBK: _decode_gbk,
    BINARY: None,
}

_KINDS: tuple[str, ...] = tuple(_kind_for(dc) for dc in range(256))
_DISPATCH: tuple[Callable[[bytes], str] | None, ...] = tuple(_DECODERS[k] for k in _KINDS)


def text_kind(data_coding: int) -> str:
    """'gsm', 'ascii', 'latin1', 'ucs2', 'gbk' or 'binary' for a data_coding value."""
    if 0 <= data_coding <= 0xFF:
        return _KINDS[data_coding]
    return LATIN1


def decode_text(data: bytes, data_coding: int) -> str | None:
    """Decode a (UDH-stripped) short message to text; None for binary data codings.

    Never raises on malformed bytes: invalid sequences become U+FFFD.  Unknown or
    unsupported data_coding values are read as Latin-1 (byte-for-byte).
    """
    if 0 <= data_coding <= 0xFF:
        decoder = _DISPATCH[data_coding]
        if decoder is None:
            return None
        return decoder(data)
    return data.decode("latin-1")


def choose_encoding(text: str) -> tuple[int, bytes]:
    """Pick GSM 03.38 (data_coding 0) when possible, else UCS-2 (data_coding 8, UTF-16BE).

    Characters outside the BMP are encoded as surrogate pairs.  A str holding a lone
    surrogate cannot be encoded and raises ValueError (UnicodeEncodeError).
    """
    if is_gsm(text):
        return DC_DEFAULT, encode_gsm(text)
    return DC_UCS2, text.encode("utf-16-be")
