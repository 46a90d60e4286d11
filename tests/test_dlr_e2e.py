"""HTTP delivery reports end to end: simulator (receipts) + proxyd under twistd + a local HTTP
receiver in a thread. Deadlines are limits on waiting, never measurements."""
from __future__ import annotations

import http.client
import http.server
import threading
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import valkey

from .conftemplate import config_text, listen
from .procs import admin, free_port, read_record, start_proxyd, start_sim, wait_until, write_config

# the receivers are local test servers: callbacks to loopback are refused unless allowed
LOCAL_CALLBACKS = ["http://127.0.0.1:"]
CONFIG = dict(relay={"queue_wait_s": 0.5},
              upstream={"binds": 2, "window": 100, "response_timeout_s": 5, "reconnect_max_s": 1})


class Receiver:
    """An HTTP server in a thread: the first `fail` requests get 500, the others 200 with
    `body`. Every request is recorded as (method, path, form body, code answered)."""

    def __init__(self, fail: int = 0, body: bytes = b"OK", host: str = "127.0.0.1") -> None:
        self.fail = fail
        self.body = body
        self.requests: list[tuple] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                form = self.rfile.read(n).decode() if n else ""
                with outer.lock:
                    code = 500 if len(outer.requests) < outer.fail else 200
                    outer.requests.append((self.command, self.path, form, code))
                body = b"try again" if code == 500 else outer.body
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *a) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ok(self) -> list[tuple]:
        with self.lock:
            return [r for r in self.requests if r[3] == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dlr")
    sim, sim_port, record = start_sim(tmp, None, "--receipt-delay", "0.2")
    port, hport = free_port(), free_port()
    cfg = write_config(tmp, config_text(port, sim_port, http={"listen": listen(hport),
                                                               "callback_allow": LOCAL_CALLBACKS},
                                        store={"dir": tmp / "store"}, **CONFIG))
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: proxyd.text().count("upstream sim bound") >= 2, "upstream binds", 20)
        admin(tmp, cfg, "topup", "acme", "100000", "--note", "test funds")
        db = valkey.Valkey(unix_socket_path=str(tmp / "store" / "valkey.sock"))
        yield {"http": hport, "record": record, "proxyd": proxyd, "db": db, "tmp": tmp,
               "cfg": cfg}
    finally:
        proxyd.stop()
        sim.stop()


def get(port: int, path: str) -> tuple[int, str, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read().decode()
    headers = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, body, headers


def sim_id_of(record: Path, text: bytes) -> str:
    for r in read_record(record):
        if text.hex() in r.get("body", ""):
            return r["id"]
    raise AssertionError("%r not recorded by the simulator" % text)


def test_kannel_dlr_url_fails_twice_then_one_delivery(stack):
    rx = Receiver(fail=2)
    try:
        url = ("http://127.0.0.1:%d/dlr?type=%%d&to=%%p&from=%%P&id=%%I&fid=%%F&user=%%n"
               "&smsc=%%i&ts=%%T&reply=%%A" % rx.port)
        status, body, headers = get(stack["http"], "/cgi-bin/sendsms?" + urlencode({
            "username": "acme", "password": "s3cret", "from": "10690001",
            "to": "13800138123", "text": "dlr twice failing", "dlr-mask": "3",
            "dlr-url": url}))
        assert status == 202, body
        mid = headers["x-proxyd-message-id"]
        db = stack["db"]
        wait_until(lambda: len(rx.ok()) >= 1, "the callback answered 200", 30)
        # once answered it leaves the store: nothing can call it again
        wait_until(lambda: db.zcard("hcb:{acme}") == 0, "the callback cleared", 10)
        assert [r[3] for r in rx.requests] == [500, 500, 200]
        calls = [{k: v[0] for k, v in parse_qs(urlsplit(p).query).items()}
                 for _m, p, _f, _c in rx.requests]
        assert all(c == calls[0] for c in calls)          # the same report each time
        c = calls[0]
        assert c["type"] == "1" and c["to"] == "13800138123" and c["from"] == "10690001"
        assert c["id"] == mid and c["user"] == "acme" and c["smsc"] == "sim"
        assert c["fid"] == sim_id_of(stack["record"], b"dlr twice failing")
        assert "stat:DELIVRD" in c["reply"] and ("id:%s" % mid) in c["reply"]
        assert int(c["ts"]) > 1_600_000_000
        # the state says delivered; the report went to the URL, not to the SMPP stream
        assert db.get("msg:{acme}:%s" % mid).split(b"|")[0] == b"2"
        assert db.exists("dlv:{acme}") == 0 or db.xlen("dlv:{acme}") == 0
    finally:
        rx.close()


def test_kannel_mask_selects_reports(stack):
    """mask 8 (SMSC accepted) only: one report, type 8, and none for the final receipt."""
    rx = Receiver()
    try:
        url = "http://127.0.0.1:%d/dlr?type=%%d&id=%%I&reply=%%A" % rx.port
        status, body, headers = get(stack["http"], "/cgi-bin/sendsms?" + urlencode({
            "username": "acme", "password": "s3cret", "to": "13800138124",
            "text": "mask eight", "dlr-mask": "9", "dlr-url": url}))
        assert status == 202, body
        mid = headers["x-proxyd-message-id"]
        wait_until(lambda: len(rx.ok()) >= 2, "two reports (8, then 1)", 30)
        wait_until(lambda: stack["db"].zcard("hcb:{acme}") == 0, "callbacks cleared", 10)
        types = sorted(parse_qs(urlsplit(p).query)["type"][0] for _m, p, _f, _c in rx.ok())
        assert types == ["1", "8"]
        for _m, p, _f, _c in rx.ok():
            assert parse_qs(urlsplit(p).query)["id"][0] == mid
    finally:
        rx.close()


def test_jasmin_dlr_level_3_post(stack):
    rx = Receiver(fail=1, body=b"ACK/Jasmin")
    try:
        c = http.client.HTTPConnection("127.0.0.1", stack["http"], timeout=20)
        form = urlencode({"username": "acme", "password": "s3cret", "to": "13800138125",
                          "content": "jasmin report", "dlr": "yes", "dlr-level": "3",
                          "dlr-method": "POST",
                          "dlr-url": "http://127.0.0.1:%d/jasmin" % rx.port})
        c.request("POST", "/send", form, {"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, body
        mid = body.split('"')[1]
        wait_until(lambda: len(rx.ok()) >= 2, "level 1 and level 2 reports", 30)
        wait_until(lambda: stack["db"].zcard("hcb:{acme}") == 0, "callbacks cleared", 10)
        forms = [{k: v[0] for k, v in parse_qs(f).items()} for m, p, f, code in rx.ok()]
        assert all(m == "POST" and p == "/jasmin" for m, p, _f, _c in rx.ok())
        by_level = {f["level"]: f for f in forms}
        assert sorted(by_level) == ["1", "2"] and len(forms) == 2
        assert by_level["1"]["id"] == mid and by_level["1"]["message_status"] == "ESME_ROK"
        two = by_level["2"]
        assert two["id"] == mid and two["message_status"] == "DELIVRD"
        assert two["connector"] == "sim" and two["err"] == "000"
        assert two["id_smsc"] == sim_id_of(stack["record"], b"jasmin report")
    finally:
        rx.close()


@pytest.mark.parametrize("host", ["127.0.0.2", "169.254.169.254", "10.1.2.3", "[::1]",
                                  "[::ffff:127.0.0.1]", "224.0.0.1"])
def test_a_dlr_url_to_a_non_public_address_is_refused_at_submit(stack, host):
    """callback_allow names http://127.0.0.1: only: a dlr-url written as another non-public
    address is refused when the message is submitted (issue 15 leftover), nothing charged,
    queued or called; the allowed prefix is still accepted (the tests above)."""
    url = "http://%s:8000/dlr?type=%%d" % host
    before = admin_balance(stack)
    status, body, _h = get(stack["http"], "/cgi-bin/sendsms?" + urlencode({
        "username": "acme", "password": "s3cret", "to": "13800138126",
        "text": "not to loopback", "dlr-mask": "9", "dlr-url": url}))
    assert (status, body) == (400, "DLR-URL field misformed, rejected")
    status, body, _h = get(stack["http"], "/send?" + urlencode({
        "username": "acme", "password": "s3cret", "to": "13800138126",
        "content": "not to loopback", "dlr-url": url}))
    shown = host.strip("[]")
    assert (status, body) == (400, 'Error "Argument [dlr-url] has an invalid value: [%s]: '
                                   '%s is not a public address."' % (url, shown))
    assert admin_balance(stack) == before
    assert stack["db"].zcard("hcb:{acme}") == 0


def admin_balance(stack) -> int:
    return int(admin(stack["tmp"], stack["cfg"], "balance", "acme").stdout.strip())
