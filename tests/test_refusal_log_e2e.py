"""Issue 15 leftover of item 2: refusals of unauthenticated peers are rate-limited in the log.

A flood of failed HTTP logins (Kannel /cgi-bin/sendsms, Jasmin /send and /balance) and of
wrong SMPP binds from one address writes at most one line per address and listener per
`[log] refusal_interval_s` (an hour here, so the whole flood may write one per listener), while every
request is still answered with its refusal and a client on another address still gets in
and still has its own refusals logged one by one.
"""
from __future__ import annotations

import http.client
import re
from urllib.parse import urlencode

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text, listen
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config
from .test_conns_e2e import connect, read_pdu

ATTACKER = "127.0.0.4"
FLOOD = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refusal-log")
    sim, sim_port, _record = start_sim(tmp)
    port, hport = free_port(), free_port()
    cfg = write_config(tmp, config_text(
        port, sim_port, http={"listen": listen(hport)}, log={"refusal_interval_s": 3600},
        # the flood is slowed by the throttle as always, only with short delays here
        auth={"delay_s": 0.01, "max_delay_s": 0.02}, relay={"queue_wait_s": 0.5}))
    proxyd = start_proxyd(tmp, cfg, hport)
    try:
        wait_until(lambda: "upstream sim bound" in proxyd.text(), "upstream bind", 20)
        admin(tmp, cfg, "topup", "acme", "100000")
        yield {"port": port, "http": hport, "proxyd": proxyd}
    finally:
        proxyd.stop()
        sim.stop()


def get(port: int, path: str, source: str, conn=None) -> tuple[int, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                           source_address=(source, 0))
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def kannel(user: str, password: str, text: str = "hello") -> str:
    return "/cgi-bin/sendsms?" + urlencode({"username": user, "password": password,
                                            "from": "10690001", "to": "13800138000",
                                            "text": text})


def jasmin(user: str, password: str) -> str:
    return "/send?" + urlencode({"username": user, "password": password,
                                 "to": "13800138000", "content": "hello"})


def test_a_flood_of_failed_logins_writes_a_bounded_number_of_lines(stack):
    port = stack["http"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30,
                                   source_address=(ATTACKER, 0))
    answers = []
    for i in range(FLOOD):
        answers.append(get(port, kannel("acme", "wrong%d" % i), ATTACKER, c)[0])
        answers.append(get(port, jasmin("nobody%d" % i, "x"), ATTACKER, c)[0])
        answers.append(get(port, "/balance?username=acme&password=bad%d" % i, ATTACKER,
                           c)[0])
        answers.append(get(port, "/send?username=acme", ATTACKER, c)[0])   # before auth
    c.close()
    assert answers == [403, 403, 403, 400] * FLOOD
    s = connect(stack["port"], ATTACKER)
    try:
        for i in range(FLOOD):
            s.sendall(P.encode(P.BindTransceiver(i + 1, 0, b"acme", b"bad%d" % i, b"", 0x34,
                                                 0, 0, b"")))
            r = read_pdu(s)
            assert (r.command_id, r.seq, r.status) == (C.BIND_TRANSCEIVER_RESP, i + 1,
                                                       C.STATUS["ESME_RINVPASWD"])
    finally:
        s.close()
    # the legitimate client on another address: served, and its refusal logged as always
    assert get(port, kannel("acme", "s3cret"), "127.0.0.1")[0] == 202
    assert get(port, kannel("acme", "s3cret", text=""), "127.0.0.1")[0] == 400
    text = stack["proxyd"].text()
    lines = text.splitlines()
    flood = [ln for ln in lines if re.search(
        r"403 (authorization failed|authentication failure)|Mandatory argument|"
        r"bind refused for acme", ln)]
    # one line per listener for the whole flood of 5 x FLOOD refusals from the attacker's
    # address (the auth throttle's own "authentication locked" lines are limited apart: one
    # per 10 s, whatever the address)
    assert len([ln for ln in flood if "[proxyd.http#" in ln]) <= 1, flood[:10]
    assert len([ln for ln in flood if "[proxyd.smpp#" in ln]) <= 1, flood[:10]
    assert len(flood) == len([ln for ln in flood if ATTACKER in ln]) >= 1, flood
    assert any("refused acme" in ln and "Missing text" in ln for ln in lines), lines[-5:]
