"""Caller number display: the sender must be a numeric, displayable number.

Runs before `sender`. Refused with ESME_RINVSRCADR, reason "caller":
- "empty sender" -- no source_addr (allowed in sender_mode "prefix", where the client sends
  only an extension, possibly empty, and proxyd prepends the service code);
- "alphanumeric TON 5" -- source_addr_ton 5 (alphanumeric), whatever the digits;
- "non-digit sender" -- anything but ASCII digits (a leading '+' included: service codes are
  national numbers).
"""
from __future__ import annotations

from proxyd.config import AccountConfig
from proxyd.message import Message, Refusal, Verdict
from proxyd.smpp.constants import STATUS

TON_ALPHANUMERIC = 5

_RINVSRCADR = STATUS["ESME_RINVSRCADR"]
EMPTY = Refusal(_RINVSRCADR, "caller", "empty sender")
ALPHANUMERIC = Refusal(_RINVSRCADR, "caller", "alphanumeric TON 5")
NON_DIGIT = Refusal(_RINVSRCADR, "caller", "non-digit sender")


def check_caller(msg: Message, account: AccountConfig) -> Verdict:
    src = msg.source_addr
    if msg.source_addr_ton == TON_ALPHANUMERIC:
        return ALPHANUMERIC
    if not src:
        return None if account.sender_mode == "prefix" else EMPTY
    if not (src.isdigit() and src.isascii()):
        return NON_DIGIT
    return None
