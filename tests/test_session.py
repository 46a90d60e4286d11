"""The sans-IO SMPP session (smpp/session.py) driven with bytes and plain float times."""
from __future__ import annotations

import struct

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp import session as S

ST = C.STATUS
OK = 0


class Recorder(S.SessionHandler):
    """Keeps what the session wrote and every call it made."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[tuple] = []
        self.session: S.Session | None = None
        self.auto_bind: bytes | None = None     # SMSC role: accept binds at once with this id

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def out(self) -> bytes:
        data = b"".join(self.writes)
        self.writes.clear()
        return data

    def close_connection(self, reason: str) -> None:
        self.events.append(("close", reason))

    def pause_reading(self) -> None:
        self.events.append(("pause",))

    def resume_reading(self) -> None:
        self.events.append(("resume",))

    def on_bind_request(self, command_id, status, seq, body) -> None:
        self.events.append(("bind", command_id, seq))
        if self.auto_bind is not None:
            self.session.accept_bind(command_id, seq, self.auto_bind)

    def on_request(self, command_id, status, seq, body) -> None:
        self.events.append(("request", command_id, seq, body))

    def on_response(self, callback, status, body) -> None:
        self.events.append(("response", callback, status, body))

    def on_bound(self) -> None:
        self.events.append(("bound",))

    def on_bind_refused(self, status) -> None:
        self.events.append(("refused", status))

    def on_unbind(self) -> None:
        self.events.append(("unbind",))

    def on_generic_nack(self, status, seq) -> None:
        self.events.append(("nack", status, seq))

    def on_unknown(self, command_id, seq) -> None:
        self.events.append(("unknown", command_id, seq))

    def take(self) -> list[tuple]:
        ev, self.events = self.events, []
        return ev


def hdr(cid: int, status: int, seq: int, body: bytes = b"") -> bytes:
    return struct.pack(">IIII", 16 + len(body), cid, status, seq) + body


def smsc(**cfg) -> tuple[S.Session, Recorder]:
    h = Recorder()
    s = S.Session(S.SMSC, h, S.SessionConfig(**cfg), now=100.0)
    h.session = s
    return s, h


def bind_pdu(cid: int = C.BIND_TRANSMITTER, seq: int = 1) -> bytes:
    return P.encode(P.PDU_CLASSES[cid](seq, 0, b"acme", b"pw", b"", 0x34, 0, 0, b""))


def bound(cid: int = C.BIND_TRANSMITTER, **cfg) -> tuple[S.Session, Recorder]:
    s, h = smsc(**cfg)
    h.auto_bind = b"proxyd"
    s.receive_data(bind_pdu(cid), 100.0)
    assert h.out() == hdr(cid | C.RESP_BIT, 0, 1, b"proxyd\0\x02\x10\x00\x01\x34")
    h.take()
    return s, h


def submit(seq: int, text: bytes = b"x") -> bytes:
    return P.encode(P.SubmitSm(seq=seq, source_addr=b"1069", destination_addr=b"13800138000",
                               short_message=text))


# --- binds (SMSC role) ---------------------------------------------------------------------

def test_bind_accepted_answers_system_id_and_interface_version():
    s, h = smsc()
    s.receive_data(bind_pdu(C.BIND_TRANSCEIVER, seq=7), 100.0)
    assert h.take() == [("bind", C.BIND_TRANSCEIVER, 7)]
    assert s.state == S.BINDING and h.out() == b""
    s.accept_bind(C.BIND_TRANSCEIVER, 7, b"proxyd")
    assert h.out() == hdr(C.BIND_TRANSCEIVER_RESP, 0, 7, b"proxyd\0\x02\x10\x00\x01\x34")
    assert (s.state, s.mode, s.can_submit, s.can_receive) == (S.BOUND, "transceiver", True,
                                                              True)


def test_bind_refused_then_a_new_bind_may_follow():
    s, h = smsc()
    s.receive_data(bind_pdu(seq=3), 100.0)
    s.refuse_bind(C.BIND_TRANSMITTER, 3, ST["ESME_RINVPASWD"])
    assert h.out() == hdr(C.BIND_TRANSMITTER_RESP, ST["ESME_RINVPASWD"], 3)
    assert (s.state, s.can_submit) == (S.OPEN, False)
    h.auto_bind = b"x"
    s.receive_data(bind_pdu(seq=4), 100.0)
    assert h.out() == hdr(C.BIND_TRANSMITTER_RESP, 0, 4, b"x\0\x02\x10\x00\x01\x34")
    assert s.state == S.BOUND


def test_already_bound():
    s, h = bound()
    s.receive_data(bind_pdu(C.BIND_RECEIVER, seq=9), 100.0)
    assert h.out() == hdr(C.BIND_RECEIVER_RESP, ST["ESME_RALYBND"], 9)
    assert h.take() == [] and s.mode == "transmitter"


def test_frames_read_while_binding_wait_for_the_answer():
    s, h = smsc()
    s.receive_data(bind_pdu(seq=1) + submit(2) + hdr(C.ENQUIRE_LINK, 0, 3), 100.0)
    assert h.take() == [("bind", C.BIND_TRANSMITTER, 1), ("pause",)]
    assert h.out() == b""
    s.accept_bind(C.BIND_TRANSMITTER, 1, b"p")
    s.drain()
    ev = h.take()
    assert [e[:3] for e in ev] == [("request", C.SUBMIT_SM, 2), ("resume",)]
    assert h.out() == (hdr(C.BIND_TRANSMITTER_RESP, 0, 1, b"p\0\x02\x10\x00\x01\x34")
                       + hdr(C.ENQUIRE_LINK_RESP, 0, 3))


def test_requests_before_bind_refused():
    s, h = smsc()
    s.receive_data(submit(2) + P.encode(P.QuerySm(seq=3, message_id=b"1")), 100.0)
    assert h.out() == (hdr(C.SUBMIT_SM_RESP, ST["ESME_RINVBNDSTS"], 2)
                       + hdr(C.QUERY_SM_RESP, ST["ESME_RINVBNDSTS"], 3))
    assert h.take() == []


RECEIVER_REFUSED = [
    (C.SUBMIT_SM, submit(5), C.SUBMIT_SM_RESP),
    (C.SUBMIT_MULTI, P.encode(P.SubmitMulti(seq=5, dest_addresses=((1, 1, 1, b"138"),),
                                            short_message=b"x")), C.SUBMIT_MULTI_RESP),
    (C.DATA_SM, P.encode(P.DataSm(seq=5, source_addr=b"1", destination_addr=b"2")),
     C.DATA_SM_RESP),
    (C.QUERY_SM, P.encode(P.QuerySm(seq=5, message_id=b"1")), C.QUERY_SM_RESP),
    (C.CANCEL_SM, P.encode(P.CancelSm(seq=5, message_id=b"1")), C.CANCEL_SM_RESP),
    (C.REPLACE_SM, P.encode(P.ReplaceSm(seq=5, message_id=b"1", short_message=b"y")),
     C.REPLACE_SM_RESP),
    # deliver_sm_resp keeps its (empty) message_id on an error
    (C.DELIVER_SM, P.encode(P.DeliverSm(seq=5, short_message=b"y")), C.DELIVER_SM_RESP),
]
_RESP_BODY = {C.DELIVER_SM_RESP: b"\0"}


@pytest.mark.parametrize("cid,data,resp", RECEIVER_REFUSED,
                         ids=[C.COMMAND_NAMES[r[0]] for r in RECEIVER_REFUSED])
def test_receiver_bind_refuses_requests_with_rinvbndsts(cid, data, resp):
    s, h = bound(C.BIND_RECEIVER)
    s.receive_data(data, 101.0)
    assert h.out() == hdr(resp, ST["ESME_RINVBNDSTS"], 5, _RESP_BODY.get(resp, b""))
    assert h.take() == []                       # nothing reached the relay
    assert s.state == S.BOUND and s.inbound == 0
    # what a receiver may send still works
    s.receive_data(hdr(C.ENQUIRE_LINK, 0, 6), 102.0)
    assert h.out() == hdr(C.ENQUIRE_LINK_RESP, 0, 6)


def test_receiver_bind_may_answer_deliveries_and_unbind():
    s, h = bound(C.BIND_RECEIVER)
    s.request(C.DELIVER_SM, b"body", "cb1", 100.0)
    s.request(C.DATA_SM, b"body2", "cb2", 100.0)
    assert h.out() == hdr(C.DELIVER_SM, 0, 1, b"body") + hdr(C.DATA_SM, 0, 2, b"body2")
    s.receive_data(hdr(C.DATA_SM_RESP, 0, 2, b"\0") + hdr(C.DELIVER_SM_RESP, 0x45, 1, b"\0"),
                   101.0)
    assert h.take() == [("response", "cb2", 0, b"\0"), ("response", "cb1", 0x45, b"\0")]
    s.receive_data(hdr(C.UNBIND, 0, 8), 102.0)
    assert h.out() == hdr(C.UNBIND_RESP, 0, 8)
    assert h.take() == [("unbind",), ("close", S.UNBOUND)]
    assert s.state == S.CLOSING


def test_transmitter_requests_reach_the_handler_with_the_original_body():
    s, h = bound(C.BIND_TRANSMITTER)
    data = submit(5, b"hello")
    s.receive_data(data + P.encode(P.CancelSm(seq=6, message_id=b"1")), 101.0)
    assert h.take() == [("request", C.SUBMIT_SM, 5, data[16:]),
                        ("request", C.CANCEL_SM, 6, P.encode(P.CancelSm(message_id=b"1"))[16:])]
    assert s.inbound == 2
    s.reply(P.message_id_resp(C.SUBMIT_SM_RESP, 5, 0, b"m1"))
    assert h.out() == hdr(C.SUBMIT_SM_RESP, 0, 5, b"m1\0")
    assert s.inbound == 1


# --- window and back-pressure --------------------------------------------------------------

def test_window_full_pauses_reading_and_answers_resume_it():
    s, h = bound(inbound_window=2)
    s.receive_data(b"".join(submit(10 + i) for i in range(4)), 101.0)
    assert [e[:3] for e in h.take()] == [("request", C.SUBMIT_SM, 10),
                                         ("request", C.SUBMIT_SM, 11), ("pause",)]
    assert s.paused and len(s.backlog) == 2
    s.receive_data(submit(14), 101.0)           # read before the pause took effect: waits
    assert h.take() == [] and len(s.backlog) == 3
    s.reply(hdr(C.SUBMIT_SM_RESP, 0, 10, b"a\0"))
    assert [e[:3] for e in h.take()] == [("request", C.SUBMIT_SM, 12)]
    s.reply(hdr(C.SUBMIT_SM_RESP, 0, 11, b"b\0"))
    s.reply(hdr(C.SUBMIT_SM_RESP, 0, 12, b"c\0"))
    assert [e[:3] for e in h.take()] == [("request", C.SUBMIT_SM, 13),
                                         ("request", C.SUBMIT_SM, 14), ("resume",)]
    assert h.out() == b"".join(hdr(C.SUBMIT_SM_RESP, 0, 10 + i, m + b"\0")
                               for i, m in enumerate((b"a", b"b", b"c")))
    assert not s.paused and s.inbound == 2


def test_one_write_per_read():
    s, h = bound()
    s.receive_data(b"".join(hdr(C.ENQUIRE_LINK, 0, i) for i in range(1, 6)), 101.0)
    assert h.writes == [b"".join(hdr(C.ENQUIRE_LINK_RESP, 0, i) for i in range(1, 6))]


def test_outbound_window_is_the_free_count():
    s, h = bound(window=3)
    assert s.free == 3
    s.request(C.DELIVER_SM, b"", "a", 100.0)
    s.request(C.DELIVER_SM, b"", "b", 100.0)
    assert s.free == 1
    s.receive_data(hdr(C.DELIVER_SM_RESP, 0, 1, b"\0"), 101.0)
    assert s.free == 2


# --- keepalive and timers ------------------------------------------------------------------

def test_enquire_link_answered_and_sent_when_idle():
    s, h = bound(enquire_link_s=5)
    s.receive_data(hdr(C.ENQUIRE_LINK, 0, 77), 100.0)
    assert h.out() == hdr(C.ENQUIRE_LINK_RESP, 0, 77)
    s.tick(104.0)
    assert h.out() == b""                       # not idle long enough
    s.tick(106.0)
    assert h.out() == hdr(C.ENQUIRE_LINK, 0, 1)
    s.tick(107.0)
    assert h.out() == b""                       # one at a time
    s.receive_data(hdr(C.ENQUIRE_LINK_RESP, 0, 1), 108.0)
    s.tick(112.0)
    assert h.take() == [] and s.state == S.BOUND


def test_unanswered_enquire_link_closes():
    s, h = bound(enquire_link_s=5, enquire_timeout_s=2)
    s.tick(106.0)
    assert h.out() == hdr(C.ENQUIRE_LINK, 0, 1)
    s.tick(108.0)
    assert h.take() == []
    s.tick(108.5)
    assert h.take() == [("close", S.ENQUIRE_TIMEOUT)]
    assert s.state == S.CLOSING


def test_inactivity_unbinds_and_closes():
    s, h = bound(inactivity_s=10)
    s.tick(109.0)
    assert h.take() == []
    s.tick(111.0)
    assert h.out() == hdr(C.UNBIND, 0, 1)
    assert h.take() == [("close", S.INACTIVITY)]


def test_no_bind_within_the_bind_timeout_closes():
    s, h = smsc(bind_timeout_s=3)
    s.tick(102.0)
    assert h.take() == []
    s.receive_data(bind_pdu(), 102.5)           # binding, never answered
    h.take()
    s.tick(103.5)
    assert h.take() == [("close", S.BIND_TIMEOUT)]


def test_bound_session_has_no_bind_timeout():
    s, h = bound(bind_timeout_s=3)
    s.tick(200.0)
    assert h.take() == [] and s.state == S.BOUND


# --- framing and unknown commands ----------------------------------------------------------

def test_framing_error_nacks_answers_the_good_frames_then_closes():
    """The good requests read before a framing error are answered before the close."""
    s, h = bound()
    s.receive_data(submit(20) + struct.pack(">IIII", 5, C.SUBMIT_SM, 0, 21), 101.0)
    assert [e[:3] for e in h.take()] == [("request", C.SUBMIT_SM, 20), ("pause",)]
    assert h.out() == hdr(C.GENERIC_NACK, ST["ESME_RINVCMDLEN"], 21)
    assert s.state == S.CLOSING and not s.can_submit
    s.receive_data(hdr(C.ENQUIRE_LINK, 0, 22), 102.0)     # nothing read after the error
    assert h.out() == b"" and h.take() == []
    resp = P.message_id_resp(C.SUBMIT_SM_RESP, 20, 0, b"m20")
    s.reply(resp)                                         # its answer still goes out
    assert h.out() == resp
    assert h.take() == [("close", S.FRAMING)]             # then the connection closes


def test_framing_error_without_requests_in_hand_closes_at_once():
    s, h = bound()
    s.receive_data(struct.pack(">IIII", 5, C.SUBMIT_SM, 0, 21), 101.0)
    assert h.take() == [("close", S.FRAMING)]


def test_framing_error_refuses_what_waits_in_the_backlog():
    """Past the window, frames read before the framing error were never handed over:
    refused (ESME_RSYSERR) at once, never relayed; the handed one is answered, then close."""
    s, h = bound(inbound_window=1)
    s.receive_data(submit(20) + submit(21) + struct.pack(">IIII", 5, C.SUBMIT_SM, 0, 22),
                   101.0)
    assert [e[:3] for e in h.take()] == [("request", C.SUBMIT_SM, 20), ("pause",)]
    assert h.out() == (hdr(C.GENERIC_NACK, ST["ESME_RINVCMDLEN"], 22)
                       + hdr(C.SUBMIT_SM_RESP, ST["ESME_RSYSERR"], 21))
    s.reply(P.message_id_resp(C.SUBMIT_SM_RESP, 20, 0, b"m20"))
    assert h.take() == [("close", S.FRAMING)]


def test_oversized_command_length_is_a_framing_error():
    s, h = bound(max_pdu_bytes=1000)
    s.receive_data(struct.pack(">IIII", 5000, C.SUBMIT_SM, 0, 4), 101.0)
    assert h.out() == hdr(C.GENERIC_NACK, ST["ESME_RINVCMDLEN"], 4)
    assert h.take() == [("close", S.FRAMING)]


def test_unbound_peer_may_send_only_a_bind_sized_pdu():
    s, h = smsc(max_pdu_bytes=65536, max_unbound_pdu_bytes=512)
    # the header alone is enough: the body is never waited for nor buffered
    s.receive_data(struct.pack(">IIII", 600, C.SUBMIT_SM, 0, 4), 101.0)
    assert h.out() == hdr(C.GENERIC_NACK, ST["ESME_RINVCMDLEN"], 4)
    assert h.take() == [("close", S.FRAMING)]
    assert s.state == S.CLOSING and s.framer.buffered == 0
    assert s.error == "command_length 600 is over max_unbound_pdu_bytes (512)"


def test_unbound_limit_applies_while_binding_and_after_a_refused_bind():
    s, h = smsc(max_unbound_pdu_bytes=512)
    s.receive_data(bind_pdu(), 100.0)                  # BINDING: the answer is pending
    assert h.take() == [("bind", C.BIND_TRANSMITTER, 1)]
    s.refuse_bind(C.BIND_TRANSMITTER, 1, ST["ESME_RINVPASWD"])
    h.out()
    s.receive_data(struct.pack(">IIII", 513, C.BIND_TRANSMITTER, 0, 2), 101.0)
    assert h.out() == hdr(C.GENERIC_NACK, ST["ESME_RINVCMDLEN"], 2)
    assert h.take() == [("close", S.FRAMING)]


def test_a_bound_peer_may_send_up_to_max_pdu_bytes():
    s, h = bound(max_pdu_bytes=4096, max_unbound_pdu_bytes=512)
    big = P.encode(P.SubmitSm(seq=5, source_addr=b"1069", destination_addr=b"13800138000",
                              tlvs=((C.TAG_MESSAGE_PAYLOAD, b"x" * 1000),)))
    assert len(big) > 512
    s.receive_data(big, 101.0)
    assert [e[:3] for e in h.take()] == [("request", C.SUBMIT_SM, 5)]
    assert s.state == S.BOUND


def test_the_unbound_limit_is_for_the_smsc_role_only():
    h = Recorder()
    s = S.Session(S.ESME, h, S.SessionConfig(max_unbound_pdu_bytes=64), now=100.0)
    assert s.framer.max_pdu_bytes == 65536


def test_unknown_command_is_nacked_and_the_session_stays_usable():
    s, h = bound()
    s.receive_data(hdr(0x00000077, 0, 42, b"junk"), 101.0)
    assert h.out() == hdr(C.GENERIC_NACK, ST["ESME_RINVCMDID"], 42)
    assert h.take() == [("unknown", 0x77, 42)]
    data = submit(43)
    s.receive_data(data + hdr(C.ENQUIRE_LINK, 0, 44), 101.0)
    assert h.take() == [("request", C.SUBMIT_SM, 43, data[16:])]
    assert h.out() == hdr(C.ENQUIRE_LINK_RESP, 0, 44)
    assert s.state == S.BOUND


# --- ESME role -----------------------------------------------------------------------------

def esme(**cfg) -> tuple[S.Session, Recorder]:
    h = Recorder()
    s = S.Session(S.ESME, h, S.SessionConfig(**cfg), now=0.0, seq_start=100)
    h.session = s
    return s, h


def esme_bound(**cfg) -> tuple[S.Session, Recorder]:
    s, h = esme(**cfg)
    s.bind("transceiver", b"proxyd", b"secret", b"", 0.0)
    assert h.out() == P.encode(P.BindTransceiver(101, 0, b"proxyd", b"secret", b"", 0x34,
                                                 0, 0, b""))
    assert s.state == S.BINDING and s.free == 0
    s.receive_data(hdr(C.BIND_TRANSCEIVER_RESP, 0, 101, b"smsc\0"), 0.5)
    assert h.take() == [("bound",)]
    assert s.state == S.BOUND
    return s, h


def test_esme_bind_refused_closes():
    s, h = esme()
    s.bind("transmitter", b"proxyd", b"bad", b"", 0.0)
    h.out()
    s.receive_data(hdr(C.BIND_TRANSMITTER_RESP, ST["ESME_RINVPASWD"], 101), 0.5)
    assert h.take() == [("refused", ST["ESME_RINVPASWD"]), ("close", S.BIND_REFUSED)]


def test_esme_bind_unanswered_closes():
    s, h = esme(bind_timeout_s=5)
    s.bind("transceiver", b"proxyd", b"pw", b"", 0.0)
    s.tick(4.0)
    assert h.take() == []
    s.tick(5.0)
    assert h.take() == [("close", S.BIND_TIMEOUT)]


def test_responses_are_matched_by_sequence_number():
    s, h = esme_bound(window=10)
    for cb in ("a", "b", "c"):
        s.request(C.SUBMIT_SM, b"body-" + cb.encode(), cb, 1.0)
    assert h.out() == b"".join(hdr(C.SUBMIT_SM, 0, 102 + i, b"body-" + x)
                               for i, x in enumerate((b"a", b"b", b"c")))
    assert s.free == 7
    s.receive_data(hdr(C.SUBMIT_SM_RESP, 0, 104, b"idc\0")
                   + hdr(C.SUBMIT_SM_RESP, 0, 999, b"stray\0")      # nobody waits: ignored
                   + hdr(C.GENERIC_NACK, 0, 103)                    # a nack is never OK
                   + hdr(C.SUBMIT_SM_RESP, ST["ESME_RTHROTTLED"], 102), 2.0)
    assert h.take() == [("response", "c", 0, b"idc\0"),
                        ("response", "b", ST["ESME_RUNKNOWNERR"], b""),
                        ("nack", ST["ESME_RUNKNOWNERR"], 103),
                        ("response", "a", ST["ESME_RTHROTTLED"], b"")]
    assert s.pending == {} and s.free == 10


def test_response_timeout_one_sweep_per_tick():
    s, h = esme_bound(response_timeout_s=10)
    s.request(C.SUBMIT_SM, b"", "early", 1.0)
    s.request(C.SUBMIT_SM, b"", "late", 5.0)
    h.out()
    assert s.tick(10.5) == 0 and h.take() == []
    assert s.tick(11.0) == 1
    assert h.take() == [("response", "early", ST["ESME_RSYSERR"], None)]
    s.receive_data(hdr(C.SUBMIT_SM_RESP, 0, 102, b"tooslow\0"), 12.0)    # already failed
    assert h.take() == []
    assert s.tick(15.0) == 1
    assert h.take() == [("response", "late", ST["ESME_RSYSERR"], None)]
    assert s.state == S.BOUND


def test_connection_lost_fails_what_is_in_flight():
    s, h = esme_bound()
    s.request(C.SUBMIT_SM, b"", "x", 1.0)
    s.request(C.DATA_SM, b"", "y", 1.0)
    pending = s.connection_lost()
    assert s.state == S.CLOSING and s.pending == {} and len(pending) == 2
    s.fail_pending(pending)
    assert h.take() == [("response", "x", ST["ESME_RSYSERR"], None),
                        ("response", "y", ST["ESME_RSYSERR"], None)]


def test_esme_receives_deliver_sm_and_answers_it():
    s, h = esme_bound()
    body = P.encode(P.DeliverSm(short_message=b"receipt"))[16:]
    s.receive_data(hdr(C.DELIVER_SM, 0, 7, body), 1.0)
    assert h.take() == [("request", C.DELIVER_SM, 7, body)]
    assert s.inbound == 1
    s.reply(P.message_id_resp(C.DELIVER_SM_RESP, 7, 0, b""))
    assert h.out() == hdr(C.DELIVER_SM_RESP, 0, 7, b"\0")
    assert s.inbound == 0


def test_esme_enquire_link_and_unknown_request():
    s, h = esme_bound(enquire_link_s=30, enquire_timeout_s=10)
    s.receive_data(hdr(C.ENQUIRE_LINK, 0, 5) + P.encode(P.SubmitSm(seq=6)), 1.0)
    assert h.out() == hdr(C.ENQUIRE_LINK_RESP, 0, 5) + hdr(C.GENERIC_NACK,
                                                            ST["ESME_RINVCMDID"], 6)
    s.tick(32.0)
    assert h.out() == hdr(C.ENQUIRE_LINK, 0, 102)
    assert s.free == s.cfg.window               # a keepalive takes no window
    s.tick(43.0)
    assert h.take() == [("unknown", C.SUBMIT_SM, 6), ("close", S.ENQUIRE_TIMEOUT)]


def test_our_unbind_waits_for_its_answer():
    s, h = esme_bound(response_timeout_s=5)
    s.unbind(1.0)
    assert h.out() == hdr(C.UNBIND, 0, 102)
    assert s.state == S.UNBINDING and s.free == 0
    s.receive_data(hdr(C.UNBIND_RESP, 0, 102), 2.0)
    assert h.take() == [("close", S.UNBOUND)]


def test_our_unbind_unanswered_closes():
    s, h = esme_bound(response_timeout_s=5)
    s.unbind(1.0)
    s.tick(5.0)
    assert h.take() == []
    s.tick(6.0)
    assert h.take() == [("close", S.UNBIND_TIMEOUT)]


def test_role_is_checked():
    with pytest.raises(ValueError):
        S.Session("client", S.SessionHandler(), S.SessionConfig())
