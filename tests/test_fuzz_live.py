"""Fuzzing a live proxyd over real sockets (issue 15 item 9): the simulator and proxyd as real
twistd processes; hypothesis draws streams of random and mutated PDUs (tests/test_fuzz_codec.py
`mutated`) and sends them on a connection that first binds (127.0.0.2, account acme) or never
does (127.0.0.3), then an enquire_link: whatever the node answers must be well-formed
responses, and it must answer the enquire_link unless it closed the connection. Afterwards
the node is still alive, a good client (smpplib, from 127.0.0.1) binds and is served, the
log holds no traceback, and the journal's hash chain is intact (`proxyd-admin verify`).

The example count is bounded (the module runs in seconds) and hypothesis is derandomized, so
CI sends the same streams every run. Deadlines are limits on waiting, never measurements.
"""
from __future__ import annotations

import re
import socket

import pytest
import smpplib.client
from hypothesis import HealthCheck, given, settings, strategies as st

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config
from .test_conns_e2e import connect, read_pdu
from .test_fuzz_codec import mutated
from .test_pdu import any_pdu

BOUND, UNBOUND, GOOD = "127.0.0.2", "127.0.0.3", "127.0.0.1"
PROBE = 0x7FFFFFFF
LIVE = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
# what the node may send a client: answers, and its own requests to a bound one
FROM_NODE = {C.ENQUIRE_LINK, C.UNBIND, C.DELIVER_SM, C.DATA_SM}
NOISE = re.compile(r"(bad \w+|unknown or unexpected command \S+|generic_nack \w+) from "
                   r"127\.0\.0\.2:")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    sim, sim_port, _record = start_sim(tmp)
    port = free_port()
    cfg = write_config(tmp, config_text(
        port, sim_port, smpp={"bind_timeout_s": 30, "max_unbound_pdu_bytes": 512},
        # short auth delays: the unbound fuzz sends wrong binds, each waits its delay
        auth={"delay_s": 0.01, "max_delay_s": 0.05},
        log={"refusal_interval_s": 3600}, relay={"queue_wait_s": 0.5},
        store={"dir": tmp / "store"}, account={"max_binds": 50}))
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: "upstream sim bound" in proxyd.text(), "upstream bind", 20)
        admin(tmp, cfg, "topup", "acme", "1000000")
        yield {"port": port, "proxyd": proxyd, "pid": proxyd.p.pid, "tmp": tmp, "cfg": cfg}
    finally:
        proxyd.stop()
        sim.stop()


def bind(s: socket.socket) -> None:
    s.sendall(P.encode(P.BindTransceiver(1, 0, b"acme", b"s3cret", b"", 0x34, 0, 0, b"")))
    r = read_pdu(s)
    assert r is not None and (r.command_id, r.status) == (C.BIND_TRANSCEIVER_RESP, 0), r


def answers_until_probe(s: socket.socket) -> tuple[list, bool]:
    """What the node sends until it answers the probe (True) or closes (False)."""
    got = []
    while True:
        try:
            r = read_pdu(s)
        except (ConnectionResetError, BrokenPipeError):
            return got, False
        if r is None:
            return got, False
        if r.command_id == C.DELIVER_SM:       # a receipt of a fuzzed submit that passed
            s.sendall(P.message_id_resp(C.DELIVER_SM_RESP, r.seq, 0, b""))
        if (r.command_id, r.seq) == (C.ENQUIRE_LINK_RESP, PROBE):
            return got, True
        got.append(r)


# PDUs whose command_length matches (the stream stays in step, so the probe is read)...
in_step = st.lists(st.one_of(mutated(in_step=True), any_pdu.map(P.encode)), min_size=1,
                   max_size=8)
# ... then, sometimes, one that does not: a wrong length, a truncated PDU, random octets
breaker = st.one_of(st.none(), mutated(fix_length=False), st.binary(min_size=1, max_size=40))


def send(s: socket.socket, data: bytes) -> bool:
    try:
        s.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False                            # the node closed it already


def read_to_end(s: socket.socket) -> list:
    got = []
    while True:
        try:
            r = read_pdu(s)
        except (ConnectionResetError, BrokenPipeError):
            return got
        if r is None:
            return got
        got.append(r)


@LIVE
@given(bound=st.booleans(), pieces=in_step, tail=breaker)
def test_fuzzed_streams_get_well_formed_answers(stack, bound, pieces, tail):
    s = connect(stack["port"], BOUND if bound else UNBOUND)
    s.settimeout(30)
    try:
        if bound:
            bind(s)
        got, served = [], False
        if send(s, b"".join(pieces) + P.encode(P.EnquireLink(seq=PROBE))):
            got, served = answers_until_probe(s)
        if served and tail is not None and send(s, tail):
            s.shutdown(socket.SHUT_WR)          # out of step now: the node reads to our end
            got += read_to_end(s)
    finally:
        s.close()
    for r in got:
        # everything the node writes decodes, and is an answer or one of its own requests
        assert not isinstance(r, (P.BadPdu, P.UnknownPdu)), r
        assert r.command_id & C.RESP_BIT or r.command_id in FROM_NODE, r
        if not bound:
            assert r.command_id not in (C.DELIVER_SM, C.DATA_SM), r
    assert stack["proxyd"].p.poll() is None, "proxyd died"


def test_bound_peer_noise_is_rate_limited_in_the_log(stack):
    """A bound client sending malformed PDUs, unknown command ids and generic_nacks: each is
    answered, but the log takes one line per account per [log] refusal_interval_s."""
    s = connect(stack["port"], BOUND)
    s.settimeout(30)
    try:
        bind(s)
        junk = []
        for i in range(100):
            junk.append(P.frame(0x00000099, 0, 1000 + i))                     # unknown id
            junk.append(P.frame(C.SUBMIT_SM, 0, 2000 + i, b"CMT"))            # bad body
            junk.append(P.generic_nack(3000 + i, C.STATUS["ESME_RINVCMDLEN"]))
        s.sendall(b"".join(junk) + P.encode(P.EnquireLink(seq=PROBE)))
        got, served = answers_until_probe(s)
    finally:
        s.close()
    assert served
    assert sorted(r.seq for r in got) == list(range(1000, 1100)) + list(range(2000, 2100))
    assert {(r.command_id, r.status) for r in got} == {
        (C.GENERIC_NACK, C.STATUS["ESME_RINVCMDID"]),
        (C.SUBMIT_SM_RESP, C.STATUS["ESME_RINVPARLEN"])}
    text = stack["proxyd"].text()
    assert len(NOISE.findall(text)) <= 1, NOISE.findall(text)[:5]


def test_after_the_fuzz_the_node_serves_a_good_client_and_nothing_broke(stack):
    proxyd = stack["proxyd"]
    assert proxyd.p.poll() is None and proxyd.p.pid == stack["pid"]
    c = smpplib.client.Client("127.0.0.1", stack["port"], timeout=15,
                                allow_unknown_opt_params=True)
    c.connect()
    try:
        c.bind_transceiver(system_id="acme", password="s3cret")
        answers = []
        c.set_message_sent_handler(lambda pdu: answers.append((pdu.sequence, pdu.status)))
        pdu = c.send_message(source_addr_ton=0, source_addr_npi=1, source_addr="10690001",
                             dest_addr_ton=1, dest_addr_npi=1, destination_addr="13800138000",
                             short_message=b"after the fuzz", data_coding=0, esm_class=0)
        while not answers:
            c.read_once()
        assert answers == [(pdu.sequence, 0)]
        c.unbind()
    finally:
        c.disconnect()
    text = proxyd.text()
    assert "Traceback" not in text and "Unhandled" not in text, text[-3000:]
    r = admin(stack["tmp"], stack["cfg"], "verify", "acme", check=False)
    assert r.returncode == 0 and "chain intact" in r.stdout, r.stdout + r.stderr
