"""Issue 15, item 3 over real sockets: the store cannot be filled for free by long-message
parts. The first part reserves the whole message (and is refused if the balance does not
cover it), completion charges those reservations once, an incomplete message gives them
back ("released incomplete"), each account has caps on pending parts and octets, only what
the relay needs of a part is kept, and a full store refuses with ESME_RSYSERR while what it
already kept completes. Deadlines are limits on waiting."""
from __future__ import annotations

import json
import random
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request

import pytest
import valkey

from proxyd.gate.reassembly import slim_value
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.store.embedded import socket_path_for
from proxyd.text.udh import concat_udh

from .conftemplate import config_text, listen
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, \
    write_config

S = C.STATUS
PRICE = 5


def part_pdu(src: bytes, dest: bytes, ref: int, total: int, seq: int, text: str = "",
             **kw) -> P.SubmitSm:
    chunk = (text or "第%d部分的内容" % seq).encode("utf-16-be")
    return P.SubmitSm(source_addr=src, dest_addr_ton=1, destination_addr=dest,
                      esm_class=0x40, data_coding=8,
                      short_message=concat_udh(ref, total, seq) + chunk, **kw)


# one part as the "bytes" account sends it: its cap holds two kept parts, not three
SIZED = part_pdu(b"10690005", b"13800000005", 1, 2, 1)
BYTES_CAP = 2 * len(slim_value(SIZED)) + len(slim_value(SIZED)) // 2


class Client:
    """One transceiver bind over a plain socket."""

    def __init__(self, port: int, system_id: bytes) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.seq = 1
        self.s.sendall(P.encode(P.BindTransceiver(1, 0, system_id, b"pw", b"", 0x34, 0, 0,
                                                  b"")))
        assert self.read().status == 0

    def read(self):
        hdr = self._exact(16)
        return P.decode(hdr + self._exact(struct.unpack(">I", hdr[:4])[0] - 16))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            assert chunk, "connection closed"
            buf += chunk
        return buf

    def send(self, pdu):
        """Send a PDU, return its resp (answering deliveries on the way)."""
        self.seq += 1
        seq = self.seq
        self.s.sendall(P.encode(pdu._replace(seq=seq)))
        while True:
            r = self.read()
            if r.command_id in (C.DELIVER_SM, C.DATA_SM):
                self.s.sendall(P.encode(P.resp_class(r.command_id)(r.seq, 0)))
            elif r.seq == seq and r.command_id & C.RESP_BIT:
                return r

    def close(self) -> None:
        self.s.close()


def account(sid: str, code: str, **over) -> dict:
    return {"system_id": sid, "password": "pw", "service_codes": [code], "price": PRICE,
            **over}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("storegrowth")
    sim, sim_port, record = start_sim(tmp)
    port, hport = free_port(), free_port()
    from .procs import FILTERS
    cfg = write_config(tmp, config_text(
        port, sim_port, http={"listen": listen(hport)},
        # the ledger's sweeper takes reservations a second old: not those of kept messages
        store={"dir": tmp / "store", "reservation_max_age_s": 1, "sweep_interval_s": 0.5},
        policy={"filters_dir": FILTERS, "reassembly_timeout_s": 3},
        upstream={"password": None},
        account={"password": "pw", "price": PRICE},
        accounts=[account("poor", "10690002"), account("lazy", "10690003"),
                  account("capped", "10690004", max_pending_parts=3),
                  account("bytes", "10690005", max_pending_bytes=BYTES_CAP),
                  account("hcap", "10690006", max_pending_parts=1),
                  account("hpoor", "10690007"), account("canary", "10690008")]))
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: "upstream sim bound" in proxyd.text(), "upstream bind", 20)
        for acct in ("acme", "lazy", "capped", "bytes", "hcap"):
            admin(tmp, cfg, "topup", acct, "10000")
        admin(tmp, cfg, "topup", "poor", str(8 * PRICE))
        yield {"port": port, "http": hport, "record": record, "proxyd": proxyd, "tmp": tmp, "cfg": cfg}
    finally:
        proxyd.stop()
        sim.stop()


def balance(stack, acct: str) -> int:
    return int(admin(stack["tmp"], stack["cfg"], "balance", acct).stdout.split()[-1])


def report(stack, acct: str) -> dict:
    return json.loads(admin(stack["tmp"], stack["cfg"], "report", acct, "--json").stdout)


def trace(stack, mid: bytes) -> str:
    return admin(stack["tmp"], stack["cfg"], "trace", mid.decode()).stdout


def settled(stack, acct: str, ids: list) -> bool:
    """None of `ids` has an open reservation any more (read from the store)."""
    store = valkey.Valkey(unix_socket_path=socket_path_for(str(stack["tmp"] / "store")),
                          decode_responses=True)
    try:
        return not any(store.hmget("res:{%s}" % acct, [m.decode() for m in ids]))
    finally:
        store.close()


def relayed(stack) -> list:
    """Every PDU the simulator accepted (decoded from its record)."""
    return [P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"]))
            for x in read_record(stack["record"])]


def test_first_part_reserves_the_whole_message_completion_charges_once(stack):
    c = Client(stack["port"], b"acme")
    before = balance(stack, "acme")
    ref = random.randrange(1, 250)
    dest = b"13800000001"
    parts = [part_pdu(b"10690001", dest, ref, 3, i) for i in (1, 2, 3)]
    r1 = c.send(parts[0])
    assert r1.status == 0
    assert balance(stack, "acme") == before - 3 * PRICE     # all three, with the first
    # the ledger's sweeper runs meanwhile (it refunds a stale reservation of "canary"),
    # and leaves those of the kept message alone: they are dated when it is due
    store = valkey.Valkey(unix_socket_path=socket_path_for(str(stack["tmp"] / "store")),
                          decode_responses=True)
    try:
        store.hset("res:{canary}", "stale", "%d:1000" % PRICE)
    finally:
        store.close()
    wait_until(lambda: balance(stack, "canary") == PRICE, "a sweep of the ledger", 15)
    assert balance(stack, "acme") == before - 3 * PRICE
    ids = [r1.message_id] + [c.send(p).message_id for p in parts[1:]]
    assert len(set(ids)) == 3
    wanted = {p.short_message for p in parts}
    wait_until(lambda: len(wanted & {x.short_message for x in relayed(stack)}) == 3,
               "the three parts at the simulator", 15)
    wait_until(lambda: settled(stack, "acme", ids), "every part settled", 15)
    for m in ids:
        t = trace(stack, m)
        assert t.count("\treserved\t") == 1 and t.count("\tcommitted\t") == 1, t
        assert "\trefunded\t" not in t and "outcome unknown" not in t, t
    assert balance(stack, "acme") == before - 3 * PRICE     # charged once, not twice
    rep = report(stack, "acme")
    assert rep["ok"], rep["failures"]
    assert admin(stack["tmp"], stack["cfg"], "verify", "acme", check=False).returncode == 0
    c.close()


def test_a_first_part_the_balance_does_not_cover_is_refused(stack):
    """poor has 8 parts' worth. A 9-part message is refused at its first part (and at every
    other), nothing is kept; an 8-part one takes it all; then nothing else is paid for."""
    c = Client(stack["port"], b"poor")
    ref = random.randrange(1, 250)
    dest = b"13800000002"
    for seq in (1, 2, 9):
        r = c.send(part_pdu(b"10690002", dest, ref, 9, seq))
        assert r.status == S["PROXYD_RNOBALANCE"], C.status_name(r.status)
    assert balance(stack, "poor") == 8 * PRICE
    ref2 = (ref + 1) % 250 + 1
    assert c.send(part_pdu(b"10690002", dest, ref2, 8, 1)).status == 0
    assert balance(stack, "poor") == 0
    other = c.send(part_pdu(b"10690002", dest, (ref2 + 1) % 250 + 1, 2, 1))
    assert other.status == S["PROXYD_RNOBALANCE"]
    short = c.send(P.SubmitSm(source_addr=b"10690002", destination_addr=dest,
                              short_message=b"short"))
    assert short.status == S["PROXYD_RNOBALANCE"]
    assert "balance 0 does not cover 2 parts" in stack["proxyd"].text()
    c.close()


def test_an_incomplete_message_gives_its_reservation_back(stack):
    c = Client(stack["port"], b"lazy")
    before = balance(stack, "lazy")
    ref = random.randrange(1, 250)
    dest = b"13800000003"
    ids = [c.send(part_pdu(b"10690003", dest, ref, 3, i, registered_delivery=1)).message_id
           for i in (1, 3)]
    assert all(ids)
    assert balance(stack, "lazy") == before - 3 * PRICE
    wait_until(lambda: settled(stack, "lazy", ids), "the reservation given back", 20)
    assert balance(stack, "lazy") == before
    for m in ids:
        assert "released incomplete" in trace(stack, m)
    rep = report(stack, "lazy")
    assert rep["ok"], rep["failures"]
    assert rep["parts"]["refused_by_reason"].get("incomplete") == 3
    assert rep["parts"]["released_unrelayed"] == 3 and rep["amounts"]["charged"] == 0
    c.close()


def test_pending_parts_cap_refuses_with_msgqful_and_one_log_line(stack):
    c = Client(stack["port"], b"capped")
    dest = b"13800000004"
    base = random.randrange(1, 200)
    for k in range(3):      # three messages waiting for their second part: the cap
        assert c.send(part_pdu(b"10690004", dest, base + k, 2, 1)).status == 0
    for k in range(3, 8):
        r = c.send(part_pdu(b"10690004", dest, base + k, 2, 1))
        assert r.status == S["ESME_RMSGQFUL"], C.status_name(r.status)
    log = stack["proxyd"].text()
    assert log.count("refused capped: a part of a long message over the pending caps") == 1
    # a part that completes a message is taken even at the cap, and frees its room
    assert c.send(part_pdu(b"10690004", dest, base, 2, 2)).status == 0
    assert c.send(part_pdu(b"10690004", dest, base + 9, 2, 1)).status == 0
    c.close()


def test_pending_bytes_cap(stack):
    c = Client(stack["port"], b"bytes")
    base = random.randrange(1, 200)
    for k in range(2):
        assert c.send(SIZED._replace(short_message=concat_udh(base + k, 2, 1)
                                     + SIZED.short_message[6:])).status == 0
    r = c.send(SIZED._replace(short_message=concat_udh(base + 2, 2, 1)
                              + SIZED.short_message[6:]))
    assert r.status == S["ESME_RMSGQFUL"], C.status_name(r.status)
    c.close()


def kannel(stack, user: str, code: str, ref: int, seq: int) -> tuple[int, str]:
    """A Kannel sendsms of part `seq` of a 2-part message (a concatenation UDH)."""
    q = {"username": user, "password": "pw", "from": code, "to": "13800000008",
         "text": "part %d" % seq, "udh": concat_udh(ref, 2, seq)}
    url = "http://127.0.0.1:%d/cgi-bin/sendsms?%s" % (stack["http"], urllib.parse.urlencode(q))
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_parts_get_the_http_twins(stack):
    """The same rules on the HTTP road: over the pending cap 503 (try again later), a first
    part the balance does not cover 402."""
    assert kannel(stack, "hcap", "10690006", 31, 1)[0] == 202
    assert kannel(stack, "hcap", "10690006", 32, 1) == (503, "Temporal failure, try again "
                                                             "later.")
    status, body = kannel(stack, "hpoor", "10690007", 33, 1)
    assert status == 402 and "balance" in body.lower(), body


def test_only_what_the_relay_needs_is_kept(stack):
    """A part carrying 4,000 octets of a TLV the relay ignores is kept without it (the port
    TLV stays), and relayed so."""
    c = Client(stack["port"], b"acme")
    ref = random.randrange(1, 250)
    dest = b"13800000006"
    junk = (0x1500, b"J" * 4000)
    port = (0x020B, b"\x0b\x84")
    p1 = part_pdu(b"10690001", dest, ref, 2, 1, "[slim]一", tlvs=(junk, port))
    assert c.send(p1).status == 0
    store = valkey.Valkey(unix_socket_path=socket_path_for(str(stack["tmp"] / "store")),
                          decode_responses=True)
    try:
        key = "cc:{acme}:10690001:%s:u8%d" % (dest.decode(), ref)
        kept = store.hgetall(key)
        assert kept["1"] == slim_value(p1) and len(kept["1"]) < 200, kept
        assert set(kept) == {"t", "n", "c", "i", "1"}
        assert store.hget("ccpend:{acme}", "b") is not None
    finally:
        store.close()
    assert c.send(part_pdu(b"10690001", dest, ref, 2, 2, "[slim]二")).status == 0
    wait_until(lambda: any(x.short_message == p1.short_message for x in relayed(stack)),
               "the part at the simulator", 15)
    sent = next(x for x in relayed(stack) if x.short_message == p1.short_message)
    assert dict(sent.tlvs) == {0x020B: b"\x0b\x84"}
    c.close()


def test_a_full_store_refuses_parts_and_keeps_what_it_has(tmp_path):
    sim, sim_port, record = start_sim(tmp_path)
    port = free_port()
    from .procs import FILTERS
    cfg = write_config(tmp_path, config_text(
        port, sim_port, store={"dir": tmp_path / "store", "maxmemory": "4mb"},
        policy={"filters_dir": FILTERS, "reassembly_timeout_s": 30},
        upstream={"password": None}, account={"password": "pw", "price": PRICE}))
    proxyd = start_proxyd(tmp_path, cfg, port)
    store = None
    try:
        wait_until(lambda: "upstream sim bound" in proxyd.text(), "upstream bind", 20)
        admin(tmp_path, cfg, "topup", "acme", "10000")
        c = Client(port, b"acme")
        dest = b"13800000007"
        a1, a2 = (part_pdu(b"10690001", dest, 11, 2, i, "[kept]%d" % i) for i in (1, 2))
        assert c.send(a1).status == 0
        store = valkey.Valkey(unix_socket_path=socket_path_for(str(tmp_path / "store")),
                              decode_responses=True)
        filled = [0]

        def fill() -> None:
            """SET until the store refuses, in ever smaller values: full to the last
            octets (a freed buffer does not leave room for a part)."""
            for size in (100000, 1000, 10):
                while True:
                    try:
                        store.set("filler:%d" % filled[0], "x" * size)
                    except valkey.exceptions.OutOfMemoryError:
                        break
                    filled[0] += 1
                    assert filled[0] < 10000, "the store never filled"
        for k in range(3):
            fill()
            r = c.send(part_pdu(b"10690001", dest, 20 + k, 2, 1))
            assert r.status == S["ESME_RSYSERR"], C.status_name(r.status)
        assert proxyd.text().count("store full (maxmemory reached") == 1
        # what was kept before is intact, and its message completes on the full store
        assert store.hget("cc:{acme}:10690001:%s:u811" % dest.decode(), "1") == slim_value(a1)
        assert c.send(a2).status == 0
        wait_until(lambda: {a1.short_message, a2.short_message} <= {
            P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message
            for x in read_record(record)}, "both parts at the simulator", 15)
        c.close()
    finally:
        if store is not None:
            store.close()
        proxyd.stop()
        sim.stop()
