"""HTTP delivery reports: building the Kannel / Jasmin calls (pure), own receipt err codes,
receipt parsing, and the caller's retry/backoff/give-up logic against fakes (no sockets)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from proxyd.delivery import own_err, parse_receipt
from proxyd.http import dlr as D
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

KANNEL = {"api": "kannel", "url": "http://h/dlr?t=%d&p=%p&P=%P&T=%T&t2=%t&A=%A&F=%F&I=%I"
          "&n=%n&i=%i&c=%c&k=%k&x=%x", "mask": 31, "level": 0, "method": "GET",
          "acct": "acme", "to": "13800138000"}
FINAL = {"ev": "final", "mid": "abc123", "up": "sim", "smsc_id": "00ff", "state": 2,
         "stat": "DELIVRD", "err": "000", "sub": "001", "dlvrd": "001",
         "subdate": "2401011200", "donedate": "2401011201", "text": "hello there",
         "reply": "id:abc123 sub:001 dlvrd:001 stat:DELIVRD err:000 text:hello there",
         "t": 1700000000, "to": "13800138000", "from": "10690001", "dc": 8}


def q(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def test_kannel_every_placeholder():
    r = D.build_request(KANNEL, FINAL)
    assert r.method == "GET" and r.body is None
    got = q(r.url)
    assert got == {"t": "1", "p": "13800138000", "P": "10690001", "T": "1700000000",
                   "t2": "2023-11-14 22:13", "A": FINAL["reply"], "F": "00ff",
                   "I": "abc123", "n": "acme", "i": "sim", "c": "2", "k": "id:abc123",
                   "x": "%x"}
    # values are URL-encoded: the reply's spaces and colons do not leak into the URL
    assert " " not in r.url and "id%3Aabc123" in r.url


@pytest.mark.parametrize("state,stat,kind", [(2, "DELIVRD", 1), (5, "UNDELIV", 2),
                                             (8, "REJECTD", 2), (3, "EXPIRED", 2),
                                             (1, "ENROUTE", 4), (6, "ACCEPTD", 4)])
def test_kannel_type_from_state(state, stat, kind):
    assert D.kannel_type(dict(FINAL, state=state, stat=stat)) == kind


@pytest.mark.parametrize("mask,facts,called", [
    (1, FINAL, True), (2, FINAL, False), (2, dict(FINAL, state=5), True),
    (1, dict(FINAL, state=5), False), (4, dict(FINAL, state=1), True),
    (8, {"ev": "smsc", "mid": "m"}, True), (1, {"ev": "smsc", "mid": "m"}, False),
    (16, {"ev": "smsc", "mid": "m", "status": 0x14}, True),
    (8, {"ev": "smsc", "mid": "m", "status": 0x14}, False),
])
def test_kannel_only_when_the_mask_bit_matches(mask, facts, called):
    r = D.build_request(dict(KANNEL, mask=mask), facts)
    assert (r is not None) == called


def test_kannel_smsc_ack():
    r = D.build_request(dict(KANNEL, mask=8), {"ev": "smsc", "mid": "m1", "up": "sim",
                                              "smsc_id": "9", "reply": "ACK/", "t": 0,
                                              "to": "1380"})
    got = q(r.url)
    assert (got["t"], got["A"], got["I"], got["F"]) == ("8", "ACK/", "m1", "9")


def test_kannel_url_without_placeholders_and_literal_percent():
    assert D.kannel_url("http://h/x?a=1", {"d": "1"}) == "http://h/x?a=1"
    assert D.kannel_url("http://h/x?a=%2F&d=%d", {"d": "1"}) == "http://h/x?a=%2F&d=1"
    assert D.kannel_url("http://h/%", {"d": "1"}) == "http://h/%"


def test_jasmin_levels_and_methods():
    js = {"api": "jasmin", "url": "http://h/dlr", "mask": 0, "level": 1, "method": "POST",
          "acct": "acme", "to": "1380"}
    smsc = {"ev": "smsc", "mid": "m1", "up": "sim"}
    assert D.build_request(js, FINAL) is None                 # level 1: SMSC only
    r = D.build_request(js, smsc)
    assert r.method == "POST" and r.url == "http://h/dlr"
    assert parse_qs(r.body.decode()) == {"id": ["m1"], "message_status": ["ESME_ROK"],
                                         "level": ["1"], "connector": ["sim"]}
    js2 = dict(js, level=2, method="GET", url="http://h/dlr?k=v")
    assert D.build_request(js2, smsc) is None                 # level 2: terminal only
    r = D.build_request(js2, FINAL)
    assert r.method == "GET" and r.body is None and r.url.startswith("http://h/dlr?k=v&")
    got = q(r.url)
    assert got["id"] == "abc123" and got["id_smsc"] == "00ff" and got["level"] == "2"
    assert got["message_status"] == "DELIVRD" and got["err"] == "000"
    assert got["subdate"] == "2401011200" and got["text"] == "hello there"
    js3 = dict(js, level=3)
    assert D.build_request(js3, smsc) is not None and D.build_request(js3, FINAL) is not None


def test_accepted_answers():
    assert D.accepted({"api": "kannel"}, 200, b"")
    assert D.accepted({"api": "kannel"}, 204, b"")
    assert not D.accepted({"api": "kannel"}, 500, b"ACK/Jasmin")
    assert not D.accepted({"api": "kannel"}, 302, b"")
    assert D.accepted({"api": "jasmin"}, 500, b"ACK/Jasmin")
    assert not D.accepted({"api": "jasmin"}, 500, b"NACK")


def test_no_url_no_call():
    assert D.build_request(dict(KANNEL, url=""), FINAL) is None


# --- own receipts and parsing ------------------------------------------------------------------
def test_own_err_codes():
    S = C.STATUS
    assert own_err("REJECTD", S["PROXYD_RCONTENT"]) == "400"
    assert own_err("REJECTD", S["PROXYD_RNOBALANCE"]) == "401"
    assert own_err("UNDELIV", S["ESME_RDELIVERYFAILURE"]) == "408"
    assert own_err("REJECTD", S["ESME_RINVDSTADR"]) == "011"
    assert own_err("REJECTD", S["ESME_RMSGQFUL"]) == "020"


def test_parse_receipt_text_and_tlv():
    pdu = P.DeliverSm(esm_class=4, short_message=b"id:77 sub:001 dlvrd:001 submit date:"
                      b"2401011200 done date:2401011205 stat:DELIVRD err:000 text:Hi there",
                      tlvs=((C.TAG_MESSAGE_STATE, b"\x02"),))
    r = parse_receipt(pdu)
    assert (r["state"], r["stat"], r["err"], r["subdate"], r["donedate"], r["text"]) == (
        2, "DELIVRD", "000", "2401011200", "2401011205", "Hi there")
    r = parse_receipt(P.DeliverSm(esm_class=4, short_message=b"id:7 stat:UNDELIV err:012"))
    assert (r["state"], r["stat"], r["err"]) == (5, "UNDELIV", "012")
    r = parse_receipt(P.DataSm(esm_class=4, tlvs=((C.TAG_MESSAGE_STATE, b"\x03"),)))
    assert (r["state"], r["stat"]) == (3, "EXPIRED")


# --- the caller, with a fake store and a fake HTTP client ---------------------------------------
class FakeMessages:
    def __init__(self, items):
        self.items = {cb_id: (s, f, 0) for cb_id, s, f in items}
        self.due = {cb_id: 0 for cb_id in self.items}
        self.cleared = []
        self.clock = None

    def claim(self, account, lease_s, count):
        now = int(self.clock.seconds() * 1000)
        out = []
        for cb_id, due in list(self.due.items()):
            if due <= now and len(out) < count:
                self.due[cb_id] = now + int(lease_s * 1000)
                s, f, n = self.items[cb_id]
                out.append((cb_id, s, f, n))
        return defer.succeed(out)

    def callback_done(self, account, cb_id):
        self.cleared.append(cb_id)
        self.due.pop(cb_id, None)
        return defer.succeed(None)

    def callback_retry(self, account, cb_id, due_ms):
        s, f, n = self.items[cb_id]
        self.items[cb_id] = (s, f, n + 1)
        self.due[cb_id] = due_ms
        return defer.succeed(None)


class FakeClient:
    """The callback client: answers each call with the next code (None: a failure)."""

    def __init__(self, codes):
        self.codes = list(codes)
        self.calls = []

    def call(self, req):
        self.calls.append((req.method, req.url))
        code = self.codes.pop(0)
        if code is None:
            return defer.fail(RuntimeError("connection refused"))
        return defer.succeed((code, b""))


def caller(codes, items, max_attempts=5, **kw):
    clock = Clock()
    m = FakeMessages(items)
    m.clock = clock
    http = FakeClient(codes)
    c = D.DlrCaller(m, clock, lambda: ["acme"], http, max_attempts=max_attempts,
                    backoff_s=1.0, **kw)
    return c, m, http, clock


def test_caller_retries_with_backoff_until_2xx():
    c, m, http, clock = caller([500, None, 200], [("cb1", KANNEL, FINAL)])
    c.kick("acme")
    assert len(http.calls) == 1 and m.due["cb1"] == 1000        # retry in 1 s
    clock.advance(0.999)
    c.poll()
    assert len(http.calls) == 1
    clock.advance(0.001)
    c.poll()
    assert len(http.calls) == 2 and m.due["cb1"] == 1000 + 2000  # then 2 s
    clock.advance(2)
    c.poll()
    assert len(http.calls) == 3 and m.cleared == ["cb1"]
    assert c.counters["dlr_ok"] == 1 and c.counters["dlr_retried"] == 2
    assert c.inflight == 0


def test_caller_gives_up_and_counts():
    c, m, http, clock = caller([500] * 3, [("cb1", KANNEL, FINAL)], max_attempts=3)
    for _ in range(3):
        c.poll()
        clock.advance(100)
    assert len(http.calls) == 3 and m.cleared == ["cb1"]
    assert c.counters["dlr_failed"] == 1


def test_caller_skips_what_the_mask_excludes_and_bounds_concurrency():
    c, m, http, clock = caller([], [("cb1", dict(KANNEL, mask=2), FINAL)])
    c.kick("acme")
    assert http.calls == [] and m.cleared == ["cb1"] and c.counters["dlr_skipped"] == 1
    items = [("cb%d" % i, KANNEL, FINAL) for i in range(30)]
    c, m, http, clock = caller([], items, per_account=20)
    pending = []
    http.call = lambda req: (pending.append(defer.Deferred()) or pending[-1])
    c.kick("acme")
    assert len(pending) == c.concurrency == 20 and c.inflight == 20
    c.kick("acme")                       # no free slot: nothing more taken
    assert len(pending) == 20
    pending[0].callback((200, b""))
    assert c.inflight == 19
    c.kick("acme")
    assert len(pending) == 21


SMSC_FAIL = {"ev": "smsc", "mid": "", "up": "", "smsc_id": "", "to": "13800138000",
             "reply": "NACK/69/ESME_RSUBMITFAIL", "t": 1700000000, "status": 0x45,
             "status_name": "ESME_RSUBMITFAIL"}


def test_kannel_smsc_rejected_type_16():
    r = D.build_request(dict(KANNEL, mask=16), SMSC_FAIL)
    assert r is not None and r.method == "GET"
    got = q(r.url)
    assert got["t"] == "16" and got["p"] == "13800138000" and got["n"] == "acme"
    assert got["A"] == "NACK/69/ESME_RSUBMITFAIL" and got["k"] == "NACK/69/ESME_RSUBMITFAIL"
    assert got["I"] == ""
    # a client that asked for 8 (accepted) only gets nothing for a rejection
    assert D.build_request(dict(KANNEL, mask=8 | 1 | 2), SMSC_FAIL) is None


def test_kannel_number_from_settings_when_the_facts_have_none():
    r = D.build_request(dict(KANNEL, mask=2), dict(FINAL, state=3, stat="EXPIRED", to=""))
    assert q(r.url)["p"] == "13800138000" and q(r.url)["t"] == "2"


@pytest.mark.parametrize("level,called", [(1, True), (3, True), (2, False)])
def test_jasmin_level_1_failure(level, called):
    settings = {"api": "jasmin", "url": "http://h/j", "mask": 0, "level": level,
                "method": "GET", "acct": "acme", "to": "13800138000"}
    r = D.build_request(settings, SMSC_FAIL)
    assert (r is not None) == called
    if called:
        got = q(r.url)
        assert got["level"] == "1" and got["message_status"] == "ESME_RSUBMITFAIL"


def test_own_err_expired():
    assert own_err("EXPIRED", 409) == "409"


def test_every_failure_path_gives_its_slot_back():
    """A client that raises, one that fails with a refusal, one that never answers: the
    first two are dropped at once and free their slots; the share per account holds."""
    items = [("cb%d" % i, KANNEL, FINAL) for i in range(6)]
    c, m, http, clock = caller([], items, concurrency=4, per_account=2)
    http.call = lambda req: 1 / 0
    c.kick("acme")
    assert c.inflight == 0 and c.inflight_of == {} and m.cleared == ["cb0", "cb1"]
    assert c.counters["dlr_failed"] == 2
    from proxyd.http.callclient import Refused
    http.call = lambda req: defer.fail(Refused("127.0.0.1 is not a public address"))
    c.kick("acme")
    assert c.inflight == 0 and m.cleared[2:] == ["cb2", "cb3"]
    assert c.counters["dlr_refused"] == 2
    pending = []
    http.call = lambda req: (pending.append(defer.Deferred()) or pending[-1])
    c.kick("acme")
    c.kick("acme")
    assert len(pending) == 2 and c.inflight_of == {"acme": 2}    # the account's share
    pending[0].errback(RuntimeError("deadline"))
    pending[1].callback((200, b""))
    assert c.inflight == 0 and c.inflight_of == {}
