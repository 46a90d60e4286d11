"""The SMGP and SGIP links without sockets: a fake clock and transport in place of the
gateway, to drive what the e2e tests cannot reach on time: the login digests both ways, the
keepalive (SMGP) and idle unbind (SGIP), answers and their SMPP statuses, timeouts, and the
SGIP sp_listen side against a hostile peer."""
from __future__ import annotations

import struct

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from proxyd.config import parse
from proxyd.links import factory
from proxyd.links.sgip import link as SL
from proxyd.links.sgip import pdu as G
from proxyd.links.smgp import link as ML
from proxyd.links.smgp import pdu as M
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

_S = C.STATUS
SECRET = "s3cret"


def _cfg(**kw):
    u = {"name": "gw", "connect": "tcp:host=127.0.0.1:port=7890", "system_id": "10690001",
         "password": SECRET, "enquire_link_s": 5.0, "response_timeout_s": 2.0,
         "keepalive_tries": 3}
    u.update(kw)
    return parse({"upstream": [u]}).upstreams[0]


class Events:
    def __init__(self):
        self.delivered = []
        self.outcomes = []

    def on_deliver(self, link, pdu, ack):
        self.delivered.append((pdu, ack))

    def outcome(self, status, mid):
        self.outcomes.append((status, mid))


def _part(**kw):
    base = dict(source_addr=b"10690001", destination_addr=b"13800138000", data_coding=1,
                short_message=b"hello", registered_delivery=1)
    base.update(kw)
    pdu = P.SubmitSm(**base)
    return pdu, P.encode(pdu)[16:]


def _frames(codec, t: StringTransport) -> list:
    data = t.value()
    t.clear()
    return [codec.decode_body(c, s, b) for c, s, b in codec.framer().feed(data)]


# --- SMGP -------------------------------------------------------------------------------------

def _smgp(clock=None, **kw):
    clock = clock or Clock()
    clock.advance(1_000_000)
    ev = Events()
    link = factory.build_link(_cfg(protocol="smgp", **kw), clock, ev.on_deliver)
    conn = ML.SmgpConnection(link)
    t = StringTransport()
    conn.makeConnection(t)
    (login,) = _frames(M.CODEC, t)
    return link, conn, t, ev, clock, login


def _login_ok(conn, t, login, secret=SECRET):
    auth = M.authenticator_server(0, login.authenticator, secret.encode())
    conn.dataReceived(M.LoginResp(seq=login.seq, status=0, authenticator=auth,
                                  version=0x30).encode())


def test_smgp_login_digest_and_the_gateway_proving_the_secret():
    link, conn, t, ev, clock, login = _smgp()
    assert (login.client_id, login.login_mode, login.version) == (b"10690001", 2, 0x30)
    assert login.timestamp == M.timestamp(clock.seconds())
    assert login.authenticator == M.authenticator_client(b"10690001", SECRET.encode(),
                                                         login.timestamp)
    # a gateway that does not know the secret cannot fake the answer
    _login_ok(conn, t, login, secret="guess")
    assert t.disconnecting and not link.available
    link, conn, t, ev, clock, login = _smgp()
    _login_ok(conn, t, login)
    assert link.available and not t.disconnecting
    link, conn, t, ev, clock, login = _smgp()
    conn.dataReceived(M.LoginResp(seq=login.seq, status=M.AUTH_ERROR, version=0x30).encode())
    assert t.disconnecting and not link.available


def test_smgp_active_test_when_idle_then_reconnect():
    link, conn, t, ev, clock, login = _smgp()
    _login_ok(conn, t, login)
    clock.advance(4.9)
    conn.tick(clock.seconds())
    assert _frames(M.CODEC, t) == []
    clock.advance(0.2)                          # C = enquire_link_s = 5 s idle
    conn.tick(clock.seconds())
    (at,) = _frames(M.CODEC, t)
    assert isinstance(at, M.ActiveTest)
    # the answer resets the count; unanswered ones are sent again every T, N in all
    conn.dataReceived(M.ActiveTestResp(seq=at.seq).encode())
    for _ in range(3):
        clock.advance(5.1)
        conn.tick(clock.seconds())
        assert [type(f) for f in _frames(M.CODEC, t)] == [M.ActiveTest]
        assert not t.disconnecting
    clock.advance(2.1)
    conn.tick(clock.seconds())
    assert t.disconnecting                      # N = 3 unanswered: closed, to reconnect
    # the gateway's own Active_Test is answered
    link, conn, t, ev, clock, login = _smgp()
    _login_ok(conn, t, login)
    conn.dataReceived(M.ActiveTest(seq=77).encode())
    assert _frames(M.CODEC, t) == [M.ActiveTestResp(seq=77)]


def test_smgp_submit_answers_statuses_and_timeout():
    link, conn, t, ev, clock, login = _smgp(service_id="SVC", fee_type="01", fee_code="5")
    _login_ok(conn, t, login)
    for _ in range(3):
        link.submit_part(_part(), None, ev.outcome)
    subs = _frames(M.CODEC, t)
    assert [s.service_id for s in subs] == [b"SVC"] * 3 and subs[0].src_term_id == b"10690001"
    mid = M.make_msg_id("010061", 12011200, 7)
    conn.dataReceived(M.SubmitResp(seq=subs[0].seq, msg_id=mid, status=0).encode()
                      + M.SubmitResp(seq=subs[1].seq, msg_id=b"\0" * 10,
                                     status=M.BAD_DEST_TERM_ID).encode())
    assert ev.outcomes == [(0, b"01006112011200000007"), (_S["ESME_RINVDSTADR"], None)]
    clock.advance(2.5)                          # response_timeout_s: fate unknown
    conn.tick(clock.seconds())
    assert ev.outcomes[2] == (_S["ESME_RSYSERR"], None)
    # statuses the gate may try elsewhere
    assert ML.submit_status(M.SYSTEM_BUSY) == _S["ESME_RMSGQFUL"]
    assert ML.submit_status(M.SP_DAILY_LIMIT) == _S["ESME_RTHROTTLED"]
    assert ML.submit_status(99) == _S["ESME_RSUBMITFAIL"]
    # a part the gateway cannot carry is refused before it is sent
    link.submit_part(_part(data_coding=8, short_message=b"\0" * 150), None, ev.outcome)
    assert ev.outcomes[3] == (_S["ESME_RINVMSGLEN"], None) and t.value() == b""


def test_smgp_reports_and_mo_acknowledged_once_stored():
    link, conn, t, ev, clock, login = _smgp()
    _login_ok(conn, t, login)
    mid = M.make_msg_id("010061", 12011200, 7)
    report = M.Deliver(seq=5, msg_id=M.make_msg_id("010061", 12011201, 1), is_report=1,
                       src_term_id=b"13800138000", dest_term_id=b"10690001",
                       msg_content=M.report_content(M.Report(mid, b"UNDELIV", b"004")))
    mo = M.Deliver(seq=6, msg_id=M.make_msg_id("010061", 12011201, 2), msg_format=15,
                   src_term_id=b"13800138000", dest_term_id=b"1069000155",
                   msg_content="退订".encode("gbk"))
    conn.dataReceived(report.encode() + mo.encode())
    assert _frames(M.CODEC, t) == []            # nothing acknowledged before it is stored
    (r, ack_r), (m, ack_m) = ev.delivered
    assert r.esm_class == C.ESM_DELIVERY_RECEIPT
    assert r.tlv(C.TAG_RECEIPTED_MESSAGE_ID) == b"01006112011200000007\0"
    assert b"stat:UNDELIV err:004" in r.short_message
    assert (m.esm_class, m.data_coding, m.source_addr, m.destination_addr) == (
        0, 15, b"13800138000", b"1069000155")
    ack_r(0)
    ack_m(_S["ESME_RX_T_APPN"])                 # the store failed: the gateway sends again
    assert _frames(M.CODEC, t) == [
        M.DeliverResp(seq=5, msg_id=report.msg_id, status=0),
        M.DeliverResp(seq=6, msg_id=mo.msg_id, status=M.SYSTEM_BUSY)]
    # a malformed Deliver is answered with the structure error, not delivered
    conn.dataReceived(M.frame(M.DELIVER, 9, b"\x01" * 12))
    (resp,) = _frames(M.CODEC, t)
    assert resp.status == M.BAD_STRUCTURE and len(ev.delivered) == 2
    # Exit from the gateway: answered, closed
    conn.dataReceived(M.Exit(seq=10).encode())
    assert _frames(M.CODEC, t) == [M.ExitResp(seq=10)] and t.disconnecting


# --- SGIP -------------------------------------------------------------------------------------

NODE = 3075512345


def _sgip(**kw):
    clock = Clock()
    clock.advance(1_000_000)
    ev = Events()
    args = dict(protocol="sgip", node_id=NODE, sp_listen="tcp:0:interface=127.0.0.1",
                sp_login="smg", sp_password="smg-pw", fee_type="2")
    args.update(kw)
    link = factory.build_link(_cfg(**args), clock, ev.on_deliver)
    conn = SL.SgipConnection(link)
    t = StringTransport()
    conn.makeConnection(t)
    (bind,) = _frames(G.CODEC, t)
    return link, conn, t, ev, clock, bind


def test_sgip_bind_submit_ids_and_idle_unbind():
    link, conn, t, ev, clock, bind = _sgip()
    assert (bind.login_type, bind.login_name, bind.login_password) == (1, b"10690001",
                                                                     b"s3cret")
    assert bind.seq[0] == NODE and bind.seq[1] == G.stamp(clock.seconds())
    conn.dataReceived(G.BindResp(seq=bind.seq, result=0).encode())
    assert link.available
    link.submit_part(_part(), None, ev.outcome)
    link.submit_part(_part(destination_addr=b"+8613800138001"), None, ev.outcome)
    s1, s2 = _frames(G.CODEC, t)
    assert s1.user_numbers == (b"8613800138000",) and s2.user_numbers == (b"8613800138001",)
    assert (s1.corp_id, s1.fee_type, s1.report_flag, s1.charge_number) == (
        b"12345", 2, 1, b"0" * 21)
    conn.dataReceived(G.SubmitResp(seq=s1.seq, result=0).encode()
                      + G.SubmitResp(seq=s2.seq, result=G.BAD_NUMBER).encode())
    # the Submit's own sequence number is the id its Report will name
    assert ev.outcomes == [(0, G.seq_text(s1.seq)), (_S["ESME_RINVDSTADR"], None)]
    # no keepalive in SGIP: an idle connection is unbound (and the link reconnects)
    clock.advance(5.1)
    conn.tick(clock.seconds())
    (unbind,) = _frames(G.CODEC, t)
    assert isinstance(unbind, G.Unbind) and not link.available
    conn.dataReceived(G.UnbindResp(seq=unbind.seq).encode())
    assert t.disconnecting


def test_sgip_bind_refused_and_a_malformed_answer_closes():
    link, conn, t, ev, clock, bind = _sgip()
    conn.dataReceived(G.BindResp(seq=bind.seq, result=G.BAD_LOGIN).encode())
    assert t.disconnecting and not link.available
    link, conn, t, ev, clock, bind = _sgip()
    conn.dataReceived(G.BindResp(seq=bind.seq, result=0).encode())
    conn.dataReceived(G.frame(G.REPORT, (1, 2, 3), b"\0" * 5))
    assert t.disconnecting and ev.delivered == []


def _receiver(link):
    r = link.sp_factory.buildProtocol(None)
    t = StringTransport()
    r.makeConnection(t)
    return r, t


def _bind(t_or_r, **kw):
    args = dict(seq=(1075501, 1201120000, 1), login_type=2, login_name=b"smg",
                login_password=b"smg-pw")
    args.update(kw)
    return G.Bind(**args).encode()


def test_sp_listen_takes_reports_and_mo_from_the_bound_gateway():
    link, conn, t, ev, clock, bind = _sgip()
    r, rt = _receiver(link)
    sub_seq = (NODE, 1201115959, 42)
    report = G.Report(seq=(1075501, 1201120000, 2), submit_node=sub_seq[0],
                      submit_stamp=sub_seq[1], submit_counter=sub_seq[2],
                      user_number=b"8613800138000", state=2, error_code=29)
    mo = G.Deliver(seq=(1075501, 1201120000, 3), user_number=b"8613800138000",
                   sp_number=b"1069000155", message_coding=8, message_content=b"\x90\x00")
    r.dataReceived(_bind(r) + report.encode() + mo.encode())
    assert _frames(G.CODEC, rt) == [G.BindResp(seq=(1075501, 1201120000, 1), result=0)]
    (rep, ack_rep), (m, ack_m) = ev.delivered
    assert rep.tlv(C.TAG_RECEIPTED_MESSAGE_ID) == G.seq_text(sub_seq) + b"\0"
    assert b"stat:UNDELIV err:029" in rep.short_message and rep.source_addr == b"13800138000"
    assert (m.source_addr, m.destination_addr, m.data_coding) == (
        b"13800138000", b"1069000155", 8)
    ack_m(0)
    ack_rep(_S["ESME_RX_T_APPN"])
    assert _frames(G.CODEC, rt) == [G.DeliverResp(seq=mo.seq, result=0),
                                    G.ReportResp(seq=report.seq, result=G.NODE_BUSY)]
    # a Submit is not for the SP to take; Unbind ends it
    r.dataReceived(G.Submit(seq=(1, 1, 9), sp_number=b"1", user_numbers=(b"86130",)).encode()
                   + G.Unbind(seq=(1, 1, 10)).encode())
    assert _frames(G.CODEC, rt) == [G.SubmitResp(seq=(1, 1, 9), result=G.NOT_SUPPORTED),
                                    G.UnbindResp(seq=(1, 1, 10))]
    assert rt.disconnecting


def test_sp_listen_against_a_hostile_peer():
    link, conn, t, ev, clock, bind = _sgip()
    # nothing before a Bind
    r, rt = _receiver(link)
    r.dataReceived(G.Report(seq=(1, 1, 1), state=0, user_number=b"86130").encode())
    assert rt.disconnecting and ev.delivered == [] and rt.value() == b""
    # a wrong password, a wrong login type
    for kw, result in ((dict(login_password=b"guess"), G.BAD_LOGIN),
                       (dict(login_name=b"other"), G.BAD_LOGIN),
                       (dict(login_type=1), G.BAD_LOGIN_TYPE)):
        r, rt = _receiver(link)
        r.dataReceived(_bind(r, **kw))
        assert _frames(G.CODEC, rt) == [G.BindResp(seq=(1075501, 1201120000, 1),
                                                   result=result)]
        assert rt.disconnecting
    # a malformed command after the Bind: answered with its error, closed
    r, rt = _receiver(link)
    r.dataReceived(_bind(r) + G.frame(G.DELIVER, (1, 1, 2), b"\0" * 50))
    frames = _frames(G.CODEC, rt)
    assert frames[1] == G.DeliverResp(seq=(1, 1, 2), result=G.BAD_PARAMETER)
    assert rt.disconnecting and ev.delivered == []
    # a length no SGIP packet has
    r, rt = _receiver(link)
    r.dataReceived(struct.pack(">IIIII", 1 << 20, 1, 0, 0, 0))
    assert rt.disconnecting
    # a connection that never binds is closed after response_timeout_s
    r, rt = _receiver(link)
    clock.advance(2.1)
    assert rt.disconnecting
    # a bound one that goes silent, after IDLE_S
    r, rt = _receiver(link)
    r.dataReceived(_bind(r))
    clock.advance(SL.IDLE_S - 1)
    assert not rt.disconnecting
    clock.advance(2)
    assert rt.disconnecting
    # at most MAX_SP_CONNECTIONS at once
    for p in list(link.sp_factory.open):
        p.connectionLost(None)
    held = [_receiver(link) for _ in range(SL.MAX_SP_CONNECTIONS)]
    assert not any(x[1].disconnecting for x in held)
    r, rt = _receiver(link)
    assert rt.disconnecting


def test_sgip_sequence_numbers_are_the_links_not_the_connections():
    link, conn, t, ev, clock, bind = _sgip()
    conn2 = SL.SgipConnection(link)
    t2 = StringTransport()
    conn2.makeConnection(t2)
    (bind2,) = _frames(G.CODEC, t2)
    for c, tr, b in ((conn, t, bind), (conn2, t2, bind2)):
        c.dataReceived(G.BindResp(seq=b.seq, result=0).encode())
    for _ in range(6):                          # spread over both connections
        link.submit_part(_part(), None, ev.outcome)
    seqs = [s.seq for s in _frames(G.CODEC, t) + _frames(G.CODEC, t2)]
    assert len(seqs) == 6 and _frames(G.CODEC, t) == []
    counters = sorted(s[2] for s in seqs)
    assert len(set(counters)) == 6 and {s[0] for s in seqs} == {NODE}
    assert bind2.seq[2] == bind.seq[2] + 1      # one counter for the whole link


def test_nothing_counts_before_the_login_is_answered():
    # SMGP: a Deliver before the Login_Resp (the gateway has not proved the secret yet)
    link, conn, t, ev, clock, login = _smgp()
    report = M.Deliver(seq=5, is_report=1, src_term_id=b"1", dest_term_id=b"2",
                       msg_content=M.report_content(M.Report(b"\1" * 10, b"DELIVRD", b"000")))
    conn.dataReceived(report.encode())
    assert ev.delivered == [] and t.disconnecting and not link.available
    # SGIP: a Report before the Bind_Resp
    link, conn, t, ev, clock, bind = _sgip()
    conn.dataReceived(G.Report(seq=(1, 2, 3), user_number=b"86130", state=0).encode())
    assert ev.delivered == [] and t.disconnecting and not link.available
    # a second Login_Resp once logged in changes nothing
    link, conn, t, ev, clock, login = _smgp()
    _login_ok(conn, t, login)
    conn.dataReceived(M.LoginResp(seq=login.seq, status=M.AUTH_ERROR, version=0x30).encode())
    assert link.available and not t.disconnecting


def test_the_gateways_delivers_are_windowed_and_answered_once():
    link, conn, t, ev, clock, login = _smgp(window=3)
    _login_ok(conn, t, login)

    def mo(seq, src=b"13800138000"):
        return M.Deliver(seq=seq, msg_id=M.make_msg_id("010061", 12011201, seq),
                         src_term_id=src, dest_term_id=b"10690001", msg_content=b"hi").encode()
    conn.dataReceived(mo(1) + mo(2))
    assert t.producerState == "producing"
    conn.dataReceived(mo(3))                    # window (3) unanswered: reading pauses
    assert t.producerState == "paused" and len(ev.delivered) == 3
    ack = ev.delivered[0][1]
    ack(0)
    ack(0)                                      # a second call sends nothing
    assert t.producerState == "producing"
    assert [r.seq for r in _frames(M.CODEC, t)] == [1]
    # an MO whose number does not fit SMPP's 20 octets is refused, never cut
    conn.dataReceived(mo(4, src=b"1" * 21))
    assert _frames(M.CODEC, t) == [M.DeliverResp(seq=4, msg_id=M.make_msg_id(
        "010061", 12011201, 4), status=M.BAD_SRC_TERM_ID)]
    assert len(ev.delivered) == 3
    # SGIP's sp_listen side the same
    link, conn, t, ev, clock, bind = _sgip(window=2)
    r, rt = _receiver(link)
    d = [G.Deliver(seq=(1, 1, i), user_number=b"8613800138000", sp_number=b"10690001",
                   message_content=b"x").encode() for i in range(2, 4)]
    r.dataReceived(_bind(r) + d[0] + d[1])
    assert rt.producerState == "paused" and len(ev.delivered) == 2
    ev.delivered[1][1](0)
    assert rt.producerState == "producing"
