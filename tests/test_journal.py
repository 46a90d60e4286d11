"""The message journal (issue 8): hash chain, verify, trace, report, export; real valkey."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from proxyd.admin import run_script
from proxyd.store import journal as J
from proxyd.store import ledger as L
from tests.conftemplate import config_text
from tests.valkey_fixture import connect_store, valkey_class, valkey_socket  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SEP = "\x1f"


def admin(cfg: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "proxyd.admin", "--config", cfg, *args],
                          capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=120)


@pytest.fixture
def setup(valkey_socket: str, tmp_path: Path) -> Any:
    import valkey

    acct = "j" + uuid.uuid4().hex[:10]
    cfg = tmp_path / "proxyd.toml"
    cfg.write_text(config_text(store={"url": "unix://%s" % valkey_socket},
                               account={"system_id": acct, "password": "pw", "service_codes": None,
                                        "price": 5}))
    client = valkey.Valkey(unix_socket_path=valkey_socket, decode_responses=True)
    yield client, acct, str(cfg), L.day_of(time.time())
    client.close()


def batch(client: Any, acct: str, *ops: tuple) -> list[str]:
    packed = SEP.join(SEP.join(str(f) for f in op) for op in ops)
    return run_script(client, "batch", acct, packed).split(",")


def scripted_mix(client: Any, acct: str) -> dict[str, str]:
    """A day of one account: top-up, accepted, refused for each reason, upstream errors,
    receipts of each state, a multipart message, an outcome that never came."""
    run_script(client, "topup", acct, 1000, "invoice 1")
    r = batch(client, acct,
              ("a", 5, "13800000001", "", 1, "m1"),
              ("a", 5, "", "13800000002", 1, "m2"),
              ("a", 5, "13800000003", "", 3, "long1", "long2", "long3"),
              ("a", 5, "", "", 1, "m4"),
              ("a", 5, "", "", 1, "lost"))
    assert r == ["0:995", "0:990", "0:975", "0:970", "0:965"]
    client.sadd("optout:{%s}" % acct, "13900000009")
    r = batch(client, acct,
              ("a", 5, "13900000009", "", 2, "o1", "o2"),          # opted out, 2 parts
              ("a", 5000, "", "", 1, "big"),                        # insufficient balance
              ("x", "content", "", 3),                             # multipart content refusal
              ("x", "sender", "", 1),
              ("c", "m1", "up=sim id=U1"),
              ("r", "m2", "up=sim status=ESME_RTHROTTLED"),
              ("c", "long1", "up=sim id=U2"), ("c", "long2", "up=sim id=U3"),
              ("c", "long3", "up=sim id=U4"),
              ("e", "receipt", "m1", "DELIVRD 000"),
              ("e", "receipt", "long1", "DELIVRD 000"),
              ("e", "receipt", "long2", "UNDELIV 001"),
              ("e", "receipt", "long3", "EXPIRED 000"))
    assert r == ["-3:965", "-1:965", "3", "1", "5", "5", "5", "5", "5", "0", "0", "0", "0"]
    run_script(client, "adjust", acct, -15, "goodwill correction")
    # 'lost' is swept (its outcome never came); m4 stays open
    client.hset("res:{%s}" % acct, "lost", "5:1")  # as if reserved long ago
    assert run_script(client, "sweep", acct, 1000, 1000, J.UNKNOWN_OUTCOME) == ["lost", 5]
    return {}


def test_report_balances_after_a_mix(setup: Any) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    r = admin(cfg, "report", acct, "--date", day, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    p, a = rep["parts"], rep["amounts"]
    assert p["submitted"] == 7 + 2 + 1 + 3 + 1
    assert p["refused_by_reason"] == {"optout": 2, "insufficient_balance": 1, "content": 3,
                                      "sender": 1}
    assert (p["accepted_by_upstream"], p["refused_by_upstream"], p["outcome_unknown"],
            p["pending"]) == (4, 1, 1, 1)
    assert (p["delivered"], p["undelivered"]) == (2, 2)
    assert (a["charged"], a["refunded"], a["topups"], a["adjustments"]) == (20, 10, 1000, -15)
    assert (a["balance_start"], a["balance_end"]) == (0, 1000 - 35 + 10 - 15)
    assert all(i["holds"] for i in rep["identities"]) and rep["ok"]
    text = admin(cfg, "report", acct, "--from", day, "--to", day)
    assert text.returncode == 0 and "[FAIL]" not in text.stdout and "[ok]" in text.stdout
    assert admin(cfg, "verify", acct, "--date", day).returncode == 0


def test_trace_shows_every_event_in_order(setup: Any) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    r = admin(cfg, "trace", "long2")
    assert r.returncode == 0, r.stderr
    events = [line.split("\t")[3] for line in r.stdout.splitlines()]
    assert events == ["reserved", "committed", "receipt"]
    assert "up=sim id=U3" in r.stdout and "UNDELIV 001" in r.stdout
    # by destination: every part of the multipart message, each part's events in order
    r = admin(cfg, "trace", "--account", acct, "--to", "+8613800000003", "--date", day)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert sorted({row[2] for row in rows}) == ["long1", "long2", "long3"]
    for part in ("long1", "long2", "long3"):
        assert [row[3] for row in rows if row[2] == part] == ["reserved", "committed",
                                                              "receipt"]
    # a refused message is traced too (opt-out, per part)
    r = admin(cfg, "trace", "o2", "--account", acct)
    assert [line.split("\t")[3] for line in r.stdout.splitlines()] == ["rejected"]
    assert admin(cfg, "trace", "no-such-id", "--account", acct).returncode == 1


def _rewrite(client: Any, key: str, change: Any) -> None:
    """Rewrite a stream by hand with the same entry ids, `change(id, fields)` -> fields or
    None (drop)."""
    entries = client.xrange(key)
    client.delete(key)
    for entry_id, fields in entries:
        fields = change(entry_id, fields)
        if fields is not None:
            client.xadd(key, fields, id=entry_id)


def test_lease_record_ops_and_their_short_answers(setup: Any) -> None:
    client, acct, cfg, day = setup
    run_script(client, "topup", acct, 1000, "invoice 1")
    granted = batch(client, acct, ("L", "n1", 5, 100, 30000, 0))
    assert granted == ["100:900"]
    # l: fresh ids, answered "" when recorded; C/R: "" when something was open, else -1
    assert batch(client, acct, ("l", 5, "n1", "138", 2, "p1", "p2"), ("C", "p1", "up=a id=1"),
                 ("R", "p2", "up=a status=x"), ("C", "p1", "again"), ("R", "zz", "")) == \
        ["", "", "", "-1", "-1"]
    # g: parts reserved and settled in one (their outcomes came first): nothing stays open
    parts = "\x1e".join(["q1\x1d139\x1dC\x1dup=a id=2", "q2\x1d139\x1dR\x1dup=a status=y",
                         "q3\x1d\x1dC\x1dup=a id=3"])
    assert batch(client, acct, ("g", 5, "n1", 3, parts)) == [""]
    assert client.hgetall("res:{%s}" % acct) == {}
    # 100 - 5 parts x 5 taken from the lease, the refunds back to the free balance
    assert client.hget("lease:{%s}" % acct, "n1").startswith("75:")
    assert run_script(client, "balance", acct) == 1000 - 3 * 5
    recs = J.records_from_stream(client.xrange(L.journal_key(acct, day)), acct, day)
    assert [(r.event, r.msg_id, r.amount, r.balance_after, r.note)
            for r in recs if r.msg_id in ("q1", "q2", "q3")] == [
        ("reserved", "q1", 5, 990, "to=139"), ("committed", "q1", 5, 990, "up=a id=2"),
        ("reserved", "q2", 5, 985, "to=139"), ("refunded", "q2", 5, 990, "up=a status=y"),
        ("reserved", "q3", 5, 985, ""), ("committed", "q3", 5, 985, "up=a id=3")]
    stats = client.hgetall(L.stats_key(acct, day))
    assert (stats["reserved"], stats["committed"], stats["refunded"], stats["charged"],
            stats["refunded_amount"]) == ("5", "3", "2", "15", "10")
    # a malformed group is refused before anything is written
    for bad in ("q9\x1d\x1dX\x1d", "q9\x1d\x1dC", "q8\x1d\x1dC\x1d\x1eq9\x1d\x1dC\x1d"):
        with pytest.raises(Exception, match="bad part|more parts"):
            batch(client, acct, ("g", 5, "n1", 1, bad))
    rep = J.build_report(acct, 5, [day], {day: recs}, {day: {k: int(v) for k, v in
                                                             stats.items()}}, {},
                         heads={day: client.hget("jhead:{%s}" % acct, day)})
    assert rep.ok, rep.failures
    # parts that neither the lease nor the free balance can cover are named, not recorded
    client.set("bal:{%s}" % acct, 0)
    client.hset("lease:{%s}" % acct, "n1", "5:99999999999999")
    assert batch(client, acct, ("g", 5, "n1", 2, "w1\x1d\x1dC\x1d\x1ew2\x1d\x1dC\x1d")) == \
        ["-1:w2"]
    recs = J.records_from_stream(client.xrange(L.journal_key(acct, day)), acct, day)
    assert [r.msg_id for r in recs if r.msg_id[:1] == "w"] == ["w1", "w1"]


def test_a_call_sent_again_with_its_token_is_done_once(setup: Any) -> None:
    client, acct, cfg, day = setup
    run_script(client, "topup", acct, 1000, "invoice 1")
    assert batch(client, acct, ("L", "n1", 5, 100, 30000, 0)) == ["100:900"]
    ops = SEP.join(["l", "5", "n1", "138", "1", "t1", "g", "5", "n1", "1",
                    "t2\x1d138\x1dC\x1dup=a id=1"])
    assert run_script(client, "batch", acct, ops, "n1:7", 60) == ","
    # the answer was lost, say: the same call again does nothing
    assert run_script(client, "batch", acct, ops, "n1:7", 60) == "="
    assert run_script(client, "batch", acct, ops, "n1:7", 60) == "="
    assert client.hget("lease:{%s}" % acct, "n1").startswith("90:")
    assert client.hgetall("res:{%s}" % acct).keys() == {"t1"}
    assert 0 < client.execute_command("HTTL", "calls:{%s}" % acct, "FIELDS", 1, "n1:7")[0] <= 60
    # another token is another call
    assert run_script(client, "batch", acct, ops.replace("t1", "t3").replace("t2", "t4"),
                      "n1:8", 60) == ","
    assert client.hget("lease:{%s}" % acct, "n1").startswith("80:")
    recs = J.records_from_stream(client.xrange(L.journal_key(acct, day)), acct, day)
    assert [(r.event, r.msg_id) for r in recs if r.msg_id] == [
        ("reserved", "t1"), ("reserved", "t2"), ("committed", "t2"),
        ("reserved", "t3"), ("reserved", "t4"), ("committed", "t4")]


def test_editing_a_record_breaks_verify(setup: Any) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    key = L.journal_key(acct, day)
    recs = J.records_from_stream(client.xrange(key), acct, day)
    # a reservation's amount, 5 -> 4, in whichever stream entry holds it
    victim = next(r for r in recs if r.event == "reserved" and r.sub > 0)
    vid = victim.id
    first = next(i for i, r in enumerate(recs) if r.id == vid)   # its entry's first record
    edited = victim.d.replace("|5|", "|4|", 1)
    assert edited != victim.d
    _rewrite(client, key, lambda i, f: dict(f, d=f["d"].replace(victim.d, edited, 1))
             if i == vid else f)
    r = admin(cfg, "verify", acct, "--date", day)
    assert r.returncode == 1
    assert "record %d " % (first + 1) in r.stdout and vid in r.stdout and "BROKEN" in r.stdout
    r = admin(cfg, "report", acct, "--date", day)
    assert r.returncode == 1 and "broken" in r.stdout


def test_deleting_a_record_breaks_verify(setup: Any) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    key = L.journal_key(acct, day)
    entries = client.xrange(key)
    assert len(entries) >= 5
    kept = J.records_from_stream(entries[:3], acct, day)
    assert client.xdel(key, entries[3][0]) == 1
    r = admin(cfg, "verify", acct, "--date", day)
    assert r.returncode == 1
    # named: the first record after the gap, which no longer chains
    assert "record %d " % (len(kept) + 1) in r.stdout and entries[4][0] in r.stdout
    # deleting the last record is noticed through the day's head
    client.delete(key)  # restored: intact again
    for entry_id, fields in entries:
        client.xadd(key, fields, id=entry_id)
    assert admin(cfg, "verify", acct, "--date", day).returncode == 0
    client.xdel(key, entries[-1][0])
    r = admin(cfg, "verify", acct, "--date", day)
    assert r.returncode == 1 and "deleted" in r.stdout


def test_changing_a_counter_fails_the_report(setup: Any) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    client.hincrby(L.stats_key(acct, day), "charged", -5)
    r = admin(cfg, "report", acct, "--date", day)
    assert r.returncode == 1 and "counters disagree" in r.stdout


def test_unsettled_reservation_that_is_not_open_is_named(setup: Any) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    client.hdel("res:{%s}" % acct, "m4")  # a reservation that vanished without a record
    r = admin(cfg, "report", acct, "--date", day)
    assert r.returncode == 1
    assert "offending ids: m4" in r.stdout


def test_export_json_lines(setup: Any, tmp_path: Path) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    out = tmp_path / "export.jsonl"
    r = admin(cfg, "export", "--date", day, "--output", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    entries = client.xrange(L.journal_key(acct, day))
    assert len(rows) == len(J.records_from_stream(entries, acct, day)) > len(entries)
    assert rows[0]["event"] == "topup" and rows[0]["account"] == acct
    # the chain can be checked from the file alone: an entry's d is its records' d joined
    # by newlines
    grouped: dict = {}
    for x in rows:
        grouped.setdefault(x["id"], []).append(x)
    recs = J.records_from_stream([(i, {"d": "\n".join(x["d"] for x in g), "h": g[0]["h"]})
                                  for i, g in grouped.items()], acct, day)
    assert [(r.id, r.sub, r.d) for r in recs] == [(x["id"], x["sub"], x["d"]) for x in rows]
    assert J.verify(acct, recs, rows[-1]["h"]) is None


def test_retention_expires_daily_keys(setup: Any) -> None:
    client, acct, cfg, day = setup
    scripted_mix(client, acct)
    for key in (L.journal_key(acct, day), L.stats_key(acct, day)):
        assert 89 * 86400 < client.ttl(key) <= 90 * 86400
    ttl = client.execute_command("HTTL", L.jhead_key(acct), "FIELDS", 1, day)
    assert 89 * 86400 < ttl[0] <= 90 * 86400


def test_record_format_round_trip() -> None:
    d = J.encode(1700000000123, "committed", "id|with:odd,chars", 1, 5, 90,
                 "up=sim id=7|8 年")
    assert J.decode(d) == ["1700000000123", "committed", "id|with:odd,chars", "1", "5",
                           "90", "up=sim id=7|8 年"]
    for bad in ("", "1|x|1|1|1|3:ab|0:", "1|x|1|1|1|2:ab|1:", "a|x|1|1|1|0:|0:"):
        with pytest.raises(J.DecodeError):
            J.decode(bad)


def test_an_entry_of_several_records() -> None:
    recs = [J.encode(1700000000123, "reserved", "m\n1|x", 1, 5, 95, "to=1380013800"),
            J.encode(1700000000123, "committed", "m\n1|x", 1, 5, 95, "up=a id=\n7|8 年"),
            J.encode(1700000000124, "topup", "", 1, 100, 195, "")]
    d = "\n".join(recs)
    assert J.split_entry(d) == recs
    assert J.split_entry(recs[0]) == [recs[0]]
    h = J.chain_hash("", "acct", d)
    got = J.records_from_stream([("1-0", {"d": d, "h": h})], "acct", "20261125")
    assert [(r.event, r.msg_id, r.note, r.sub) for r in got] == [
        ("reserved", "m\n1|x", "to=1380013800", 0), ("committed", "m\n1|x", "up=a id=\n7|8 年", 1),
        ("topup", "", "", 2)]
    assert J.verify("acct", got, h) is None
    back = J.records_from_stream([("1-0", ["d", d, "h", h])], reverse=True)
    assert [r.sub for r in back] == [2, 1, 0]
    # two records of one entry swapped: the entry no longer matches its hash
    swapped = [got[1], got[0], got[2]]
    brk = J.verify("acct", swapped, h)
    assert brk is not None and brk.index == 0 and "hash mismatch" in brk.reason
    for bad in (recs[0] + recs[1], recs[0] + "\n", recs[0] + "\nx", recs[0] + " " + recs[1]):
        with pytest.raises(J.DecodeError):
            J.split_entry(bad)
    bad = J.records_from_stream([("2-0", {"d": recs[0] + "\n\n" + recs[1], "h": h})])
    assert [r.event for r in bad] == ["?"]


@pytest.mark.usefixtures("valkey_class")
class TestLedgerJournal(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.store = yield connect_store(self)
        self.ledger = L.Ledger(self.store, reactor)
        self.a = "k" + uuid.uuid4().hex[:10]

    @defer.inlineCallbacks
    def test_events_of_one_turn_are_one_call_in_order(self) -> Any:
        yield self.ledger.topup(self.a, 100)
        results: list = []
        self.ledger.admit(self.a, ["p1", "p2"], 5, "13800000001",
                          lambda c, b: results.append((c, b)))
        d1 = self.ledger.journal_event(self.a, "p1", "relayed", "up=sim")
        d2 = self.ledger.count_rejected(self.a, "content", "", parts=2)
        yield defer.gatherResults([d1, d2])
        self.assertEqual(results, [(0, 90)])
        yield self.ledger.commit(self.a, "p1", "up=sim id=9")
        yield self.ledger.journal_event(self.a, "p1", "receipt", "DELIVRD 000")
        recs = yield self.ledger.journal(self.a)
        self.assertEqual([(r.event, r.msg_id, r.note) for r in recs], [
            ("topup", "", ""), ("reserved", "p1", "to=13800000001"),
            ("reserved", "p2", "to=13800000001"), ("relayed", "p1", "up=sim"),
            ("rejected", "", "content"), ("committed", "p1", "up=sim id=9"),
            ("receipt", "p1", "DELIVRD 000")])
        self.assertEqual(recs[4].n, 2)
        head = yield self.ledger.journal_head(self.a, recs[0].day)
        self.assertTrue(L.verify_journal(recs, self.a, head))
        stats = yield self.ledger.stats(self.a)
        self.assertEqual(stats["rejected:content"], 2)
        self.assertEqual(stats["submitted"], 4)
        entries = yield self.ledger.entries(self.a, 10)
        self.assertEqual([e["op"] for e in entries], ["commit", "reserve", "reserve", "topup"])

    @defer.inlineCallbacks
    def test_content_refusal_detail_is_journaled_not_counted(self) -> Any:
        cat = "obscenity_gambling_violence_terror"
        yield self.ledger.count_rejected(self.a, cat, "m1", parts=2,
                                         detail="term=赌博 variant=homophone")
        yield self.ledger.count_rejected(self.a, cat, "m2", detail="term=a\x1fb variant=gap")
        recs = yield self.ledger.journal(self.a)
        self.assertEqual([(r.event, r.msg_id, r.n, r.note) for r in recs], [
            ("rejected", "m1", 2, cat + " term=赌博 variant=homophone"),
            ("rejected", "m2", 1, cat + " term=a b variant=gap")])
        stats = yield self.ledger.stats(self.a)
        self.assertEqual(stats["rejected:" + cat], 3)
        self.assertNotIn("rejected:" + cat + " term=赌博 variant=homophone", stats)
        day = recs[0].day
        rep = J.build_report(self.a, 5, [day], {day: recs}, {day: stats}, {})
        self.assertEqual(rep.refused, {cat: 3})        # the report reads the first word
        head = yield self.ledger.journal_head(self.a, recs[0].day)
        self.assertTrue(L.verify_journal(recs, self.a, head))

    @defer.inlineCallbacks
    def test_money_events_cannot_be_forged(self) -> Any:
        for event in ("committed", "topup", "rejected", "Bad", "a|b", ""):
            yield self.assertFailure(self.ledger.journal_event(self.a, "x", event),
                                     ValueError)


class _Registry:
    def __init__(self, account: Any) -> None:
        self.account = account

    def authenticate(self, system_id: str, password: str, peer: str) -> defer.Deferred:
        ok = system_id == self.account.system_id and password == "pw"
        return defer.succeed((0 if ok else 14, self.account if ok else None))


def test_report_without_a_store_is_503() -> None:
    from types import SimpleNamespace

    from twisted.internet.task import Clock
    from twisted.web.test.requesthelper import DummyRequest

    from proxyd.http.report import ReportResource

    account = SimpleNamespace(system_id="nostore", price=5)
    req = DummyRequest([b""])
    req.args = {b"username": [b"nostore"], b"password": [b"pw"]}
    ReportResource(_Registry(account), None, Clock()).render_GET(req)
    assert (req.responseCode, json.loads(b"".join(req.written))) == (503, {"error": "no store"})


@pytest.mark.usefixtures("valkey_class")
class TestReportResource(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        from types import SimpleNamespace

        self.store = yield connect_store(self)
        self.ledger = L.Ledger(self.store, reactor)
        self.account = SimpleNamespace(system_id="h" + uuid.uuid4().hex[:10], price=5)
        self.registry = _Registry(self.account)

    def get(self, **args: str) -> defer.Deferred:
        from twisted.web.test.requesthelper import DummyRequest

        from proxyd.http.report import ReportResource

        req = DummyRequest([b""])
        req.args = {k.encode(): [v.encode()] for k, v in args.items()}
        done = req.notifyFinish()
        ReportResource(self.registry, self.ledger, reactor).render_GET(req)
        return done.addCallback(lambda _: (req.responseCode or 200,
                                           json.loads(b"".join(req.written))))

    @defer.inlineCallbacks
    def test_report_of_the_authenticated_account(self) -> Any:
        a = self.account.system_id
        yield self.ledger.topup(a, 100)
        codes: list = []
        self.ledger.admit(a, ["r1", "r2"], 5, "", lambda c, b: codes.append(c))
        yield self.ledger.count_rejected(a, "content", "", parts=1)
        yield self.ledger.commit(a, "r1", "up=sim id=1")
        yield self.ledger.refund(a, "r2", "up=sim status=ESME_RSYSERR")
        day = self.ledger.day_of(reactor.seconds())
        code, body = yield self.get(username=a, password="pw", date=day)
        self.assertEqual(code, 200)
        self.assertTrue(body["ok"], body)
        self.assertEqual(body["account"], a)
        self.assertEqual((body["parts"]["submitted"], body["parts"]["accepted_by_upstream"],
                          body["parts"]["refused_by_upstream"], body["amounts"]["charged"],
                          body["amounts"]["balance_end"]), (3, 1, 1, 5, 95))
        code, body = yield self.get(username=a, password="wrong")
        self.assertEqual(code, 403)
        code, body = yield self.get(username=a, password="pw", date="yesterday")
        self.assertEqual(code, 400)
