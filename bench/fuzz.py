"""Random and mutated PDUs against one node: does it live, and does a good client get through?

    .venv/bin/python bench/fuzz.py [--count 1000000] [--connections 50] [--bound 25]
                                   [--rate 10] [--seed 1]

Starts the simulator and proxyd (real twistd processes, the embedded store, the default
limits), then sends `--count` random and mutated PDUs over `--connections` connections:
`--bound` of them bind first (account "fuzz", from 127.0.2.x), the others never do
(127.0.1.x); a connection the node closes (framing error, unbind, bind timeout) is opened
again (and bound again). Mutations of valid PDUs of every command: bit flips, an octet set,
truncation, extension, a random command id, a random command_length (most keep a
command_length that matches, so that the stream stays in step; 1 in 50 do not); 1 in 20 PDUs
are random octets. Meanwhile one good client (account "good", 127.0.0.1) submits `--rate`
messages per second and counts the answers.

Prints: whether proxyd lived to the end (same pid), whether every good submit was answered
OK, proxyd's RSS after / before (VmRSS of /proc/<pid>/status: before = once the good client
is bound and has sent its first messages; after = when the last fuzz PDU is sent, and again
when the answers have settled), whether `proxyd-admin verify` passed for both accounts, and
the log lines written (tracebacks among them).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from procs import BIN, admin, free_port, start_proxyd, start_sim, write_config  # noqa: E402

from proxyd.smpp import constants as C  # noqa: E402
from proxyd.smpp import pdu as P  # noqa: E402

_HDR = struct.Struct(">IIII")
COMMAND_IDS = [c for c in P.PDU_CLASSES if c != C.UNBIND]   # (an unbind ends the session)
GOOD_CODE, FUZZ_CODE = "10690001", "10690002"


def config(port: int, sim: int) -> str:
    return """
[smpp]
listen = ["tcp:%d:interface=127.0.0.1"]
[[upstream]]
name = "sim"
connect = "tcp:host=127.0.0.1:port=%d"
system_id = "proxyd"
password = "pw"
binds = 2
[[account]]
system_id = "good"
password = "goodpw"
service_codes = ["%s"]
[[account]]
system_id = "fuzz"
password = "fuzzpw"
service_codes = ["%s"]
max_binds = 100
""" % (port, sim, GOOD_CODE, FUZZ_CODE)


def rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


# --- what is mutated --------------------------------------------------------------------------

def templates(rnd: random.Random) -> list[bytes]:
    """Valid PDUs of every command but unbind (it ends the session: mutations make a few),
    a few of each, some with TLVs."""
    out = []
    for cls in P.PDU_CLASSES.values():
        if cls.command_id == C.UNBIND:
            continue
        for _ in range(3):
            kw = {}
            for name, kind in cls.layout:
                k = kind[0]
                if k == "c":
                    if "addr" in name:
                        kw[name] = rnd.choice([FUZZ_CODE, FUZZ_CODE + "12", "13800138000",
                                               "abc", ""]).encode()
                    elif name == "system_id":
                        kw[name] = rnd.choice([b"fuzz", b"good", b"x"])
                    else:
                        kw[name] = bytes(rnd.randrange(0x30, 0x7A)
                                         for _ in range(rnd.randrange(kind[1])))
                elif k == "b":
                    kw[name] = rnd.choice([0, 1, 8, rnd.randrange(256)])
                elif k == "I":
                    kw[name] = rnd.randrange(1 << 32)
                elif k == "sm":
                    kw[name] = rnd.choice([b"hello", b"", bytes(rnd.randrange(256)
                                                                   for _ in range(140)),
                                           b"\x05\x00\x03\x07\x02\x01part"])
                elif k == "dests":
                    kw[name] = tuple((1, 1, 1, b"1380013800%d" % i) if i % 3 else (2, b"dl")
                                     for i in range(rnd.randrange(5)))
                else:
                    kw[name] = tuple((1, 1, b"138", 8) for _ in range(rnd.randrange(3)))
            tlvs = tuple((rnd.choice([C.TAG_MESSAGE_PAYLOAD, 0x020C, 0x020E, 0x020F, 0x0204,
                                      rnd.randrange(1 << 16)]),
                          bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 2, 30]))))
                         for _ in range(rnd.choice([0, 0, 1, 2])))
            out.append(P.encode(cls(seq=1, tlvs=tlvs, **kw)))
    return out


def mutate(rnd: random.Random, wire: bytes, seq: int) -> bytes:
    """One mutated PDU whose command_length matches its octets (the stream stays in step)."""
    if rnd.random() < 0.05:
        n = rnd.randrange(16, 200)
        w = bytearray(rnd.randbytes(n))
        w[0:4] = struct.pack(">I", n)
        return bytes(w)
    w = bytearray(wire)
    w[12:16] = struct.pack(">I", seq)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        op = rnd.randrange(6)
        if op == 0 and len(w) > 16:
            for _ in range(rnd.randrange(1, 4)):
                i = rnd.randrange(16, len(w))
                w[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and len(w) > 16:
            w[rnd.randrange(16, len(w))] = rnd.choice((0, 0xFF, 1, rnd.randrange(256)))
        elif op == 2:
            w = w[:rnd.randrange(16, len(w) + 1)]
        elif op == 3:
            w += rnd.randbytes(rnd.choice((1, 2, 4, 30, 300)))
        elif op == 4:
            w[4:8] = struct.pack(">I", rnd.choice((
                rnd.randrange(1 << 32), rnd.choice(COMMAND_IDS),
                rnd.randrange(0x1000) | rnd.choice((0, C.RESP_BIT)))))
        else:
            w[8:12] = struct.pack(">I", rnd.choice((0, 1, rnd.randrange(1 << 32))))
    w[0:4] = struct.pack(">I", len(w))
    return bytes(w)


def breaker(rnd: random.Random, wire: bytes, seq: int) -> bytes:
    """A PDU whose command_length does not match: below the header, huge, random, a few
    octets off, or a truncated PDU (the stream is out of step after it)."""
    w = bytearray(mutate(rnd, wire, seq))
    op = rnd.randrange(4)
    if op == 0:
        w[0:4] = struct.pack(">I", rnd.choice((0, 1, 15)))
    elif op == 1:
        w[0:4] = struct.pack(">I", rnd.choice((rnd.randrange(1 << 32), 0xFFFFFFFF, 70000)))
    elif op == 2:
        w[0:4] = struct.pack(">I", max(0, len(w) + rnd.randrange(-8, 9)))
    else:
        w = w[:rnd.randrange(1, len(w))]
    return bytes(w)


# --- clients --------------------------------------------------------------------------------

class Conn(asyncio.Protocol):
    """One connection: reads and counts what comes back; `bound` fires on a bind_resp."""

    def __init__(self) -> None:
        self.framer = P.Framer(1 << 24)
        self.closed = asyncio.get_running_loop().create_future()
        self.bound = asyncio.get_running_loop().create_future()
        self.answers = 0
        self.resps: dict[int, int] = {}         # submit_sm seq -> status (good client)
        self.waiters: dict[int, asyncio.Future] = {}
        self.paused = False
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except P.FramingError:
            self.transport.abort()
            return
        for cid, status, seq, _body in frames:
            self.answers += 1
            if cid in (C.BIND_TRANSCEIVER_RESP, C.BIND_TRANSMITTER_RESP) and \
                    not self.bound.done():
                self.bound.set_result(status)
            elif cid == C.SUBMIT_SM_RESP or (cid == C.ENQUIRE_LINK_RESP
                                             and seq == PROBE_SEQ):
                w = self.waiters.pop(seq, None)
                if w is not None and not w.done():
                    w.set_result(status)
            elif cid == C.ENQUIRE_LINK:
                self.transport.write(P.encode(P.EnquireLinkResp(seq=seq)))
            elif cid == C.DELIVER_SM:
                self.transport.write(P.message_id_resp(C.DELIVER_SM_RESP, seq, 0, b""))

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc) -> None:
        self.can_write.set()
        for f in (self.closed, self.bound):
            if not f.done():
                f.set_result(None)
        for w in self.waiters.values():
            if not w.done():
                w.set_result(None)


async def connect(port: int, source: str) -> Conn:
    loop = asyncio.get_running_loop()
    _t, conn = await loop.create_connection(Conn, "127.0.0.1", port,
                                            local_addr=(source, 0))
    return conn


class Stats:
    def __init__(self, total: int) -> None:
        self.left = total           # PDUs still to send (shared by the connections)
        self.sent = 0
        self.confirmed = 0          # read by proxyd before an enquire_link it answered
        self.connections = 0
        self.broken = 0             # ended with a PDU of a wrong command_length
        self.closed_by_node = 0     # the node closed it (framing error, unbind, timeout)
        self.binds_ok = 0
        self.answers = 0


PROBE_SEQ = 0x7FFFFFFF


async def fuzzer(port: int, source: str, bound: bool, rnd: random.Random, pool: list[bytes],
                 stats: Stats) -> None:
    """Batches of 20 fuzz PDUs, each followed by an enquire_link (answered: the node read
    the batch); 1 batch in 20 ends with a breaker, then the connection is given up."""
    seq = 1
    while stats.left > 0:
        try:
            conn = await connect(port, source)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        stats.connections += 1
        if bound:
            conn.transport.write(P.encode(P.BindTransceiver(1, 0, b"fuzz", b"fuzzpw", b"",
                                                            0x34, 0, 0, b"")))
            status = await conn.bound
            if status != 0:
                conn.transport.abort()
                await asyncio.sleep(0.5)
                continue
            stats.binds_ok += 1
        while stats.left > 0 and not conn.closed.done():
            n = min(20, stats.left)
            stats.left -= n
            batch = []
            for _ in range(n):
                seq = seq % 0x7FFFFFF0 + 1
                batch.append(mutate(rnd, rnd.choice(pool), seq))
            broken = rnd.random() < 0.05
            if broken:
                batch[-1] = breaker(rnd, rnd.choice(pool), seq)
            probe = conn.waiters[PROBE_SEQ] = asyncio.get_running_loop().create_future()
            conn.transport.write(b"".join(batch) + P.encode(P.EnquireLink(seq=PROBE_SEQ)))
            stats.sent += n
            await conn.can_write.wait()
            if broken:
                stats.broken += 1
                await asyncio.wait([conn.closed], timeout=2.0)
                break
            try:
                await asyncio.wait_for(probe, 120)      # a limit on waiting
            except asyncio.TimeoutError:
                break
            if probe.result() is not None:
                stats.confirmed += n
        if conn.closed.done():
            stats.closed_by_node += 1
        stats.answers += conn.answers
        conn.transport.abort()
        await conn.closed


async def good_client(port: int, rate: float, stop: asyncio.Event, results: list,
                      ready: asyncio.Event) -> None:
    conn = await connect(port, "127.0.0.1")
    conn.transport.write(P.encode(P.BindTransceiver(1, 0, b"good", b"goodpw", b"", 0x34, 0,
                                                    0, b"")))
    status = await asyncio.wait_for(conn.bound, 60)
    if status != 0:
        raise RuntimeError("the good client's bind was refused: %r" % (status,))
    seq = 1
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = []

    async def one(seq: int) -> None:
        w = conn.waiters[seq] = loop.create_future()
        conn.transport.write(P.encode(P.SubmitSm(
            seq=seq, source_addr=GOOD_CODE.encode(), dest_addr_ton=1,
            destination_addr=b"1380013%04d" % (seq % 10000),
            short_message=b"good message %d" % seq)))
        try:
            results.append(await asyncio.wait_for(w, 60))   # a limit, not a measurement
        except asyncio.TimeoutError:
            results.append("no answer in 60 s")
    while not stop.is_set():
        seq += 1
        pending.append(asyncio.ensure_future(one(seq)))
        if seq == 11:
            ready.set()
        await asyncio.sleep(max(0.0, start + (seq - 1) / rate - loop.time()))
    await asyncio.gather(*pending)
    conn.transport.write(P.encode(P.Unbind(seq=seq + 1)))
    await asyncio.sleep(0.2)
    conn.transport.close()


async def run(a: argparse.Namespace, port: int, pid: int) -> dict:
    rnd = random.Random(a.seed)
    pool = templates(rnd)
    stats = Stats(a.count)
    stop = asyncio.Event()
    ready = asyncio.Event()
    results: list = []
    good = asyncio.ensure_future(good_client(port, a.rate, stop, results, ready))
    await asyncio.wait([good, asyncio.ensure_future(ready.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if good.done():
        good.result()
    out = {"rss_before": rss_kb(pid)}
    t0 = time.perf_counter()
    tasks = []
    for i in range(a.connections):
        bound = i < a.bound
        source = "127.0.%d.%d" % (2 if bound else 1, i + 1)
        tasks.append(fuzzer(port, source, bound, random.Random(rnd.random()), pool, stats))
    progress = asyncio.ensure_future(report_progress(stats, a.count, t0, pid))
    await asyncio.gather(*tasks)
    progress.cancel()
    out["fuzz_s"] = time.perf_counter() - t0
    out["rss_after"] = rss_kb(pid)
    await asyncio.sleep(5.0)       # the good client goes on meanwhile: answers settle
    stop.set()
    await good
    out["rss_settled"] = rss_kb(pid)
    out["stats"] = stats
    out["good"] = results
    return out


async def report_progress(stats: Stats, total: int, t0: float, pid: int) -> None:
    while True:
        await asyncio.sleep(30)
        print("  ... %d of %d sent in %.0f s, proxyd RSS %d KiB" % (
            stats.sent, total, time.perf_counter() - t0, rss_kb(pid)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--bound", type=int, default=25, help="of the connections, bound first")
    ap.add_argument("--rate", type=float, default=10.0, help="good submits per second")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="proxyd-fuzz-"))
    sim, sim_port, _ = start_sim(tmp, None)
    port = free_port()
    cfg = write_config(tmp, config(port, sim_port))
    proxyd = start_proxyd(tmp, cfg, port)
    pid = proxyd.p.pid
    try:
        admin(tmp, cfg, "topup", "good", "1000000")
        admin(tmp, cfg, "topup", "fuzz", str(10 ** 9))
        time.sleep(1.0)     # the upstream binds
        out = asyncio.run(run(a, port, pid))
        alive = proxyd.p.poll() is None
        time.sleep(1.0)     # the last journal records are written
        verify = {acct: admin(tmp, cfg, "verify", acct, check=False)
                  for acct in ("good", "fuzz")}
        balance = admin(tmp, cfg, "balance", "good").stdout.strip()
    finally:
        proxyd.stop()
        sim.stop()
    log = (tmp / "proxyd.log").read_text(errors="replace")
    s = out["stats"]
    good = out["good"]
    ok = sum(1 for r in good if r == 0)
    print("%d fuzz PDUs over %d connections (%d bound first) in %.0f s (%.0f PDU/s), %d of "
          "them confirmed read (an enquire_link after them answered)"
          % (s.sent, a.connections, a.bound, out["fuzz_s"], s.sent / out["fuzz_s"],
             s.confirmed))
    print("%d connections opened, %d ended with a wrong command_length, %d closed by proxyd, "
          "%d fuzz binds accepted, %d PDUs answered" % (s.connections, s.broken,
                                                       s.closed_by_node, s.binds_ok,
                                                       s.answers))
    print("proxyd never died: %s (pid %d %s)" % ("yes" if alive else "NO", pid,
                                                 "still running" if alive else "gone"))
    bad = [r for r in good if r != 0]
    print("good submits: %d sent at %g/s, %d answered OK, %d not: %s" % (
        len(good), a.rate, ok, len(bad), "every one OK" if not bad and good else
        ", ".join(sorted({C.status_name(r) if isinstance(r, int) else str(r)
                          for r in bad}))))
    print("good account balance after: %s (1000000 topped up, %d OK messages)"
          % (balance, ok))
    print("proxyd RSS: before %d KiB, after %d KiB (%.2fx before), settled %d KiB (%.2fx) "
          "(target < 1.5x)" % (out["rss_before"], out["rss_after"],
                               out["rss_after"] / out["rss_before"], out["rss_settled"],
                               out["rss_settled"] / out["rss_before"]))
    for acct, r in verify.items():
        print("proxyd-admin verify %s: %s (%s)" % (acct, "passed" if r.returncode == 0
                                                   else "FAILED", r.stdout.strip()))
    print("log: %d lines, %d tracebacks, %d 'Unhandled'" % (
        log.count("\n"), log.count("Traceback"), log.count("Unhandled")))
    print("(logs in %s)" % tmp)


if __name__ == "__main__":
    main()
