"""Issue 6 end to end: receipts and MO through real processes (simulator + proxyd under
twistd, an embedded store), clients over real sockets.

Deadlines below are limits on waiting, never measurements.
"""
from __future__ import annotations

import json
import re
import socket
import struct
from pathlib import Path

import pytest
import smpplib.client

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config

CONFIG = dict(smpp={"window": 100, "enquire_link_s": 30, "inactivity_s": 300},
              relay={"queue_wait_s": 0.2},
              upstream={"binds": 2, "window": 50, "response_timeout_s": 5, "reconnect_max_s": 1},
              account={"max_binds": 4},
              accounts=[{"system_id": "other", "password": "0ther",
                         "service_codes": ["106900012"], "max_binds": 4}])

SRC = "1069000188"


def _config(tmp: Path, port: int, sim_port: int, name: str = "proxyd.toml",
            store: Path | None = None) -> Path:
    return write_config(tmp, config_text(port, sim_port, store={"dir": store or (tmp / "store")},
                                         **CONFIG), name)


def _node(tmp: Path, cfg: Path, port: int, name: str = "proxyd"):
    proc = start_proxyd(tmp, cfg, port, name=name)
    wait_until(lambda: proc.text().count("upstream sim bound") >= 2, "upstream binds", 20)
    return proc


@pytest.fixture
def stack(tmp_path):
    """One simulator (receipts after a short delay, a control port), one proxyd node."""
    procs: list = []
    made: dict = {"tmp": tmp_path, "procs": procs}

    def start(*sim_args: str) -> dict:
        control = free_port()
        sim, sim_port, record = start_sim(tmp_path, None, "--control",
                                          "tcp:%d:interface=127.0.0.1" % control, *sim_args)
        procs.append(sim)
        port = free_port()
        cfg = _config(tmp_path, port, sim_port)
        node = _node(tmp_path, cfg, port)
        procs.append(node)
        admin(tmp_path, cfg, "topup", "acme", "1000000", "--note", "test funds")
        made.update(sim=sim, sim_port=sim_port, control=control, port=port, cfg=cfg,
                    proxyd=node)
        return made

    made["start"] = start
    yield made
    for p in reversed(procs):
        p.stop()


# --- a small raw SMPP client (precise control over what is answered) -----------------------
class Raw:
    def __init__(self, port: int, mode: int, system_id: bytes = b"acme",
                 password: bytes = b"s3cret") -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.seq = 1
        self.buf = b""
        self.delivered: list = []        # deliver_sm PDUs answered OK, in arrival order
        self.resps: dict[int, object] = {}
        cls = P.PDU_CLASSES[mode]
        self.s.sendall(P.encode(cls(self._next(), 0, system_id, password, b"", 0x34, 0, 0,
                                    b"")))
        r = self.read()
        assert r.command_id == mode | C.RESP_BIT and r.status == 0, C.status_name(r.status)

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def read(self):
        while True:
            if len(self.buf) >= 16:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= n:
                    data, self.buf = self.buf[:n], self.buf[n:]
                    return P.decode(data)
            chunk = self.s.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def submit(self, dest: str, text: bytes, registered_delivery: int = 1) -> int:
        seq = self._next()
        self.s.sendall(P.encode(P.SubmitSm(seq=seq, source_addr_ton=1, source_addr_npi=1,
                                           source_addr=SRC.encode(), dest_addr_ton=1,
                                           dest_addr_npi=1, destination_addr=dest.encode(),
                                           registered_delivery=registered_delivery,
                                           short_message=text)))
        return seq

    def pump(self, until, limit_s: float = 30.0, answer: bool = True) -> None:
        """Read PDUs (answering deliver_sm OK) until `until()` holds."""
        self.s.settimeout(limit_s)
        while not until():
            r = self.read()
            assert r is not None, "connection closed"
            self.handle(r, answer)

    def handle(self, r, answer: bool = True) -> None:
        if r.command_id in (C.DELIVER_SM, C.DATA_SM):
            if answer:
                self.s.sendall(P.encode(P.resp_class(r.command_id)(r.seq, 0)))
                self.delivered.append(r)
        elif r.command_id == C.ENQUIRE_LINK:
            self.s.sendall(P.frame(C.ENQUIRE_LINK_RESP, 0, r.seq))
        elif r.command_id & C.RESP_BIT:
            self.resps[r.seq] = r

    def submit_all(self, n: int, text: bytes = b"hello %d", dest: str = "1380013%04d",
                   registered_delivery: int = 1) -> list[bytes]:
        """Submit n messages (windowed), return their proxyd ids in order."""
        seqs = []
        for i in range(n):
            seqs.append(self.submit(dest % i if "%" in dest else dest,
                                    text % i if b"%" in text else text, registered_delivery))
            if len(seqs) - len([s for s in seqs if s in self.resps]) >= 50:
                self.pump(lambda: len([s for s in seqs if s in self.resps]) >= len(seqs) - 10)
        self.pump(lambda: all(s in self.resps for s in seqs))
        for s in seqs:
            assert self.resps[s].status == 0, C.status_name(self.resps[s].status)
        return [self.resps[s].message_id for s in seqs]

    def unbind(self) -> None:
        """Unbind; deliver_sm PDUs arriving after our unbind are not answered (not taken)."""
        self.s.sendall(P.frame(C.UNBIND, 0, self._next()))
        self.s.settimeout(20)
        while True:
            r = self.read()
            if r is None or r.command_id == C.UNBIND_RESP:
                break
            self.handle(r, answer=False)
        self.s.close()

    def close(self) -> None:
        self.s.close()


def receipt_ids(pdus) -> tuple[list[bytes], list[bytes]]:
    """(receipted_message_id TLVs, `id:` of the texts) of receipts."""
    tlv, text = [], []
    for r in pdus:
        assert r.esm_class & C.ESM_RECEIPT_MASK, "not a receipt"
        tlv.append(r.tlv(C.TAG_RECEIPTED_MESSAGE_ID).rstrip(b"\0"))
        text.append(re.search(rb"id:(\S+)", r.short_message).group(1))
    return tlv, text


# --- (a) ------------------------------------------------------------------------------------
def test_smpplib_500_receipts_carry_the_ids_given(stack):
    st = stack["start"]()
    c = smpplib.client.Client("127.0.0.1", st["port"], timeout=20,
                              allow_unknown_opt_params=True)
    c.connect()
    c.bind_transceiver(system_id="acme", password="s3cret")
    given: list = []
    receipts: list = []

    def sent(pdu, **kw):
        assert pdu.status == 0
        given.append(pdu.message_id)

    def received(pdu, **kw):
        receipts.append(pdu)
        return 0

    c.set_message_sent_handler(sent)
    c.set_message_received_handler(received)
    n = 500
    for i in range(n):
        c.send_message(source_addr_ton=1, source_addr_npi=1, source_addr=SRC,
                       dest_addr_ton=1, dest_addr_npi=1, destination_addr="1390013%04d" % i,
                       short_message=b"receipt please %d" % i, registered_delivery=1)
        while i - len(given) >= 50:
            c.read_once()
    while len(given) < n or len(receipts) < n:
        c.read_once()
    c.unbind()
    c.disconnect()

    def norm(v):
        return v.rstrip(b"\0") if isinstance(v, bytes) else v.rstrip("\0").encode()
    assert len(given) == n and len(set(given)) == n
    tlv = sorted(norm(r.receipted_message_id) for r in receipts)
    text = sorted(re.search(rb"id:(\S+)", norm(r.short_message)).group(1) for r in receipts)
    assert len(receipts) == n
    assert tlv == sorted(norm(g) for g in given)
    assert text == tlv
    for r in receipts:
        assert b"stat:DELIVRD" in norm(r.short_message)


# --- (b) ------------------------------------------------------------------------------------
def test_receiver_unbound_while_receipts_arrive_then_rebound(stack):
    st = stack["start"]("--receipt-delay", "0.5")
    rx = Raw(st["port"], C.BIND_RECEIVER)
    tx = Raw(st["port"], C.BIND_TRANSMITTER)
    half = 150
    ids = tx.submit_all(half)
    # take a part of them, then leave while the rest keep coming
    rx.pump(lambda: len(rx.delivered) >= 60)
    first = list(rx.delivered)
    rx.unbind()
    ids += tx.submit_all(half, text=b"second %d", dest="1370013%04d")
    n = 2 * half
    # every receipt left the operator while no receiver was bound
    wait_until(lambda: _stats(st["control"])["receipts"] >= n, "all receipts sent", 30)
    rx2 = Raw(st["port"], C.BIND_RECEIVER)
    rx2.pump(lambda: len(first) + len(rx2.delivered) >= n)
    # anything more would be a duplicate: an enquire_link round trip lets one show up
    probe = rx2._next()
    rx2.s.sendall(P.frame(C.ENQUIRE_LINK, 0, probe))
    rx2.pump(lambda: probe in rx2.resps)
    tlv1, text1 = receipt_ids(first)
    tlv2, text2 = receipt_ids(rx2.delivered)
    everything = tlv1 + tlv2
    assert len(everything) == n, "duplicates or losses: %d for %d" % (len(everything), n)
    assert sorted(everything) == sorted(ids)
    assert text1 + text2 == everything
    tx.close()
    rx2.close()


def _stats(control: int) -> dict:
    s = socket.create_connection(("127.0.0.1", control), timeout=10)
    s.sendall(b"STATS\n")
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(4096)
        assert chunk
        line += chunk
    s.close()
    return json.loads(line)


# --- (c) ------------------------------------------------------------------------------------
def test_two_nodes_one_store_receipts_reach_the_other_node(stack, tmp_path):
    st = stack["start"]()
    port_b = free_port()
    cfg_b = _config(tmp_path, port_b, st["sim_port"], name="proxyd-b.toml",
                    store=tmp_path / "store")
    node_b = _node(tmp_path, cfg_b, port_b, name="proxyd-b")
    stack["procs"].append(node_b)
    rx = Raw(port_b, C.BIND_RECEIVER)
    tx = Raw(st["port"], C.BIND_TRANSMITTER)
    n = 100
    ids = tx.submit_all(n)
    rx.pump(lambda: len(rx.delivered) >= n)
    tlv, text = receipt_ids(rx.delivered)
    assert sorted(tlv) == sorted(ids) and text == tlv
    # node A never had a receiver: it consumed nothing
    assert "consuming deliveries of acme" not in st["proxyd"].text()
    tx.close()
    rx.close()


# --- (d) ------------------------------------------------------------------------------------
def test_proxyd_restarted_between_submit_and_receipt(stack):
    st = stack["start"]("--receipt-delay", "3")
    tx = Raw(st["port"], C.BIND_TRANSMITTER)
    ids = tx.submit_all(20)
    tx.close()
    st["proxyd"].stop()
    node = _node(st["tmp"], st["cfg"], st["port"], name="proxyd-restarted")
    stack["procs"].append(node)
    rx = Raw(st["port"], C.BIND_RECEIVER)
    rx.pump(lambda: len(rx.delivered) >= 20)
    tlv, text = receipt_ids(rx.delivered)
    assert sorted(tlv) == sorted(ids) and text == tlv
    rx.close()


# --- (e) ------------------------------------------------------------------------------------
def _mo(control: int, source: str, dest: str, text: bytes, dc: int = 0) -> None:
    s = socket.create_connection(("127.0.0.1", control), timeout=10)
    s.sendall(b"MO %s %s %s %d\n" % (source.encode(), dest.encode(), text.hex().encode(), dc))
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(100)
        assert chunk
        line += chunk
    s.close()
    assert line.startswith(b"OK"), line


def test_mo_td_opts_out_and_is_delivered(stack):
    st = stack["start"]()
    rx = Raw(st["port"], C.BIND_RECEIVER)
    other = Raw(st["port"], C.BIND_RECEIVER, b"other", b"0ther")
    tx = Raw(st["port"], C.BIND_TRANSMITTER)
    handset = "13912345678"
    # before: the number may be sent to
    assert len(tx.submit_all(1, dest=handset, registered_delivery=0)) == 1
    _mo(st["control"], handset, "1069000155", b"TD")
    rx.pump(lambda: len(rx.delivered) >= 1)
    mo = rx.delivered[0]
    assert mo.command_id == C.DELIVER_SM and not mo.esm_class & C.ESM_RECEIPT_MASK
    assert (mo.source_addr, mo.destination_addr, mo.short_message) == (
        handset.encode(), b"1069000155", b"TD")
    # the next submit to it is refused; another number still goes
    seq = tx.submit(handset, b"are you there?")
    tx.pump(lambda: seq in tx.resps)
    assert tx.resps[seq].status == C.STATUS["ESME_RINVDSTADR"]
    assert len(tx.submit_all(1, dest="13912345679", registered_delivery=0)) == 1
    # a reply that is not an unsubscribe word, to the longer service code of "other"
    _mo(st["control"], "13700000001", "10690001234", "你好".encode("utf-16-be"), 8)
    other.pump(lambda: len(other.delivered) >= 1)
    assert other.delivered[0].short_message == "你好".encode("utf-16-be")
    assert other.delivered[0].data_coding == 8
    for c in (rx, other, tx):
        c.close()


# --- clean unbinds ---------------------------------------------------------------------------
def test_clean_unbinds_free_their_bind_slot(stack):
    st = stack["start"]()
    for _ in range(6):        # max_binds = 4
        Raw(st["port"], C.BIND_RECEIVER).unbind()
