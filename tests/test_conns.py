"""Connection caps and the quiet log (proxyd/conns.py), their config keys, and the SMPP and
HTTP adapters' use of them, without sockets (a fake clock, string transports)."""
from __future__ import annotations

import pytest
from twisted.internet import address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import resource

from proxyd import config
from proxyd.config import HttpConfig, SmppConfig
from proxyd.conns import MAX_CONNECTIONS, MAX_PER_ADDRESS, MAX_UNBOUND, Caps, QuietLog
from proxyd.http.api import make_site
from proxyd.smpp.server import ClientFactory

from proxyd.smpp import pdu as P

from .test_server_unit import HeldRelay, Registry


def bind_pdu() -> bytes:
    return P.encode(P.BindTransmitter(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b""))


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, fmt: str, **kw) -> None:
        self.lines.append(fmt.format(**kw))


# --- Caps ------------------------------------------------------------------------------------

def test_caps_total_per_address_and_unbound():
    c = Caps()
    assert c.admit("a", 3, 2, 0) == "" and c.admit("a", 3, 2, 0) == ""
    assert c.admit("a", 3, 2, 0) == MAX_PER_ADDRESS
    assert c.admit("b", 3, 2, 0) == ""
    assert c.admit("c", 3, 2, 0) == MAX_CONNECTIONS
    c.release("a")
    assert c.admit("c", 3, 2, 0) == "" and c.by_address == {"a": 1, "b": 1, "c": 1}


def test_caps_unbound_places_come_back_on_bind_and_on_close():
    c = Caps()
    assert [c.admit(h, 10, 10, 2) for h in "abc"] == ["", "", MAX_UNBOUND]
    c.bound()                                   # "a" bound
    assert c.admit("c", 10, 10, 2) == ""
    c.release("c", unbound=True)
    c.release("a")
    assert (c.total, c.unbound, c.by_address) == (1, 1, {"b": 1})


# --- QuietLog --------------------------------------------------------------------------------

def test_quiet_log_one_line_per_address_per_interval_and_a_count_of_the_rest():
    clock, out = Clock(), Lines()
    q = QuietLog(out, clock, 60.0, what="lines")
    for _ in range(100):
        q("1.2.3.4", "refused {host}", host="1.2.3.4")
    q("5.6.7.8", "refused {host}", host="5.6.7.8")
    assert out.lines == ["refused 1.2.3.4", "refused 5.6.7.8"]
    q.flush()                                   # the interval has not passed: nothing yet
    assert len(out.lines) == 2
    clock.advance(61)
    q.flush()
    assert out.lines[2] == "99 more lines not logged in the last 61s"
    q("1.2.3.4", "refused {host}", host="1.2.3.4")
    assert out.lines[3] == "refused 1.2.3.4"
    clock.advance(61)
    q.flush()
    assert len(out.lines) == 4                  # nothing suppressed: no count line


def test_quiet_log_remembers_a_bounded_number_of_addresses():
    clock, out = Clock(), Lines()
    q = QuietLog(out, clock, 60.0, max_keys=10)
    for i in range(1000):
        q("10.0.%d.%d" % (i // 256, i % 256), "x")
    assert len(out.lines) == 10 and q.suppressed == 990 and len(q._last) == 10
    clock.advance(61)
    q.flush()
    assert q._last == {}


# --- config --------------------------------------------------------------------------------

@pytest.mark.parametrize("section,keys,error", [
    ("smpp", {"max_connections": 0}, "smpp.max_connections: must be >= 1"),
    ("smpp", {"max_connections": 10, "max_connections_per_address": 20},
     "smpp.max_connections_per_address: must be <= smpp.max_connections (10), got 20"),
    ("smpp", {"max_connections": 10, "max_connections_per_address": 5, "max_unbound": 20},
     "smpp.max_unbound: must be <= smpp.max_connections (10), got 20"),
    ("smpp", {"max_unbound": 0}, "smpp.max_unbound: must be >= 1"),
    ("smpp", {"max_unbound_pdu_bytes": 16}, "smpp.max_unbound_pdu_bytes: must be >= 64"),
    ("smpp", {"max_pdu_bytes": 1000, "max_unbound_pdu_bytes": 2000},
     "smpp.max_unbound_pdu_bytes: must be <= smpp.max_pdu_bytes (1000), got 2000"),
    ("http", {"header_timeout_s": 0}, "http.header_timeout_s: must be >= 0.01"),
    ("http", {"max_connections_per_address": 0}, "http.max_connections_per_address: must be"),
    ("log", {"refusal_interval_s": 0}, "log.refusal_interval_s: must be >= 0.01"),
])
def test_config_errors(section, keys, error):
    with pytest.raises(config.ConfigError) as e:
        config.parse({section: keys})
    assert str(e.value).startswith(error), str(e.value)


def test_config_defaults():
    c = config.parse({})
    s = c.smpp
    assert (s.max_connections, s.max_connections_per_address, s.max_unbound,
            s.max_unbound_pdu_bytes) == (1000, 50, 200, 512)
    assert (c.http.header_timeout_s, c.http.max_connections,
            c.http.max_connections_per_address) == (10.0, 1000, 100)


# --- SMPP adapter ----------------------------------------------------------------------------

def smpp_conn(f: ClientFactory, host: str) -> tuple:
    t = StringTransport(peerAddress=address.IPv4Address("TCP", host, 40000))
    s = f.buildProtocol(None)
    s.makeConnection(t)
    return s, t


def test_smpp_refused_connection_is_aborted_before_reading_and_not_counted():
    clock = Clock()
    f = ClientFactory(SmppConfig(max_connections=10, max_connections_per_address=2,
                                 max_unbound=10), Registry(), HeldRelay(), clock,
                      auth=Registry())
    kept = [smpp_conn(f, "10.0.0.1") for _ in range(2)]
    s, t = smpp_conn(f, "10.0.0.1")
    assert t.disconnected and s not in f.sessions and not s.admitted
    s.dataReceived(bind_pdu())                  # nothing is read from it
    assert t.value() == b""
    s.connectionLost(None)
    assert f.caps.total == 2 and f.caps.by_address == {"10.0.0.1": 2}
    assert all(not tt.disconnected for _, tt in kept)
    kept[0][0].connectionLost(None)
    assert f.caps.total == 1 and f.caps.unbound == 1
    assert not smpp_conn(f, "10.0.0.1")[1].disconnected


def test_smpp_bind_gives_the_unbound_place_back():
    clock = Clock()
    f = ClientFactory(SmppConfig(max_connections=10, max_connections_per_address=10,
                                 max_unbound=1), Registry(), HeldRelay(), clock,
                      auth=Registry())
    s, t = smpp_conn(f, "10.0.0.1")
    assert smpp_conn(f, "10.0.0.2")[1].disconnected  # the one unbound place is taken
    s.dataReceived(bind_pdu())
    assert s.account is not None and f.caps.unbound == 0
    assert not smpp_conn(f, "10.0.0.2")[1].disconnected
    s.connectionLost(None)
    assert f.caps.total == 1 and f.caps.unbound == 1


# --- HTTP adapter ----------------------------------------------------------------------------

class Hello(resource.Resource):
    isLeaf = True

    def render(self, request):
        return b"hello"


def http_conn(site, host: str = "10.0.0.1") -> tuple:
    t = StringTransport(peerAddress=address.IPv4Address("TCP", host, 40000))
    ch = site.buildProtocol(None)
    ch.makeConnection(t)
    return ch, t


def site(clock: Clock, **kw):
    return make_site(Hello(), HttpConfig(header_timeout_s=5.0, **kw), clock)


def test_http_request_dripped_in_is_cut_at_the_header_timeout():
    clock = Clock()
    ch, t = http_conn(site(clock))
    for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200:
        ch.dataReceived(bytes([b]))
        clock.advance(0.1)                       # each byte would restart the idle timer
        if t.disconnected:
            break
    assert t.disconnected and t.value() == b""


def test_http_whole_request_answered_and_the_next_one_gets_its_own_timer():
    clock = Clock()
    ch, t = http_conn(site(clock))
    clock.advance(4)
    ch.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"hello" in t.value()
    clock.advance(60)                            # idle between requests: not this timer
    assert not t.disconnected
    ch.dataReceived(b"GET / HTTP/1.1\r\n")       # the next request starts its own clock
    clock.advance(4.9)
    assert not t.disconnected
    clock.advance(0.2)
    assert t.disconnected


def test_http_post_body_must_arrive_within_the_timeout_too():
    clock = Clock()
    ch, t = http_conn(site(clock))
    ch.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    clock.advance(5.1)
    assert t.disconnected and b"hello" not in t.value()


def test_http_per_address_cap():
    clock = Clock()
    s = site(clock, max_connections=10, max_connections_per_address=2)
    kept = [http_conn(s, "10.0.0.1") for _ in range(2)]
    ch, t = http_conn(s, "10.0.0.1")
    assert t.disconnected
    ch.connectionLost(None)
    assert not http_conn(s, "10.0.0.2")[1].disconnected
    kept[0][0].connectionLost(None)
    assert not http_conn(s, "10.0.0.1")[1].disconnected


def test_http_idle_close_writes_no_info_line():
    from twisted.logger import globalLogPublisher
    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        clock = Clock()
        ch, t = http_conn(site(clock))
        ch.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(121)                       # Twisted's idle timer (120 s)
        assert t.disconnecting
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert not [e for e in seen if e.get("log_level") is not None
                and e["log_level"].name != "debug"], seen
