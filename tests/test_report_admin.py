"""GET /report: at most [admin] report_max_days, and never holding the reactor (the report is
built in a thread while other requests are answered). A real socket, a real store."""
from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import resource, server, static
from twisted.web.client import Agent, readBody

from proxyd import config
from proxyd.http.report import ReportResource
from proxyd.store import journal as J
from proxyd.store.ledger import Ledger
from tests.procs import wait_until
from tests.valkey_fixture import connect_store, valkey_class, valkey_socket  # noqa: F401


class OneAccount:
    """A registry that knows one account, password "pw"."""

    def __init__(self, account: Any) -> None:
        self.account = account

    def authenticate(self, user: str, password: str, peer: str = "") -> defer.Deferred:
        ok = user == self.account.system_id and password == "pw"
        return defer.succeed((0, self.account) if ok else (0x0E, None))


@pytest.mark.usefixtures("valkey_class")
class TestReportOverHttp(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.store = yield connect_store(self)
        self.ledger = Ledger(self.store, reactor)
        sid = "r" + uuid.uuid4().hex[:12]
        self.account = config.AccountConfig(system_id=sid, password="pw", price=5)
        yield self.ledger.topup(sid, 100, "funds")

    @defer.inlineCallbacks
    def serve(self, report: ReportResource) -> Any:
        root = resource.Resource()
        root.putChild(b"report", report)
        root.putChild(b"health", static.Data(b"ok\n", "text/plain"))
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = "http://127.0.0.1:%d" % port.getHost().port
        yield None

    @defer.inlineCallbacks
    def get(self, path: str) -> Any:
        agent = Agent(reactor)
        r = yield agent.request(b"GET", (self.base + path).encode())
        body = yield readBody(r)
        return r.code, body.decode()

    def config_with(self, **admin: Any) -> Any:
        cfg = config.parse({"admin": admin})
        return lambda: cfg

    def report_path(self, first: str, last: str) -> str:
        return "/report?username=%s&password=pw&from=%s&to=%s" % (
            self.account.system_id, first, last)

    @defer.inlineCallbacks
    def test_at_most_report_max_days(self) -> Any:
        yield self.serve(ReportResource(OneAccount(self.account), self.ledger, reactor,
                                        self.config_with()))
        code, body = yield self.get(self.report_path("20261001", "20261101"))   # 32 days
        self.assertEqual(code, 400)
        self.assertIn("at most 31 days", json.loads(body)["error"])
        code, body = yield self.get(self.report_path("20261001", "20261031"))   # 31 days
        self.assertEqual(code, 200, body)
        self.assertEqual((json.loads(body)["from"], json.loads(body)["to"]),
                         ("20261001", "20261031"))

    @defer.inlineCallbacks
    def test_report_max_days_is_configurable(self) -> Any:
        yield self.serve(ReportResource(OneAccount(self.account), self.ledger, reactor,
                                        self.config_with(report_max_days=3)))
        code, body = yield self.get(self.report_path("20261001", "20261004"))
        self.assertEqual(code, 400)
        self.assertIn("at most 3 days, 20261001..20261004 is 4 days", json.loads(body)["error"])
        code, _ = yield self.get(self.report_path("20261001", "20261003"))
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_other_requests_are_answered_while_a_report_is_built(self) -> Any:
        started, release = threading.Event(), threading.Event()

        def slow_build(*args: Any) -> Any:
            # stands for verifying a big journal: holds whichever thread runs it until
            # released (or 10 s, so that a build on the reactor thread ends the test)
            started.set()
            release.wait(10)
            return J.build_report(*args)

        yield self.serve(ReportResource(OneAccount(self.account), self.ledger, reactor,
                                        self.config_with(), build=slow_build))
        today = self.ledger.day_of(reactor.seconds())
        report = self.get(self.report_path(today, today))
        yield wait_until(started.is_set, "the report being built", 20)
        code, body = yield self.get("/health")
        self.assertEqual((code, body), (200, "ok\n"))
        self.assertFalse(report.called, "the report was done before /health was answered")
        release.set()
        code, body = yield report
        self.assertEqual(code, 200, body)
        figures = json.loads(body)
        self.assertTrue(figures["ok"], body)
        self.assertEqual(figures["amounts"]["topups"], 100)
