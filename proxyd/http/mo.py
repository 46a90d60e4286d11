"""MO (replies from handsets) to an account's `mo_url`: the URL, Kannel sms-service style.

The account's `mo_url` is a template; these placeholders are replaced (URL-encoded):

    %p  the sender (the handset's number)      %P  the receiver (service code + extension)
    %a  the whole text (UTF-8)                 %b  the original bytes, hex
    %k  the first word of the text             %s  the second word
    %r  the words after the first              %t  time received, YYYY-MM-DD HH:MM:SS (UTC)
    %c  the data_coding (0 GSM, 1 binary, 2 UCS-2 in Kannel's terms)
    %i  the upstream (SMSC) name               %I  proxyd's id of the MO
    %%  a literal %

A long MO arrives as parts; it is reassembled before the URL is called, so %a is the whole
text. The call is made with GET, durable and retried like an HTTP receipt (README, "Delivery
reports"); any 2xx answer is success.
"""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

__all__ = ["mo_values", "mo_url", "fill"]


def _kannel_coding(dc: int) -> str:
    if dc == 8:
        return "2"
    if dc in (2, 4) or (dc & 0xF4) == 0xF4:
        return "1"
    return "0"


def mo_values(facts: dict[str, Any]) -> dict[str, str]:
    """Placeholder values from the facts of one (whole) MO: from, to, text, raw (bytes),
    dc, upstream, id, ts (seconds)."""
    text = facts.get("text") or ""
    words = text.split()
    ts = facts.get("ts")
    if ts is None:
        ts = time.time()
    return {
        "p": facts.get("from", ""), "P": facts.get("to", ""), "a": text,
        "b": (facts.get("raw") or b"").hex(), "k": words[0] if words else "",
        "s": words[1] if len(words) > 1 else "", "r": " ".join(words[1:]),
        "t": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)),
        "c": _kannel_coding(int(facts.get("dc", 0))), "i": facts.get("upstream", ""),
        "I": facts.get("id", ""),
    }


def mo_url(template: str, facts: dict[str, Any]) -> str:
    """The template with every known placeholder replaced by its URL-encoded value; an
    unknown %x is left as it is."""
    return fill(template, mo_values(facts))


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with each ``%x`` whose x is a key of `values` replaced by that value,
    URL-encoded, and ``%%`` by ``%``; an unknown %x is left as it is. (Shared by the
    templates of mo_url and of the low-balance notice's notify_url.)"""
    out = []
    i = 0
    n = len(template)
    while i < n:
        ch = template[i]
        if ch == "%" and i + 1 < n:
            key = template[i + 1]
            if key == "%":
                out.append("%")
                i += 2
                continue
            if key in values:
                out.append(quote(values[key], safe=""))
                i += 2
                continue
        out.append(ch)
        i += 1
    return "".join(out)
