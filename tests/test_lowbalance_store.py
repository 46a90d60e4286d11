"""The low-balance crossing in the store (proxyd/store/ledger/prelude.lua, `low_check`):
exact under concurrent charges from many connections (as from many nodes), re-armed only
by a top-up or adjustment that reaches the threshold again. Real valkey-server, the
ledger's own scripts (through proxyd-admin's `run_script`)."""
from __future__ import annotations

import json
import threading

import valkey

from proxyd import lowbalance
from proxyd.admin import run_script
from proxyd.http.dlr import Request, build_request, kind_of
from proxyd.store.ledger import ops as O
from proxyd.store.ledger.keys import low_key
from proxyd.store.messages import cb_key, cbdata_key

from .valkey_fixture import valkey_socket  # noqa: F401  (the fixture)


def client(path: str) -> valkey.Valkey:
    return valkey.Valkey(unix_socket_path=path, decode_responses=True, socket_timeout=10)


def charge(c: valkey.Valkey, account: str, mid: str, price: int = 5) -> str:
    return run_script(c, "batch", account,
                      O.pack_ops([O.Admit("f", price, "", "13800138000", [mid])]))


def refund(c: valkey.Valkey, account: str, mid: str) -> str:
    return run_script(c, "batch", account, O.pack_ops([O.Settle("r", mid, "test")]))


def notices(c: valkey.Valkey, account: str) -> list[dict]:
    out = []
    for cb_id in c.zrange(cb_key(account), 0, -1):
        settings, _, facts = c.hget(cbdata_key(account), cb_id).partition("\n")
        out.append(dict(json.loads(facts), id=cb_id, settings=json.loads(settings)))
    return sorted(out, key=lambda f: f["n"])


def setup(c: valkey.Valkey, account: str, threshold: int, balance: int,
          url: str = "http://crm.example/low?a=%a&b=%b") -> None:
    c.eval(lowbalance.SYNC_LUA, 1, low_key(account), str(threshold), url)
    run_script(c, "topup", account, balance, "start")


def test_concurrent_charges_cross_once(valkey_socket):
    acct = "lowconc"
    c = client(valkey_socket)
    setup(c, acct, threshold=500, balance=1000)
    # 8 connections charge 5 fen at a time, 200 charges in all: 1000 -> 0
    def worker(k: int) -> None:
        w = client(valkey_socket)
        for i in range(25):
            assert charge(w, acct, "m%d-%d" % (k, i)).startswith("0:")
        w.close()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert int(run_script(c, "balance", acct)) == 0
    got = notices(c, acct)
    assert len(got) == 1, got
    n = got[0]
    assert n["bal"] == 495 and n["low"] == 500 and n["n"] == 1 and n["ev"] == "low"
    assert n["settings"] == {"api": "notify", "url": "http://crm.example/low?a=%a&b=%b",
                             "acct": acct}
    assert c.hget(low_key(acct), "low") == "1"
    # the queued notice is a notify call, with its placeholders filled in
    req = build_request(n["settings"], n)
    assert req == Request("GET", "http://crm.example/low?a=lowconc&b=495")
    assert kind_of(n["settings"]) == "notify"


def test_rearmed_only_by_money_put_back(valkey_socket):
    acct = "lowrearm"
    c = client(valkey_socket)
    setup(c, acct, threshold=100, balance=110)
    assert charge(c, acct, "a1") == "0:105"
    assert notices(c, acct) == []
    assert charge(c, acct, "a2") == "0:100"       # not below yet
    assert notices(c, acct) == []
    assert charge(c, acct, "a3") == "0:95"        # below: the notice
    assert [n["bal"] for n in notices(c, acct)] == [95]
    # a refund back over the threshold does not re-arm (no notice per message)
    assert refund(c, acct, "a3") == "5"
    assert charge(c, acct, "a4") == "0:95"
    assert len(notices(c, acct)) == 1
    # a top-up that stays below does not re-arm either
    run_script(c, "topup", acct, 2, "small")
    assert charge(c, acct, "a5") == "0:92"
    assert len(notices(c, acct)) == 1
    # a top-up to the threshold or more does
    run_script(c, "topup", acct, 8, "back to 100")
    assert c.hget(low_key(acct), "low") == "0"
    assert charge(c, acct, "a6") == "0:95"
    assert [n["bal"] for n in notices(c, acct)] == [95, 95]
    # so does an adjustment
    assert run_script(c, "adjust", acct, 10, "correction") == [0, 105]
    assert charge(c, acct, "a7") == "0:100"
    assert charge(c, acct, "a8") == "0:95"
    assert [n["n"] for n in notices(c, acct)] == [1, 2, 3]


def test_off_and_untouched_accounts(valkey_socket):
    c = client(valkey_socket)
    # no settings at all: no key is made, nothing queued
    run_script(c, "topup", "lownone", 10, "x")
    assert charge(c, "lownone", "n1") == "0:5"
    assert not c.exists(low_key("lownone")) and notices(c, "lownone") == []
    # threshold 0 (off) over an earlier setting: nothing queued
    setup(c, "lowoff", threshold=50, balance=60)
    c.eval(lowbalance.SYNC_LUA, 1, low_key("lowoff"), "0", "")
    assert charge(c, "lowoff", "o1") == "0:55"
    assert charge(c, "lowoff", "o2") == "0:50"
    assert charge(c, "lowoff", "o3") == "0:45"
    assert notices(c, "lowoff") == []
    # switching 0 on an account never configured makes no key
    c.eval(lowbalance.SYNC_LUA, 1, low_key("lownever"), "0", "")
    assert not c.exists(low_key("lownever"))


def test_notify_url_placeholders():
    facts = {"bal": 95, "low": 100, "t": 1764576000, "n": 3}
    assert lowbalance.notify_url("https://x/low?a=%a&b=%b&l=%l&t=%t&n=%n&p=%%&q=%q",
                                 facts, "a b&c") == (
        "https://x/low?a=a%20b%26c&b=95&l=100&t=1764576000&n=3&p=%&q=%q")
    # an empty notify_url: the notice is logged and counted, nothing is called
    assert build_request({"api": "notify", "url": "", "acct": "a"}, facts) is None
