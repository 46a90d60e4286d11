"""Issue 18, CMPP end to end with real processes, for 3.0 and 2.0: an SMPP client
(smpplib) -> proxyd -> the simulator in cmpp3/cmpp2 mode; receipts back with proxyd's ids
(DELIVRD, and a gateway code kept in err:), a long message as Pk_total/Pk_number with
TP_udhi, a refused part refunded, the journal balancing, and an MO with an unsubscribe word
opting the sender out."""
from __future__ import annotations

import json
import re
import socket

import pytest
import smpplib.client
import smpplib.consts
import smpplib.gsm

from proxyd.links.cmpp import codec as X

from .conftemplate import config_text
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, \
    write_config

SP_ID, SECRET = "901234", "cmpp-secret"
PRICE = 5


def _control(port: int, line: str) -> str:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(line.encode() + b"\n")
    out = b""
    while not out.endswith(b"\n"):
        chunk = s.recv(1000)
        assert chunk
        out += chunk
    s.close()
    return out.decode()


def _balance(tmp, cfg) -> int:
    return int(admin(tmp, cfg, "balance", "acme").stdout.split()[-1])


@pytest.fixture
def stack(tmp_path):
    procs: list = []

    def start(protocol: str, *sim_args: str, password: str = SECRET, **sections) -> dict:
        control = free_port()
        sim, sim_port, record = start_sim(
            tmp_path, None, "--protocol", protocol, "--system-id", SP_ID,
            "--password", password, "--control", "tcp:%d:interface=127.0.0.1" % control,
            *sim_args)
        procs.append(sim)
        port = free_port()
        cfg = write_config(tmp_path, config_text(
            port, sim_port, upstream={"name": "cm", "protocol": protocol,
                                      "system_id": SP_ID, "password": SECRET,
                                      "service_id": "MTEST", "fee_type": "02",
                                      "fee_code": "10"},
            account={"password": "pw", "price": PRICE}, **sections))
        node = start_proxyd(tmp_path, cfg, port)
        procs.append(node)
        return dict(sim=sim, record=record, control=control, port=port, cfg=cfg,
                    node=node, tmp=tmp_path)

    yield start
    for p in reversed(procs):
        p.stop()


def _client(port: int, got: list) -> smpplib.client.Client:
    c = smpplib.client.Client("127.0.0.1", port, timeout=15, allow_unknown_opt_params=True)

    def on_message(pdu) -> None:
        got.append(pdu)

    c.set_message_received_handler(on_message)
    c.connect()
    c.bind_transceiver(system_id="acme", password="pw")
    return c


def _send(c, dest: str, text: str, registered: int = 1) -> list:
    """Send `text` (split by smpplib into UDH parts when long); the submit_sm_resps."""
    parts, coding, esm = smpplib.gsm.make_parts(text)
    resps = []

    def on_sent(pdu) -> None:
        resps.append(pdu)

    c.set_message_sent_handler(on_sent)
    c.error_pdu_handler = lambda pdu: None  # a refusal reaches on_sent too, not raised
    for part in parts:
        c.send_message(source_addr_ton=0, source_addr_npi=1, source_addr="10690001",
                       dest_addr_ton=1, dest_addr_npi=1, destination_addr=dest,
                       short_message=part, data_coding=coding, esm_class=esm,
                       registered_delivery=registered)
    while len(resps) < len(parts):
        c.read_once()
    return resps


@pytest.mark.parametrize("protocol", ["cmpp3", "cmpp2"])
def test_cmpp_relay_receipts_long_refund_journal_and_mo(stack, protocol):
    st = stack(protocol, "--receipt-stat", "DELIVRD,MB:0011", "--fail-every", "4",
               "--fail-status", "13")
    tmp, cfg, node = st["tmp"], st["cfg"], st["node"]
    wait_until(lambda: "upstream cm logged in" in node.text(), "the CMPP login", 20)
    admin(tmp, cfg, "topup", "acme", "1000")
    got: list = []
    c = _client(st["port"], got)
    try:
        # a long message of two parts (stored, judged whole, then relayed: the simulator's
        # submits 1 and 2), then three single parts (cut-through): the second is its 4th
        # submit, refused with Result 13 (Dest_terminal_Id error)
        long_text = "long message " * 15
        r4 = _send(c, "13800138004", long_text)
        wait_until(lambda: len(read_record(st["record"])) == 2, "the long message relayed", 10)
        r1 = _send(c, "13800138001", "hello one")
        r2 = _send(c, "13800138002", "hello two")
        r3 = _send(c, "13800138003", "hello three", registered=0)
        assert [r.status for r in r4 + r1 + r2 + r3] == [0, 0, 0, 0x0B, 0]  # RINVDSTADR

        # receipts: one per accepted part with registered delivery (the long message's two
        # parts and the first single); the ids are proxyd's, the stats in the simulator's
        # order, the gateway's code kept in err:
        ids = [r.message_id.decode() if isinstance(r.message_id, bytes) else r.message_id
               for r in (r4[0], r4[1], r1[0])]
        while len([p for p in got if p.command == "deliver_sm"]) < 3:
            c.read_once()
        receipts = {}
        for p in got:
            m = re.search(rb"id:(\S+) .*stat:(\S+) err:(\S+)", p.short_message)
            assert m, p.short_message
            receipts[m.group(1).decode()] = (m.group(2).decode(), m.group(3).decode())
        assert set(receipts) == set(ids), (receipts, ids)
        # (the two parts of the long message may reach the gateway in either order)
        assert sorted(receipts[i] for i in ids[:2]) == [("DELIVRD", "000"),
                                                        ("UNDELIV", "MB:0011")]
        assert receipts[ids[2]] == ("DELIVRD", "000")

        # what the gateway got: Src_Id the service code, the configured fee fields, the
        # long message as Pk_total 2 / Pk_number 1, 2 with TP_udhi and its UDH
        version = X.V3 if protocol == "cmpp3" else X.V2
        recs = read_record(st["record"])
        subs = [X.decode(version, X.SUBMIT, 0, bytes.fromhex(r["body"])) for r in recs]
        assert len(subs) == 4 and all(s.src_id == b"10690001" for s in subs)
        assert {(s.service_id, s.fee_type, s.fee_code, s.msg_src) for s in subs} == {
            (b"MTEST", b"02", b"10", SP_ID.encode())}
        assert [s.dest_terminal_ids for s in subs] == [
            (b"13800138004",), (b"13800138004",), (b"13800138001",), (b"13800138003",)]
        assert [s.registered_delivery for s in subs] == [1, 1, 1, 0]
        subs[:2] = sorted(subs[:2], key=lambda s: s.pk_number)
        assert [(s.pk_total, s.pk_number, s.tp_udhi, s.msg_fmt) for s in subs] == [
            (2, 1, 1, 0), (2, 2, 1, 0), (1, 1, 0, 0), (1, 1, 0, 0)]
        assert [s.msg_content[:3] + s.msg_content[4:6] for s in subs[:2]] == [
            b"\x05\x00\x03\x02\x01", b"\x05\x00\x03\x02\x02"]
        assert b"".join(s.msg_content[6:] for s in subs[:2]) == long_text.encode()

        # MO: a plain one reaches the receiver bind, "TD" opts the sender out
        before = len(got)
        assert _control(st["control"], "MO 13900000001 1069000177 %s 0"
                        % b"hi there".hex()).startswith("OK")
        assert _control(st["control"], "MO 13900000002 10690001 %s 0"
                        % b"TD".hex()).startswith("OK")
        while len(got) < before + 1:
            c.read_once()
        mo = got[before]
        assert (mo.short_message, mo.source_addr, mo.destination_addr) == (
            b"hi there", b"13900000001", b"1069000177")

        if protocol == "cmpp3":
            # charges and the journal exactly as for an SMPP upstream: 5 parts submitted,
            # 4 accepted and charged, the refused one refunded, the receipts journaled, the
            # report's identities holding
            def report() -> dict:
                r = admin(tmp, cfg, "report", "acme", "--json", check=False)
                return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}

            rep = wait_until(lambda: (lambda r: r if r.get("parts", {}).get("delivered") == 2
                                      and r["parts"]["undelivered"] == 1 else None)(report()),
                             "receipts journaled", 20)
            assert rep["ok"], rep
            parts, amounts = rep["parts"], rep["amounts"]
            assert (parts["submitted"], parts["accepted_by_upstream"],
                    parts["refused_by_upstream"]) == (5, 4, 1), parts
            assert (amounts["topups"], amounts["balance_end"]) == (1000, 1000 - 4 * PRICE), \
                amounts

        wait_until(lambda: "13900000002" in admin(tmp, cfg, "optout", "list", "acme").stdout,
                   "the TD sender opted out", 20)
        r5 = _send(c, "13900000002", "to an opted-out number")
        assert r5[0].status == 0x0B
    finally:
        c.disconnect()


def test_cmpp_wrong_secret_is_refused_and_retried(stack):
    st = stack("cmpp3", password="another-secret")
    wait_until(lambda: st["node"].text().count("refused the login: status 3") >= 2,
               "two refused logins (reconnect with backoff)", 20)
    assert "logged in" not in st["node"].text()


def test_cmpp_report_reaches_the_dlr_url(stack):
    from urllib.parse import parse_qs, urlencode, urlsplit

    from .conftemplate import listen
    from .test_dlr_e2e import Receiver, get
    hport = free_port()
    st = stack("cmpp3", "--receipt-stat", "MB:0011",
               http={"listen": listen(hport), "callback_allow": ["http://127.0.0.1:"]})
    wait_until(lambda: "upstream cm logged in" in st["node"].text(), "the CMPP login", 20)
    admin(st["tmp"], st["cfg"], "topup", "acme", "100")
    rx = Receiver()
    try:
        url = "http://127.0.0.1:%d/dlr?type=%%d&id=%%I&fid=%%F&reply=%%A" % rx.port
        status, body, headers = get(hport, "/cgi-bin/sendsms?" + urlencode({
            "username": "acme", "password": "pw", "from": "10690001", "to": "13800138123",
            "text": "over http", "dlr-mask": "3", "dlr-url": url}))
        assert status == 202, body
        mid = headers["x-proxyd-message-id"]
        wait_until(lambda: rx.ok(), "the report at the dlr-url", 20)
        q = {k: v[0] for k, v in parse_qs(urlsplit(rx.ok()[0][1]).query).items()}
        [rec] = read_record(st["record"])
        assert (q["type"], q["id"], q["fid"]) == ("2", mid, rec["id"])   # 2: failed
        assert "stat:UNDELIV err:MB:0011" in q["reply"] and ("id:%s" % mid) in q["reply"]
    finally:
        rx.close()
