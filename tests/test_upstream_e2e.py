"""Upstream behaviour with real processes: operator rate limit, failover, no duplicates."""
from __future__ import annotations

import json
import socket
import time

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text, sim_upstream
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, write_config
from .test_relay_e2e import read_pdu

S = C.STATUS

TPS_CONFIG = dict(smpp={"window": 2000}, relay={"queue_wait_s": 0.5},
                  upstream={"name": "op", "password": None, "binds": 2, "tps": 200},
                  account={"password": "pw"})


def bind(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(P.encode(P.BindTransmitter(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
    assert read_pdu(s).status == 0
    return s


def submit_bytes(seq: int, text: bytes) -> bytes:
    return P.encode(P.SubmitSm(seq=seq, source_addr=b"10690001",
                               destination_addr=b"13800138000", short_message=text))


def test_upstream_tps_is_never_exceeded(tmp_path):
    stats = tmp_path / "stats.jsonl"
    sim, sim_port, record = start_sim(tmp_path, None, "--stats", str(stats))
    port = free_port()
    cfg = write_config(tmp_path, config_text(port, sim_port, **TPS_CONFIG))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: proxyd.text().count("upstream op bound") >= 2, "binds", 20)
        admin(tmp_path, cfg, "topup", "acme", "1000000")
        s = bind(port)
        n = 0
        # offer 1,000 msg/s for 3 seconds: 100 every 0.1 s
        for tick in range(30):
            s.sendall(b"".join(submit_bytes(2 + n + i, b"t%05d" % (n + i)) for i in range(100)))
            n += 100
            time.sleep(0.1)
        answers = {}
        while len(answers) < n:
            r = read_pdu(s)
            assert r is not None
            answers[r.seq] = r.status
        s.close()
    finally:
        proxyd.stop()
        sim.stop()
    ok = sum(1 for v in answers.values() if v == 0)
    throttled = sum(1 for v in answers.values() if v in (S["ESME_RTHROTTLED"],
                                                          S["ESME_RMSGQFUL"]))
    assert ok + throttled == n                  # every request answered, OK or throttled
    assert throttled > 0                        # the clients saw throttling
    assert len(read_record(record)) == ok       # every OK is at the operator: nothing lost
    per_second = [json.loads(line)["submits"] for line in stats.read_text().splitlines()]
    assert per_second and max(per_second) <= 200 + 20, per_second   # tps + one bucket


def failover_config(port: int, a: int, b: int) -> str:
    """Two upstreams, a and b (simulators on ports a and b)."""
    up = {"password": None, "window": 20, "reconnect_max_s": 1}
    return config_text(port, a, smpp={"window": 2000},
                       relay={"queue_wait_s": 0.3, "deadline_s": 10},
                       upstream={"name": "a", **up}, upstreams=[sim_upstream(b, name="b", **up)],
                       account={"password": "pw"})


def test_failover_when_an_operator_goes_away(tmp_path):
    sim_a, port_a, rec_a = start_sim(tmp_path, None, "--latency-ms", "20", name="a")
    sim_b, port_b, rec_b = start_sim(tmp_path, None, "--latency-ms", "20", name="b")
    port = free_port()
    cfg = write_config(tmp_path, failover_config(port, port_a, port_b))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: "upstream a bound" in proxyd.text() and
                   "upstream b bound" in proxyd.text(), "binds", 20)
        admin(tmp_path, cfg, "topup", "acme", "1000000")
        s = bind(port)
        n = 0
        for tick in range(20):
            s.sendall(b"".join(submit_bytes(2 + n + i, b"f%05d" % (n + i)) for i in range(50)))
            n += 50
            if tick == 5:
                sim_a.kill9()
            time.sleep(0.05)
        answers = {}
        while len(answers) < n:
            r = read_pdu(s)
            assert r is not None, "a client request was never answered"
            answers[r.seq] = r.status
        s.close()
    finally:
        proxyd.stop()
        sim_b.stop()
    texts_a = [P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message
               for x in read_record(rec_a)]
    texts_b = [P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message
               for x in read_record(rec_b)]
    assert len(set(texts_a)) == len(texts_a) and len(set(texts_b)) == len(texts_b)
    assert not set(texts_a) & set(texts_b)                 # never sent twice
    ok = {b"f%05d" % (seq - 2) for seq, st in answers.items() if st == 0}
    assert ok <= set(texts_a) | set(texts_b)               # every OK is at an operator
    after = {b"f%05d" % i for i in range(600, n)}          # sent well after the kill
    assert after <= ok, "traffic after the kill did not fail over to b"
    failed = [st for st in answers.values() if st != 0]
    assert all(st in (S["ESME_RSYSERR"], S["ESME_RMSGQFUL"]) for st in failed)
