"""User Data Header (TS 23.040 section 9.2.3.24) parsing and building.

A UDH is UDHL (one octet, the length of what follows) then information elements, each
IEI (1 octet), IEL (1 octet) and IEL octets of data.  Only the concatenation IEs are
interpreted here:

* 0x00  concatenated short messages, 8-bit reference:  ref, total, seq   (IEL 3)
* 0x08  concatenated short messages, 16-bit reference: ref(2), total, seq (IEL 4)

Malformed headers raise ValueError with a clear message, never IndexError.
"""

from __future__ import annotations

__all__ = [
    "IEI_CONCAT_8",
    "IEI_CONCAT_16",
    "split_udh",
    "iter_ies",
    "parse_concat",
    "concat_udh",
]

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08


def split_udh(short_message: bytes) -> tuple[bytes, bytes]:
    """Split user data whose UDHI bit is set into (udh including UDHL, rest).

    Raises ValueError when the message is empty or UDHL runs past its end.
    """
    if not short_message:
        raise ValueError("UDH indicator set but the user data is empty")
    udhl = short_message[0]
    end = 1 + udhl
    if end > len(short_message):
        raise ValueError(
            f"UDH length {udhl} exceeds the user data ({len(short_message) - 1} octets after UDHL)"
        )
    return bytes(short_message[:end]), bytes(short_message[end:])


def iter_ies(udh: bytes) -> list[tuple[int, bytes]]:
    """Parse a UDH (including its UDHL octet) into a list of (iei, data).

    Raises ValueError when UDHL does not match the header length or an IE overruns it.
    """
    if not udh:
        raise ValueError("empty UDH")
    udhl = udh[0]
    if udhl != len(udh) - 1:
        raise ValueError(f"UDH length octet says {udhl} but {len(udh) - 1} octets follow")
    ies: list[tuple[int, bytes]] = []
    i = 1
    end = len(udh)
    while i < end:
        if i + 2 > end:
            raise ValueError(f"truncated information element header at UDH offset {i}")
        iei = udh[i]
        iel = udh[i + 1]
        start = i + 2
        stop = start + iel
        if stop > end:
            raise ValueError(
                f"information element 0x{iei:02X} at UDH offset {i} declares length {iel}, "
                f"only {end - start} octets remain"
            )
        ies.append((iei, bytes(udh[start:stop])))
        i = stop
    return ies


def parse_concat(udh: bytes) -> tuple[int, int, int] | None:
    """Return (ref, total, seq) from the concatenation IE of a UDH, or None if it has none.

    udh includes its UDHL octet (as returned by split_udh).  Raises ValueError for a
    malformed header, a concatenation IE of the wrong length, total or seq of zero,
    seq greater than total, or more than one concatenation IE (ambiguous).
    """
    found: tuple[int, int, int] | None = None
    for iei, data in iter_ies(udh):
        if iei == IEI_CONCAT_8:
            if len(data) != 3:
                raise ValueError(f"concatenation IE 0x00 must have length 3, got {len(data)}")
            key = (data[0], data[1], data[2])
        elif iei == IEI_CONCAT_16:
            if len(data) != 4:
                raise ValueError(f"concatenation IE 0x08 must have length 4, got {len(data)}")
            key = ((data[0] << 8) | data[1], data[2], data[3])
        else:
            continue
        if found is not None:
            raise ValueError("UDH holds more than one concatenation information element")
        found = key
    if found is not None:
        _check_total_seq(found[1], found[2])
    return found


def _check_total_seq(total: int, seq: int) -> None:
    if total < 1:
        raise ValueError(f"concatenation total must be >= 1, got {total}")
    if seq < 1 or seq > total:
        raise ValueError(f"concatenation sequence number {seq} is outside 1..{total}")


def concat_udh(ref: int, total: int, seq: int, ref16: bool = False) -> bytes:
    """Build a UDH (including UDHL) holding only a concatenation IE.

    8-bit reference: 6 octets (05 00 03 ref total seq); 16-bit: 7 octets
    (06 08 04 refhi reflo total seq).  Raises ValueError for out-of-range values.
    """
    if total > 255:
        raise ValueError(f"concatenation total must be <= 255, got {total}")
    _check_total_seq(total, seq)
    if ref16:
        if not 0 <= ref <= 0xFFFF:
            raise ValueError(f"16-bit concatenation reference out of range: {ref}")
        return bytes((6, IEI_CONCAT_16, 4, ref >> 8, ref & 0xFF, total, seq))
    if not 0 <= ref <= 0xFF:
        raise ValueError(f"8-bit concatenation reference out of range: {ref}")
    return bytes((5, IEI_CONCAT_8, 3, ref, total, seq))
