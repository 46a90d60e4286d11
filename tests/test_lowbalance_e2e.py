"""Low-balance notices (issue 16, item 5) with real processes: proxyd (balance leases on,
as by default) in front of the simulator, a real HTTP receiver for `notify_url`.

Each crossing of `low_balance` gives exactly one callback: the store numbers the notices
(%n), and they are called in the order they were queued, so a second notice in the first
episode would arrive as n=2 before the top-up; the second episode's notice must be n=2 with
the balance of the second episode."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftemplate import config_text
from proxyd.admin import main as admin_main

from .procs import free_port, start_proxyd, start_sim, wait_until, write_config
from .test_metrics_e2e import bind, sample, scrape, submit_all


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 200 and records each request's query."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:       # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                seen.append((parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def admin(capsys):
    """proxyd-admin in this process (the node's store: its socket under [store] dir)."""
    def run(cfg, *args):
        code = admin_main(["--config", str(cfg), *args])
        out, err = capsys.readouterr()
        assert code == 0, (out, err)
        return out.strip()
    return run


def test_one_notice_per_crossing(tmp_path, receiver, admin):
    sim, sim_port, _record = start_sim(tmp_path)
    port, admin_port = free_port(), free_port()
    url = "http://127.0.0.1:%d/" % receiver.port
    cfg = write_config(tmp_path, config_text(
        port, sim_port,
        account={"price": 5, "low_balance": 20,
                 "notify_url": url + "low?acct=%a&bal=%b&low=%l&n=%n&t=%t"},
        accounts=[{"system_id": "quiet", "password": "pw", "service_codes": ["10690002"],
                   "low_balance": 0}],
        http={"callback_allow": [url]},
        admin={"listen": ["tcp:%d:interface=127.0.0.1" % admin_port]},
        store={"dir": str(tmp_path / "store")}))
    node = start_proxyd(tmp_path, cfg, port)
    try:
        wait_until(lambda: "upstream sim bound" in node.text(), "the upstream bind", 20)
        admin(cfg, "topup", "acme", "40")
        admin(cfg, "topup", "quiet", "10")
        s = bind(port)
        # episode 1: 40 -> 10 fen, one message at a time (each answered before the next)
        for i in range(6):
            assert submit_all(s, ["13800138%03d" % i], tag="e1") == {0: 0}
        got = wait_until(lambda: receiver.seen, "the first notice", 20)
        assert admin(cfg, "balance", "acme") == "10"
        # re-armed by a top-up to 25 (>= 20); episode 2: 25 -> 15
        admin(cfg, "topup", "acme", "15")
        for i in range(2):
            assert submit_all(s, ["13900139%03d" % i], tag="e2") == {0: 0}
        got = wait_until(lambda: len(receiver.seen) >= 2 and receiver.seen,
                         "the second notice", 20)
        assert admin(cfg, "balance", "acme") == "15"
        s.close()
        first, second = got[0][1], got[1][1]
        assert got[0][0] == "/low" and first["acct"] == "acme" and first["low"] == "20"
        assert first["n"] == "1" and int(first["bal"]) in (15, 10), first
        assert second["n"] == "2" and second["bal"] == "15", second
        assert int(second["t"]) >= int(first["t"]) > 0
        # one WARN line per crossing, the counter and the flag on /metrics
        text = node.text()
        assert text.count("fell below low_balance 20 fen") == 2, text[-2000:]
        assert "[proxyd.lowbalance#warn]" in text
        m = scrape(admin_port)
        assert sample(m, "proxyd_low_balance_notices_total", account="acme") == 2
        assert sample(m, "proxyd_balance_low", account="acme") == 1
        assert sample(m, "proxyd_balance_fen", account="acme") == 15
        assert sample(m, "proxyd_balance_fen", account="quiet") == 10
        assert sample(m, "proxyd_balance_low", account="quiet") == 0
        assert sample(m, "proxyd_callbacks_total", kind="notify", result="ok") == 2
        assert len(receiver.seen) == 2
    finally:
        node.stop()
        sim.stop()
