"""HTTP API throughput: simulator + proxyd (real twistd processes) + a keep-alive load client.

    .venv/bin/python bench/http.py [--count 30000] [--conns 64] [--store embedded|none]

The client (asyncio, one process) holds `--conns` persistent HTTP/1.1 connections, each
sending GET /cgi-bin/sendsms for a single-part message and waiting for the reply before the
next (no pipelining). Every request goes through the whole path (auth, policy, ledger,
upstream, simulator). Prints req/s and p50/p99 latency, measured in this run, and checks
that every reply was 202 "0: Accepted for delivery".
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config  # noqa: E402

CONFIG = """
[smpp]
listen = ["tcp:{port}:interface=127.0.0.1"]
[http]
listen = ["tcp:{http}:interface=127.0.0.1"]
[[upstream]]
name = "sim"
connect = "tcp:host=127.0.0.1:port={sim}"
system_id = "proxyd"
password = "pw"
binds = 2
window = 200
[[account]]
system_id = "bench"
password = "bench"
service_codes = ["10690001"]
{store}
"""
OK = b"0: Accepted for delivery"


async def _conn(port: int, todo: list, lat: list, bad: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while todo:
            n = todo.pop()
            q = urllib.parse.urlencode({"username": "bench", "password": "bench",
                                        "to": "138%08d" % n, "text": "Your code is %06d" % n})
            t0 = time.perf_counter()
            writer.write(b"GET /cgi-bin/sendsms?%s HTTP/1.1\r\nHost: x\r\n\r\n" % q.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 202") or body != OK:
                bad.append((head.split(b"\r\n")[0], body))
    finally:
        writer.close()


async def load(port: int, count: int, conns: int, start: int) -> dict:
    todo = list(range(start + count, start, -1))
    lat: list = []
    bad: list = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_conn(port, todo, lat, bad) for _ in range(conns)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"count": len(lat), "rps": len(lat) / wall, "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1e3, "bad": len(bad),
            "first_bad": bad[:1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=30000)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--store", default="embedded", choices=("embedded", "none"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-http-") as d:
        tmp = Path(d)
        sim, sim_port, _ = start_sim(tmp)
        port, hport = free_port(), free_port()
        store = '[store]\nurl = "none"\n' if a.store == "none" else ""
        cfg = write_config(tmp, CONFIG.format(port=port, http=hport, sim=sim_port, store=store))
        proxyd = start_proxyd(tmp, cfg, hport)
        try:
            wait_until(lambda: proxyd.text().count("upstream sim bound") >= 2, "binds", 20)
            if a.store != "none":
                admin(tmp, cfg, "topup", "bench", str(10 * (a.count + 2000) * 5))
            asyncio.run(load(hport, 2000, a.conns, 0))          # warm-up
            r = asyncio.run(load(hport, a.count, a.conns, 10_000_000))
        finally:
            proxyd.stop()
            sim.stop()
    print("HTTP GET /cgi-bin/sendsms, keep-alive, %d connections, store %s, %d requests"
          % (a.conns, a.store, r["count"]))
    print("  %.0f req/s   p50 %.1f ms   p99 %.1f ms   non-202 replies: %d %s"
          % (r["rps"], r["p50_ms"], r["p99_ms"], r["bad"], r["first_bad"] or ""))


if __name__ == "__main__":
    main()
