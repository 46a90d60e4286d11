"""What the operator bills: the parts one payload becomes on the air.

An operator bills a message by its length in the units of its alphabet, whatever field
carried it (short_message or message_payload):

    alphabet (data_coding kind)        one part    per part of a long message
    7-bit (GSM 03.38, IA5)             160 septets 153
    UCS-2                              70 units    67
    8-bit and the rest (Latin-1, GBK,  140 octets  134
    binary)

A user data header that is not a concatenation header (ports, for example) takes its room
from the same budget. `billable_parts` is what the ledger charges and what `max_parts`
bounds: a payload above `max_parts` is refused, never truncated.
"""
from __future__ import annotations

from proxyd.text.codec import ASCII, GSM, UCS2, text_kind

_LIMITS = {GSM: (160, 153), ASCII: (160, 153), UCS2: (70, 67)}
_OCTETS = (140, 134)


def units(data: bytes, udh_len: int, data_coding: int) -> tuple[int, int, int]:
    """(units, single-part limit, per-part limit) of a user data of which the first
    `udh_len` octets are a header."""
    kind = text_kind(data_coding)
    body = len(data) - udh_len
    if kind is GSM or kind is ASCII:
        return body + (udh_len * 8 + 6) // 7, 160, 153
    if kind is UCS2:
        return (body + 1) // 2 + (udh_len + 1) // 2, 70, 67
    return len(data), 140, 134


def billable_parts(data: bytes, udh_len: int, data_coding: int) -> int:
    """Parts the operator bills for this user data (at least 1)."""
    n, single, multi = units(data, udh_len, data_coding)
    if n <= single:
        return 1
    return -(-n // multi)


def fits_one_part(data: bytes, udh_len: int, data_coding: int) -> bool:
    """A part of a concatenated message must be one SMS on the air, header included."""
    n, single, _multi = units(data, udh_len, data_coding)
    return n <= single
