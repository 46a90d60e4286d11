"""Callbacks over real sockets (issue 15, item 5): the real CallbackClient and DlrCaller
against a twisted.web receiver on 127.0.0.1 in the same reactor; the queue is in memory.

Deadlines here are the call's own deadline (what is under test), never measurements: each
test asserts what happened (called or not, failed, slot given back)."""
from __future__ import annotations

import gzip
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web import resource, server

from proxyd.http.callclient import CallbackClient, Deadline, Refused, TooLarge
from proxyd.http.dlr import DlrCaller, Request

OK_MO = {"api": "mo", "acct": "a"}
FACTS = {"from": "13800138000", "to": "10690001", "text": "hello", "dc": 0, "upstream": "sim",
         "id": "m1", "ts": 0}


class Receiver(resource.Resource):
    """Paths: /ok (200 OK), /redirect (302 to /target), /target, /stuck (never answers),
    /slow (headers and a few octets, then nothing), /huge (100 KiB), /chunked (120 KB,
    chunked, no Content-Length), /gzip (a gzip body).
    Every request is recorded as (path, headers)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, dict]] = []
        self.held: list[Any] = []

    def paths(self) -> list[bytes]:
        return [p for p, _h in self.seen]

    def render(self, request: Any) -> Any:
        path = request.path
        self.seen.append((path, {k.lower(): v[0] for k, v in
                                 request.requestHeaders.getAllRawHeaders()}))
        if path == b"/redirect":
            request.setResponseCode(302)
            request.setHeader(b"location", b"/target")
            return b"moved"
        if path == b"/stuck":
            self.held.append(request)
            return server.NOT_DONE_YET
        if path == b"/slow":
            request.setHeader(b"content-length", b"1000")
            request.write(b"a few")
            self.held.append(request)
            return server.NOT_DONE_YET
        if path == b"/huge":
            return b"x" * (100 * 1024)
        if path == b"/chunked":                  # no Content-Length: counted as it comes
            for _ in range(4):
                request.write(b"y" * 30000)
            request.finish()
            return server.NOT_DONE_YET
        if path == b"/gzip":
            request.setHeader(b"content-encoding", b"gzip")
            return gzip.compress(b"OK" * 10)
        return b"OK"

    def release(self) -> None:
        for r in self.held:
            r.transport.abortConnection()
        self.held = []


class Queue:
    """The store's callback queue, in memory, for several accounts (what DlrCaller uses)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.items: dict[str, dict[str, list]] = {}     # account -> id -> [s, f, n, due]
        self.done: list[str] = []
        self.retried: list[str] = []

    def add(self, account: str, cb_id: str, settings: dict, facts: dict) -> None:
        self.items.setdefault(account, {})[cb_id] = [settings, facts, 0, 0]

    def claim(self, account: str, lease_s: float, count: int) -> defer.Deferred:
        now = self.clock.seconds() * 1000
        out = []
        for cb_id, it in self.items.get(account, {}).items():
            if it[3] <= now and len(out) < count:
                it[3] = now + lease_s * 1000
                out.append((cb_id, it[0], it[1], it[2]))
        return defer.succeed(out)

    def callback_done(self, account: str, cb_id: str) -> defer.Deferred:
        self.items[account].pop(cb_id, None)
        self.done.append(cb_id)
        return defer.succeed(None)

    def callback_retry(self, account: str, cb_id: str, due_ms: int) -> defer.Deferred:
        it = self.items[account][cb_id]
        it[2] += 1
        it[3] = due_ms
        self.retried.append(cb_id)
        return defer.succeed(None)


def failure(d: defer.Deferred) -> defer.Deferred:
    """The exception `d` fails with (an AssertionError if it succeeds)."""
    return d.addCallbacks(lambda r: AssertionError("succeeded: %r" % (r,)), lambda f: f.value)


def until(check: Any, limit_s: float = 10.0) -> defer.Deferred:
    """Fires once check() is true (polled; `limit_s` only bounds the wait)."""
    @defer.inlineCallbacks
    def wait() -> Any:
        for _ in range(int(limit_s / 0.02)):
            if check():
                return
            yield task.deferLater(reactor, 0.02, lambda: None)
        raise AssertionError("condition not reached")
    return wait()


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.rx = Receiver()
        site = server.Site(self.rx)
        site.log = lambda *a: None
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.base = "http://127.0.0.1:%d" % self.port.getHost().port
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.rx.release)

    def client(self, allow: tuple = None, timeout_s: float = 5.0, **kw: Any) -> CallbackClient:
        return CallbackClient(reactor, allow=(self.base + "/",) if allow is None else allow,
                              timeout_s=timeout_s, **kw)

    def mo(self, path: str) -> dict:
        return dict(OK_MO, url=self.base + path + "?from=%p")


class ClientTests(Base):
    @defer.inlineCallbacks
    def test_loopback_refused_without_allow_called_with_it(self):
        f = yield failure(self.client(allow=()).call(Request("GET", self.base + "/ok")))
        self.assertTrue(isinstance(f, Refused))
        self.assertEqual(self.rx.seen, [])
        code, body = yield self.client().call(Request("GET", self.base + "/ok"))
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual(self.rx.paths(), [b"/ok"])

    @defer.inlineCallbacks
    def test_a_name_is_connected_to_the_checked_address(self):
        asked = []

        def resolve(host: str, port: int) -> defer.Deferred:
            asked.append(host)
            return defer.succeed(["127.0.0.1"])

        port = self.port.getHost().port
        # a name resolving to loopback: refused without a prefix, never connected
        f = yield failure(self.client(allow=(), resolve=resolve).call(
            Request("GET", "http://cb.test:%d/ok" % port)))
        self.assertTrue(isinstance(f, Refused))
        self.assertEqual(self.rx.seen, [])
        # allowed: resolved once, the connection goes to that address, the Host is the name
        c = self.client(allow=("http://cb.test:%d/" % port,), resolve=resolve)
        code, _b = yield c.call(Request("POST", "http://cb.test:%d/ok" % port, b"a=1"))
        self.assertEqual(code, 200)
        self.assertEqual(asked, ["cb.test", "cb.test"])
        headers = self.rx.seen[0][1]
        self.assertEqual(headers[b"host"], b"cb.test:%d" % port)
        self.assertEqual(headers[b"accept-encoding"], b"identity")
        self.assertEqual(headers[b"content-type"], b"application/x-www-form-urlencoded")

    @defer.inlineCallbacks
    def test_the_next_checked_address_when_one_refuses_connections(self):
        # the receiver listens on 127.0.0.1 only: 127.0.0.3 refuses the connection
        def resolve(host: str, port: int) -> defer.Deferred:
            return defer.succeed(["127.0.0.3", "127.0.0.1"])

        port = self.port.getHost().port
        c = self.client(allow=("http://cb.test:",), resolve=resolve)
        code, _b = yield c.call(Request("GET", "http://cb.test:%d/ok" % port))
        self.assertEqual(code, 200)
        self.assertEqual(self.rx.paths(), [b"/ok"])

    @defer.inlineCallbacks
    def test_redirect_not_followed(self):
        code, _b = yield self.client().call(Request("GET", self.base + "/redirect"))
        self.assertEqual(code, 302)
        yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.rx.paths(), [b"/redirect"])

    @defer.inlineCallbacks
    def test_body_never_decompressed(self):
        code, body = yield self.client().call(Request("GET", self.base + "/gzip"))
        self.assertEqual((code, body), (200, gzip.compress(b"OK" * 10)))
        self.assertEqual(self.rx.seen[0][1][b"accept-encoding"], b"identity")

    @defer.inlineCallbacks
    def test_huge_body_fails(self):
        f = yield failure(self.client().call(Request("GET", self.base + "/huge")))
        self.assertTrue(isinstance(f, TooLarge))
        # without a Content-Length, the limit is counted as the body arrives
        f = yield failure(self.client().call(Request("GET", self.base + "/chunked")))
        self.assertTrue(isinstance(f, TooLarge))
        c = self.client(max_body=10)
        f = yield failure(c.call(Request("GET", self.base + "/gzip")))
        self.assertTrue(isinstance(f, TooLarge))

    @defer.inlineCallbacks
    def test_slow_body_fails_at_the_deadline(self):
        f = yield failure(self.client(timeout_s=0.3).call(
            Request("GET", self.base + "/slow")))
        self.assertTrue(isinstance(f, Deadline), f)
        # the connection was closed by proxyd: the receiver sees its request gone
        yield until(lambda: all(r.transport.disconnected for r in self.rx.held))

    @defer.inlineCallbacks
    def test_stuck_answer_fails_at_the_deadline(self):
        f = yield failure(self.client(timeout_s=0.3).call(
            Request("GET", self.base + "/stuck")))
        self.assertTrue(isinstance(f, Deadline), f)
        yield until(lambda: all(r.transport.disconnected for r in self.rx.held))


class CallerTests(Base):
    def caller(self, queue: Queue, accounts: list[str], client: CallbackClient,
               **kw: Any) -> DlrCaller:
        c = DlrCaller(queue, reactor, lambda: accounts, client, max_attempts=3,
                      backoff_s=60, **kw)
        return c

    @defer.inlineCallbacks
    def test_a_thousand_malformed_then_one_good(self):
        q = Queue(reactor)
        bad = ["http://x:y/", "http:///nohost", "ftp://h/", "http://a b/", "http://h:/",
               "http://[::1/", "http://127.0.0.1:1/loop", "http://169.254.169.254/latest",
               "http://10.0.0.1/", "gopher://h/"]
        for i in range(1000):
            q.add("a", "bad%04d" % i, dict(OK_MO, url=bad[i % len(bad)]), FACTS)
        # one whose settings make building the request raise
        q.add("a", "broken", {"api": "jasmin", "url": self.base + "/ok", "level": "x"}, FACTS)
        c = self.caller(q, ["a"], self.client(allow=(self.base + "/ok",)), concurrency=20,
                        per_account=20)
        for _ in range(60):
            c.poll()
            if not q.items["a"]:
                break
        self.assertEqual(q.items["a"], {})
        self.assertEqual(c.inflight, 0)
        self.assertEqual(c.inflight_of, {})
        self.assertEqual(self.rx.seen, [])               # none of them reached anything
        self.assertEqual(c.counters["dlr_refused"], 1000)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)    # "broken", logged
        q.add("a", "good", self.mo("/ok"), FACTS)
        c.poll()
        yield until(lambda: "good" in q.done)
        self.assertEqual(self.rx.paths(), [b"/ok"])
        self.assertEqual(c.inflight, 0)

    @defer.inlineCallbacks
    def test_slow_receivers_fail_and_free_their_slots(self):
        q = Queue(reactor)
        q.add("a", "slow", self.mo("/slow"), FACTS)
        q.add("a", "huge", self.mo("/huge"), FACTS)
        q.add("a", "redirect", self.mo("/redirect"), FACTS)
        c = self.caller(q, ["a"], self.client(timeout_s=0.3), concurrency=3, per_account=3)
        c.poll()
        self.assertEqual(c.inflight, 3)
        yield until(lambda: len(q.retried) == 3)
        self.assertEqual(sorted(q.retried), ["huge", "redirect", "slow"])
        self.assertEqual(c.inflight, 0)
        self.assertNotIn(b"/target", self.rx.paths())
        self.assertEqual(c.counters["dlr_ok"], 0)

    @defer.inlineCallbacks
    def test_one_stuck_account_does_not_block_another(self):
        q = Queue(reactor)
        for i in range(10):
            q.add("stuck", "s%d" % i, self.mo("/stuck"), FACTS)
        q.add("other", "o1", self.mo("/ok"), FACTS)
        c = self.caller(q, ["stuck", "other"], self.client(timeout_s=30), concurrency=4,
                        per_account=2)
        c.kick("stuck")
        c.kick("stuck")
        yield until(lambda: len(self.rx.held) == 2)
        self.assertEqual(c.inflight_of, {"stuck": 2})   # its share, not the node's 4 slots
        c.kick("other")
        yield until(lambda: "o1" in q.done)
        self.assertEqual(self.rx.paths().count(b"/stuck"), 2)
        # the stuck receiver goes away: its calls fail, their slots come back
        self.rx.release()
        yield until(lambda: c.inflight == 0)
        self.assertEqual(sorted(q.retried), ["s0", "s1"])


class TlsTests(unittest.TestCase):
    """https callbacks: the certificate is verified against the URL's host name, though the
    connection goes to the checked address."""

    def setUp(self) -> None:
        from pathlib import Path

        from twisted.internet.ssl import DefaultOpenSSLContextFactory

        from .test_tls_e2e import make_ca_and_cert
        import shutil
        import tempfile
        tmp = Path(tempfile.mkdtemp(prefix="proxyd-cb-tls-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        ca, key, cert = make_ca_and_cert(tmp)
        self.ca = (ca / "ca.pem").read_bytes()
        self.rx = Receiver()
        site = server.Site(self.rx)
        site.log = lambda *a: None
        self.port = reactor.listenSSL(0, site, DefaultOpenSSLContextFactory(str(key),
                                                                             str(cert)),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def client(self, tls: Any = None) -> CallbackClient:
        def resolve(host: str, port: int) -> defer.Deferred:
            return defer.succeed(["127.0.0.1"])
        return CallbackClient(reactor, allow=("https://localhost:",), timeout_s=5,
                              resolve=resolve, tls=tls)

    @defer.inlineCallbacks
    def test_an_untrusted_certificate_fails_a_trusted_one_is_called(self):
        from twisted.internet.ssl import Certificate, optionsForClientTLS
        url = "https://localhost:%d/ok" % self.port.getHost().port
        f = yield failure(self.client().call(Request("GET", url)))
        self.assertFalse(isinstance(f, (Refused, Deadline)), f)
        self.assertEqual(self.rx.seen, [])
        trusted = self.client(tls=lambda host: optionsForClientTLS(
            host, trustRoot=Certificate.loadPEM(self.ca)))
        code, body = yield trusted.call(Request("GET", url))
        self.assertEqual((code, body), (200, b"OK"))
        self.assertEqual(self.rx.seen[0][1][b"host"], b"localhost:%d" % self.port.getHost().port)
