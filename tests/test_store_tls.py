"""rediss:// verifies the store's certificate and host name.

The shipped valkey-server is built without TLS ("Failed finding TLS support"), so the TLS
server here is a small Twisted TLS listener (`ssl:` server endpoint, certificates made by
the test) that forwards to the real valkey-server of the test session over its unix socket:
the store client's handshake, verification and Redis protocol are all real.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogPublisher
from twisted.protocols import portforward
from twisted.trial import unittest

from proxyd.store.client import Store, StoreError, StoreUnavailable
from proxyd.store.optout import OptOutMirror
from tests.procs import wait_until
from tests.test_tls_e2e import make_ca_and_cert
from tests.valkey_fixture import valkey_class, valkey_socket  # noqa: F401


class _ToUnix(portforward.ProxyServer):
    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        client = self.clientProtocolFactory()
        client.setServer(self)
        reactor.connectUNIX(self.factory.path, client)


class _ForwardFactory(protocol.Factory):
    protocol = _ToUnix

    def __init__(self, path: str) -> None:
        self.path = path


@pytest.mark.usefixtures("valkey_class")
class TestRediss(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        d = Path(tempfile.mkdtemp(prefix="proxyd-tls-"))   # (mktemp() writes in the cwd)
        self.addCleanup(shutil.rmtree, d, True)
        self.dir = d
        (d / "good").mkdir(parents=True)
        (d / "other").mkdir(parents=True)
        ca, key, cert = make_ca_and_cert(d / "good")
        self.ca_file = str(ca / "ca.pem")
        other_ca, _, _ = make_ca_and_cert(d / "other")   # a CA that did not sign the server
        self.other_ca_file = str(other_ca / "ca.pem")
        ep = serverFromString(reactor, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"
                              % (key, cert))
        self.port = yield ep.listen(_ForwardFactory(self.socket_path))
        self.addCleanup(self.port.stopListening)
        self.n = self.port.getHost().port
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self) -> str:
        from twisted.logger import formatEvent
        return "\n".join(formatEvent(e) for e in self.events)

    @defer.inlineCallbacks
    def refused(self, url: str, ca_file: str) -> Any:
        """The error of connecting to `url` (which must fail)."""
        try:
            store = yield Store.connect(url, pool_size=1, timeout_s=1.0, reactor=reactor,
                                        ca_file=ca_file)
        except StoreUnavailable as e:
            return str(e)
        yield store.disconnect()
        self.fail("connected to %s" % url)

    @defer.inlineCallbacks
    def test_verified_certificate_and_name(self) -> Any:
        store = yield Store.connect("rediss://localhost:%d" % self.n, pool_size=2,
                                    timeout_s=5.0, reactor=reactor, ca_file=self.ca_file)
        self.addCleanup(store.disconnect)
        self.assertEqual((yield store.ping()), "PONG")
        yield store.execute("SET", "tls:probe", "1")
        self.assertEqual((yield store.execute("GET", "tls:probe")), "1")
        self.assertNotIn("TLS certificate refused", self.logged())

    @defer.inlineCallbacks
    def test_certificate_of_another_ca_is_refused(self) -> Any:
        err = yield self.refused("rediss://:s3cret@localhost:%d/0" % self.n, self.other_ca_file)
        self.assertIn("TLS certificate refused", err)
        # (the other CA has the same name as the real one: its signature does not match)
        self.assertRegex(err, "certificate signature failure|not signed by a trusted CA")
        logged = self.logged()
        self.assertIn("store rediss://:***@localhost:%d/0: TLS certificate refused" % self.n,
                      logged)
        self.assertNotIn("s3cret", logged + err)

    @defer.inlineCallbacks
    def test_without_ca_file_the_system_roots_refuse_a_private_ca(self) -> Any:
        err = yield self.refused("rediss://localhost:%d" % self.n, "")
        self.assertIn("TLS certificate refused", err)

    @defer.inlineCallbacks
    def test_certificate_for_another_name_is_refused(self) -> Any:
        # the certificate names "localhost" only
        err = yield self.refused("rediss://127.0.0.1:%d" % self.n, self.ca_file)
        self.assertIn("does not name 127.0.0.1", err)
        self.assertIn("TLS certificate refused", self.logged())

    def test_bad_ca_file_is_an_error(self) -> None:
        with self.assertRaises(StoreError):
            Store.lazy("rediss://localhost:%d" % self.n, ca_file="/nonexistent/ca.pem")
        empty = self.dir / "empty.pem"
        empty.write_text("not a certificate\n")
        with self.assertRaises(StoreError):
            Store.lazy("rediss://localhost:%d" % self.n, ca_file=str(empty))

    @defer.inlineCallbacks
    def test_optout_subscription_verifies_too(self) -> Any:
        url = "rediss://127.0.0.1:%d" % self.n          # a name the certificate lacks
        good = yield Store.connect("rediss://localhost:%d" % self.n, pool_size=1,
                                   timeout_s=5.0, reactor=reactor, ca_file=self.ca_file)
        self.addCleanup(good.disconnect)
        bad = Store.lazy(url, pool_size=1, timeout_s=1.0, reactor=reactor,
                         ca_file=self.ca_file)
        self.addCleanup(bad.disconnect)
        mirror = OptOutMirror(bad, url, reactor, tls=bad.tls)
        mirror.start()
        self.addCleanup(mirror.stop)
        ok = OptOutMirror(good, good.target, reactor, tls=good.tls)
        ok.start()
        self.addCleanup(ok.stop)
        yield wait_until(lambda: ok.live, "the verified subscription", 10)
        self.assertFalse(mirror.live)
        self.assertIn("does not name 127.0.0.1", bad.tls.refusal)

    @defer.inlineCallbacks
    def test_admin_command_verifies_too(self) -> Any:
        import valkey
        from twisted.internet import threads

        from proxyd import admin, config

        def ping(url: str) -> Any:
            cfg = config.parse({"store": {"url": url, "ca_file": self.ca_file}})
            client, close = admin.open_store(cfg)
            try:
                return client.ping()
            finally:
                close()
        self.assertTrue((yield threads.deferToThread(ping, "rediss://localhost:%d" % self.n)))
        yield self.assertFailure(threads.deferToThread(ping, "rediss://127.0.0.1:%d" % self.n),
                                 valkey.exceptions.ConnectionError)
