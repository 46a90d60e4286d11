"""GSM 03.38 (3GPP TS 23.038) default alphabet, as carried by SMPP data_coding 0.

SMPP carries the default alphabet *unpacked*: one septet per octet, high bit clear.
Characters of the basic-character-set extension table are sent as ESC (0x1B) followed
by the extension code and count as two septets.

Pure functions, no I/O.  Decoding never raises: client input is untrusted.
"""

from __future__ import annotations

import codecs
import re

__all__ = [
    "GSM_BASIC",
    "GSM_EXTENSION",
    "ESC",
    "decode_gsm",
    "encode_gsm",
    "gsm_length",
    "is_gsm",
    "pack_septets",
    "unpack_septets",
]

ESC = 0x1B

#: The 128 characters of the default alphabet, indexed by septet value.
#: Position 0x1B is the escape to the extension table (shown here as a placeholder
#: that is never produced by decoding nor accepted by encoding).
GSM_BASIC: str = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM_BASIC) == 128

#: Basic-character-set extension table: extension code -> character.
GSM_EXTENSION: dict[int, str] = {
    0x0A: "\x0c",  # form feed (page break)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_REPLACEMENT = "\ufffd"

# Decoding table for codecs.charmap_decode: 256 entries, bytes >= 0x80 are invalid
# in unpacked GSM and decode to U+FFFD.  ESC decodes to itself and is then resolved,
# together with the character after it, by _ESCAPES.
_DECODE_TABLE: str = GSM_BASIC + _REPLACEMENT * 128

# ESC + (the default-alphabet decoding of the next octet) -> the decoded character.
# Codes missing from the extension table fall back to the default alphabet (TS 23.038);
# ESC ESC (reserved for a further extension table) and a trailing lone ESC show as a space.
_ESCAPES: dict[str, str] = {
    "\x1b" + _DECODE_TABLE[code]: GSM_EXTENSION.get(code, _DECODE_TABLE[code])
    for code in range(256)
}
_ESCAPES["\x1b\x1b"] = " "
_ESCAPES["\x1b"] = " "
_ESCAPE_RE = re.compile("\x1b.?", re.DOTALL)
_escape_lookup = _ESCAPES.__getitem__

# Encoding map for codecs.charmap_encode: code point -> bytes.  Characters absent from
# the map make charmap_encode raise UnicodeEncodeError.
_ENCODE_MAP: dict[int, bytes] = {
    ord(ch): bytes((code,)) for code, ch in enumerate(GSM_BASIC) if code != ESC
}
_ENCODE_MAP.update({ord(ch): bytes((ESC, code)) for code, ch in GSM_EXTENSION.items()})

_GSM_CHARS: frozenset[str] = frozenset(chr(cp) for cp in _ENCODE_MAP)
_EXT_CHARS: tuple[str, ...] = tuple(GSM_EXTENSION.values())

_charmap_decode = codecs.charmap_decode
_charmap_encode = codecs.charmap_encode


def decode_gsm(data: bytes) -> str:
    """Decode unpacked GSM 03.38 septets (one per octet) into text.

    Never raises on client input:

    * an octet with the high bit set is not a septet and decodes to U+FFFD;
    * ESC followed by a code that is not in the extension table decodes to the
      default-alphabet character of that code (TS 23.038 fallback rule);
    * ESC ESC (reserved for a further extension table) decodes to a space;
    * a trailing lone ESC decodes to a space.
    """
    text = _charmap_decode(data, "strict", _DECODE_TABLE)[0]
    if "\x1b" in text:
        return _ESCAPE_RE.sub(lambda m: _escape_lookup(m.group()), text)
    return text


def encode_gsm(text: str) -> bytes:
    """Encode text into unpacked GSM 03.38 septets (one per octet).

    Extension-table characters become ESC + code.  Raises ValueError naming the first
    character that the default alphabet cannot represent.
    """
    try:
        return _charmap_encode(text, "strict", _ENCODE_MAP)[0]
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise ValueError(
            f"character {bad!r} (U+{ord(bad):04X}) at index {exc.start} "
            "is not in the GSM 03.38 default alphabet"
        ) from None


def is_gsm(text: str) -> bool:
    """True when every character of text is representable in the GSM default alphabet."""
    return _GSM_CHARS.issuperset(text)


def gsm_length(text: str) -> int | None:
    """Length of text in septets (extension characters count 2); None if not representable."""
    if not _GSM_CHARS.issuperset(text):
        return None
    n = len(text)
    for ch in _EXT_CHARS:
        n += text.count(ch)
    return n


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack 7-bit septets into octets (TS 23.038 section 6.1.2.1), LSB first.

    fill_bits (0..6) zero bits are inserted before the first septet, as needed when the
    septets follow a User Data Header that does not end on a septet boundary.
    Raises ValueError if a value does not fit in 7 bits.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    if not septets:
        return b""
    value = 0
    shift = fill_bits
    for s in septets:
        if s > 0x7F:
            raise ValueError(f"septet value 0x{s:02X} does not fit in 7 bits")
        value |= s << shift
        shift += 7
    return value.to_bytes((shift + 7) // 8, "little")


def unpack_septets(data: bytes, count: int | None = None, fill_bits: int = 0) -> bytes:
    """Unpack octets into 7-bit septets (one per output octet).

    count is the number of septets to extract (e.g. sm_length from the TP-UDL); when None,
    as many whole septets as the data holds are returned (note: 7 octets then yield 8
    septets, the last possibly a padding 0x00 or CR).  Bits missing at the end are read as
    zero rather than raising.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    available = max(0, (len(data) * 8 - fill_bits) // 7)
    if count is None:
        count = available
    elif count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    value = int.from_bytes(data, "little") >> fill_bits
    return bytes((value >> (7 * i)) & 0x7F for i in range(count))
