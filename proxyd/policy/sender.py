"""Service code (服务代码): send only from the account's assigned numbers.

sender_mode "reject" (default): source_addr must equal one of account.service_codes or extend
one with digits, at most account.sender_max_len (default 20) characters in all.
sender_mode "prefix": the client sends only the extension (digits, possibly empty) and the
effective source is the account's first service code followed by it (same length limit).
Refused with ESME_RINVSRCADR, reason "sender".
"""
from __future__ import annotations

from proxyd.config import AccountConfig
from proxyd.message import Message, Refusal, Verdict
from proxyd.smpp.constants import STATUS

_RINVSRCADR = STATUS["ESME_RINVSRCADR"]
NO_CODES = Refusal(_RINVSRCADR, "sender", "account has no service code")
NOT_DIGITS = Refusal(_RINVSRCADR, "sender", "sender must be digits")
TOO_LONG = Refusal(_RINVSRCADR, "sender", "sender longer than the account's limit")
NOT_OWN = Refusal(_RINVSRCADR, "sender", "sender is not one of the account's service codes "
                                         "or an extension of one")


def _digits(s: str) -> bool:
    return s.isdigit() and s.isascii()


def effective_source(msg_source: str, account: AccountConfig) -> str | Refusal:
    """The source_addr to relay upstream, or the Refusal."""
    codes = account.service_codes
    if not codes:
        return NO_CODES
    max_len = account.sender_max_len or 20
    if account.sender_mode == "prefix":
        if msg_source and not _digits(msg_source):
            return NOT_DIGITS
        src = codes[0] + msg_source
        return src if len(src) <= max_len else TOO_LONG
    if not _digits(msg_source):
        return NOT_DIGITS
    if len(msg_source) > max_len:
        return TOO_LONG
    for code in codes:
        if msg_source.startswith(code):
            return msg_source
    return NOT_OWN


def check_sender(msg: Message, account: AccountConfig) -> Verdict:
    r = effective_source(msg.source_addr, account)
    return r if type(r) is Refusal else None
