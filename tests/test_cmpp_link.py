"""The CMPP link's connection over a fake transport and clock: login and the gateway's
authenticator, the window and response timeouts (ESME_RSYSERR, fate unknown), keepalive by
C/T/N, deliver acknowledgements, terminate."""
from __future__ import annotations

import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from proxyd.config import parse
from proxyd.links import core as K
from proxyd.links.cmpp import codec as X
from proxyd.links.cmpp.link import Cmpp2Link, Cmpp3Link
from proxyd.links.link import _ConnFactory
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

SECRET = b"s3cr3t"


def make(link_cls=Cmpp3Link, **kw):
    u = {"name": "cm", "connect": "tcp:host=127.0.0.1:port=7890", "system_id": "901234",
         "password": SECRET.decode(), "protocol": "cmpp3" if link_cls is Cmpp3Link else
         "cmpp2", "window": 2, "response_timeout_s": 5.0, "enquire_link_s": 30.0,
         "keepalive_tries": 2}
    u.update(kw)
    cfg = parse({"upstream": [u]}).upstreams[0]
    clock = Clock()
    clock.advance(time.mktime((2026, 12, 1, 8, 30, 15, 0, 0, -1)))
    delivered = []
    link = link_cls(cfg, clock, lambda l, pdu, ack: delivered.append((pdu, ack)))
    conn = _ConnFactory(link).buildProtocol(None)
    t = StringTransport()
    conn.makeConnection(t)
    return link, conn, t, clock, delivered


def frames(t: StringTransport, version=X.V3) -> list:
    data = t.value()
    t.clear()
    return [X.decode_frame(version, f) for f in K.Framer(12, 4096).feed(data)]


def login(conn, t, version=X.V3, status=0, auth=None):
    [(cid, seq, connect)] = frames(t, version)
    assert cid == X.CONNECT
    if auth is None:
        auth = X.authenticator_ismg(status, connect.authenticator, SECRET, version)
    conn.dataReceived(X.encode(X.ConnectResp(status=status, authenticator=auth,
                                             version=version), seq, version))
    return connect


def test_connect_carries_the_authenticator_of_the_local_time():
    link, conn, t, clock, _ = make()
    connect = login(conn, t)
    assert (connect.source_addr, connect.version, connect.timestamp) == (b"901234", 0x30,
                                                                         1201083015)
    assert connect.authenticator == X.authenticator_source(b"901234", SECRET, 1201083015)
    assert conn.bound and link.available and link.binds == [conn]
    assert conn.free == 2


def test_a_wrong_authenticator_ismg_or_status_refuses_the_login():
    _l, conn, t, _c, _ = make()
    login(conn, t, auth=b"\1" * 16)
    assert not conn.bound and t.disconnecting
    _l, conn, t, _c, _ = make()
    login(conn, t, status=3, auth=b"")
    assert not conn.bound and t.disconnecting


def part(dest=b"13800138000"):
    pdu = P.SubmitSm(seq=1, source_addr=b"10690001", destination_addr=dest,
                     registered_delivery=1, short_message=b"hello")
    return pdu, b""


def test_submit_answer_timeout_and_window():
    link, conn, t, clock, _ = make()
    login(conn, t)
    out = []
    for i in range(3):
        link.submit_part(part(), None, lambda st, mid, i=i: out.append((i, st, mid)))
    subs = frames(t)
    assert [c for c, _s, _p in subs] == [X.SUBMIT, X.SUBMIT]       # window 2, one waits
    assert len(link.waiting) == 1
    conn.dataReceived(X.encode(X.SubmitResp(msg_id=0xC0A1E3C003E90007, result=0),
                               subs[0][1], X.V3))
    # the answer freed a window: the waiting part went out in the same turn
    assert out == [(0, 0, b"%d" % 0xC0A1E3C003E90007)]
    third = frames(t)
    assert [c for c, _s, _p in third] == [X.SUBMIT] and not link.waiting
    conn.dataReceived(X.encode(X.SubmitResp(msg_id=0, result=8), third[0][1], X.V3))
    assert out[-1] == (2, C.STATUS["ESME_RTHROTTLED"], None)
    clock.advance(5.0)
    conn.tick(clock.seconds())
    assert out[-1] == (1, C.STATUS["ESME_RSYSERR"], None) and conn.free == 2


def test_keepalive_c_t_n_then_reconnect():
    link, conn, t, clock, _ = make()
    login(conn, t)
    clock.advance(30.0)
    conn.tick(clock.seconds())
    assert [c for c, _s, _p in frames(t)] == [X.ACTIVE_TEST]
    clock.advance(5.0)                       # T passed: sent again (try 2 of N=2)
    conn.tick(clock.seconds())
    assert [c for c, _s, _p in frames(t)] == [X.ACTIVE_TEST]
    assert not t.disconnecting
    clock.advance(5.0)
    conn.tick(clock.seconds())
    assert t.disconnecting


def test_gateway_active_test_and_terminate_are_answered():
    _l, conn, t, _c, _ = make()
    login(conn, t)
    conn.dataReceived(X.frame(X.ACTIVE_TEST, 77))
    assert frames(t) == [(X.ACTIVE_TEST_RESP, 77, X.ActiveTestResp(reserved=0))]
    conn.dataReceived(X.frame(X.TERMINATE, 78))
    assert frames(t) == [(X.TERMINATE_RESP, 78, X.TerminateResp())] and t.disconnecting


def test_deliver_is_acknowledged_only_by_the_delivery_side():
    link, conn, t, clock, delivered = make(Cmpp2Link)
    login(conn, t, X.V2)
    rep = X.Report(msg_id=42, stat=b"DELIVRD", submit_time=b"2612010830",
                   done_time=b"2612010831", dest_terminal_id=b"13800138000")
    d = X.Deliver(msg_id=99, dest_id=b"10690001", src_terminal_id=b"13800138000",
                  registered_delivery=1, msg_content=X.encode_report(rep, X.V2))
    conn.dataReceived(X.encode(d, 5, X.V2))
    assert t.value() == b""                  # not acknowledged before it is stored
    [(pdu, ack)] = delivered
    assert pdu.tlv(C.TAG_RECEIPTED_MESSAGE_ID) == b"42\0" and pdu.tlv(C.TAG_MESSAGE_STATE) \
        == b"\x02"
    ack(C.STATUS["ESME_RX_T_APPN"])
    assert frames(t, X.V2) == [(X.DELIVER_RESP, 5, X.DeliverResp(msg_id=99, result=8))]
    # a malformed deliver is refused with the decoder's result, never handed over
    conn.dataReceived(X.frame(X.DELIVER, 6, (99).to_bytes(8, "big") + b"\0" * 5))
    assert frames(t, X.V2) == [(X.DELIVER_RESP, 6, X.DeliverResp(msg_id=99, result=4))]
    assert len(delivered) == 1


def test_stop_sends_terminate_and_fails_what_is_in_flight_on_close():
    link, conn, t, clock, _ = make()
    login(conn, t)
    out = []
    link.submit_part(part(), None, lambda st, mid: out.append(st))
    frames(t)
    conn.unbind()
    assert [c for c, _s, _p in frames(t)] == [X.TERMINATE]
    conn.connectionLost(None)
    assert out == [C.STATUS["ESME_RSYSERR"]] and link.binds == []


def test_a_framing_error_closes_the_connection():
    _l, conn, t, _c, _ = make()
    login(conn, t)
    conn.dataReceived(b"\x00\x00\x00\x05" + b"\0" * 8)
    assert t.disconnecting


def test_a_login_never_answered_is_closed_after_the_response_timeout():
    link, conn, t, clock, _ = make()
    assert conn in link.conns and not conn.bound
    clock.advance(4.9)
    link._tick()
    assert not t.disconnecting
    clock.advance(0.2)
    link._tick()
    assert t.disconnecting
    conn.connectionLost(None)
    assert link.conns == set()


def test_cancel_sm_becomes_cmpp_cancel_and_replace_is_refused():
    link, conn, t, clock, _ = make()
    login(conn, t)
    out = []
    body = P.encode(P.CancelSm(message_id=b"%d" % 0xC0A1E3C003E90007,
                               source_addr=b"10690001"))[16:]
    link.submit(C.CANCEL_SM, body, lambda st, mid: out.append(st))
    [(cid, seq, cancel)] = frames(t)
    assert (cid, cancel) == (X.CANCEL, X.Cancel(msg_id=0xC0A1E3C003E90007))
    conn.dataReceived(X.encode(X.CancelResp(success_id=1), seq, X.V3))
    assert out == [C.STATUS["ESME_RCANCELFAIL"]]
    link.submit(C.CANCEL_SM, body, lambda st, mid: out.append(st))
    [(cid, seq, _c)] = frames(t)
    conn.dataReceived(X.encode(X.CancelResp(success_id=0), seq, X.V3))
    # replace_sm, and a cancel_sm of an id that is no Msg_Id, never reach the gateway
    link.submit(C.REPLACE_SM, b"", lambda st, mid: out.append(st))
    bad = P.encode(P.CancelSm(message_id=b"abc", source_addr=b"1"))[16:]
    link.submit(C.CANCEL_SM, bad, lambda st, mid: out.append(st))
    assert out[1:] == [0, C.STATUS["ESME_RINVCMDID"], C.STATUS["ESME_RINVCMDID"]]
    assert t.value() == b""


def test_an_mo_whose_number_does_not_fit_smpp_is_refused_not_cut():
    link, conn, t, clock, delivered = make()
    login(conn, t)
    d = X.Deliver(msg_id=7, dest_id=b"10690001", src_terminal_id=b"8" * 21,
                  registered_delivery=0, msg_content=b"TD")
    conn.dataReceived(X.encode(d, 9, X.V3))
    assert frames(t) == [(X.DELIVER_RESP, 9, X.DeliverResp(msg_id=7, result=X.R_STRUCTURE))]
    assert delivered == []
    conn.dataReceived(X.encode(d._replace(src_terminal_id=b"8" * 20), 10, X.V3))
    assert [p.source_addr for p, _ack in delivered] == [b"8" * 20]


def test_unanswered_delivers_past_the_window_pause_reading():
    link, conn, t, clock, delivered = make()          # window 2
    login(conn, t)
    d = X.Deliver(msg_id=7, dest_id=b"10690001", src_terminal_id=b"13900000001",
                  registered_delivery=0, msg_content=b"hi")
    conn.dataReceived(X.encode(d, 1, X.V3))
    assert t.producerState == "producing"
    conn.dataReceived(X.encode(d, 2, X.V3))
    assert t.producerState == "paused" and len(delivered) == 2
    delivered[0][1](0)
    delivered[0][1](0)                                 # a second ack is ignored
    assert t.producerState == "producing"
    assert [s for _c, s, _p in frames(t)] == [1]


def test_nothing_counts_before_the_login_is_answered():
    link, conn, t, clock, delivered = make()
    frames(t)
    d = X.Deliver(msg_id=7, dest_id=b"10690001", src_terminal_id=b"13900000001",
                  registered_delivery=0, msg_content=b"TD")
    conn.dataReceived(X.encode(d, 1, X.V3))
    assert t.disconnecting and delivered == [] and not conn.bound and t.value() == b""
