"""Issue 6, MO to an account's mo_url: real simulator and proxyd, a local HTTP server; and
the reassembly of a long MO in the store (the simulator's control port sends no UDH)."""
from __future__ import annotations

import http.server
import socket
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from proxyd.delivery import expand_facts
from proxyd.http.dlr import build_request
from proxyd.store.messages import MessageStore, mo_parts_key
from tests.valkey_fixture import connect_store, valkey_class, valkey_socket  # noqa: F401

from .conftemplate import config_text
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config

MO_URL = "http://127.0.0.1:{web}/mo?from=%p&to=%P&text=%a&up=%i"


class Recorder:
    """A local HTTP server recording each GET; answers 500 to the first `fail` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[int, dict]] = []
        self.fail = fail
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                code = 500 if rec.fail > 0 else 200
                rec.fail -= 1
                rec.calls.append((code, q))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ok(self) -> list[dict]:
        return [q for code, q in self.calls if code == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


@pytest.fixture
def mo_stack(tmp_path):
    made: dict = {}
    procs: list = []

    def start(fail: int = 0) -> dict:
        web = Recorder(fail)
        made["web"] = web
        control = free_port()
        sim, sim_port, _ = start_sim(tmp_path, None, "--control",
                                     "tcp:%d:interface=127.0.0.1" % control)
        procs.append(sim)
        port = free_port()
        account = {"system_id": "moacct", "password": "pw", "mo_url": MO_URL.format(web=web.port)}
        cfg = write_config(tmp_path, config_text(port, sim_port, account=account,
                                                 http={"callback_allow": [
                                                     "http://127.0.0.1:%d/" % web.port]}))
        node = start_proxyd(tmp_path, cfg, port)
        procs.append(node)
        wait_until(lambda: "upstream sim bound" in node.text(), "upstream bind", 20)
        made.update(control=control, cfg=cfg, proxyd=node, tmp=tmp_path)
        return made

    made["start"] = start
    yield made
    for p in reversed(procs):
        p.stop()
    if "web" in made:
        made["web"].close()


def test_plain_mo_reaches_mo_url(mo_stack):
    st = mo_stack["start"]()
    web = st["web"]
    _mo(st["control"], "13700000001", "10690001234", "你好 world".encode("utf-16-be"), 8)
    wait_until(lambda: len(web.ok()) >= 1, "the MO at the mo_url", 20)
    q = web.ok()[0]
    assert q == {"from": "13700000001", "to": "10690001234", "text": "你好 world",
                 "up": "sim"}, q
    assert len(web.calls) == 1


def test_mo_url_failing_once_gives_one_success(mo_stack):
    st = mo_stack["start"](fail=1)
    web = st["web"]
    _mo(st["control"], "13700000002", "1069000155", b"hello")
    wait_until(lambda: len(web.ok()) >= 1, "the MO retried to success", 30)
    # no more calls come once it succeeded: ask the node, not the clock
    wait_until(lambda: "retry 1" in st["proxyd"].text(), "the retry logged", 5)
    assert [c for c, _ in web.calls] == [500, 200], web.calls
    assert web.ok()[0]["text"] == "hello" and web.ok()[0]["from"] == "13700000002"


def test_unsubscribe_via_mo_url_opts_out(mo_stack):
    st = mo_stack["start"]()
    web = st["web"]
    _mo(st["control"], "13700000003", "1069000155", b"TD")
    wait_until(lambda: len(web.ok()) >= 1, "the TD at the mo_url", 20)
    assert web.ok()[0]["text"] == "TD"
    out = admin(st["tmp"], st["cfg"], "optout", "list", "moacct").stdout
    assert "13700000003" in out, out


@pytest.mark.usefixtures("valkey_class")
class MoReassemblyTest(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.store = yield connect_store(self)

    @defer.inlineCallbacks
    def test_parts_reassembled_once_then_one_callback(self) -> Any:
        ms = MessageStore(self.store, 3600)
        acct = "m" + uuid.uuid4().hex[:10]
        key = mo_parts_key(acct, "137", "10690001", 7, 3)
        text = "退订这个服务吧，谢谢你们".encode("utf-16-be")
        chunks = [text[:8], text[8:16], text[16:]]
        settings = '{"api":"mo","url":"http://h/mo?t=%a&f=%p","acct":"' + acct + '"}'
        facts = {"ev": "mo", "from": "137", "to": "10690001", "dc": 8, "upstream": "u",
                 "id": "x1", "ts": 0}
        r = []
        for seq in (2, 1, 1):
            r.append((yield ms.add_mo_part(acct, key, seq, chunks[seq - 1], 3, 60, "cb1",
                                           settings, facts)))
        assert [c for c, _ in r] == [0, 0, 2], r
        assert (yield ms.claim(acct, 60, 10)) == []       # nothing queued yet
        last = yield ms.add_mo_part(acct, key, 3, chunks[2], 3, 60, "cb1", settings, facts)
        assert last[0] == 1
        got = yield ms.claim(acct, 60, 10)
        assert len(got) == 1
        cb_id, s, f, attempts = got[0]
        assert cb_id == "cb1" and s["api"] == "mo"
        full = expand_facts(f)
        assert full["text"] == text.decode("utf-16-be") and full["raw"] == text
        req = build_request(s, full)
        q = {k: v[0] for k, v in parse_qs(urlsplit(req.url).query).items()}
        assert q == {"t": text.decode("utf-16-be"), "f": "137"}
        assert not (yield self.store.execute("EXISTS", key))
