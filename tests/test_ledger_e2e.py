"""Issue 3 with real processes: prepaid charging is exact across nodes, refusals, crashes."""
from __future__ import annotations

import socket
import threading

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, write_config
from .test_relay_e2e import read_pdu

S = C.STATUS
PRICE = 5

def node_config(port: int, sim: int, store) -> str:
    return config_text(port, sim, smpp={"window": 500},
                       store={"dir": store, "reservation_max_age_s": 3, "sweep_interval_s": 1},
                       relay={"queue_wait_s": 2},
                       upstream={"name": "op", "password": None, "binds": 2, "window": 100,
                                 "response_timeout_s": 5},
                       account={"password": "pw", "price": 5, "max_binds": 8})


def balance(tmp, cfg) -> int:
    return int(admin(tmp, cfg, "balance", "acme").stdout.split()[-1])


def blast(port: int, n: int, tag: bytes, answers: dict, window: int = 200,
          sid: bytes = b"acme", src: bytes = b"10690001") -> None:
    """Send n submits over one bind keeping `window` in flight; record every answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(P.encode(P.BindTransmitter(1, 0, sid, b"pw", b"", 0x34, 0, 0, b"")))
    assert read_pdu(s).status == 0
    sent = 0
    got = 0
    try:
        while got < n:
            burst = []
            while sent < n and sent - got < window:
                burst.append(P.encode(P.SubmitSm(seq=2 + sent, source_addr=src,
                                                 destination_addr=b"13800138000",
                                                 short_message=tag + b"%06d" % sent)))
                sent += 1
            if burst:
                s.sendall(b"".join(burst))
            r = read_pdu(s)
            if r is None:
                break
            if r.command_id == C.SUBMIT_SM_RESP:
                answers[tag + b"%06d" % (r.seq - 2)] = (r.status, r.message_id)
                got += 1
    except OSError:
        pass
    finally:
        s.close()


def texts(record) -> list[bytes]:
    return [P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message
            for x in read_record(record)]


def test_two_nodes_one_store_exact_balance(tmp_path):
    sim, sim_port, record = start_sim(tmp_path)
    store = tmp_path / "shared-store"
    ports = [free_port(), free_port()]
    cfgs = [write_config(tmp_path, node_config(p, sim_port, store),
                         "node%d.toml" % i) for i, p in enumerate(ports)]
    nodes = [start_proxyd(tmp_path, cfg, p, name="node%d" % i)
             for i, (cfg, p) in enumerate(zip(cfgs, ports))]
    try:
        for n in nodes:
            wait_until(lambda n=n: n.text().count("upstream op bound") >= 2, "binds", 20)
        admin(tmp_path, cfgs[0], "topup", "acme", str(6000 * PRICE))
        answers: dict = {}
        threads = [threading.Thread(target=blast, args=(ports[i % 2], 2500, b"c%d-" % i,
                                                        answers)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(answers) == 10000
        ok = [k for k, (st, _) in answers.items() if st == 0]
        poor = [k for k, (st, _) in answers.items() if st == S["PROXYD_RNOBALANCE"]]
        assert len(ok) == 6000
        assert len(poor) == 4000
        wait_until(lambda: len(read_record(record)) >= 6000, "6000 at the operator", 20)
        assert sorted(texts(record)) == sorted(ok)
        assert balance(tmp_path, cfgs[1]) == 0
        ledger = admin(tmp_path, cfgs[0], "ledger", "acme", "--limit", "20000").stdout
        after = [int(f.split("=")[1]) for line in ledger.splitlines()
                 for f in line.split("\t") if f.startswith("balance=")]
        assert len(after) >= 12000                    # 6000 reserves + 6000 commits at least
        assert min(after) == 0                        # never below zero at any step
    finally:
        for n in nodes:
            n.stop()
        sim.stop()


def test_upstream_refusals_are_refunded(tmp_path):
    sim, sim_port, record = start_sim(tmp_path, None, "--fail-every", "3",
                                      "--fail-status", "0x45")
    port = free_port()
    cfg = write_config(tmp_path, node_config(port, sim_port, tmp_path / "store"))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: proxyd.text().count("upstream op bound") >= 2, "binds", 20)
        start = 100000
        admin(tmp_path, cfg, "topup", "acme", str(start))
        answers: dict = {}
        blast(port, 900, b"r-", answers)
        ok = [k for k, (st, _) in answers.items() if st == 0]
        refused = [k for k, (st, _) in answers.items() if st == S["ESME_RSUBMITFAIL"]]
        assert len(ok) == 600 and len(refused) == 300
        wait_until(lambda: balance(tmp_path, cfg) == start - PRICE * len(ok),
                   "balance = start - price x OKs", 10)
    finally:
        proxyd.stop()
        sim.stop()


# kill -9 of proxyd and of the store under load: tests/faults/test_crash.py (issue 17)
