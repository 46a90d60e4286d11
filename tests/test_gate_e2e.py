"""Issue 14 over real sockets: every road to an operator goes through the one gate.

Each test sends what a hostile client would (a banned term split over two submit_multi or
data_sm parts, a replace_sm with a banned text, parts in mixed codings, a long
message_payload, a duplicate part, a receiver bind that cancels) and checks the answer and
that the simulator never got what it should not. Deadlines are limits on waiting."""
from __future__ import annotations

import random

import pytest
import smpplib.client
import smpplib.exceptions

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.text.udh import concat_udh

from .conftemplate import config_text
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, \
    write_config
from .test_delivery import Raw

S = C.STATUS
SRC = b"10690001"

def config(tmp, port: int, sim: int) -> str:
    from .procs import FILTERS
    return config_text(
        port, sim, store={"dir": tmp / "store"},
        policy={"filters_dir": FILTERS, "reassembly_timeout_s": 30},
        upstream={"password": "pw"},
        account={"password": "pw1", "max_parts": 20, "price": 5, "max_binds": 8},
        accounts=[{"system_id": "small", "password": "pw2", "service_codes": ["10690002"],
                   "max_parts": 10, "price": 5},
                  {"system_id": "tight", "password": "pw3", "service_codes": ["10690003"],
                   "tps": 1, "burst": 2}])

BANNED_1, BANNED_2 = "网上赌", "博平台"      # "网上赌博" is on the shipped lists


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gate")
    sim, sim_port, record = start_sim(tmp)
    port = free_port()
    cfg = write_config(tmp, config(tmp, port, sim_port))
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: "upstream sim bound" in proxyd.text(), "upstream bind", 20)
        admin(tmp, cfg, "topup", "acme", "100000")
        admin(tmp, cfg, "topup", "small", "100000")
        admin(tmp, cfg, "topup", "tight", "100000")
        yield {"port": port, "record": record, "proxyd": proxyd, "tmp": tmp, "cfg": cfg}
    finally:
        proxyd.stop()
        sim.stop()


def balance(stack, account: str) -> int:
    return int(admin(stack["tmp"], stack["cfg"], "balance", account).stdout.split()[-1])


def recorded(stack) -> list[bytes]:
    """The user data of everything the simulator accepted (submit_sm and data_sm)."""
    out = []
    for x in read_record(stack["record"]):
        cid = C.DATA_SM if x["cmd"] == "data_sm" else C.SUBMIT_SM
        out.append(P.decode_body(cid, 0, 1, bytes.fromhex(x["body"])).payload)
    return out


def request(c: Raw, pdu) -> object:
    seq = c._next()
    c.s.sendall(P.encode(pdu._replace(seq=seq)))
    c.pump(lambda: seq in c.resps)
    return c.resps[seq]


def halves(marker: str) -> tuple[bytes, bytes, int]:
    """Two UCS-2 parts of one long message whose banned term straddles the cut."""
    ref = random.randrange(1, 250)
    a = (marker + BANNED_1).encode("utf-16-be")
    b = BANNED_2.encode("utf-16-be")
    return concat_udh(ref, 2, 1) + a, concat_udh(ref, 2, 2) + b, ref


def _refused_whole(stack, marker: str, dest: str) -> None:
    wait_until(lambda: "long message of acme (2 parts) not sent: content" in
               stack["proxyd"].text(), "the long message refused", 15)
    m = marker.encode("utf-16-be")
    assert not any(m in t for t in recorded(stack)), "a part reached the simulator"


def test_submit_multi_parts_carrying_a_banned_term_are_refused(stack):
    c = Raw(stack["port"], C.BIND_TRANSCEIVER, b"acme", b"pw1")
    marker = "[multi-%d]" % random.randrange(1 << 30)
    p1, p2, _ref = halves(marker)
    dest = ((1, 1, 1, b"13800138100"),)
    for p in (p1, p2):
        r = request(c, P.SubmitMulti(source_addr_ton=1, source_addr_npi=1, source_addr=SRC,
                                     dest_addresses=dest, esm_class=0x40, data_coding=8,
                                     short_message=p))
        assert r.command_id == C.SUBMIT_MULTI_RESP and r.status == 0
    _refused_whole(stack, marker, "13800138100")
    c.close()


def test_data_sm_parts_carrying_a_banned_term_are_refused(stack):
    c = Raw(stack["port"], C.BIND_TRANSCEIVER, b"acme", b"pw1")
    marker = "[data-%d]" % random.randrange(1 << 30)
    p1, p2, _ref = halves(marker)
    for p in (p1, p2):
        r = request(c, P.DataSm(source_addr_ton=1, source_addr_npi=1, source_addr=SRC,
                                dest_addr_ton=1, dest_addr_npi=1,
                                destination_addr=b"13800138101", esm_class=0x40,
                                data_coding=8,
                                tlvs=((C.TAG_MESSAGE_PAYLOAD, p),)))
        assert r.command_id == C.DATA_SM_RESP and r.status == 0
    _refused_whole(stack, marker, "13800138101")
    c.close()


def test_clean_data_sm_parts_are_relayed_whole(stack):
    """The same road with a clean text reaches the simulator: the refusal above is the
    content check, not a closed door."""
    c = Raw(stack["port"], C.BIND_TRANSCEIVER, b"acme", b"pw1")
    ref = random.randrange(1, 250)
    parts = [concat_udh(ref, 2, 1) + "[clean-data]您好".encode("utf-16-be"),
             concat_udh(ref, 2, 2) + "明天见".encode("utf-16-be")]
    for p in parts:
        r = request(c, P.DataSm(source_addr=SRC, dest_addr_ton=1,
                                destination_addr=b"13800138102", esm_class=0x40,
                                data_coding=8, tlvs=((C.TAG_MESSAGE_PAYLOAD, p),)))
        assert r.status == 0
    wait_until(lambda: sum(1 for t in recorded(stack) if t in parts) == 2,
               "both parts at the simulator", 15)
    c.close()


def test_replace_sm_with_a_banned_text_is_refused_and_never_relayed(stack):
    c = Raw(stack["port"], C.BIND_TRANSCEIVER, b"acme", b"pw1")
    seq = c._next()
    # registered_delivery 2: failures only, so the message stays ENROUTE (replaceable)
    c.s.sendall(P.encode(P.SubmitSm(seq=seq, source_addr=SRC, dest_addr_ton=1,
                                    destination_addr=b"13800138103", registered_delivery=2,
                                    short_message=b"original")))
    c.pump(lambda: seq in c.resps)
    mid = c.resps[seq].message_id
    assert c.resps[seq].status == 0
    query = P.QuerySm(message_id=mid, source_addr=SRC)
    wait_until(lambda: request(c, query).status == 0, "the state recorded", 10)
    r = request(c, P.ReplaceSm(message_id=mid, source_addr=SRC,
                               short_message=(BANNED_1 + BANNED_2).encode("utf-16-be")))
    assert r.command_id == C.REPLACE_SM_RESP and r.status == S["PROXYD_RCONTENT"]
    log = stack["proxyd"].text()
    assert "replace_sm %s refused: upstream" % mid.decode() not in log
    # a clean replacement does go to the simulator (which does not implement it)
    r = request(c, P.ReplaceSm(message_id=mid, source_addr=SRC, short_message=b"clean"))
    assert r.status == S["ESME_RREPLACEFAIL"]
    wait_until(lambda: "replace_sm %s refused: upstream sim answered ESME_RINVCMDID"
               % mid.decode() in stack["proxyd"].text(), "the clean replace relayed", 10)
    # a replacement longer than one part is refused, not charged
    r = request(c, P.ReplaceSm(message_id=mid, source_addr=SRC, short_message=b"x" * 200))
    assert r.status == S["ESME_RREPLACEFAIL"]
    c.close()


def test_parts_in_mixed_codings_are_refused(stack):
    c = Raw(stack["port"], C.BIND_TRANSCEIVER, b"acme", b"pw1")
    ref = random.randrange(1, 250)
    first = request(c, P.SubmitSm(source_addr=SRC, dest_addr_ton=1,
                                  destination_addr=b"13800138104", esm_class=0x40,
                                  data_coding=8,
                                  short_message=concat_udh(ref, 2, 1) + "网上".encode(
                                      "utf-16-be")))
    assert first.status == 0
    second = request(c, P.SubmitSm(source_addr=SRC, dest_addr_ton=1,
                                   destination_addr=b"13800138104", esm_class=0x40,
                                   data_coding=3,
                                   short_message=concat_udh(ref, 2, 2) + b"mixed-coding"))
    assert second.status == S["PROXYD_RMIXEDDCS"]
    assert not any(b"mixed-coding" in t for t in recorded(stack))
    c.close()


def test_duplicate_part_and_conflicting_total_get_an_error(stack):
    c = Raw(stack["port"], C.BIND_TRANSCEIVER, b"acme", b"pw1")
    ref = random.randrange(1, 250)
    part = concat_udh(ref, 3, 1) + b"[dup] part one"

    def send(data: bytes):
        return request(c, P.SubmitSm(source_addr=SRC, dest_addr_ton=1,
                                     destination_addr=b"13800138105", esm_class=0x40,
                                     short_message=data))
    assert send(part).status == 0
    again = send(part)
    assert again.status == S["PROXYD_RDUPPART"] and again.message_id == b""
    # another message under the same reference with another total is not joined
    other = send(concat_udh(ref, 2, 2) + b"[dup] other message")
    assert other.status == S["PROXYD_RDUPPART"]
    c.close()


def test_long_message_payload_is_charged_as_the_operator_bills(stack):
    c = smpplib.client.Client("127.0.0.1", stack["port"], timeout=15,
                              allow_unknown_opt_params=True)
    c.connect()
    c.bind_transmitter(system_id="acme", password="pw1")
    before = balance(stack, "acme")
    text = b"[payload] " + b"x" * 1990                      # 2,000 GSM septets
    c.send_message(source_addr_ton=1, source_addr_npi=1, source_addr="10690001",
                   dest_addr_ton=1, dest_addr_npi=1, destination_addr="13800138106",
                   data_coding=0, short_message=b"", message_payload=text)
    r = c.read_pdu()
    assert r.command == "submit_sm_resp" and r.status == 0
    c.disconnect()
    assert any(t == text for t in recorded(stack))
    wait_until(lambda: before - balance(stack, "acme") == 14 * 5, "14 parts charged", 10)


def test_long_message_payload_over_max_parts_is_refused_not_truncated(stack):
    s = Raw(stack["port"], C.BIND_TRANSCEIVER, b"small", b"pw2")
    before = balance(stack, "small")
    text = b"[over] " + b"y" * 1993                           # 14 parts > max_parts 10
    r = request(s, P.SubmitSm(source_addr=b"10690002", dest_addr_ton=1,
                              destination_addr=b"13800138107",
                              tlvs=((C.TAG_MESSAGE_PAYLOAD, text),)))
    assert r.status == S["ESME_RINVMSGLEN"]
    assert not any(t.startswith(b"[over]") for t in recorded(stack))
    assert balance(stack, "small") == before
    s.close()


def test_receiver_bind_may_not_cancel_or_replace(stack):
    # smpplib (a client nobody here wrote) as a receiver: its query_sm is refused
    c = smpplib.client.Client("127.0.0.1", stack["port"], timeout=15,
                              allow_unknown_opt_params=True)
    c.connect()
    c.bind_receiver(system_id="acme", password="pw1")
    c.send_pdu(smpplib.smpp.make_pdu("query_sm", client=c, message_id="abc",
                                     source_addr="10690001"))
    r = c.read_pdu()
    assert r.command == "query_sm_resp" and r.status == S["ESME_RINVBNDSTS"]
    c.disconnect()
    # smpplib has no cancel_sm or replace_sm: a raw client sends those
    raw = Raw(stack["port"], C.BIND_RECEIVER, b"acme", b"pw1")
    for pdu in (P.CancelSm(message_id=b"abc", source_addr=SRC,
                           destination_addr=b"13800138108"),
                P.ReplaceSm(message_id=b"abc", source_addr=SRC, short_message=b"x"),
                P.SubmitSm(source_addr=SRC, destination_addr=b"13800138108",
                           short_message=b"receiver submit")):
        r = request(raw, pdu)
        assert r.command_id == pdu.command_id | C.RESP_BIT
        assert r.status == S["ESME_RINVBNDSTS"], pdu.command_name
    raw.close()
    assert not any(b"receiver submit" in t for t in recorded(stack))


def test_framing_error_the_good_pdus_before_it_are_answered_then_closed(stack):
    """A submit_sm and a broken header in one write: the submit is relayed AND answered
    (its submit_sm_resp comes after the generic_nack), then the connection closes."""
    import struct

    c = Raw(stack["port"], C.BIND_TRANSMITTER, b"acme", b"pw1")
    seq = c._next()
    c.s.sendall(P.encode(P.SubmitSm(seq=seq, source_addr_ton=1, source_addr_npi=1,
                                    source_addr=SRC, dest_addr_ton=1, dest_addr_npi=1,
                                    destination_addr=b"13800138000",
                                    short_message=b"before the framing error"))
                + struct.pack(">IIII", 5, C.SUBMIT_SM, 0, 999))
    got = []
    while True:
        r = c.read()
        if r is None:
            break
        got.append((r.command_id, r.seq, r.status))
    c.s.close()
    assert (C.GENERIC_NACK, 999, S["ESME_RINVCMDLEN"]) in got
    assert (C.SUBMIT_SM_RESP, seq, 0) in got
    assert b"before the framing error" in recorded(stack)


def test_submit_multi_each_destination_takes_a_token(stack):
    """The bucket (burst 2) is taken per destination: past it, ESME_RTHROTTLED each."""
    c = Raw(stack["port"], C.BIND_TRANSMITTER, b"tight", b"pw3")
    dests = tuple((1, 1, 1, b"1380013810%d" % i) for i in range(4))
    r = request(c, P.SubmitMulti(source_addr_ton=1, source_addr_npi=1,
                                 source_addr=b"10690003", dest_addresses=dests,
                                 short_message=b"multi tokens"))
    c.s.close()
    assert r.status == 0
    throttled = [u for u in r.unsuccess_smes if u[3] == S["ESME_RTHROTTLED"]]
    assert throttled and len(r.unsuccess_smes) == len(throttled) <= 2
