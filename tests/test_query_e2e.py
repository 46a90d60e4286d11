"""query_sm / cancel_sm from stored state, and proxyd's own receipts, end to end (simulator +
proxyd under twistd, raw SMPP clients). Deadlines are limits on waiting, never measurements."""
from __future__ import annotations

import re

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.text.udh import concat_udh

from .procs import admin, free_port, start_proxyd, start_sim, wait_until
from .test_delivery import SRC, Raw, _config

S = C.STATUS


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("query")
    sim, sim_port, record = start_sim(tmp, None)
    port = free_port()
    cfg = _config(tmp, port, sim_port)
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: proxyd.text().count("upstream sim bound") >= 2, "upstream binds", 20)
        admin(tmp, cfg, "topup", "acme", "100000", "--note", "test funds")
        admin(tmp, cfg, "topup", "other", "100000", "--note", "test funds")
        yield {"port": port, "proxyd": proxyd}
    finally:
        proxyd.stop()
        sim.stop()


def request(c: Raw, pdu) -> object:
    seq = c._next()
    c.s.sendall(P.encode(pdu._replace(seq=seq)))
    c.pump(lambda: seq in c.resps)
    return c.resps[seq]


def query(c: Raw, mid: bytes):
    return request(c, P.QuerySm(message_id=mid, source_addr_ton=1, source_addr_npi=1,
                                source_addr=SRC.encode()))


def test_query_sm_after_the_receipt_says_delivered(st):
    c = Raw(st["port"], C.BIND_TRANSCEIVER)
    [mid] = c.submit_all(1, dest="13800138200")
    c.pump(lambda: len(c.delivered) >= 1)
    assert c.delivered[0].tlv(C.TAG_RECEIPTED_MESSAGE_ID).rstrip(b"\0") == mid
    r = query(c, mid)
    assert r.command_id == C.QUERY_SM_RESP and r.status == 0
    assert (r.message_id, r.message_state, r.error_code) == (mid, 2, 0)
    assert re.fullmatch(rb"\d{12}000\+", r.final_date), r.final_date
    # a final message cannot be cancelled
    r = request(c, P.CancelSm(message_id=mid, source_addr=SRC.encode()))
    assert r.command_id == C.CANCEL_SM_RESP and r.status == S["ESME_RCANCELFAIL"]
    c.close()


def test_query_sm_unknown_or_foreign_id_fails(st):
    c = Raw(st["port"], C.BIND_TRANSCEIVER)
    r = query(c, b"00000000000000000000dead")
    assert r.command_id == C.QUERY_SM_RESP and r.status == S["ESME_RQUERYFAIL"]
    # another account's message is unknown to this one
    o = Raw(st["port"], C.BIND_TRANSCEIVER, b"other", b"0ther")
    seq = o._next()
    o.s.sendall(P.encode(P.SubmitSm(seq=seq, source_addr=b"1069000125", dest_addr_ton=1,
                                    destination_addr=b"13800138201", registered_delivery=1,
                                    short_message=b"mine")))
    o.pump(lambda: seq in o.resps)
    assert o.resps[seq].status == 0
    theirs = o.resps[seq].message_id
    assert query(o, theirs).status == 0
    assert query(c, theirs).status == S["ESME_RQUERYFAIL"]
    o.close()
    c.close()


def test_cancel_sm_enroute_relayed_to_an_upstream_without_cancel(st):
    """registered_delivery 2 (failures only): the simulator sends no receipt, the message
    stays ENROUTE; the simulator does not implement cancel_sm, so the client is told
    ESME_RCANCELFAIL (not the operator's ESME_RINVCMDID)."""
    c = Raw(st["port"], C.BIND_TRANSCEIVER)
    [mid] = c.submit_all(1, dest="13800138202", registered_delivery=2)
    wait_until(lambda: query(c, mid).status == 0, "the state recorded", 10)
    r = query(c, mid)
    assert (r.message_state, r.final_date) == (1, b"")
    r = request(c, P.CancelSm(message_id=mid, source_addr=SRC.encode()))
    assert r.status == S["ESME_RCANCELFAIL"]
    assert "cancel_sm %s refused: upstream sim answered ESME_RINVCMDID" % mid.decode() in \
        st["proxyd"].text()
    r = request(c, P.ReplaceSm(message_id=b"nope", source_addr=SRC.encode(),
                               short_message=b"x"))
    assert r.command_id == C.REPLACE_SM_RESP and r.status == S["ESME_RREPLACEFAIL"]
    c.close()


def test_own_rejectd_receipts_for_a_long_message_refused_for_content(st):
    c = Raw(st["port"], C.BIND_TRANSCEIVER)
    text = "今天天气很好我们一起去公园散步然后" + "赌博" + "吧朋友们一起来玩" * 3
    data = text.encode("utf-16-be")
    size = -(-len(data) // 3)
    size += size % 2
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    seqs = []
    for i, chunk in enumerate(chunks):
        seq = c._next()
        seqs.append(seq)
        c.s.sendall(P.encode(P.SubmitSm(
            seq=seq, source_addr_ton=1, source_addr_npi=1, source_addr=SRC.encode(),
            dest_addr_ton=1, dest_addr_npi=1, destination_addr=b"13800138203",
            esm_class=0x40, data_coding=8, registered_delivery=1,
            short_message=concat_udh(0x5A, 3, i + 1) + chunk)))
    c.pump(lambda: all(s in c.resps for s in seqs))
    ids = [c.resps[s].message_id for s in seqs]
    assert all(c.resps[s].status == 0 for s in seqs) and len(set(ids)) == 3
    c.pump(lambda: len(c.delivered) >= 3)
    got = {}
    for r in c.delivered:
        assert r.command_id == C.DELIVER_SM and r.esm_class == C.ESM_DELIVERY_RECEIPT
        rid = r.tlv(C.TAG_RECEIPTED_MESSAGE_ID).rstrip(b"\0")
        assert r.tlv(C.TAG_MESSAGE_STATE) == b"\x08"
        assert re.match(rb"id:%s sub:001 dlvrd:000 submit date:\d{10} done date:\d{10} "
                        rb"stat:REJECTD err:400 text:" % rid, r.short_message), r.short_message
        assert (r.source_addr, r.destination_addr) == (b"13800138203", SRC.encode())
        got[rid] = r
    assert sorted(got) == sorted(ids)
    q = query(c, ids[1])
    assert q.status == 0 and q.message_state == 8 and q.error_code == 255
    c.close()
