"""ClientSession without sockets: a fake clock, a string transport, a relay that we drive."""
from __future__ import annotations

import struct
import sys

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from proxyd.config import AccountConfig, SmppConfig
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp.server import ClientFactory

ACCOUNT = AccountConfig(system_id="acme", password="pw", service_codes=("1069",))


class Registry:
    def __init__(self) -> None:
        self.bound_sessions: list = []

    def authenticate(self, sid: str, pw: str, peer: str):
        ok = sid == "acme" and pw == "pw"
        return defer.succeed((0 if ok else C.STATUS["ESME_RINVPASWD"], ACCOUNT))

    def bound(self, session, account) -> int:
        self.bound_sessions.append(session)
        return 0

    def ready(self, session) -> None:
        pass

    def unbound(self, session) -> None:
        self.bound_sessions.remove(session)


class HeldRelay:
    """Keeps every submit's reply callback; the test answers them."""

    def __init__(self) -> None:
        self.replies: list = []

    def submit(self, session, pdu, body, reply) -> None:
        self.replies.append(reply)


def make(window: int = 3, **smpp):
    clock = Clock()
    relay = HeldRelay()
    reg = Registry()
    f = ClientFactory(SmppConfig(window=window, **smpp), reg, relay, clock, auth=reg)
    t = StringTransport()
    s = f.buildProtocol(None)
    s.makeConnection(t)
    return clock, relay, reg, f, s, t


def pdus(t: StringTransport) -> list:
    out = P.Decoder().feed(t.value())
    t.clear()
    return out


def bind(s, t) -> None:
    s.dataReceived(P.encode(P.BindTransmitter(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
    r = pdus(t)
    assert r[0].command_id == C.BIND_TRANSMITTER_RESP and r[0].status == 0


def submit(seq: int) -> bytes:
    return P.encode(P.SubmitSm(seq=seq, source_addr=b"1069", destination_addr=b"13800138000",
                               short_message=b"x"))


def test_window_pauses_reading_and_resumes():
    clock, relay, reg, f, s, t = make(window=3)
    bind(s, t)
    s.dataReceived(b"".join(submit(10 + i) for i in range(5)))
    assert len(relay.replies) == 3                 # the window
    assert t.producerState == "paused"             # back-pressure, not a disconnect
    assert not t.disconnecting
    relay.replies[0](0, b"id0")
    assert len(relay.replies) == 4                 # one more taken from the backlog
    relay.replies[1](0, b"id1")
    assert len(relay.replies) == 5
    assert t.producerState == "producing"
    answers = pdus(t)
    assert [(a.seq, a.message_id) for a in answers] == [(10, b"id0"), (11, b"id1")]


class SyncRelay(HeldRelay):
    """Answers every submit before returning (a refusal, or no upstream at all)."""

    def submit(self, session, pdu, body, reply) -> None:
        reply(0x45, b"")


def test_a_backlog_answered_synchronously_does_not_recurse():
    clock, relay, reg, f, s, t = make(window=2)
    bind(s, t)
    s.dataReceived(b"".join(submit(10 + i) for i in range(2)))      # fills the window
    n = sys.getrecursionlimit() + 500
    s.dataReceived(b"".join(submit(100 + i) for i in range(n)))     # all in the backlog
    assert len(relay.replies) == 2 and t.producerState == "paused"
    f.relay = SyncRelay()
    # one answer frees a slot: the whole backlog is answered, one PDU after another
    relay.replies[0](0, b"id0")
    answers = pdus(t)
    assert [a.seq for a in answers] == [10] + list(range(100, 100 + n))
    assert all(a.status == 0x45 for a in answers[1:])
    assert t.producerState == "producing" and not t.disconnecting


def test_inactivity_timeout_unbinds_and_closes():
    clock, relay, reg, f, s, t = make(inactivity_s=10, enquire_link_s=100)
    f.startFactory()
    bind(s, t)
    clock.advance(5)
    assert not t.disconnecting
    clock.advance(6)
    assert [p.command_id for p in pdus(t)] == [C.UNBIND]
    assert t.disconnecting
    f.stopFactory()


def test_enquire_link_sent_when_idle_and_unanswered_closes():
    clock, relay, reg, f, s, t = make(inactivity_s=1000, enquire_link_s=5)
    f.startFactory()
    bind(s, t)
    clock.advance(6)
    sent = pdus(t)
    assert [p.command_id for p in sent] == [C.ENQUIRE_LINK]
    s.dataReceived(P.encode(P.EnquireLinkResp(seq=sent[0].seq)))
    clock.advance(4)
    assert not t.disconnecting                     # answered: fine
    clock.advance(7)
    assert [p.command_id for p in pdus(t)] == [C.ENQUIRE_LINK]
    clock.advance(6)                               # this one is never answered
    assert t.disconnecting
    f.stopFactory()


def test_no_bind_within_timeout_closes():
    clock, relay, reg, f, s, t = make(bind_timeout_s=3)
    f.startFactory()
    clock.advance(2)
    assert not t.disconnecting
    clock.advance(2)
    assert t.disconnecting
    f.stopFactory()


def test_sessions_live_in_the_set_given_to_the_factory():
    shared: set = set()
    f = ClientFactory(SmppConfig(), Registry(), HeldRelay(), Clock(), sessions=shared,
                      auth=Registry())
    assert f.sessions is shared
    s = f.buildProtocol(None)
    s.makeConnection(StringTransport())
    assert shared == {s}
    s.connectionLost(None)
    assert shared == set()
    assert ClientFactory(SmppConfig(), Registry(), HeldRelay(), Clock(),
                         auth=Registry()).sessions == set()


def test_set_config_applies_to_sessions_already_connected():
    clock, relay, reg, f, s, t = make(inactivity_s=1000, enquire_link_s=100)
    f.startFactory()
    bind(s, t)
    f.set_config(SmppConfig(window=3, inactivity_s=10, enquire_link_s=100))
    clock.advance(5)
    assert not t.disconnecting
    clock.advance(6)
    assert [p.command_id for p in pdus(t)] == [C.UNBIND]
    f.stopFactory()


def test_set_account_replaces_the_bound_account():
    clock, relay, reg, f, s, t = make()
    bind(s, t)
    assert s.account is ACCOUNT
    changed = AccountConfig(system_id="acme", password="pw", service_codes=("1070",))
    s.set_account(changed)
    assert s.account is changed


def test_clean_unbind_frees_the_registry():
    clock, relay, reg, f, s, t = make()
    bind(s, t)
    assert reg.bound_sessions == [s]
    s.dataReceived(P.encode(P.Unbind(seq=7)))
    assert [(p.command_id, p.seq) for p in pdus(t)] == [(C.UNBIND_RESP, 7)]
    s.connectionLost(None)
    assert reg.bound_sessions == []


def test_good_pdus_before_a_broken_header_are_handled_and_answered_before_the_close():
    clock, relay, reg, f, s, t = make()
    bind(s, t)
    s.dataReceived(submit(20) + b"\x00\x00\x00\x05" + b"\x00" * 12)
    assert len(relay.replies) == 1                 # the submit before the bad header
    out = pdus(t)
    assert (out[-1].command_id, out[-1].status) == (C.GENERIC_NACK, C.STATUS["ESME_RINVCMDLEN"])
    assert not t.disconnecting                     # its answer is still due
    relay.replies[0](0, b"m20")
    out = pdus(t)
    assert [(p.command_id, p.seq, p.status, p.message_id) for p in out] == [
        (C.SUBMIT_SM_RESP, 20, 0, b"m20")]
    assert t.disconnecting


class CountingRelay(HeldRelay):
    def __init__(self) -> None:
        super().__init__()
        self.other: list = []

    def other_request(self, session, pdu, reply) -> None:
        self.other.append(pdu)


def test_receiver_cancel_replace_query_never_reach_the_relay():
    clock, relay, reg, f, s, t = make()
    f.relay = relay = CountingRelay()
    s.dataReceived(P.encode(P.BindReceiver(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
    assert [(p.command_id, p.status) for p in pdus(t)] == [(C.BIND_RECEIVER_RESP, 0)]
    assert (s.mode, s.can_submit, s.can_receive) == ("receiver", False, True)
    s.dataReceived(P.encode(P.CancelSm(seq=2, message_id=b"1"))
                   + P.encode(P.ReplaceSm(seq=3, message_id=b"1", short_message=b"y"))
                   + P.encode(P.QuerySm(seq=4, message_id=b"1")) + submit(5))
    assert t.value() == b"".join(struct.pack(">IIII", 16, cid, 4, seq) for cid, seq in (
        (C.CANCEL_SM_RESP, 2), (C.REPLACE_SM_RESP, 3), (C.QUERY_SM_RESP, 4),
        (C.SUBMIT_SM_RESP, 5)))
    assert relay.other == [] and relay.replies == [] and s.outstanding == 0


def test_transmitter_cancel_goes_to_the_relay_and_is_answered():
    clock, relay, reg, f, s, t = make()
    f.relay = relay = CountingRelay()
    bind(s, t)
    s.dataReceived(P.encode(P.CancelSm(seq=2, message_id=b"1")))
    assert [p.command_id for p in relay.other] == [C.CANCEL_SM]
    assert s.outstanding == 1 and t.value() == b""


def test_deliver_answered_and_lost_connection_fails_the_rest():
    clock, relay, reg, f, s, t = make()
    s.dataReceived(P.encode(P.BindTransceiver(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
    pdus(t)
    got: list = []
    s.deliver(C.DELIVER_SM, b"b1", lambda st: got.append(("a", st)))
    s.deliver(C.DELIVER_SM, b"b2", lambda st: got.append(("b", st)))
    sent = pdus(t)
    assert [p.command_id for p in sent] == [C.DELIVER_SM, C.DELIVER_SM]
    s.dataReceived(P.encode(P.DeliverSmResp(seq=sent[1].seq)))
    assert got == [("b", 0)]
    s.connectionLost(None)
    assert got == [("b", 0), ("a", C.STATUS["ESME_RSYSERR"])]
    assert reg.bound_sessions == []


class MultiRelay(HeldRelay):
    def __init__(self) -> None:
        super().__init__()
        self.other: list = []

    def other_request(self, session, pdu, reply) -> None:
        self.other.append((pdu, reply))


def multi(seq: int, n: int) -> bytes:
    return P.encode(P.SubmitMulti(seq=seq, source_addr=b"1069", dest_addresses=tuple(
        (1, 1, 1, b"1380013800%d" % i) for i in range(n)), short_message=b"x"))


def test_submit_multi_takes_one_window_slot_per_destination():
    clock, relay, reg, f, s, t = make(window=3)
    f.relay = relay = MultiRelay()
    bind(s, t)
    s.dataReceived(submit(2))                       # one slot held
    s.dataReceived(multi(3, 3))                     # 1 + 3 > 3: refused, not relayed
    assert [(p.command_id, p.seq, p.status) for p in pdus(t)] == [
        (C.SUBMIT_MULTI_RESP, 3, C.STATUS["ESME_RTHROTTLED"])]
    assert relay.other == [] and s.outstanding == 1
    s.dataReceived(multi(4, 2))                     # 1 + 2 fits
    assert len(relay.other) == 1 and s.outstanding == 3
    s.dataReceived(submit(5))                       # the window is full: waits
    assert len(relay.replies) == 1
    relay.other[0][1](P.SubmitMultiResp(0, 0, b"m4"))   # frees both slots of the multi
    assert s.outstanding == 2 and len(relay.replies) == 2
    relay.replies[0](0, b"m2")
    relay.replies[1](0, b"m5")
    assert s.outstanding == 0
    s.dataReceived(multi(6, 5))                     # more than the window, but alone: fits
    assert len(relay.other) == 2 and s.outstanding == 5
    s.dataReceived(submit(7))
    assert len(relay.replies) == 2                  # waits until the multi is answered
    relay.other[1][1](P.SubmitMultiResp(0, 0, b"m6"))
    assert len(relay.replies) == 3 and s.outstanding == 1
