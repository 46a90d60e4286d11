"""Unit tests of the HTTP API's pure parts: parameters, encoding, reply tables."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.http import params as PR
from proxyd.http import replies as R
from proxyd.http.encoding import split_payload, udh_fits, with_class
from proxyd.message import Refusal
from proxyd.gate import NO_BALANCE, NO_ROUTE, OPTED_OUT, STORE_DOWN
from proxyd.smpp import constants as C
from proxyd.text.codec import choose_encoding
from proxyd.text.split import TooManyParts, split_text
from proxyd.text.udh import parse_concat, split_udh


def args(**kw) -> dict:
    out = {}
    for k, v in kw.items():
        k = k.replace("_", "-")
        out[k.encode()] = [v if isinstance(v, bytes) else v.encode()]
    return out


BASE = dict(username="acme", password="pw", to="13800138000", text="hi")


# --- Kannel parameters -----------------------------------------------------------------------

def test_kannel_minimal():
    s = PR.parse_kannel(args(**BASE))
    assert s.recipients == ("13800138000",) and s.text == "hi" and s.data is None
    assert s.data_coding is None and s.dlr is None and s.source == ""


def test_kannel_recipients_split_on_spaces():
    s = PR.parse_kannel(args(**{**BASE, "to": " 13800138000  13900139000 +8613700137000 "}))
    assert s.recipients == ("13800138000", "13900139000", "+8613700137000")


@pytest.mark.parametrize("kw,text", [
    ({"to": None}, PR.K_MISSING_TO),
    ({"to": ""}, PR.K_EMPTY_TO),
    ({"dlr_mask": "x"}, PR.K_DLR_MASK),
    ({"dlr_mask": "64"}, PR.K_DLR_MASK),
    ({"dlr_mask": "-2"}, PR.K_DLR_MASK),
    ({"dlr_mask": "1.5"}, PR.K_DLR_MASK),
    ({"dlr_url": "mailto:x"}, PR.K_DLR_URL),
    ({"coding": "3"}, PR.K_CODING),
    ({"coding": "two"}, PR.K_CODING),
    ({"mclass": "4"}, PR.K_MCLASS),
    ({"validity": "-2"}, PR.K_VALIDITY),
    ({"deferred": "x"}, PR.K_DEFERRED),
    ({"priority": "9"}, PR.K_PRIORITY),
    ({"udh": b"\x05\x00\x03"}, PR.K_UDH),
    ({"charset": "bogus"}, PR.K_CHARSET),
    ({"text": b"\xff\xfe", "charset": "utf-8"}, PR.K_CHARSET),
    ({"text": b"+2D0AQQ-", "charset": "utf-7"}, PR.K_CHARSET),       # a lone surrogate
    ({"text": b"\\ud800", "charset": "unicode_escape"}, PR.K_CHARSET),
    ({"text": b"aGk=", "charset": "base64"}, PR.K_CHARSET),         # not a text encoding
    ({"text": "你好", "coding": "0"}, PR.K_CHARSET),
    ({"text": None}, PR.K_NO_TEXT),
])
def test_kannel_invalid(kw, text):
    a = {**BASE, **kw}
    a = {k: v for k, v in a.items() if v is not None}
    with pytest.raises(PR.Invalid) as e:
        PR.parse_kannel(args(**a))
    assert (e.value.status, e.value.text) == (400, text)


def test_kannel_undefined_values_accepted():
    s = PR.parse_kannel(args(**BASE, dlr_mask="-1", mclass="-1", coding="-1", validity="-1"))
    assert s.dlr is None and s.mclass is None and s.data_coding is None and s.validity == b""


def test_kannel_dlr_settings():
    s = PR.parse_kannel(args(**BASE, dlr_mask="31", dlr_url="https://cb.example/d?x=%d"))
    assert s.dlr == PR.DlrSettings("kannel", "https://cb.example/d?x=%d", 31, 0, "GET", 0x11)
    assert s.dlr.registered_delivery == 0x11
    assert PR.kannel_registered_delivery(1) == 1
    assert PR.kannel_registered_delivery(2) == 2
    assert PR.kannel_registered_delivery(3) == 1
    assert PR.kannel_registered_delivery(8 | 16) == 0
    assert PR.kannel_registered_delivery(4) == 0x10


def test_kannel_codings():
    assert PR.parse_kannel(args(**BASE, coding="0")).data_coding == 0
    s = PR.parse_kannel(args(**BASE, coding="2"))
    assert s.data_coding == 8 and s.text == "hi"
    s = PR.parse_kannel(args(**{**BASE, "text": b"\x00\xff"}, coding="1"))
    assert s.data_coding == 4 and s.data == b"\x00\xff" and s.text is None
    s = PR.parse_kannel(args(**{**BASE, "text": "你好".encode("utf-16-be")}, coding="2",
                             charset="UTF-16BE"))
    assert s.text == "你好"
    s = PR.parse_kannel(args(**{**BASE, "text": "é".encode("latin-1")}, charset="ISO-8859-1"))
    assert s.text == "é"
    # a UDH without a coding: 8-bit, as Kannel does
    s = PR.parse_kannel(args(**BASE, udh=b"\x05\x04\x0b\x84\x23\xf0"))
    assert s.data_coding == 4 and s.udh == b"\x05\x04\x0b\x84\x23\xf0"


def test_relative_time():
    assert PR.relative_time(90) == b"000000013000000R"
    assert PR.relative_time(1440 * 400 + 61) == b"010105010100000R"
    s = PR.parse_kannel(args(**BASE, validity="90", deferred="5"))
    assert s.validity == b"000000013000000R" and s.deferred == b"000000000500000R"
    with pytest.raises(PR.Invalid):
        PR.parse_kannel(args(**BASE, validity="999999999"))


# --- Jasmin parameters -----------------------------------------------------------------------

J = dict(username="acme", password="pw", to="13800138000", content="hello")


def test_jasmin_minimal():
    s = PR.parse_jasmin(args(**J))
    assert s.recipients == ("13800138000",) and s.text == "hello" and s.dlr is None


@pytest.mark.parametrize("kw,text", [
    ({"to": None}, "Mandatory argument [to] is not found."),
    ({"username": None}, "Mandatory argument [username] is not found."),
    ({"to": "12a"}, "Argument [to] has an invalid value: [12a]."),
    ({"coding": "11"}, "Argument [coding] has an invalid value: [11]."),
    ({"password": "x" * 17}, "Argument [password] has an invalid value: []."),
    ({"dlr": "maybe"}, "Argument [dlr] has an invalid value: [maybe]."),
    ({"dlr_url": "ftp://x"}, "Argument [dlr-url] has an invalid value: [ftp://x]."),
    ({"dlr_method": "PUT"}, "Argument [dlr-method] has an invalid value: [PUT]."),
    ({"priority": "4"}, "Argument [priority] has an invalid value: [4]."),
    ({"validity_period": "-1"}, "Argument [validity-period] has an invalid value: [-1]."),
    ({"content": None}, "content or hex-content not present."),
    ({"hex_content": "00"}, "content and hex-content cannot be used both in same request."),
    ({"content": None, "hex_content": "zz"}, "Invalid hex-content data."),
    ({"content": "你好", "coding": "0"},
     "Argument [content] cannot be encoded in coding 0 (GSM 03.38)."),
])
def test_jasmin_invalid(kw, text):
    a = {**J, **kw}
    a = {k: v for k, v in a.items() if v is not None}
    with pytest.raises(PR.Invalid) as e:
        PR.parse_jasmin(args(**a))
    assert (e.value.status, e.value.text) == (400, text)


def test_jasmin_dlr_defaults():
    s = PR.parse_jasmin(args(**J, dlr_url="http://cb.example/x"))
    assert s.dlr == PR.DlrSettings("jasmin", "http://cb.example/x", 0, 1, "POST", 0)
    s = PR.parse_jasmin(args(**J, dlr="yes", dlr_level="2", dlr_method="get"))
    assert s.dlr == PR.DlrSettings("jasmin", "", 0, 2, "GET", 1)
    assert PR.parse_jasmin(args(**J, dlr="no")).dlr is None


def test_jasmin_hex_content_decoded_for_the_filter():
    a = {k: v for k, v in J.items() if k != "content"}
    s = PR.parse_jasmin(args(**a, hex_content="4f60597d", coding="8"))
    assert s.data == "你好".encode("utf-16-be") and s.data_coding == 8 and s.text == "你好"


# --- encoding ------------------------------------------------------------------------------

def test_encode_chinese_300_is_five_parts():
    text = "中" * 300
    enc = PR.encode(text, None, None, b"", None, 10, 7)
    assert enc.data_coding == 8 and enc.esm_class == 0x40 and len(enc.payloads) == 5
    for i, p in enumerate(enc.payloads, 1):
        udh, rest = split_udh(p)
        assert parse_concat(udh) == (7, 5, i)


def test_encode_too_many_parts():
    with pytest.raises(TooManyParts) as e:
        PR.encode("x" * 161 * 3, None, None, b"", None, 3, 0)
    assert e.value.parts_needed == 4 and e.value.max_parts == 3


def test_encode_forced_ucs2_and_class():
    enc = PR.encode("hi", None, 8, b"", 1, 10, 0)
    assert enc.data_coding == 0x19 and enc.payloads == ("hi".encode("utf-16-be"),)
    assert with_class(0, 0) == 0xF0 and with_class(4, 3) == 0xF7 and with_class(8, 2) == 0x1A


def test_encode_with_udh():
    udh = b"\x05\x00\x03\x01\x02\x01"
    enc = PR.encode("a" * 153, None, 0, udh, None, 10, 0)
    assert enc.payloads == (udh + b"a" * 153,) and enc.esm_class == 0x40
    with pytest.raises(PR.Invalid):
        PR.encode("a" * 154, None, 0, udh, None, 10, 0)
    assert udh_fits(8, udh, b"x" * 134) and not udh_fits(8, udh, b"x" * 135)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab€{中😀\n"), max_size=700))
def test_split_payload_matches_split_text(text):
    try:
        dc, expected = split_text(text, 255, 9)
    except TooManyParts:
        return
    dc2, payload = choose_encoding(text)
    assert dc == dc2
    assert split_payload(dc, payload, 255, 9) == expected


@given(st.binary(max_size=1000))
def test_split_binary_parts_fit(data):
    parts = split_payload(4, data, 255, 1)
    assert all(len(p) <= 140 for p in parts)
    if len(parts) > 1:
        assert b"".join(split_udh(p)[1] for p in parts) == data
    else:
        assert parts == [data]


# --- reply tables --------------------------------------------------------------------------

CONTENT = Refusal(C.STATUS["PROXYD_RCONTENT"], "content", "content refused: category rumours",
                  category="rumours")


@pytest.mark.parametrize("outcome,kannel,jasmin", [
    (R.Accepted((b"abc",)), (202, "0: Accepted for delivery"), (200, 'Success "abc"')),
    (R.Refused(NO_BALANCE), (402, "Insufficient balance, rejected"),
     (403, 'Error "Cannot charge submit_sm: insufficient balance"')),
    (R.Refused(NO_ROUTE), (403, "Not routable. Do not try again."),
     (412, 'Error "No route found"')),
    (R.Refused(STORE_DOWN), (503, "Temporal failure, try again later."),
     (503, 'Error "Service temporarily unavailable, try again later"')),
    (R.Refused(OPTED_OUT), (403, "Receiver has opted out, rejected"),
     (403, 'Error "Destination has opted out"')),
    (R.Refused(CONTENT), (403, "Content refused (rumours), rejected"),
     (403, 'Error "Content refused: category rumours"')),
    (R.Failed(C.STATUS["ESME_RMSGQFUL"], 0, 1), (503, "Temporal failure, try again later."),
     (503, 'Error "Cannot send submit_sm: ESME_RMSGQFUL, try again later"')),
    (R.Failed(C.STATUS["ESME_RINVDSTADR"], 2, 5),
     (403, "Rejected by the operator (ESME_RINVDSTADR). Do not try again. (2 of 5 parts sent)"),
     (500, 'Error "Cannot send submit_sm: ESME_RINVDSTADR (2 of 5 parts sent)"')),
])
def test_reply_tables(outcome, kannel, jasmin):
    assert R.kannel_reply(outcome) == kannel
    assert R.jasmin_reply(outcome) == jasmin


def test_every_policy_reason_has_a_kannel_reply():
    for reason in ("caller", "sender", "destination", "binary", "rate", "signature",
                   "unsubscribe", "balance", "store", "route", "capacity", "optout"):
        assert reason in R.KANNEL_REFUSALS and reason in R.JASMIN_REFUSALS


def test_kannel_receivers_capped():
    PR.check_receivers(args(**{**BASE, "to": " ".join(["13800138000"] * 100)}), 100)
    PR.check_receivers(args(username="x"), 100)                     # no `to`: parse says
    with pytest.raises(PR.Invalid) as e:
        PR.check_receivers(args(**{**BASE, "to": " ".join(["13800138000"] * 101)}), 100)
    assert (e.value.status, e.value.text) == (
        400, "Too many receivers: 101, at most 100 allowed, rejected")


def test_kannel_receivers_capped_before_authentication():
    """Over max_receivers the request is refused before the registry is asked at all."""
    from twisted.web import resource

    from proxyd.http.api import Api

    class Registry:
        def authenticate(self, user, password):
            raise AssertionError("authenticated a request with too many receivers")

    api = Api(Registry(), None, None, None, None, _Router(), resource.Resource(),
              max_receivers=3)
    code, body = _get(api, b"/cgi-bin/sendsms", username="acme", password="pw", text="x",
                      to="13800138001 13800138002 13800138003 13800138004")
    assert (code, body) == (400, b"Too many receivers: 4, at most 3 allowed, rejected")


def test_kannel_prefix_mode_without_from_sends_the_code_once():
    from twisted.web import resource

    from proxyd.config import AccountConfig
    from proxyd.http.api import Api
    from proxyd.policy.sender import effective_source

    account = AccountConfig(system_id="acme", password="pw", service_codes=("1069000",),
                            sender_mode="prefix")
    sent = []

    class Gate:
        def send(self, acct, msg, done):
            sent.append(msg)
            done(0, [b"id1"], None, 1)

    class Receipts:
        def expect_http_dlr(self, *a, **kw):
            pass

    api = Api(_Registry(account), None, Gate(), Receipts(), None, _Router(),
              resource.Resource())
    code, _ = _get(api, b"/cgi-bin/sendsms", username="acme", password="pw", text="x",
                   to="13800138001")
    assert code == 202
    assert effective_source(sent[0].source_addr, account) == "1069000"


def test_kannel_multi_escapes_numbers():
    ok = R.Accepted((b"id",))
    status, body = R.kannel_multi(("13800138000", "<b>1</b>"),
                                  [ok, R.Refused(OPTED_OUT)])
    assert "<b>" not in body and "&lt;b&gt;1&lt;/b&gt;" in body


def test_kannel_multi():
    ok = R.Accepted((b"1",))
    assert R.kannel_multi(("a", "b"), [ok, ok]) == (202, "0: Accepted for delivery")
    status, body = R.kannel_multi(("a", "b"), [ok, R.Refused(OPTED_OUT)])
    assert status == 202 and body.splitlines() == [
        "0: Accepted for delivery. Denied receivers are: b",
        "a: 202 0: Accepted for delivery", "b: 403 Receiver has opted out, rejected"]
    status, body = R.kannel_multi(("a", "b"), [R.Refused(NO_BALANCE), R.Refused(OPTED_OUT)])
    assert status == 402 and body.startswith("Sending failed. Failed receivers are: a b\n")


def test_outcome_from_status():
    assert R.outcome_from_status(0, b"x") == R.Accepted((b"x",))
    assert R.outcome_from_status(C.STATUS["PROXYD_RNOBALANCE"], b"").refusal.reason == "balance"
    assert type(R.outcome_from_status(C.STATUS["ESME_RSUBMITFAIL"], b"")) is R.Failed


# --- the resource, built from its collaborators (no sockets) --------------------------------

class _Registry:
    def __init__(self, account) -> None:
        self.account = account

    def authenticate(self, user: str, password: str, peer: str):
        from twisted.internet import defer
        ok = user == self.account.system_id and password == "pw"
        return defer.succeed((0 if ok else C.STATUS["ESME_RINVPASWD"],
                              self.account if ok else None))


class _Ledger:
    def balance(self, account: str):
        from twisted.internet import defer
        return defer.succeed(1234)


class _Router:
    def routable(self, dest: str, account) -> bool:
        return dest.startswith("138")


def _api(ledger):
    from twisted.web import resource

    from proxyd.config import AccountConfig
    from proxyd.http.api import Api

    account = AccountConfig(system_id="acme", password="pw", price=7)
    return Api(_Registry(account), None, None, None, ledger, _Router(), resource.Resource())


def _get(api, path: bytes, **kw):
    from twisted.web.test.requesthelper import DummyRequest

    req = DummyRequest([b""])
    req.channel = object()
    req.path = req.uri = path
    req.method = b"GET"
    req.args = args(**kw)
    api.render(req)
    return req.responseCode, b"".join(req.written)


def test_api_balance_from_its_ledger():
    from proxyd.gate.nulls import FreeLedger

    assert _get(_api(_Ledger()), b"/balance", username="acme", password="pw") == (
        200, b'{"balance": 1234, "sms_count": "ND"}')
    assert _get(_api(FreeLedger()), b"/balance", username="acme", password="pw") == (
        503, b'"Balance unavailable, try again later"')
    assert _get(_api(_Ledger()), b"/balance", username="acme", password="no")[0] == 403


def test_api_rate_from_its_router():
    api = _api(_Ledger())
    assert _get(api, b"/rate", username="acme", password="pw", to="13800138000") == (
        200, b'{"unit_rate": 7, "submit_sm_count": 1}')
    assert _get(api, b"/rate", username="acme", password="pw", to="15000000000") == (
        412, b'"No route found"')
