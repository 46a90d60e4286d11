"""Destinations: syntax, the number key used for opt-out sets, unsubscribe replies.

The opt-out set itself lives in the store; the gate looks the normalised destination up
(asynchronously) and passes the answer to `check_optout`.
"""
from __future__ import annotations

from functools import lru_cache

from proxyd.message import Refusal, Verdict
from proxyd.policy.content import normalise
from proxyd.smpp.constants import STATUS

_RINVDSTADR = STATUS["ESME_RINVDSTADR"]
BAD_DESTINATION = Refusal(_RINVDSTADR, "destination",
                          "destination must be 5 to 20 digits, optionally after '+'")
OPTED_OUT = Refusal(_RINVDSTADR, "optout", "destination has opted out of this account")


def check_destination(dest: str) -> Verdict:
    d = dest[1:] if dest[:1] == "+" else dest
    if 5 <= len(d) <= 20 and d.isdigit() and d.isascii():
        return None
    return BAD_DESTINATION


def normalise_number(s: str) -> str:
    """One key per subscriber: '+8613800138000', '008613800138000', '8613800138000' and
    '13800138000' are all '13800138000'. Other numbers lose only a leading '+'."""
    s = s.strip()
    if s[:1] == "+":
        s = s[1:]
    if len(s) == 15 and s.startswith("00861"):
        return s[4:]
    if len(s) == 13 and s.startswith("861"):
        return s[2:]
    return s


def check_optout(dest_normalised: str, opted_out: bool) -> Verdict:
    return OPTED_OUT if opted_out else None


@lru_cache(maxsize=16)
def _word_set(words: tuple[str, ...]) -> frozenset[str]:
    return frozenset(w for w in (normalise(x) for x in words) if w)


def is_unsubscribe(text: str, words: tuple[str, ...]) -> bool:
    """True if the (MO) text is, once normalised, one of `words` normalised:
    "T", "td", " 退订 ", "Ｔ", "退訂" ..."""
    return normalise(text) in _word_set(tuple(words))
