"""The operator-link framework: [[upstream]] protocol keys, the link factory, the sans-IO
LinkCore (framing, window, response timeouts, keepalive) and the simulator's --protocol."""
from __future__ import annotations

import pytest
from twisted.python import usage

from proxyd.config import PROTOCOL_WINDOW, ConfigError, parse
from proxyd.links import core as K
from proxyd.links import factory


def up(**kw) -> dict:
    u = {"name": "op", "connect": "tcp:host=127.0.0.1:port=7890", "system_id": "901234",
         "password": "a-long-shared-secret"}
    u.update(kw)
    return u


def error(doc: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse(doc)
    return str(e.value)


# --- config ---------------------------------------------------------------------------------
def test_protocol_defaults_to_smpp_with_its_window():
    u = parse({"upstream": [up(system_id="proxyd", password="secret")]}).upstreams[0]
    assert (u.protocol, u.window, u.enquire_link_s) == ("smpp", 100, 30.0)


@pytest.mark.parametrize("proto", ["cmpp2", "cmpp3"])
def test_cmpp_window_and_keepalive_default_to_the_spec(proto):
    u = parse({"upstream": [up(protocol=proto, service_id="MTEST", fee_type="02",
                               fee_code="10")]}).upstreams[0]
    assert (u.protocol, u.window, u.enquire_link_s) == (proto, PROTOCOL_WINDOW, 180.0)
    assert (u.service_id, u.fee_type, u.fee_code) == ("MTEST", "02", "10")
    # a window given is kept
    assert parse({"upstream": [up(protocol=proto, window=40)]}).upstreams[0].window == 40


def test_unknown_protocol_is_refused_naming_the_key():
    assert error({"upstream": [up(protocol="ucp")]}) == (
        'upstream[0].protocol: must be one of "smpp", "cmpp2", "cmpp3", "sgip", "smgp", '
        "got 'ucp'")


@pytest.mark.parametrize("doc,line", [
    (up(protocol="cmpp3", system_id="9012345"),
     "upstream[0].system_id: at most 6 octets for 'cmpp3', got '9012345'"),
    (up(protocol="cmpp3", system_id="SPXYZ1"),
     "upstream[0].system_id: the CMPP SP_Id is 6 digits, got 'SPXYZ1'"),
    (up(protocol="cmpp2", service_id="ABCDEFGHIJK"),
     "upstream[0].service_id: at most 10 octets for 'cmpp2', got 'ABCDEFGHIJK'"),
    (up(protocol="cmpp3", fee_type="x1"), "upstream[0].fee_type: must be digits, got 'x1'"),
    (up(protocol="cmpp3", node_id=5), 'upstream[0].node_id: only for protocol "sgip"'),
    (up(protocol="cmpp3", bind="transmitter"),
     "upstream[0].bind: SMPP only; cmpp3 links always send and receive"),
    (up(protocol="cmpp3", source_addr_ton=1),
     "upstream[0].source_addr_ton: SMPP only, not for 'cmpp3'"),
    (up(protocol="cmpp2", system_type="VMA"),
     "upstream[0].system_type: SMPP only, not for 'cmpp2'"),
    (up(protocol="cmpp3", fee_user_type=4),
     "upstream[0].fee_user_type: must be 0 to 3, got 4"),
    (up(system_id="proxyd", password="secret", service_id="X"),
     'upstream[0].service_id: only for the operator protocols (cmpp2, cmpp3, sgip, smgp), '
     'not "smpp"'),
    (up(system_id="proxyd", password="longer-than-8"),
     "upstream[0].password: SMPP 3.4 allows at most 8 characters"),
    (up(protocol="cmpp3", keepalive_tries=0),
     "upstream[0].keepalive_tries: must be >= 1, got 0"),
])
def test_invalid_combinations_are_refused_with_one_line(doc, line):
    assert error({"upstream": [doc]}) == line


def test_sgip_and_smgp_keys_are_parsed_and_checked():
    # the keys exist whatever the build; a build without the link refuses the protocol
    if factory.available("sgip"):
        u = parse({"upstream": [up(protocol="sgip", system_id="login", password="pw",
                                   node_id=3012345678, sp_listen="tcp:8801", sp_login="gw",
                                   sp_password="pw")]}).upstreams[0]
        assert (u.node_id, u.sp_listen, u.sp_login, u.window) == (3012345678, "tcp:8801",
                                                                   "gw", PROTOCOL_WINDOW)
        assert error({"upstream": [up(protocol="sgip", system_id="login", password="pw",
                                      sp_listen="tcp:8801")]}).startswith(
            "upstream[0].node_id: required for \"sgip\"")
        assert error({"upstream": [up(protocol="sgip", system_id="login", password="pw",
                                      node_id=1)]}).startswith(
            "upstream[0].sp_listen: required for \"sgip\"")
    else:
        assert error({"upstream": [up(protocol="sgip")]}) == (
            "upstream[0].protocol: 'sgip' is not built into this version of proxyd")
    if factory.available("smgp"):
        assert error({"upstream": [up(protocol="smgp", system_id="123456789")]}) == (
            "upstream[0].system_id: at most 8 octets for 'smgp', got '123456789'")
        assert error({"upstream": [up(protocol="smgp", msg_src="901234")]}) == (
            'upstream[0].msg_src: only for protocol "cmpp2" or "cmpp3"')


def test_the_factory_builds_the_link_of_each_protocol():
    from twisted.internet.task import Clock
    for proto in ("smpp", "cmpp3", "cmpp2"):
        kw = {"system_id": "proxyd", "password": "secret"} if proto == "smpp" else {}
        cfg = parse({"upstream": [up(protocol=proto, **kw)]}).upstreams[0]
        link = factory.build_link(cfg, Clock(), lambda *a: None, queue_wait_s=0.1)
        assert link.protocol_name == proto and link.name == "op" and not link.available
        assert link.queue_wait_s == 0.1 and len(link.services_) == cfg.binds


# --- Framer ---------------------------------------------------------------------------------
def test_framer_cuts_frames_across_reads():
    f = K.Framer(12, 100)
    a = (16).to_bytes(4, "big") + b"x" * 12
    b = (12).to_bytes(4, "big") + b"y" * 8
    data = a + b
    assert f.feed(data[:3]) == []
    assert f.feed(data[3:20]) == [a]
    assert f.feed(data[20:]) == [b]
    assert f.buf == b""


@pytest.mark.parametrize("length", [0, 11, 101, 0xFFFFFFFF])
def test_framer_refuses_a_length_outside_its_bounds(length):
    f = K.Framer(12, 100)
    with pytest.raises(K.FramingError) as e:
        f.feed(length.to_bytes(4, "big") + b"\0" * 8)
    assert str(e.value) == "frame length %d outside 12..100" % length


# --- LinkCore -------------------------------------------------------------------------------
def bound_core(**kw) -> K.LinkCore:
    c = K.LinkCore(K.CoreConfig(**kw), 0.0)
    c.login_sent(0.0)
    c.logged_in(0.0)
    return c


def test_window_counts_pending_and_answers_match_by_sequence():
    c = bound_core(window=2)
    assert c.free == 2
    s1, s2 = c.next_seq(), c.next_seq()
    c.request(s1, "a", 0.0)
    c.request(s2, "b", 0.0)
    assert c.free == 0
    assert c.answer(s2) == "b" and c.answer(s2) is None and c.free == 1


def test_not_bound_means_no_window():
    c = K.LinkCore(K.CoreConfig(window=5), 0.0)
    assert c.free == 0
    c.login_sent(0.0)
    assert c.free == 0 and c.tick(10.0, lambda cb: None) == K.LOGIN_TIMEOUT


def test_sequences_wrap_and_skip_pending_ones():
    c = K.LinkCore(K.CoreConfig(), 0.0, seq_start=3, seq_max=4)
    c.request(4, "x", 0.0)
    assert [c.next_seq() for _ in range(4)] == [3, 1, 2, 3]


def test_late_requests_expire_in_deadline_order():
    c = bound_core(response_timeout_s=5.0, keepalive_s=0)
    for seq, t in ((1, 0.0), (2, 1.0), (3, 2.0)):
        c.request(seq, "cb%d" % seq, t)
    late = []
    assert c.tick(6.5, late.append) is None
    assert late == ["cb1", "cb2"] and list(c.pending) == [3]


def test_keepalive_after_idle_again_after_t_then_close_after_n():
    c = bound_core(keepalive_s=180.0, keepalive_timeout_s=60.0, keepalive_tries=3)
    ticks = {t: c.tick(t, lambda cb: None) for t in (100.0, 180.0, 200.0, 240.0, 300.0,
                                                      360.0)}
    assert ticks == {100.0: None, 180.0: K.KEEPALIVE, 200.0: None, 240.0: K.KEEPALIVE,
                     300.0: K.KEEPALIVE, 360.0: K.KEEPALIVE_TIMEOUT}


def test_an_answer_resets_the_keepalive():
    c = bound_core(keepalive_s=10.0, keepalive_timeout_s=5.0, keepalive_tries=1)
    assert c.tick(10.0, lambda cb: None) == K.KEEPALIVE
    c.received(12.0)
    assert c.tick(16.0, lambda cb: None) is None
    assert c.tick(22.0, lambda cb: None) == K.KEEPALIVE


def test_connection_lost_hands_back_every_pending_request():
    c = bound_core()
    c.request(7, "a", 0.0)
    c.request(8, "b", 0.0)
    pending = c.connection_lost()
    assert [cb for _d, cb in pending.values()] == ["a", "b"]
    assert c.pending == {} and c.state == K.CLOSED and c.free == 0


# --- the simulator's modes ------------------------------------------------------------------
def test_simulator_protocol_option():
    from proxyd.sim.service import SIM_FACTORIES, Options, factory_class
    o = Options()
    o.parseOptions(["--protocol", "cmpp3"])
    assert o["protocol"] == "cmpp3" and {"smpp", "cmpp2", "cmpp3"} <= set(SIM_FACTORIES)
    assert factory_class("smpp").__name__ == "SmscFactory"
    with pytest.raises(usage.UsageError) as e:
        Options().parseOptions(["--protocol", "ucp"])
    assert "--protocol: one of smpp" in str(e.value)
