"""A windowed SMPP load client (asyncio, raw PDUs) for the benchmarks.

    python bench/loadclient.py --port 2775 --system-id demo --password demo \
        --count 20000 --window 100 [--binds 2] [--json]

Binds as transmitter, keeps `window` submit_sm in flight per bind, and prints msg/s, the
status counts and p50/p99 latency (submit written -> resp read) measured in this run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxyd.smpp import constants as C  # noqa: E402
from proxyd.smpp import pdu as P  # noqa: E402

_HDR = struct.Struct(">IIII")


def submit_body(src: bytes, dst: bytes, text: bytes, dc: int = 0, rd: int = 0) -> bytes:
    return P.encode(P.SubmitSm(0, 0, b"", 0, 0, src, 1, 1, dst, 0, 0, 0, b"", b"", rd, 0,
                               dc, 0, text))[16:]


class Load(asyncio.Protocol):
    def __init__(self, body: bytes, count: int, window: int, sid: bytes, pw: bytes,
                 done: asyncio.Future, receipts: bool = False) -> None:
        self.receipts = receipts
        self.receipts_got = 0
        self.body = body
        self.count = count
        self.window = window
        self.sid, self.pw = sid, pw
        self.done = done
        self.framer = P.Framer(1 << 20)
        self.sent = 0
        self.answered = 0
        self.seq = 1
        self.t0: dict[int, float] = {}
        self.lat: list[float] = []
        self.status: dict[int, int] = {}
        self.bound = False
        self.answered_ok = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        bind = P.BindTransceiver if self.receipts else P.BindTransmitter
        transport.write(P.encode(bind(1, 0, self.sid, self.pw, b"", 0x34, 0, 0, b"")))

    def _fill(self) -> None:
        out = []
        now = time.perf_counter()
        body = self.body
        while self.sent < self.count and self.sent - self.answered < self.window:
            self.seq += 1
            self.t0[self.seq] = now
            out.append(_HDR.pack(16 + len(body), C.SUBMIT_SM, 0, self.seq) + body)
            self.sent += 1
        if out:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        for cid, status, seq, body in self.framer.feed(data):
            if cid == C.SUBMIT_SM_RESP:
                t = self.t0.pop(seq, None)
                if t is not None:
                    self.lat.append(now - t)
                    self.answered += 1
                    self.status[status] = self.status.get(status, 0) + 1
                    if status == 0:
                        self.answered_ok += 1
            elif cid == C.DELIVER_SM:
                self.receipts_got += 1
                self.transport.write(P.frame(C.DELIVER_SM_RESP, 0, seq, b"\0"))
            elif cid in (C.BIND_TRANSMITTER_RESP, C.BIND_TRANSCEIVER_RESP):
                if status:
                    self.done.set_exception(RuntimeError("bind refused: %s" %
                                                         C.status_name(status)))
                    return
                self.bound = True
                self.start = time.perf_counter()
            elif cid == C.ENQUIRE_LINK:
                self.transport.write(P.frame(C.ENQUIRE_LINK_RESP, 0, seq))
        if self.bound:
            if self.answered >= self.count and (not self.receipts
                                                or self.receipts_got >= self.answered_ok):
                if not self.done.done():
                    self.done.set_result(time.perf_counter())
                return
            self._fill()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError("connection lost after %d answers"
                                                 % self.answered))


async def run(port: int, sid: str, pw: str, count: int, window: int, binds: int,
              text: bytes, dc: int, receipts: bool = False) -> dict:
    loop = asyncio.get_running_loop()
    body = submit_body(b"10690001", b"13800138000", text, dc, 1 if receipts else 0)
    per = count // binds
    protos = []
    futs = []
    for _ in range(binds):
        fut = loop.create_future()
        _, proto = await loop.create_connection(
            lambda fut=fut: Load(body, per, window, sid.encode(), pw.encode(), fut, receipts),
            "127.0.0.1", port)
        protos.append(proto)
        futs.append(fut)
    while not all(p.bound for p in protos):
        await asyncio.sleep(0.01)
    start = time.perf_counter()
    for p in protos:
        p.start = start
        p._fill()
    ends = await asyncio.gather(*futs)
    elapsed = max(ends) - start
    lat = sorted(x for p in protos for x in p.lat)
    status: dict[str, int] = {}
    for p in protos:
        for k, v in p.status.items():
            status[C.status_name(k)] = status.get(C.status_name(k), 0) + v
        p.transport.close()
    n = len(lat)
    return {"messages": n, "seconds": round(elapsed, 3), "msg_per_s": round(n / elapsed),
            "p50_ms": round(lat[n // 2] * 1000, 2), "p99_ms": round(lat[int(n * 0.99)] * 1000, 2),
            "status": status, "window": window, "binds": binds,
            "receipts": sum(p.receipts_got for p in protos)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--system-id", default="demo")
    ap.add_argument("--password", default="demo")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--binds", type=int, default=1)
    ap.add_argument("--text", default="Your verification code is 123456")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--receipts", action="store_true",
                    help="registered_delivery=1 on a transceiver bind; wait for every receipt")
    a = ap.parse_args()
    res = asyncio.run(run(a.port, a.system_id, a.password, a.count, a.window, a.binds,
                          a.text.encode(), 0, a.receipts))
    print(json.dumps(res) if a.json else res)


if __name__ == "__main__":
    main()
