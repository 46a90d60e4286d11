"""Password guessing against one node: does the customer still get in?

    .venv/bin/python bench/attack.py [--wrong 300] [--connections 20] [--rounds 6]

Starts the simulator and proxyd (real twistd processes, the embedded store, the default
[auth] settings, a scrypt hash of its own for each account), then sends `--wrong` binds with
wrong passwords over `--connections` connections from 127.0.0.2, all at once. Meanwhile a legitimate client on
127.0.0.1 binds (each round with another account, so every bind pays its scrypt: no remembered
verification) and submits one message, `--rounds` times, the first at the start of the attack.
Prints how long the legitimate bind and submit took, against the same before the attack
(ratio measured in this run), and how the wrong binds were answered. Target: under 1 s.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from procs import admin, free_port, start_proxyd, start_sim, write_config  # noqa: E402

from proxyd.passwords import hash_password  # noqa: E402
from proxyd.smpp import constants as C  # noqa: E402
from proxyd.smpp import pdu as P  # noqa: E402

ATTACKER, CUSTOMER = "127.0.0.2", "127.0.0.1"


def config(port: int, sim: int, accounts: list[str]) -> str:
    text = """
[smpp]
listen = ["tcp:%d:interface=127.0.0.1"]
[[upstream]]
name = "sim"
connect = "tcp:host=127.0.0.1:port=%d"
system_id = "proxyd"
password = "pw"
""" % (port, sim)
    for i, name in enumerate(accounts):
        text += ('\n[[account]]\nsystem_id = "%s"\npassword = "%s"\nservice_codes = '
                 '["1069%04d"]\n' % (name, hash_password("RightPw1"), i))
    return text


def read_pdu(s: socket.socket) -> P.Pdu | None:
    buf = b""
    while len(buf) < 16:
        chunk = s.recv(16 - len(buf))
        if not chunk:
            return None
        buf += chunk
    n = struct.unpack(">I", buf[:4])[0]
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return P.decode(buf)


def bind_pdu(sid: str, pw: str, seq: int = 1) -> bytes:
    return P.encode(P.BindTransceiver(seq, 0, sid.encode(), pw.encode(), b"", 0x34, 0, 0, b""))


def legit(port: int, sid: str, code: str) -> tuple[float, float]:
    """(seconds to bind, seconds to submit) of one customer connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(CUSTOMER, 0))
    try:
        t0 = time.perf_counter()
        s.sendall(bind_pdu(sid, "RightPw1"))
        r = read_pdu(s)
        t1 = time.perf_counter()
        assert r is not None and r.status == 0, "legitimate bind refused: %r" % (r,)
        s.sendall(P.encode(P.SubmitSm(seq=2, source_addr=code.encode(), dest_addr_ton=1,
                                      destination_addr=b"13800138000", short_message=b"hi")))
        r = read_pdu(s)
        t2 = time.perf_counter()
        assert r is not None and r.status == 0, "legitimate submit refused: %r" % (r,)
        return t1 - t0, t2 - t1
    finally:
        s.close()


def attacker(port: int, target: str, n: int, answers: dict, lock: threading.Lock) -> None:
    s = None
    for i in range(n):
        for _ in range(3):
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", port), timeout=120,
                                                 source_address=(ATTACKER, 0))
                s.sendall(bind_pdu(target, "bad%05d" % i, i + 1))
                r = read_pdu(s)
                if r is None:
                    raise OSError("closed")
                with lock:
                    answers[C.status_name(r.status)] = answers.get(C.status_name(r.status),
                                                                   0) + 1
                break
            except OSError:
                if s is not None:
                    s.close()
                s = None
    if s is not None:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wrong", type=int, default=300)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between rounds")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="proxyd-attack-"))
    names = ["cust%02d" % i for i in range(a.rounds + 3)]
    sim, sim_port, _ = start_sim(tmp, None)
    port = free_port()
    cfg = write_config(tmp, config(port, sim_port, names))
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        for i, name in enumerate(names):
            admin(tmp, cfg, "topup", name, "100000")
        time.sleep(1.0)     # the upstream binds
        before = [legit(port, names[-1 - i], "1069%04d" % (len(names) - 1 - i))
                  for i in range(3)]
        answers: dict = {}
        lock = threading.Lock()
        per = [a.wrong // a.connections + (1 if i < a.wrong % a.connections else 0)
               for i in range(a.connections)]
        threads = [threading.Thread(target=attacker, args=(port, names[0], n, answers, lock),
                                    daemon=True) for n in per]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        during = []
        for r in range(a.rounds):
            target = t0 + 0.1 + r * a.every     # (0.1 s: the wrong binds are in)
            time.sleep(max(0.0, target - time.perf_counter()))
            # round 0 starts with the burst of wrong binds; the targeted account's name
            # (cust00) is the customer's own: it still binds from its own address
            during.append((time.perf_counter() - t0,) + legit(port, names[r], "1069%04d" % r))
        for t in threads:
            t.join()
        attack_s = time.perf_counter() - t0
    finally:
        proxyd.stop()
        sim.stop()
    log = (tmp / "proxyd.log").read_text(errors="replace")
    base = statistics.median(b + s for b, s in before)
    print("legitimate bind + submit from %s, before the attack: median %.3f s "
          "(bind %.3f, submit %.3f)" % (CUSTOMER, base, statistics.median(b for b, _ in before),
                                        statistics.median(s for _, s in before)))
    print("during %d wrong binds over %d connections from %s:" % (a.wrong, a.connections,
                                                                   ATTACKER))
    for at, b, s in during:
        print("  at %5.1f s: bind %.3f s, submit %.3f s, total %.3f s (%.1fx before)"
              % (at, b, s, b + s, (b + s) / base))
    worst = max(b + s for _, b, s in during)
    print("worst legitimate bind + submit: %.3f s (target < 1 s): %s"
          % (worst, "OK" if worst < 1.0 else "MISSED"))
    print("wrong binds answered: %s, in %.1f s; lockouts logged: %d, busy refusals logged: %d"
          % (", ".join("%d %s" % (n, k) for k, n in sorted(answers.items())), attack_s,
             log.count("authentication locked"), log.count("password checks in flight")))


if __name__ == "__main__":
    main()
