"""Text handling: GSM 03.38 / Latin-1 / UCS-2 codecs, UDH and SAR, splitting, reassembly.

Pure functions only: no I/O, no Twisted.
"""

from proxyd.text.codec import choose_encoding, decode_text
from proxyd.text.gsm import (
    decode_gsm,
    encode_gsm,
    gsm_length,
    is_gsm,
    pack_septets,
    unpack_septets,
)
from proxyd.text.reassembly import concat_key, join_parts, strip_udh
from proxyd.text.split import TooManyParts, count_parts, split_text
from proxyd.text.udh import concat_udh, parse_concat, split_udh

__all__ = [
    "TooManyParts",
    "choose_encoding",
    "concat_key",
    "concat_udh",
    "count_parts",
    "decode_gsm",
    "decode_text",
    "encode_gsm",
    "gsm_length",
    "is_gsm",
    "join_parts",
    "pack_septets",
    "parse_concat",
    "split_text",
    "split_udh",
    "strip_udh",
    "unpack_septets",
]
