"""Issue 15, authentication, over real sockets: a brute force from 127.0.0.2 is slowed, then
refused, while the customer on 127.0.0.1 still binds and submits; an unknown user and a wrong
password get the same answer; HTTP shares the throttle of SMPP binds. (A reload that changes a
password unbinds the session: tests/test_ops_e2e.py.)"""
from __future__ import annotations

import http.client
import select
import socket
import urllib.parse

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text, listen
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config
from .test_relay_e2e import read_pdu

ATTACKER, CUSTOMER = "127.0.0.2", "127.0.0.1"
RINVPASWD = C.STATUS["ESME_RINVPASWD"]
OTHER = {"system_id": "other", "password": "0ther", "service_codes": ["10690002"]}


def stack(tmp, auth: dict, http: bool = False):
    sim, sim_port, _ = start_sim(tmp)
    port, hport = free_port(), free_port()
    sections: dict = {"auth": auth, "relay": {"queue_wait_s": 0.2}}
    if http:
        sections["http"] = {"listen": listen(hport)}
    cfg = write_config(tmp, config_text(port, sim_port, accounts=[OTHER], **sections))
    proxyd = start_proxyd(tmp, cfg, hport if http else port)
    wait_until(lambda: "upstream sim bound" in proxyd.text(), "upstream bind", 20)
    admin(tmp, cfg, "topup", "acme", "100000")
    return sim, proxyd, port, hport


@pytest.fixture
def procs():
    running: list = []
    yield running
    for p in running:
        p.stop()


def connect(port: int, source: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    return s


def bind(s: socket.socket, sid: bytes, pw: bytes, seq: int = 1) -> None:
    s.sendall(P.encode(P.BindTransceiver(seq, 0, sid, pw, b"", 0x34, 0, 0, b"")))


def bind_status(port: int, source: str, sid: bytes, pw: bytes) -> int:
    s = connect(port, source)
    try:
        bind(s, sid, pw)
        r = read_pdu(s)
        assert r.command_id == C.BIND_TRANSCEIVER_RESP
        return r.status
    finally:
        s.close()


def submit_status(s: socket.socket) -> int:
    s.sendall(P.encode(P.SubmitSm(seq=9, source_addr=b"10690001", dest_addr_ton=1,
                                  destination_addr=b"13800138000", short_message=b"hello")))
    r = read_pdu(s)
    assert r.command_id == C.SUBMIT_SM_RESP
    return r.status


def customer_binds_and_submits(port: int) -> None:
    s = connect(port, CUSTOMER)
    try:
        bind(s, b"acme", b"s3cret")
        assert read_pdu(s).status == 0
        assert submit_status(s) == 0
    finally:
        s.close()


def test_brute_force_is_slowed(tmp_path, procs):
    # a long delay after the first failure: the attacker's second attempt waits, the
    # customer on another address is served meanwhile
    sim, proxyd, port, _ = stack(tmp_path, {"delay_s": 120.0, "max_delay_s": 120.0})
    procs += [proxyd, sim]
    assert bind_status(port, ATTACKER, b"acme", b"guess1") == RINVPASWD
    slow = connect(port, ATTACKER)
    bind(slow, b"acme", b"s3cret")          # even the right password waits its turn
    customer_binds_and_submits(port)
    # the customer has been served; the attacker's bind is still unanswered
    assert select.select([slow], [], [], 0)[0] == []
    slow.close()


def test_brute_force_is_refused_but_the_customer_binds(tmp_path, procs):
    sim, proxyd, port, _ = stack(tmp_path, {"max_failures": 3, "max_failures_per_address": 6,
                                            "delay_s": 0.01, "max_delay_s": 0.05,
                                            "lockout_s": 600})
    procs += [proxyd, sim]
    for i in range(3):
        assert bind_status(port, ATTACKER, b"acme", b"guess%d" % i) == RINVPASWD
    # locked for (127.0.0.2, acme): the right password is refused there ...
    assert bind_status(port, ATTACKER, b"acme", b"s3cret") == RINVPASWD
    wait_until(lambda: "authentication locked for acme from 127.0.0.2" in proxyd.text(),
               "lockout logged", 10)
    # ... and not from the customer's own address
    customer_binds_and_submits(port)
    # another account from the attacker's address is still served, until the address limit
    assert bind_status(port, ATTACKER, b"other", b"0ther") == 0
    for name in (b"nobody", b"root", b"admin"):
        assert bind_status(port, ATTACKER, name, b"x") == RINVPASWD
    assert bind_status(port, ATTACKER, b"other", b"0ther") == RINVPASWD
    customer_binds_and_submits(port)


def test_unknown_user_and_wrong_password_get_the_same_answer(tmp_path, procs):
    sim, proxyd, port, hport = stack(tmp_path, {"delay_s": 0.01, "max_delay_s": 0.05},
                                     http=True)
    procs += [proxyd, sim]
    assert bind_status(port, CUSTOMER, b"acme", b"wrong") == RINVPASWD
    assert bind_status(port, CUSTOMER, b"nobody", b"wrong") == RINVPASWD
    for path, q in (("/cgi-bin/sendsms", {"to": "13800138000", "text": "x"}),
                    ("/balance", {})):
        wrong = http_get(hport, CUSTOMER, path, username="acme", password="wrong", **q)
        unknown = http_get(hport, CUSTOMER, path, username="nobody", password="wrong", **q)
        assert wrong[0] == unknown[0] == 403
        assert wrong[1].replace("acme", "nobody") == unknown[1]


def http_get(port: int, source: str, path: str, **q) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
    try:
        c.request("GET", path + "?" + urllib.parse.urlencode(q))
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def test_http_shares_the_throttle_of_binds(tmp_path, procs):
    sim, proxyd, port, hport = stack(tmp_path, {"max_failures": 3, "delay_s": 0.01,
                                                "max_delay_s": 0.05, "lockout_s": 600},
                                     http=True)
    procs += [proxyd, sim]
    q = {"username": "acme", "password": "s3cret", "to": "13800138000", "text": "hello"}
    assert http_get(hport, ATTACKER, "/cgi-bin/sendsms", **q)[0] == 202   # served first
    for i in range(2):
        assert bind_status(port, ATTACKER, b"acme", b"guess%d" % i) == RINVPASWD
    assert http_get(hport, ATTACKER, "/cgi-bin/sendsms",
                    **dict(q, password="guess3"))[0] == 403
    # three failures, over SMPP and HTTP: locked on both for (127.0.0.2, acme)
    assert http_get(hport, ATTACKER, "/cgi-bin/sendsms", **q)[0] == 403
    assert http_get(hport, ATTACKER, "/report", username="acme", password="s3cret")[0] == 403
    assert bind_status(port, ATTACKER, b"acme", b"s3cret") == RINVPASWD
    # the customer's address is not locked
    assert http_get(hport, CUSTOMER, "/cgi-bin/sendsms", **q)[0] == 202
    assert bind_status(port, CUSTOMER, b"acme", b"s3cret") == 0


def test_every_node_sees_the_lockout(tmp_path, procs):
    # two nodes on one store: failures counted on one lock the attacker out of the other
    sim, sim_port, _ = start_sim(tmp_path)
    procs.append(sim)
    auth = {"max_failures": 3, "delay_s": 0.01, "max_delay_s": 0.05, "lockout_s": 600}
    ports = []
    for name in ("a", "b"):
        port = free_port()
        cfg = write_config(tmp_path, config_text(port, sim_port, auth=auth,
                                                 store={"dir": str(tmp_path / "store")},
                                                 upstream={"system_id": "node-" + name}),
                           name="%s.toml" % name)
        procs.insert(0, start_proxyd(tmp_path, cfg, port, name="proxyd-" + name))
        ports.append(port)
    a, b = ports
    for i in range(3):
        assert bind_status(a, ATTACKER, b"acme", b"guess%d" % i) == RINVPASWD
    assert bind_status(b, ATTACKER, b"acme", b"s3cret") == RINVPASWD
    assert bind_status(b, CUSTOMER, b"acme", b"s3cret") == 0


def test_without_a_store_the_node_throttles_in_memory(tmp_path, procs):
    sim, sim_port, _ = start_sim(tmp_path)
    procs.append(sim)
    port = free_port()
    cfg = write_config(tmp_path, config_text(port, sim_port, store={"url": "none"},
                                             auth={"max_failures": 3, "delay_s": 0.01,
                                                   "max_delay_s": 0.05}))
    procs.insert(0, start_proxyd(tmp_path, cfg, port))
    for i in range(3):
        assert bind_status(port, ATTACKER, b"acme", b"guess%d" % i) == RINVPASWD
    assert bind_status(port, ATTACKER, b"acme", b"s3cret") == RINVPASWD
    assert bind_status(port, CUSTOMER, b"nobody", b"s3cret") == RINVPASWD
    assert bind_status(port, CUSTOMER, b"acme", b"s3cret") == 0
