"""Issue 8 with real processes: every operator receipt is journaled ("receipt", "STAT ERR"),
every receipt the client acknowledged as "receipt_delivered"; the report's delivered and
undelivered figures match what the client received and the chain verifies."""
from __future__ import annotations

import json
import re
import socket

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config
from .test_relay_e2e import read_pdu

CONFIG = dict(upstream={"name": "op", "password": None},
              account={"system_id": "rcpt", "password": "pw", "price": 5})

N = 12


def test_receipts_journaled_and_reconciled(tmp_path):
    sim, sim_port, _record = start_sim(tmp_path, None, "--receipt-stat", "DELIVRD:2,UNDELIV:1")
    port = free_port()
    cfg = write_config(tmp_path, config_text(port, sim_port, **CONFIG))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: "upstream op bound" in proxyd.text(), "bind", 20)
        admin(tmp_path, cfg, "topup", "rcpt", str(5 * N))
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.sendall(P.encode(P.BindTransceiver(1, 0, b"rcpt", b"pw", b"", 0x34, 0, 0, b"")))
        assert read_pdu(s).status == 0
        ids: list[str] = []
        receipts: dict[str, str] = {}
        for i in range(N):
            s.sendall(P.encode(P.SubmitSm(seq=100 + i, source_addr=b"10690001",
                                          destination_addr=b"1380000%04d" % i,
                                          registered_delivery=1, short_message=b"m%d" % i)))
        while len(ids) < N or len(receipts) < N:
            r = read_pdu(s)
            assert r is not None, "connection closed"
            if r.command_id == C.DELIVER_SM:
                m = re.search(rb"id:(\S+).*stat:(\S+)", r.short_message)
                assert m, r.short_message
                receipts[m.group(1).decode()] = m.group(2).decode()
                s.sendall(P.encode(P.DeliverSmResp(seq=r.seq)))
            elif r.command_id == C.SUBMIT_SM_RESP:
                assert r.status == 0
                ids.append(r.message_id.decode())
        s.close()
        assert set(receipts) == set(ids)
        delivered = sum(1 for v in receipts.values() if v == "DELIVRD")
        undelivered = sum(1 for v in receipts.values() if v == "UNDELIV")
        assert delivered and undelivered and delivered + undelivered == N

        def figures() -> dict:
            r = admin(tmp_path, cfg, "report", "rcpt", "--json", check=False)
            return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}

        wait_until(lambda: figures().get("parts", {}).get("delivered") == delivered
                   and figures()["parts"].get("undelivered") == undelivered,
                   "the receipts journaled", 20)
        rep = figures()
        assert rep["ok"], rep
        assert admin(tmp_path, cfg, "verify", "rcpt", check=False).returncode == 0
        for mid in ids:
            wait_until(lambda mid=mid: "receipt_delivered" in
                       admin(tmp_path, cfg, "trace", mid).stdout, "receipt_delivered of %s" % mid,
                       10)
            trace = admin(tmp_path, cfg, "trace", mid).stdout
            assert "%s 000" % receipts[mid] in trace or receipts[mid] in trace, trace
    finally:
        proxyd.stop()
        sim.stop()
