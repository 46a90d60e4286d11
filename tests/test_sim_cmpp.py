"""The simulator's CMPP modes without sockets: login checks (Source_Addr, the secret through
AuthenticatorSource, the version), submits (strict, error injection, Msg_Id, status reports
with gateway codes), MO, active test, query, cancel, terminate."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from proxyd.links import core as K
from proxyd.links.cmpp import codec as X
from proxyd.sim.cmpp import GATEWAY_ID, Cmpp2Factory, Cmpp3Factory
from proxyd.sim.smsc import SmscConfig

TS = 1201083015


def conn(factory_cls=Cmpp3Factory, **cfg):
    clock = Clock()
    f = factory_cls(SmscConfig(**{"system_id": "901234", "password": "pw", **cfg}),
                    reactor=clock, wallclock=lambda: 1764577815.0)
    p = f.buildProtocol(None)
    t = StringTransport()
    p.makeConnection(t)
    return f, p, t, clock


def frames(t, version=X.V3):
    data = t.value()
    t.clear()
    return [X.decode_frame(version, fr) for fr in K.Framer(12, 4096).feed(data)]


def connect(p, version=X.V3, sp=b"901234", secret=b"pw", v=None):
    auth = X.authenticator_source(sp, secret, TS)
    p.dataReceived(X.encode(X.Connect(source_addr=sp, authenticator=auth,
                                      version=v or version, timestamp=TS), 1, version))
    return auth


def test_login_checks_source_secret_and_version():
    for kw, status in (({"sp": b"900000"}, 2), ({"secret": b"nope"}, 3)):
        _f, p, t, _c = conn()
        connect(p, **kw)
        [(cid, _s, resp)] = frames(t)
        assert (cid, resp.status, resp.authenticator) == (X.CONNECT_RESP, status, bytes(16))
        assert t.disconnecting and not p.bound
    _f, p, t, _c = conn(Cmpp2Factory)
    connect(p, X.V2, v=0x30)                     # 3.0 to a 2.0 gateway: version too high
    assert frames(t, X.V2)[0][2].status == 4
    _f, p, t, _c = conn()
    auth = connect(p)
    [(cid, _s, resp)] = frames(t)
    assert resp.status == 0 and resp.authenticator == X.authenticator_ismg(0, auth, b"pw")
    assert p.bound


def test_a_request_before_the_login_closes():
    _f, p, t, _c = conn()
    p.dataReceived(X.frame(X.ACTIVE_TEST, 1))
    assert t.disconnecting and t.value() == b""


def submit(dest=b"13800138000", reg=1, **kw):
    return X.Submit(pk_total=1, pk_number=1, registered_delivery=reg, src_id=b"10690001",
                    dest_terminal_ids=(dest,), msg_content=b"hello", **kw)


def test_submits_msg_ids_errors_and_reports():
    f, p, t, clock = conn(fail_every=3, fail_status=13, receipt_stat=("DELIVRD", "MB:0011"))
    connect(p)
    frames(t)
    body = X.encode_body(submit(), X.V3)
    p.dataReceived(b"".join(X.frame(X.SUBMIT, 10 + i, body) for i in range(3))
                   + X.frame(X.SUBMIT, 20, body[:-1]))
    resps = frames(t)
    assert [(c, s, r.result) for c, s, r in resps] == [
        (X.SUBMIT_RESP, 10, 0), (X.SUBMIT_RESP, 11, 0), (X.SUBMIT_RESP, 12, 13),
        (X.SUBMIT_RESP, 20, X.R_LENGTH)]
    ids = [r.msg_id for _c, _s, r in resps[:2]]
    assert [X.msg_id_unpack(i)[5:] for i in ids] == [(GATEWAY_ID, 1), (GATEWAY_ID, 2)]
    clock.advance(0)
    reports = frames(t)
    assert [c for c, _s, _r in reports] == [X.DELIVER, X.DELIVER]
    got = [X.decode_report(X.V3, d.msg_content) for _c, _s, d in reports]
    assert [(r.msg_id, r.stat, r.dest_terminal_id) for r in got] == [
        (ids[0], b"DELIVRD", b"13800138000"), (ids[1], b"MB:0011", b"13800138000")]
    assert all(d.registered_delivery == 1 and d.dest_id == b"10690001"
               for _c, _s, d in reports)
    assert f.counters["accepted"] == 2 and f.counters["failed"] == 1


def test_mo_active_test_query_cancel_terminate():
    f, p, t, _c = conn(Cmpp2Factory)
    connect(p, X.V2)
    frames(t, X.V2)
    assert f.send_mo("13900000001", "10690001", "退订".encode("utf-16-be"), 8)
    [(cid, _s, mo)] = frames(t, X.V2)
    assert (cid, mo.registered_delivery, mo.msg_fmt, mo.src_terminal_id, mo.dest_id) == (
        X.DELIVER, 0, 8, b"13900000001", b"10690001")
    p.dataReceived(X.frame(X.ACTIVE_TEST, 5)
                   + X.encode(X.Query(time=b"20261201", query_type=0), 6, X.V2)
                   + X.encode(X.Cancel(msg_id=1), 7, X.V2) + X.frame(X.TERMINATE, 8))
    out = frames(t, X.V2)
    assert [(c, s) for c, s, _r in out] == [(X.ACTIVE_TEST_RESP, 5), (X.QUERY_RESP, 6),
                                            (X.CANCEL_RESP, 7), (X.TERMINATE_RESP, 8)]
    assert out[1][2].time == b"20261201" and out[2][2].success_id == 1
    assert t.disconnecting


def test_receipt_stats_take_gateway_codes():
    import pytest

    from proxyd.sim.smsc import parse_receipt_stat
    assert parse_receipt_stat("DELIVRD:2,MB:0011,DB:0100:2") == (
        "DELIVRD", "DELIVRD", "MB:0011", "DB:0100", "DB:0100")
    with pytest.raises(ValueError, match="receipt stat 'MB:1' is not one of"):
        parse_receipt_stat("MB:1:1")
