"""SMPP 3.4 time fields (section 7.1): schedule_delivery_time and validity_period.

A time is empty (NULL: "now" / the SMSC's default validity) or 16 characters
``YYMMDDhhmmsstnnp``: p is ``+`` or ``-`` (absolute, nn quarter hours from UTC, 00-48) or
``R`` (relative: YY years, MM months, ... from now; tnn are 000). Anything else is refused
by the gate's intake at once (ESME_RINVSCHED / ESME_RINVEXPIRY), never relayed.
"""
from __future__ import annotations


def valid_time(value: bytes) -> bool:
    """True for an empty or well-formed SMPP absolute or relative time."""
    if not value:
        return True
    if len(value) != 16 or not value[:15].isdigit():
        return False
    p = value[15:]
    if p == b"R":
        return value[12:15] == b"000"
    if p != b"+" and p != b"-":
        return False
    month, day = int(value[2:4]), int(value[4:6])
    hour, minute, second = int(value[6:8]), int(value[8:10]), int(value[10:12])
    return (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59
            and second <= 59 and int(value[13:15]) <= 48)
