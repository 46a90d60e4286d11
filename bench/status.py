"""The admin listener under many accounts: what a scrape and the status page cost when the
accounts' state is read from the store (every 3 s at most) and when it is cached; and, where
a headless Chromium is installed, a screenshot of the status page.

    .venv/bin/python bench/status.py [--accounts 1000] [--rounds 10]
                                     [--screenshot docs/status-page.png]

Starts the simulator and proxyd (real twistd processes, embedded store) with `--accounts`
accounts, relays a few messages and makes a few refusals (so the page has something to
show), then times GET /metrics and GET / in turn, each once right after the cache expired
(a store read of every account) and once while it is fresh. Prints the medians of
`--rounds` rounds and the ratio read / cached, measured in this run. The screenshot is
skipped (and says so) when no Chromium is found.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench/http.py would shadow the standard library's http (urllib.request imports it)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from tests.conftemplate import config_text  # noqa: E402
from tests.procs import admin, free_port, start_proxyd, start_sim, wait_until  # noqa: E402
from tests.procs import write_config  # noqa: E402

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


def get(url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t0, len(body)


def chromium() -> str | None:
    for c in CHROMIUM:
        path = shutil.which(c)
        if path:
            return path
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--screenshot", default=str(HERE.parent / "docs" / "status-page.png"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="proxyd-bench-status-"))
    sim, sim_port, _ = start_sim(tmp)
    port, http_port, admin_port = free_port(), free_port(), free_port()
    accounts = [{"system_id": "acct%04d" % i, "password": "pw",
                 "service_codes": ["1069%04d" % (i + 10)], "low_balance": 100}
                for i in range(args.accounts - 1)]
    cfg = write_config(tmp, config_text(
        port, sim_port, account={"low_balance": 500}, accounts=accounts,
        http={"listen": ["tcp:%d:interface=127.0.0.1" % http_port]},
        admin={"listen": ["tcp:%d:interface=127.0.0.1" % admin_port]},
        store={"dir": str(tmp / "store")}))
    node = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: "upstream sim bound" in node.text(), "the upstream bind", 30)
        admin(tmp, cfg, "topup", "acme", "520")
        base = "http://127.0.0.1:%d/cgi-bin/sendsms?username=acme&password=s3cret" % http_port
        for i in range(8):      # 5 fen each: acme crosses its low_balance of 500
            get(base + "&from=10690001&to=1380013%04d&text=hello" % i)
        for i in range(3):      # refused: a sender that is not acme's
            try:
                get(base + "&from=999&to=1390013%04d&text=hello" % i)
            except urllib.error.HTTPError:
                pass
        metrics = "http://127.0.0.1:%d/metrics" % admin_port
        page = "http://127.0.0.1:%d/" % admin_port
        rows = {}
        for name, url in (("/metrics", metrics), ("/", page)):
            read, cached = [], []
            for _ in range(args.rounds):
                time.sleep(3.1)                 # past the cache: this one reads the store
                t, size = get(url)
                read.append(t)
                cached.append(get(url)[0])
            rows[name] = (statistics.median(read), statistics.median(cached), size)
        print("admin listener, %d accounts, median of %d rounds (this run):"
              % (args.accounts, args.rounds))
        for name, (r, c, size) in rows.items():
            print("  GET %-9s %7.1f ms with the store read, %6.1f ms cached (x%.1f), %d bytes"
                  % (name, r * 1000, c * 1000, r / c if c else 0.0, size))
        browser = chromium()
        if browser is None:
            print("screenshot: skipped, no Chromium found (%s)" % ", ".join(CHROMIUM))
        else:
            out = Path(args.screenshot).resolve()
            subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                            "--hide-scrollbars", "--window-size=1280,1600",
                            "--screenshot=%s" % out, page], check=True, timeout=120,
                           capture_output=True)
            print("screenshot: %s" % out)
    finally:
        node.stop()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
