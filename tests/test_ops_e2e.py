"""24x7 operation with real processes: reload on SIGHUP, graceful stop on SIGTERM."""
from __future__ import annotations

import signal
import socket

import smpplib.client
import smpplib.exceptions

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, write_config
from .test_relay_e2e import read_pdu

BASE = dict(upstream={"name": "op", "password": None})

NEWCO = {"system_id": "newco", "password": "fresh", "service_codes": ["10690009"]}


def smpp(port: int, sid: str, pw: str) -> smpplib.client.Client:
    c = smpplib.client.Client("127.0.0.1", port, timeout=15, allow_unknown_opt_params=True)
    c.connect()
    c.bind_transceiver(system_id=sid, password=pw)
    return c


def send(c: smpplib.client.Client, src: str, text: bytes) -> int:
    c.send_message(source_addr=src, destination_addr="13800138000", short_message=text)
    while True:
        r = c.read_pdu()
        if r.command == "submit_sm_resp":
            return r.status


def test_sighup_reload_keeps_binds(tmp_path):
    sim, sim_port, record = start_sim(tmp_path)
    port = free_port()
    cfg = write_config(tmp_path, config_text(port, sim_port, account={"password": "old"}, **BASE))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: "upstream op bound" in proxyd.text(), "bind", 20)
        admin(tmp_path, cfg, "topup", "acme", "100000")
        old = smpp(port, "acme", "old")
        assert send(old, "10690001", b"before reload") == 0
        # a broken config is refused and the running one kept
        good = cfg.read_text()
        cfg.write_text(good + "\n[[account]]\nsystem_id = 42\n")
        proxyd.p.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in proxyd.text(), "reload refused", 10)
        assert send(old, "10690001", b"after bad reload") == 0
        # new account, changed password
        write_config(tmp_path, config_text(port, sim_port, account={"password": "new"},
                                           accounts=[NEWCO], **BASE))
        proxyd.p.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload applied" in proxyd.text(), "reload applied", 10)
        # the password of acme changed: the bind made with the old one is unbound
        assert old.read_pdu().command == "unbind"
        assert "password of acme changed; unbinding" in proxyd.text()
        admin(tmp_path, cfg, "topup", "newco", "100000")
        newco = smpp(port, "newco", "fresh")
        assert send(newco, "10690009", b"new account") == 0
        c = smpplib.client.Client("127.0.0.1", port, timeout=15, allow_unknown_opt_params=True)
        c.connect()
        try:
            c.bind_transceiver(system_id="acme", password="old")
            raise AssertionError("old password accepted after reload")
        except smpplib.exceptions.PDUError as e:
            assert e.args[1] == C.STATUS["ESME_RINVPASWD"]
        c.disconnect()
        again = smpp(port, "acme", "new")
        assert send(again, "10690001", b"new password") == 0
        # proxyd-admin reload does the same through the pid file
        pidfile = tmp_path / "proxyd.pid"
        pidfile.write_text(str(proxyd.p.pid))
        admin(tmp_path, cfg, "reload", "--pidfile", str(pidfile))
        wait_until(lambda: proxyd.text().count("reload applied") >= 2, "second reload", 10)
        for x in (newco, again):
            x.disconnect()
    finally:
        proxyd.stop()
        sim.stop()
    texts = {P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message
             for x in read_record(record)}
    assert {b"before reload", b"after bad reload", b"new account",
            b"new password"} <= texts


def test_sigterm_answers_every_inflight_request(tmp_path):
    sim, sim_port, record = start_sim(tmp_path, None, "--latency-ms", "300")
    port = free_port()
    cfg = write_config(tmp_path, config_text(port, sim_port, account={"password": "pw"}, **BASE))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: "upstream op bound" in proxyd.text(), "bind", 20)
        admin(tmp_path, cfg, "topup", "acme", "100000")
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.sendall(P.encode(P.BindTransmitter(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
        assert read_pdu(s).status == 0
        n = 50
        s.sendall(b"".join(P.encode(P.SubmitSm(seq=10 + i, source_addr=b"10690001",
                                               destination_addr=b"13800138000",
                                               short_message=b"s%03d" % i))
                           for i in range(n)))
        wait_until(lambda: len(read_record(record)) >= 1, "first submit at the operator", 10)
        proxyd.p.send_signal(signal.SIGTERM)
        answers = {}
        unbound = False
        while True:
            r = read_pdu(s)
            if r is None:
                break
            if r.command_id == C.SUBMIT_SM_RESP:
                answers[r.seq] = r.status
            elif r.command_id == C.UNBIND:
                unbound = True
                s.sendall(P.encode(P.UnbindResp(seq=r.seq)))
        s.close()
        proxyd.p.wait(30)
    finally:
        proxyd.stop()
        sim.stop()
    assert len(answers) == n, "requests left unanswered at shutdown"
    assert unbound, "the client was not unbound cleanly"
    ok = {b"s%03d" % (seq - 10) for seq, st in answers.items() if st == 0}
    texts = {P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message
             for x in read_record(record)}
    assert ok <= texts
    assert "proxyd stopping" in proxyd.text()
