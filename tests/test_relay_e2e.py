"""Issue 2 end to end: simulator + proxyd as real twistd processes, smpplib as the client."""
from __future__ import annotations

import socket
import struct
import time

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, write_config

CONFIG = dict(smpp={"window": 100, "enquire_link_s": 30, "inactivity_s": 300},
              relay={"queue_wait_s": 0.2},
              upstream={"binds": 2, "window": 50, "response_timeout_s": 5, "reconnect_max_s": 1},
              account={"max_binds": 2})


@pytest.fixture
def stack(tmp_path):
    sim, sim_port, record = start_sim(tmp_path)
    proxyd = None
    try:
        port = free_port()
        cfg = write_config(tmp_path, config_text(port, sim_port, **CONFIG))
        proxyd = start_proxyd(tmp_path, cfg, port)
        wait_until(lambda: proxyd.text().count("upstream sim bound") >= 2, "upstream binds", 20)
        admin(tmp_path, cfg, "topup", "acme", "1000000", "--note", "test funds")
        yield {"port": port, "sim": sim, "sim_port": sim_port, "record": record,
               "proxyd": proxyd, "tmp": tmp_path}
    finally:
        if proxyd is not None:
            proxyd.stop()
        sim.stop()


def client(port: int) -> smpplib.client.Client:
    c = smpplib.client.Client("127.0.0.1", port, timeout=15, allow_unknown_opt_params=True)
    c.connect()
    return c


def test_smpplib_1000_messages_relayed_faithfully(stack):
    c = client(stack["port"])
    c.bind_transceiver(system_id="acme", password="s3cret")
    sent = {}
    answers = {}
    for batch in range(20):
        for i in range(50):
            n = batch * 50 + i
            text = ("message %04d ok" % n).encode()
            pdu = c.send_message(
                source_addr_ton=1, source_addr_npi=1, source_addr="10690001%02d" % (n % 7),
                dest_addr_ton=1, dest_addr_npi=1, destination_addr="1380013%04d" % n,
                short_message=text, data_coding=0, esm_class=0,
                registered_delivery=0)
            sent[pdu.sequence] = ("10690001%02d" % (n % 7), "1380013%04d" % n, text)
        while len(answers) < (batch + 1) * 50:
            r = c.read_pdu()
            if r.command == "submit_sm_resp":
                answers[r.sequence] = (r.status, r.message_id)
    c.unbind()
    c.disconnect()
    assert len(answers) == 1000
    assert all(status == 0 for status, _ in answers.values())
    ids = [mid for _, mid in answers.values()]
    assert len(set(ids)) == 1000 and all(0 < len(m) <= 64 for m in ids)
    wait_until(lambda: len(read_record(stack["record"])) >= 1000, "record", 10)
    received = read_record(stack["record"])
    assert len(received) == 1000
    got = set()
    for line in received:
        p = P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(line["body"]))
        assert (p.source_addr_ton, p.source_addr_npi, p.dest_addr_ton, p.dest_addr_npi) == \
            (1, 1, 1, 1)
        got.add((p.source_addr.decode(), p.destination_addr.decode(), p.short_message))
    assert got == set(sent.values())


def test_tlvs_and_fields_relayed_byte_exact(stack):
    s = raw_bound(stack["port"])
    tlvs = ((0x1403, b"vendor-specific"), (C.TLV["user_message_reference"], b"\x00\x07"))
    pdu = P.SubmitSm(seq=7, service_type=b"CMT", source_addr_ton=0, source_addr_npi=1,
                     source_addr=b"1069000188", dest_addr_ton=1, dest_addr_npi=1,
                     destination_addr=b"13900000000", esm_class=0, protocol_id=0,
                     priority_flag=1, registered_delivery=1, data_coding=8,
                     short_message="你好，世界".encode("utf-16-be"), tlvs=tlvs)
    s.sendall(P.encode(pdu))
    resp = read_pdu(s)
    assert resp.command_id == C.SUBMIT_SM_RESP and resp.status == 0 and resp.message_id
    wait_until(lambda: len(read_record(stack["record"])) >= 1, "record", 10)
    body = bytes.fromhex(read_record(stack["record"])[0]["body"])
    assert body == P.encode(pdu)[16:]


def raw_bound(port: int, mode: int = C.BIND_TRANSMITTER) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    cls = P.PDU_CLASSES[mode]
    s.sendall(P.encode(cls(1, 0, b"acme", b"s3cret", b"", 0x34, 0, 0, b"")))
    r = read_pdu(s)
    assert r.status == 0, C.status_name(r.status)
    return s


def read_pdu(s: socket.socket):
    hdr = b""
    while len(hdr) < 16:
        chunk = s.recv(16 - len(hdr))
        if not chunk:
            return None
        hdr += chunk
    length = struct.unpack(">I", hdr[:4])[0]
    body = b""
    while len(body) < length - 16:
        chunk = s.recv(length - 16 - len(body))
        if not chunk:
            return None
        body += chunk
    return P.decode(hdr + body)


def test_bind_errors_over_a_real_socket(stack):
    c = client(stack["port"])
    with pytest.raises(smpplib.exceptions.PDUError) as e:
        c.bind_transmitter(system_id="acme", password="wrong")
    assert e.value.args[1] == C.STATUS["ESME_RINVPASWD"]
    with pytest.raises(smpplib.exceptions.PDUError) as e:
        c.bind_transmitter(system_id="nobody", password="x")
    # an unknown system_id gets the status of a wrong password: names cannot be listed
    assert e.value.args[1] == C.STATUS["ESME_RINVPASWD"]
    c.bind_transmitter(system_id="acme", password="s3cret")
    # smpplib refuses a second bind locally, so the second bind goes raw
    raw = raw_bound(stack["port"])
    raw.sendall(P.encode(P.BindTransceiver(5, 0, b"acme", b"s3cret", b"", 0x34, 0, 0, b"")))
    r = read_pdu(raw)
    assert (r.command_id, r.seq, r.status) == (C.BIND_TRANSCEIVER_RESP, 5,
                                               C.STATUS["ESME_RALYBND"])
    raw.close()
    wait_until(lambda: "unbind acme transmitter" in stack["proxyd"].text(), "unbind logged", 10)
    c2 = client(stack["port"])
    c2.bind_transmitter(system_id="acme", password="s3cret")
    c3 = client(stack["port"])   # max_binds = 2
    with pytest.raises(smpplib.exceptions.PDUError) as e:
        c3.bind_transmitter(system_id="acme", password="s3cret")
    assert e.value.args[1] == C.STATUS["ESME_RBINDFAIL"]
    for x in (c, c2, c3):
        x.disconnect()


def test_receiver_bind_may_not_submit(stack):
    # smpplib will not even send a submit on a receiver bind, so this client is raw
    s = raw_bound(stack["port"], C.BIND_RECEIVER)
    s.sendall(P.encode(P.SubmitSm(seq=8, source_addr=b"10690001",
                                  destination_addr=b"13800138000", short_message=b"hello")))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.SUBMIT_SM_RESP, 8,
                                               C.STATUS["ESME_RINVBNDSTS"])
    s.sendall(P.encode(P.SubmitMulti(seq=9, dest_addresses=((1, 1, 1, b"13800138000"),),
                                     short_message=b"hello")))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.SUBMIT_MULTI_RESP, 9,
                                               C.STATUS["ESME_RINVBNDSTS"])
    # the session lives on
    s.sendall(P.encode(P.EnquireLink(seq=10)))
    assert read_pdu(s).command_id == C.ENQUIRE_LINK_RESP
    s.close()
    assert read_record(stack["record"]) == []


def test_smpplib_receiver_bind_refused_cancel_query_replace(stack):
    """Issue 14 item 4: a receiver bind gets ESME_RINVBNDSTS for cancel_sm, query_sm and
    replace_sm too (they used to reach the relay)."""
    c = client(stack["port"])
    c.bind_receiver(system_id="acme", password="s3cret")
    sock = c._socket            # smpplib has no cancel_sm / replace_sm: raw on its socket
    sock.sendall(P.encode(P.CancelSm(seq=50, message_id=b"1", source_addr=b"10690001",
                                     destination_addr=b"13800138000")))
    r = read_pdu(sock)
    assert (r.command_id, r.seq, r.status) == (C.CANCEL_SM_RESP, 50, 0x04)
    sock.sendall(P.encode(P.ReplaceSm(seq=51, message_id=b"1", source_addr=b"10690001",
                                      short_message=b"new")))
    r = read_pdu(sock)
    assert (r.command_id, r.seq, r.status) == (C.REPLACE_SM_RESP, 51, 0x04)
    q = c.query_message(message_id="1", source_addr_ton=1, source_addr_npi=1,
                        source_addr="10690001")
    r = read_pdu(sock)
    assert (r.command_id, r.seq, r.status) == (C.QUERY_SM_RESP, q.sequence, 0x04)
    sock.sendall(P.encode(P.EnquireLink(seq=52)))        # the bind lives on
    assert read_pdu(sock).command_id == C.ENQUIRE_LINK_RESP
    c.disconnect()
    assert "cancel_sm" not in stack["proxyd"].text()
    assert read_record(stack["record"]) == []


def test_request_before_bind_refused(stack):
    s = socket.create_connection(("127.0.0.1", stack["port"]), timeout=10)
    s.sendall(P.encode(P.SubmitSm(seq=3, source_addr=b"10690001",
                                  destination_addr=b"13800138000", short_message=b"x")))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.SUBMIT_SM_RESP, 3, C.STATUS["ESME_RINVBNDSTS"])
    s.sendall(P.encode(P.QuerySm(seq=4, message_id=b"1")))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.QUERY_SM_RESP, 4, C.STATUS["ESME_RINVBNDSTS"])
    s.close()


def test_unknown_command_keeps_the_session(stack):
    s = raw_bound(stack["port"])
    s.sendall(P.frame(0x00000077, 0, 42, b"junk"))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.GENERIC_NACK, 42, C.STATUS["ESME_RINVCMDID"])
    s.sendall(P.encode(P.EnquireLink(seq=43)))
    r = read_pdu(s)
    assert (r.command_id, r.seq) == (C.ENQUIRE_LINK_RESP, 43)
    s.sendall(P.encode(P.SubmitSm(seq=44, source_addr=b"10690001",
                                  destination_addr=b"13800138000", short_message=b"x")))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.SUBMIT_SM_RESP, 44, 0)
    s.close()


@pytest.mark.parametrize("length", [8, 1 << 24])
def test_broken_command_length_nack_then_close(stack, length):
    s = raw_bound(stack["port"])
    s.sendall(struct.pack(">IIII", length, C.SUBMIT_SM, 0, 55) + b"\0" * 16)
    r = read_pdu(s)
    assert (r.command_id, r.status) == (C.GENERIC_NACK, C.STATUS["ESME_RINVCMDLEN"])
    assert read_pdu(s) is None     # closed
    s.close()
    # the daemon and other clients are unaffected
    s2 = raw_bound(stack["port"])
    s2.sendall(P.encode(P.EnquireLink(seq=2)))
    assert read_pdu(s2).command_id == C.ENQUIRE_LINK_RESP
    s2.close()


def test_malformed_body_gets_specific_status(stack):
    s = raw_bound(stack["port"])
    # destination_addr of 30 digits: over the 21-octet C-octet string limit
    body = b"\0" + b"\x01\x01" + b"10690001\0" + b"\x01\x01" + b"1" * 30 + b"\0" + \
        b"\0\0\0" + b"\0\0" + b"\0\0\0\0\x01x"
    s.sendall(P.frame(C.SUBMIT_SM, 0, 9, body))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.SUBMIT_SM_RESP, 9, C.STATUS["ESME_RINVDSTADR"])
    # truncated TLV
    good = P.encode(P.SubmitSm(seq=10, source_addr=b"10690001",
                               destination_addr=b"13800138000", short_message=b"x"))[16:]
    s.sendall(P.frame(C.SUBMIT_SM, 0, 10, good + b"\x04\x24\x00"))
    r = read_pdu(s)
    assert (r.seq, r.status) == (10, C.STATUS["ESME_RINVOPTPARSTREAM"])
    s.close()
    assert read_record(stack["record"]) == []


def test_unimplemented_requests_get_valid_responses(stack):
    s = raw_bound(stack["port"])
    for seq, pdu, resp_id in [
        (20, P.QuerySm(seq=20, message_id=b"abc", source_addr=b"10690001"), C.QUERY_SM_RESP),
        (21, P.CancelSm(seq=21, message_id=b"abc"), C.CANCEL_SM_RESP),
        (22, P.ReplaceSm(seq=22, message_id=b"abc", short_message=b"y"), C.REPLACE_SM_RESP),
    ]:
        s.sendall(P.encode(pdu))
        r = read_pdu(s)
        assert (r.command_id, r.seq) == (resp_id, seq)
        assert r.status != 0
    s.sendall(P.encode(P.EnquireLink(seq=30)))
    assert read_pdu(s).command_id == C.ENQUIRE_LINK_RESP
    s.close()


def test_window_overrun_is_paused_not_dropped(stack):
    s = raw_bound(stack["port"])
    n = 600      # 6x the client window of 100, written in one go
    data = b"".join(P.encode(P.SubmitSm(seq=i + 2, source_addr=b"10690001",
                                        destination_addr=b"13800138000",
                                        short_message=b"w%d" % i)) for i in range(n))
    s.sendall(data)
    seen = set()
    while len(seen) < n:
        r = read_pdu(s)
        assert r is not None, "session dropped after %d answers" % len(seen)
        assert r.command_id == C.SUBMIT_SM_RESP and r.status == 0
        seen.add(r.seq)
    assert seen == set(range(2, n + 2))
    s.close()


def test_upstream_killed_mid_traffic(stack):
    s = raw_bound(stack["port"])
    n = 400
    pdus = [P.encode(P.SubmitSm(seq=i + 2, source_addr=b"10690001",
                                destination_addr=b"13800138000",
                                short_message=b"k%05d" % i)) for i in range(n)]
    s.sendall(b"".join(pdus[:200]))
    stack["sim"].kill9()
    s.sendall(b"".join(pdus[200:]))
    answers = {}
    while len(answers) < n:
        r = read_pdu(s)
        assert r is not None
        answers[r.seq] = r
    s.close()
    received = {P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message
                for x in read_record(stack["record"])}
    ok = {pdus[seq - 2][-6:] for seq, r in answers.items() if r.status == 0}
    assert ok <= received, "OK answered for messages the simulator never accepted"
    errors = [r for r in answers.values() if r.status != 0]
    assert errors, "the kill happened mid-traffic, some must have failed"
    assert all(r.status in (C.STATUS["ESME_RSYSERR"], C.STATUS["ESME_RMSGQFUL"])
               for r in errors)


def test_submit_multi_expanded_per_destination(stack):
    s = raw_bound(stack["port"])
    pdu = P.SubmitMulti(seq=60, source_addr_ton=1, source_addr_npi=1, source_addr=b"10690001",
                        dest_addresses=((1, 1, 1, b"13800000001"), (1, 1, 1, b"13800000002"),
                                        (1, 1, 1, b"12ab"), (2, b"friends")),
                        short_message=b"multi")
    s.sendall(P.encode(pdu))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.SUBMIT_MULTI_RESP, 60, 0)
    assert r.message_id
    refused = {addr: st for _t, _n, addr, st in r.unsuccess_smes}
    assert refused == {b"12ab": C.STATUS["ESME_RINVDSTADR"],
                       b"friends": C.STATUS["ESME_RINVDLNAME"]}
    s.close()
    wait_until(lambda: len(read_record(stack["record"])) >= 2, "two messages", 10)
    got = sorted(P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).destination_addr
                 for x in read_record(stack["record"]))
    assert got == [b"13800000001", b"13800000002"]


def test_data_sm_relayed(stack):
    s = raw_bound(stack["port"])
    pdu = P.DataSm(seq=61, source_addr=b"10690001", destination_addr=b"13800000003",
                   data_coding=8, tlvs=((C.TAG_MESSAGE_PAYLOAD, "数据短信".encode("utf-16-be")),))
    s.sendall(P.encode(pdu))
    r = read_pdu(s)
    assert (r.command_id, r.seq, r.status) == (C.DATA_SM_RESP, 61, 0) and r.message_id
    s.close()
    wait_until(lambda: len(read_record(stack["record"])) >= 1, "data_sm at the simulator", 10)
    rec = read_record(stack["record"])[0]
    assert rec.get("cmd") == "data_sm"
    assert P.decode_body(C.DATA_SM, 0, 1, bytes.fromhex(rec["body"])).tlv(
        C.TAG_MESSAGE_PAYLOAD) == "数据短信".encode("utf-16-be")
