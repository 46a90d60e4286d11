"""MO URL templates (pure)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from proxyd.http.mo import mo_url, mo_values


def test_placeholders_are_replaced_and_encoded():
    facts = {"from": "+8613800138000", "to": "1069000188", "text": "TD 退订 now",
             "raw": b"\x00T", "dc": 8, "upstream": "cmcc", "id": "abc123", "ts": 0}
    url = mo_url("http://crm.example/mo?from=%p&to=%P&text=%a&kw=%k&rest=%r&dc=%c"
                 "&smsc=%i&id=%I&hex=%b&t=%t&pct=100%%", facts)
    q = parse_qs(urlsplit(url).query)
    assert q["from"] == ["+8613800138000"]
    assert q["to"] == ["1069000188"]
    assert q["text"] == ["TD 退订 now"]
    assert q["kw"] == ["TD"] and q["rest"] == ["退订 now"]
    assert q["dc"] == ["2"] and q["smsc"] == ["cmcc"] and q["id"] == ["abc123"]
    assert q["hex"] == ["0054"]
    assert q["t"] == ["1970-01-01 00:00:00"]
    assert url.endswith("pct=100%")


def test_unknown_placeholder_left_alone_and_no_injection():
    url = mo_url("http://x/?a=%a&z=%z", {"text": "a&b=c"})
    assert url == "http://x/?a=a%26b%3Dc&z=%z"


def test_codings():
    assert mo_values({"dc": 0})["c"] == "0"
    assert mo_values({"dc": 4})["c"] == "1"
    assert mo_values({"dc": 8})["c"] == "2"
