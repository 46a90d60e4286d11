"""Issue 8 with real processes: a mixed run reconciles, to the message, on the CLI and HTTP."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import smpplib.client

from proxyd.smpp import constants as C

from .conftemplate import config_text, listen
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config

CONFIG = dict(upstream={"name": "op", "password": None}, account={"password": "pw", "price": 7})

S = C.STATUS


def test_mixed_run_reconciles_and_verifies(tmp_path):
    sim, sim_port, record = start_sim(tmp_path, None, "--fail-every", "4",
                                      "--fail-status", "0x45")
    port, http = free_port(), free_port()
    cfg = write_config(tmp_path, config_text(port, sim_port, http={"listen": listen(http)},
                                             **CONFIG))
    proxyd = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: "upstream op bound" in proxyd.text(), "bind", 20)
        admin(tmp_path, cfg, "topup", "acme", str(7 * 20))
        c = smpplib.client.Client("127.0.0.1", port, timeout=15, allow_unknown_opt_params=True)
        c.connect()
        c.bind_transmitter(system_id="acme", password="pw")
        statuses = []
        cases = [("10690001", "13800000001", b"fine")] * 30 + [
            ("10690009", "13800000002", b"bad sender"),
            ("10690001", "12", b"bad destination"),
            ("10690001", "13800000003", "赌博".encode("utf-16-be"))]
        for src, dst, text in cases:
            c.send_message(source_addr=src, destination_addr=dst, short_message=text,
                           data_coding=8 if text.startswith(b"\x8d") else 0)
            while True:
                r = c.read_pdu()
                if r.command == "submit_sm_resp":
                    statuses.append(r.status)
                    break
        c.disconnect()
        ok = statuses.count(0)
        assert S["PROXYD_RNOBALANCE"] in statuses          # 20 paid for, 30 tried
        assert S["ESME_RSUBMITFAIL"] in statuses           # every 4th refused upstream
        assert S["ESME_RINVSRCADR"] in statuses and S["ESME_RINVDSTADR"] in statuses
        assert S["PROXYD_RCONTENT"] in statuses

        def balance() -> int:
            return int(admin(tmp_path, cfg, "balance", "acme").stdout.split()[-1])
        wait_until(lambda: balance() == 7 * 20 - 7 * ok, "charges settled", 10)
        rep = admin(tmp_path, cfg, "report", "acme", "--json", check=False)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        figures = json.loads(rep.stdout)
        assert figures["ok"] and all(i["holds"] for i in figures["identities"])
        assert figures["parts"]["accepted_by_upstream"] == ok
        assert figures["amounts"]["charged"] == 7 * ok
        assert admin(tmp_path, cfg, "verify", "acme", check=False).returncode == 0
        # the same figures over HTTP for the account itself
        q = urllib.parse.urlencode({"username": "acme", "password": "pw"})
        with urllib.request.urlopen("http://127.0.0.1:%d/report?%s" % (http, q),
                                    timeout=10) as resp:
            web = json.loads(resp.read())
        assert web["parts"] == figures["parts"] and web["ok"]
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/report?username=acme&password=x"
                                   % http, timeout=10)
            raise AssertionError("report without the right password")
        except urllib.error.HTTPError as e:
            assert e.code == 403
    finally:
        proxyd.stop()
        sim.stop()
