"""Issue 18, SMGP 3.0 and SGIP 1.2 end to end with real processes: an SMPP client (smpplib)
-> proxyd -> the simulator in smgp/sgip mode. Receipts come back with proxyd's ids (SGIP's by
the gateway connecting back to proxyd's sp_listen), the operator's code kept in err:; a long
message goes as TP_udhi with its UDH (and PkTotal/PkNumber for SMGP); a refused part is
refunded and the journal balances; an MO reaches the receiver bind and an unsubscribe word
opts the sender out."""
from __future__ import annotations

import json
import re

import pytest
import smpplib.gsm

from proxyd.links.sgip import pdu as G
from proxyd.links.smgp import pdu as M

from .conftemplate import config_text
from .test_cmpp_e2e import _balance, _client, _control
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, \
    write_config

CLIENT_ID, SECRET = "10690001", "smgp-secret"
PRICE = 5
SP_NODE = 3075512345


@pytest.fixture
def stack(tmp_path):
    procs: list = []

    def start(protocol: str, *sim_args: str, password: str = SECRET,
              sp_password: str | None = None) -> dict:
        control = free_port()
        upstream = {"name": "gw", "protocol": protocol, "system_id": CLIENT_ID,
                    "password": SECRET, "service_id": "MTEST", "fee_type": "02",
                    "fee_code": "10"}
        extra: list[str] = []
        if protocol == "sgip":
            sp_port = free_port()
            upstream.update(node_id=SP_NODE, fee_type="2",
                            sp_listen="tcp:%d:interface=127.0.0.1" % sp_port,
                            sp_login="smg", sp_password="smg-pw")
            extra = ["--sp-connect", "tcp:host=127.0.0.1:port=%d" % sp_port,
                     "--sp-login", "smg", "--sp-password", sp_password or "smg-pw"]
        else:
            upstream.update(sp_id="SP0001")
        sim, sim_port, record = start_sim(
            tmp_path, None, "--protocol", protocol, "--system-id", CLIENT_ID,
            "--password", password, "--control", "tcp:%d:interface=127.0.0.1" % control,
            *extra, *sim_args)
        procs.append(sim)
        port = free_port()
        cfg = write_config(tmp_path, config_text(
            port, sim_port, upstream=upstream, account={"password": "pw", "price": PRICE}))
        node = start_proxyd(tmp_path, cfg, port)
        procs.append(node)
        return dict(sim=sim, record=record, control=control, port=port, cfg=cfg,
                    node=node, tmp=tmp_path)

    yield start
    for p in reversed(procs):
        p.stop()


def _send(c, dest: str, text: str, registered: int = 1) -> list:
    """Send `text` (split by smpplib into UDH parts when long); the submit_sm_resps in the
    order of the parts (the parts of a long message are answered as they are stored, in
    any order)."""
    parts, coding, esm = smpplib.gsm.make_parts(text)
    resps: list = []
    c.set_message_sent_handler(lambda pdu: resps.append(pdu))
    c.error_pdu_handler = lambda pdu: None      # a refusal comes to the handler above too
    seqs = []
    for part in parts:
        seqs.append(c.send_message(
            source_addr_ton=0, source_addr_npi=1, source_addr="10690001", dest_addr_ton=1,
            dest_addr_npi=1, destination_addr=dest, short_message=part, data_coding=coding,
            esm_class=esm, registered_delivery=registered).sequence)
    while len(resps) < len(parts):
        c.read_once()
    by_seq = {r.sequence: r for r in resps}
    return [by_seq[s] for s in seqs]


def _submits(protocol: str, record) -> list:
    out = []
    for r in read_record(record):
        body = bytes.fromhex(r["body"])
        out.append(M.decode_body(M.SUBMIT, 0, body) if protocol == "smgp"
                   else G.decode_body(G.SUBMIT, (0, 0, 0), body))
    return out


# per protocol: the simulator's code for a bad destination, and the err: of UNDELIV
FAIL = {"smgp": ("47", "004"), "sgip": ("6", "029")}


@pytest.mark.parametrize("protocol", ["smgp", "sgip"])
def test_relay_receipts_long_refund_journal_and_mo(stack, protocol):
    fail_status, undeliv_err = FAIL[protocol]
    st = stack(protocol, "--receipt-stat", "DELIVRD,UNDELIV", "--fail-every", "5",
               "--fail-status", fail_status)
    tmp, cfg, node = st["tmp"], st["cfg"], st["node"]
    wait_until(lambda: "upstream gw logged in" in node.text(), "the login", 20)
    admin(tmp, cfg, "topup", "acme", "1000")
    got: list = []
    c = _client(st["port"], got)
    try:
        # a long message of two parts (the simulator's submits 1 and 2), then three single
        # parts: the last is its 5th submit, refused as a bad destination
        long_text = "long message " * 15
        r4 = _send(c, "13800138004", long_text)
        # (its parts are acknowledged once stored and relayed after: let them reach the
        # gateway first, so that the simulator's receipt states go in this order)
        wait_until(lambda: len(read_record(st["record"])) == 2, "the long message relayed", 10)
        r1 = _send(c, "13800138001", "hello one")
        r2 = _send(c, "13800138002", "hello two", registered=0)
        r3 = _send(c, "13800138003", "hello three")
        assert [r.status for r in r4 + r1 + r2] == [0, 0, 0, 0]
        assert r3[0].status == 0x0B             # ESME_RINVDSTADR, cut-through

        # receipts for the three parts with registered delivery, with proxyd's ids, the
        # simulator's stats in order, the operator's code in err:
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
        assert [receipts[i] for i in ids] == [("DELIVRD", "000"), ("UNDELIV", undeliv_err),
                                              ("DELIVRD", "000")]

        # what the gateway got: the service code as sender, the configured fields, the long
        # message with TP_udhi and its UDH
        subs = _submits(protocol, st["record"])
        assert len(subs) == 4
        if protocol == "smgp":
            assert all(s.src_term_id == b"10690001" for s in subs)
            assert {(s.service_id, s.fee_type, s.fee_code, s.tlv(M.MSG_SRC)) for s in subs} \
                == {(b"MTEST", b"02", b"10", b"SP0001\0\0")}
            assert [s.dest_term_ids for s in subs] == [
                (b"13800138004",), (b"13800138004",), (b"13800138001",), (b"13800138002",)]
            assert [s.need_report for s in subs] == [1, 1, 1, 0]
            assert [(s.tlv(M.PK_TOTAL), s.tlv(M.PK_NUMBER), s.tlv(M.TP_UDHI), s.msg_format)
                    for s in subs[:2]] == [(b"\x02", b"\x01", b"\x01", 0),
                                           (b"\x02", b"\x02", b"\x01", 0)]
            assert subs[2].tlv(M.TP_UDHI) is None and subs[2].tlv(M.PK_TOTAL) is None
            contents = [s.msg_content for s in subs]
        else:
            assert all(s.sp_number == b"10690001" for s in subs)
            assert {(s.service_type, s.fee_type, s.fee_value, s.corp_id, s.charge_number)
                    for s in subs} == {(b"MTEST", 2, b"10", b"12345", b"0" * 21)}
            assert [s.user_numbers for s in subs] == [
                (b"8613800138004",), (b"8613800138004",), (b"8613800138001",),
                (b"8613800138002",)]
            assert [s.report_flag for s in subs] == [1, 1, 1, 2]
            assert [(s.tp_udhi, s.message_coding) for s in subs] == [(1, 0), (1, 0), (0, 0),
                                                                     (0, 0)]
            contents = [s.message_content for s in subs]
        assert contents[0][:3] == b"\x05\x00\x03" and contents[0][4:6] == b"\x02\x01"
        assert b"".join(x[6:] for x in contents[:2]) == long_text.encode()

        # charges: 5 parts submitted, 4 accepted, the refused one refunded
        wait_until(lambda: _balance(tmp, cfg) == 1000 - 4 * PRICE, "4 parts charged", 10)

        def report() -> dict:
            r = admin(tmp, cfg, "report", "acme", "--json", check=False)
            return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}

        def journaled() -> dict | None:
            r = report()
            parts = r.get("parts", {})
            return r if parts.get("delivered") == 2 and parts.get("undelivered") == 1 else None

        final = wait_until(journaled, "receipts journaled", 20)
        assert final["ok"], final
        assert admin(tmp, cfg, "verify", "acme", check=False).returncode == 0

        # MO: a plain one reaches the receiver bind, "退订" (GBK) opts the sender out
        before = len(got)
        assert _control(st["control"], "MO 13900000001 1069000177 %s 0"
                        % b"hi there".hex()).startswith("OK")
        assert _control(st["control"], "MO 13900000002 10690001 %s 15"
                        % "退订".encode("gbk").hex()).startswith("OK")
        while len(got) < before + 1:
            c.read_once()
        mo = got[before]
        assert (mo.short_message, mo.source_addr, mo.destination_addr) == (
            b"hi there", b"13900000001", b"1069000177")
        wait_until(lambda: "13900000002" in admin(tmp, cfg, "optout", "list", "acme").stdout,
                   "the 退订 sender opted out", 20)
        r5 = _send(c, "13900000002", "to an opted-out number")
        assert r5[0].status == 0x0B
    finally:
        c.disconnect()


def test_smgp_wrong_secret_is_refused_and_retried(stack):
    st = stack("smgp", password="another-secret")
    wait_until(lambda: st["node"].text().count("refused the login: 21 (authentication") >= 2,
               "two refused logins (reconnect with backoff)", 20)
    assert "logged in" not in st["node"].text()


def test_sgip_gateway_with_a_wrong_sp_password_is_refused(stack):
    st = stack("sgip", sp_password="wrong")
    wait_until(lambda: "upstream gw logged in" in st["node"].text(), "the login", 20)
    assert _control(st["control"], "MO 13900000001 10690001 %s 0"
                    % b"hi".hex()).startswith("OK")
    wait_until(lambda: "Bind refused: 1 (invalid login)" in st["node"].text(),
               "the gateway's Bind refused on sp_listen", 20)
    wait_until(lambda: "smg: the SP refused our Bind" in st["sim"].text(),
               "the simulator told so", 10)
