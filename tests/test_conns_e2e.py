"""Issue 15 item 2 over real sockets: connection caps, the bind-sized PDU before a bind, the
HTTP header timeout (slowloris), the rate-limited lines about unauthenticated peers.

Distinct loopback source addresses (127.0.0.2, 127.0.0.10, ...) play the attackers while
127.0.0.1 is the legitimate client. One stack serves the module; each test uses its own
addresses and closes what it opened (waiting until the node has counted it gone), so the
caps one test fills are free again for the next.
"""
from __future__ import annotations

import http.client
import select
import socket
import struct

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .conftemplate import config_text, listen
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config

PER_ADDRESS = 3
MAX_UNBOUND = 6
SMPP = {"max_connections": 40, "max_connections_per_address": PER_ADDRESS,
        "max_unbound": MAX_UNBOUND, "max_unbound_pdu_bytes": 512, "bind_timeout_s": 120}
HTTP = {"header_timeout_s": 1.0, "max_connections": 40,
        "max_connections_per_address": PER_ADDRESS}
LOG = {"refusal_interval_s": 3600}
BALANCE = "/balance?username=acme&password=s3cret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conns")
    sim, sim_port, _record = start_sim(tmp)
    port, hport = free_port(), free_port()
    cfg = write_config(tmp, config_text(port, sim_port, smpp=SMPP,
                                        http={"listen": listen(hport), **HTTP}, log=LOG,
                                        relay={"queue_wait_s": 0.5}))
    proxyd = start_proxyd(tmp, cfg, hport)
    try:
        wait_until(lambda: "upstream sim bound" in proxyd.text(), "upstream bind", 20)
        admin(tmp, cfg, "topup", "acme", "100000")
        yield {"port": port, "http": hport, "proxyd": proxyd}
    finally:
        proxyd.stop()
        sim.stop()


# --- raw SMPP over sockets from a chosen source address -------------------------------------

def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(15)
    s.bind((source, 0))
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionResetError:            # refused so fast that connect() saw the reset
        pass
    return s


def recv_exact(s: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = s.recv(n - len(data))
        except TimeoutError:
            raise
        except OSError:                     # reset, or never connected (see `connect`)
            return None
        if not chunk:
            return None
        data += chunk
    return data


def read_pdu(s: socket.socket):
    """The next PDU, or None when the peer closed the connection."""
    hdr = recv_exact(s, 16)
    if hdr is None:
        return None
    body = recv_exact(s, struct.unpack(">I", hdr[:4])[0] - 16)
    return None if body is None else P.decode(hdr + body)


def served(s: socket.socket, seq: int = 7) -> bool:
    """An enquire_link is answered (the node kept this connection); False if it closed it."""
    try:
        s.sendall(P.encode(P.EnquireLink(seq=seq)))
    except TimeoutError:
        raise
    except OSError:
        return False
    r = read_pdu(s)
    if r is None:
        return False
    assert (r.command_id, r.seq) == (C.ENQUIRE_LINK_RESP, seq)
    return True


def is_closed(s: socket.socket) -> bool:
    """The node closed the connection without a word (nothing to read but the end)."""
    return recv_exact(s, 1) is None


def bind(s: socket.socket) -> None:
    s.sendall(P.encode(P.BindTransceiver(1, 0, b"acme", b"s3cret", b"", 0x34, 0, 0, b"")))
    r = read_pdu(s)
    assert r is not None and r.status == 0, r


def submit_ok(s: socket.socket, seq: int, dest: bytes = b"13800138000", **kw) -> int:
    s.sendall(P.encode(P.SubmitSm(seq=seq, source_addr=b"10690001", destination_addr=dest,
                                  **kw)))
    while True:
        r = read_pdu(s)
        assert r is not None, "closed before the submit_sm_resp"
        if r.command_id == C.SUBMIT_SM_RESP:
            assert r.seq == seq
            return r.status


def close_all(socks: list) -> None:
    for s in socks:
        s.close()


def refusals(stack, host: str) -> int:
    return stack["proxyd"].text().count("connection from %s:" % host)


def reconnects(port: int, source: str, n: int = 1) -> bool:
    """`n` fresh connections from `source` are served and bind (so the node counted the old
    ones gone); bound, they hold no unbound place when the next test starts."""
    socks = [connect(port, source) for _ in range(n)]
    try:
        if not all(served(s) for s in socks):
            return False
        for s in socks:
            s.sendall(P.encode(P.BindTransmitter(1, 0, b"acme", b"s3cret", b"", 0x34, 0, 0,
                                                 b"")))
            r = read_pdu(s)
            if r is None or r.status != 0:
                return False
        return True
    finally:
        close_all(socks)


# --- SMPP ----------------------------------------------------------------------------------

def test_per_address_cap_refuses_the_next_while_another_address_is_served(stack):
    port = stack["port"]
    mine = [connect(port, "127.0.0.2") for _ in range(PER_ADDRESS)]
    assert all(served(s) for s in mine)
    extra = [connect(port, "127.0.0.2") for _ in range(5)]
    assert all(is_closed(s) for s in extra)
    legit = connect(port)                      # 127.0.0.1: still served, binds and submits
    bind(legit)
    assert submit_ok(legit, 2, short_message=b"hello") == 0
    assert all(served(s, 9) for s in mine)     # the admitted ones were not disturbed
    # five refusals from one address, one line in the log (rate-limited per address)
    wait_until(lambda: refusals(stack, "127.0.0.2") >= 1, "a refusal line")
    assert refusals(stack, "127.0.0.2") == 1
    close_all(extra + mine + [legit])
    wait_until(lambda: reconnects(port, "127.0.0.2", PER_ADDRESS), "127.0.0.2 served again")


def test_unbound_connections_are_capped_and_a_client_still_binds_and_submits(stack):
    port = stack["port"]
    legit = connect(port)                      # connected before the flood, not bound yet
    assert served(legit)
    flood = [connect(port, "127.0.0.%d" % (10 + i // PER_ADDRESS))
             for i in range(4 * PER_ADDRESS)]
    kept = [s for s in flood if served(s)]
    # the legitimate connection holds one unbound place; the flood gets the others only
    assert len(kept) == MAX_UNBOUND - 1
    assert len(flood) - len(kept) == 4 * PER_ADDRESS - (MAX_UNBOUND - 1)
    bind(legit)
    assert submit_ok(legit, 2, short_message=b"through the flood") == 0
    # bound, the legitimate connection gave its unbound place back: one more may wait
    late = connect(port, "127.0.0.14")
    assert served(late)
    also = connect(port, "127.0.0.15")
    assert is_closed(also)
    for i in range(4):
        assert refusals(stack, "127.0.0.%d" % (10 + i)) <= 1
    close_all(flood + [legit, late, also])
    wait_until(lambda: reconnects(port, "127.0.0.16"), "unbound places free again")


def test_unbound_big_command_length_is_cut_off_without_waiting_for_the_body(stack):
    port = stack["port"]
    s = connect(port, "127.0.0.20")
    # 600 octets announced, only the header sent: the node must not wait for the rest
    s.sendall(struct.pack(">IIII", 600, C.SUBMIT_SM, 0, 42))
    r = read_pdu(s)
    assert r is not None, "closed without an answer"
    assert (r.command_id, r.status, r.seq) == (C.GENERIC_NACK,
                                               C.STATUS["ESME_RINVCMDLEN"], 42)
    assert is_closed(s)
    s.close()
    # a bound client may send a PDU of that size
    b = connect(port, "127.0.0.20")
    bind(b)
    big = dict(tlvs=((C.TAG_MESSAGE_PAYLOAD, b"a" * 600),))
    assert len(P.encode(P.SubmitSm(seq=3, source_addr=b"10690001",
                                   destination_addr=b"13800138000", **big))) > 600
    assert submit_ok(b, 3, **big) == 0
    b.close()


# --- HTTP ----------------------------------------------------------------------------------

def http_get(port: int, path: str, source: str = "127.0.0.1",
             conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=15,
                                           source_address=(source, 0))
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, body


def test_slowloris_is_cut_off_while_a_normal_request_is_answered(stack):
    port = stack["http"]
    s = connect(port, "127.0.0.30")
    request = b"GET " + BALANCE.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
    s.sendall(request[:1])
    answered = http_get(port, BALANCE)           # while the slow one is connected
    closed = False

    def dripped_out() -> bool:
        # one byte, then a short look for the end: the node must drop us although bytes
        # keep coming (the idle timer alone would restart on each)
        nonlocal closed
        try:
            s.sendall(request[dripped_out.i:dripped_out.i + 1])
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            return True
        dripped_out.i += 1
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            closed = recv_exact(s, 1) is None
            return closed
        return False
    dripped_out.i = 1
    wait_until(dripped_out, "the slow request cut off", 60)
    assert closed
    assert dripped_out.i < len(request)        # cut off before its headers were whole
    assert answered[0] == 200, answered
    s.close()


def test_http_per_address_cap(stack):
    port = stack["http"]
    # three keep-alive connections, each with a whole request answered, then idle
    held = [http.client.HTTPConnection("127.0.0.1", port, timeout=15,
                                       source_address=("127.0.0.31", 0)) for _ in range(3)]
    for c in held:
        assert http_get(port, BALANCE, conn=c)[0] == 200
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError)):
        http_get(port, BALANCE, "127.0.0.31")
    assert http_get(port, BALANCE)[0] == 200        # another address is served
    assert all(http_get(port, BALANCE, conn=c)[0] == 200 for c in held)
    for c in held:
        c.close()

    def again() -> bool:
        try:
            return http_get(port, BALANCE, "127.0.0.31")[0] == 200
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return False
    wait_until(again, "127.0.0.31 served again")
