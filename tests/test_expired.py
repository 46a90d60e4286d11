"""Issue 6: proxyd's own EXPIRED receipts (``[delivery] expire_after_s``), end to end with
real processes: the simulator never sends receipts (``--no-receipts``).

Deadlines below are limits on waiting, never measurements.
"""
from __future__ import annotations

import re
import socket
import time

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, start_sim, wait_until, write_config
from .test_delivery import CONFIG, SRC, Raw, _node, receipt_ids


@pytest.fixture
def stack(tmp_path):
    procs: list = []

    def start(delivery: str) -> dict:
        sim, sim_port, _record = start_sim(tmp_path, None, "--no-receipts")
        procs.append(sim)
        port = free_port()
        text = config_text(port, sim_port, store={"dir": tmp_path / "store"}, extra=delivery,
                           **CONFIG)
        cfg = write_config(tmp_path, text)
        node = _node(tmp_path, cfg, port)
        procs.append(node)
        admin(tmp_path, cfg, "topup", "acme", "1000000", "--note", "test funds")
        return {"port": port, "proxyd": node, "cfg": cfg}

    yield start
    for p in reversed(procs):
        p.stop()


def test_expired_own_receipt_carries_the_id_given(stack):
    st = stack("\n[delivery]\nexpire_after_s = 1\n")
    c = Raw(st["port"], C.BIND_TRANSCEIVER)
    given = c.submit_all(5, registered_delivery=1)
    no_receipt = c.submit_all(1, registered_delivery=0)
    c.pump(lambda: len(c.delivered) >= 5, 30)
    tlv, text = receipt_ids(c.delivered)
    assert sorted(tlv) == sorted(given)
    assert sorted(text) == sorted(given)
    for r in c.delivered:
        assert b"stat:EXPIRED" in r.short_message
        assert re.search(rb"err:409\b", r.short_message)
        assert r.tlv(C.TAG_MESSAGE_STATE) == bytes((3,))
        # the addresses of the submit, swapped as in any receipt
        assert r.destination_addr == SRC.encode()
        assert r.source_addr.startswith(b"1380013") and len(r.source_addr) == 11
    assert no_receipt[0] not in tlv
    # the stored state is EXPIRED: query_sm answers from it
    seq = c._next()
    c.s.sendall(P.encode(P.QuerySm(seq=seq, message_id=given[0], source_addr_ton=1,
                                   source_addr_npi=1, source_addr=SRC.encode())))
    c.pump(lambda: seq in c.resps, 20)
    assert c.resps[seq].status == 0, C.status_name(c.resps[seq].status)
    assert c.resps[seq].message_state == 3
    wait_until(lambda: st["proxyd"].text().count("stat:EXPIRED") >= 5, "own receipt logs", 10)
    # nothing else comes (each part expires once)
    c.s.settimeout(2.0)
    extra = []
    try:
        while True:
            r = c.read()
            if r is None:
                break
            if r.command_id == C.DELIVER_SM:
                extra.append(r)
            c.handle(r)
    except socket.timeout:
        pass
    assert extra == []
    c.close()


def test_no_expiry_by_default(stack):
    st = stack("")
    c = Raw(st["port"], C.BIND_TRANSCEIVER)
    c.submit_all(3, registered_delivery=1)
    time.sleep(3.0)     # three times what the test above waits for: nothing may come
    c.s.settimeout(0.5)
    got = []
    try:
        while True:
            r = c.read()
            if r is None:
                break
            if r.command_id == C.DELIVER_SM:
                got.append(r)
            c.handle(r)
    except socket.timeout:
        pass
    assert got == []
    assert "stat:EXPIRED" not in st["proxyd"].text()
    c.close()
