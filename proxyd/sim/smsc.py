"""An operator's SMSC stand-in: binds, submit_sm/data_sm answers, receipts, MO, errors on demand.

One `SmscFactory` is one simulated SMSC; every connection is an `SmscProtocol`. The hot path
(submit_sm) is built for benchmarks: every frame of one ``dataReceived`` is handled in a loop,
the answers are collected and written with ONE ``transport.write``; a submit is decoded only
as far as needed (its header always; source, destination, registered_delivery and the first
octets of text only when receipts are on; nothing else).

Error injection (all off by default, see `SmscConfig`):

* ``fail_every`` N / ``fail_status``: every Nth submit (counted over the whole SMSC) is answered
  with ``fail_status`` and is not accepted (not recorded, no receipt).
* ``latency_ms``: submit_sm/data_sm answers are written that much later (one timer per
  connection, answers batched); binds, enquire_link and unbind are answered at once.
* ``drop_after`` N: on each connection, after the first N-1 submits are answered, the Nth is
  left unanswered (not accepted) and the connection is closed.
* ``throttle_tps``: over that many submits in one wall-clock second (whole SMSC), submits are
  answered ESME_RTHROTTLED.

Recording: with ``record`` set, every accepted submit_sm (and data_sm) is one JSON line
``{"t": <unix time>, "id": "<message id>", "system_id": "<bind>", "cmd": "submit_sm",
"body": "<hex of the raw body>"}``, flushed at the end of each ``dataReceived`` batch and
always before its answer is written. With ``stats`` set, one JSON line per wall-clock second
that saw submits: ``{"t": <second>, "submits": n, "accepted": a, "rejected": r}``.
"""
from __future__ import annotations

import json
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, Callable, NamedTuple

from twisted.internet import protocol, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp import session as S

_HEADER = P._HDR  # struct ">IIII"
_ROK = 0
_RINVPASWD = C.STATUS["ESME_RINVPASWD"]
_RINVSYSID = C.STATUS["ESME_RINVSYSID"]
_RINVCMDID = C.STATUS["ESME_RINVCMDID"]
_RTHROTTLED = C.STATUS["ESME_RTHROTTLED"]

_SUBMIT_SM = C.SUBMIT_SM
_SUBMIT_SM_RESP = C.SUBMIT_SM_RESP
_DATA_SM = C.DATA_SM
_DATA_SM_RESP = C.DATA_SM_RESP

SMSC_SYSTEM_ID = b"proxyd-smsc"

# Appendix B "stat" values -> message_state TLV value (SMPP 3.4 section 5.2.28)
MESSAGE_STATE = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5,
                 "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}

BIND_MODES = {C.BIND_TRANSMITTER: "transmitter", C.BIND_RECEIVER: "receiver",
              C.BIND_TRANSCEIVER: "transceiver"}

ANY_SYSTEM = "*"  # key of MO messages queued for whichever receiver binds first
# a gateway's own report code (CMPP "MB:0011", "DB:0100", ...): undeliverable in SMPP terms
OPERATOR_CODE = re.compile(r"^[A-Z]{2}:[0-9A-Z]{4}$")


def known_stat(name: str) -> bool:
    return name in MESSAGE_STATE or OPERATOR_CODE.match(name) is not None


def parse_receipt_stat(spec: str) -> tuple[str, ...]:
    """``"DELIVRD"`` or a weighted mix ``"DELIVRD:8,UNDELIV:1,EXPIRED:1"`` -> a cycle.

    Receipts take the stats in this order, one per accepted message, so tests are
    deterministic: ``DELIVRD:2,UNDELIV:1`` gives DELIVRD, DELIVRD, UNDELIV, DELIVRD, ...
    """
    out: list[str] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if OPERATOR_CODE.match(item.upper()) or ":" not in item:
            name, weight = item, ""              # "DELIVRD", "MB:0011"
        else:
            name, _, weight = item.rpartition(":")  # "DELIVRD:8", "MB:0011:2"
        name = name.strip().upper()
        if not known_stat(name):
            raise ValueError("receipt stat %r is not one of %s, or a gateway code like "
                             "MB:0011" % (name, ", ".join(sorted(MESSAGE_STATE))))
        n = int(weight) if weight else 1
        if n < 0:
            raise ValueError("receipt stat weight must be >= 0: %r" % item)
        out.extend([name] * n)
    if not out:
        raise ValueError("receipt stat: empty")
    return tuple(out)


def parse_status(value: str | int) -> int:
    """``0x58``, ``88`` or ``ESME_RTHROTTLED`` -> 88."""
    if isinstance(value, int):
        return value
    v = value.strip()
    if v.upper() in C.STATUS:
        return C.STATUS[v.upper()]
    return int(v, 0)


@dataclass(frozen=True)
class SmscConfig:
    system_id: str | None = None          # only this system_id may bind (None: any)
    password: str | None = None           # only this password (None: any)
    receipts: bool = True                 # send receipts when registered_delivery & 1
    receipt_delay_s: float = 0.0
    receipt_stat: tuple[str, ...] = ("DELIVRD",)
    fail_every: int = 0
    fail_status: int = C.STATUS["ESME_RSYSERR"]
    latency_ms: float = 0.0
    drop_after: int = 0
    throttle_tps: int = 0
    record: str | None = None             # JSON lines of accepted submits
    stats: str | None = None              # JSON lines of per-second counts
    id_format: str = "hex"                # "hex" or "dec"
    id_start: int | None = None           # first message id (None: derived from start time)
    max_pdu_bytes: int = 65536
    # --protocol sgip: where the gateway connects back to the SP, and what it presents there
    sp_connect: str | None = None
    sp_login: str | None = None           # default: system_id
    sp_password: str | None = None        # default: password

    def __post_init__(self) -> None:
        if self.id_format not in ("hex", "dec"):
            raise ValueError("id_format must be 'hex' or 'dec', not %r" % self.id_format)
        for name in ("fail_every", "drop_after", "throttle_tps"):
            if getattr(self, name) < 0:
                raise ValueError("%s must be >= 0" % name)
        if self.latency_ms < 0 or self.receipt_delay_s < 0:
            raise ValueError("latency_ms and receipt_delay_s must be >= 0")
        if not self.receipt_stat:
            raise ValueError("receipt_stat: empty")
        for s in self.receipt_stat:
            if not known_stat(s):
                raise ValueError("receipt stat %r unknown" % s)


def _cstr(v: str | bytes) -> bytes:
    return (v.encode("latin-1") if isinstance(v, str) else v) + b"\0"


def deliver_sm_body(source: bytes, source_ton: int, source_npi: int, dest: bytes,
                    dest_ton: int, dest_npi: int, esm_class: int, data_coding: int,
                    short_message: bytes, tlvs: bytes = b"") -> bytes:
    """The body of a deliver_sm (header added when sent, with the connection's sequence)."""
    if len(short_message) > 255:
        tlvs = _tlv(C.TAG_MESSAGE_PAYLOAD, short_message) + tlvs
        short_message = b""
    return b"".join((
        b"\0", bytes((source_ton, source_npi)), source, b"\0",
        bytes((dest_ton, dest_npi)), dest, b"\0",
        bytes((esm_class, 0, 0)), b"\0\0",           # protocol_id, priority, sched, validity
        bytes((0, 0, data_coding, 0, len(short_message))), short_message, tlvs))


def _tlv(tag: int, value: bytes) -> bytes:
    return P._HH.pack(tag, len(value)) + value


class Submitted(NamedTuple):
    """What a receipt needs of an accepted submit: its addresses and first 20 octets."""
    src_ton: int
    src_npi: int
    src: bytes
    dst_ton: int
    dst_npi: int
    dst: bytes
    registered_delivery: int
    text: bytes


class DueReceipt(NamedTuple):
    """A receipt waiting for its time."""
    due: float
    system_id: str
    message_id: bytes
    submitted: Submitted
    submit_time: float
    stat: str


def _scan_submit(body: bytes) -> Submitted:
    """The `Submitted` facts of a submit_sm body; raises ValueError/IndexError on a
    malformed one."""
    idx = body.index
    p = idx(0) + 1
    src_ton = body[p]
    src_npi = body[p + 1]
    p += 2
    j = idx(0, p)
    src = body[p:j]
    p = j + 1
    dst_ton = body[p]
    dst_npi = body[p + 1]
    p += 2
    j = idx(0, p)
    dst = body[p:j]
    p = idx(0, j + 4) + 1                      # skip esm_class, protocol_id, priority, sched
    p = idx(0, p) + 1                          # validity
    reg = body[p]
    n = body[p + 4]
    start = p + 5
    if start + n > len(body):
        raise ValueError("sm_length exceeds the PDU")
    text = body[start:start + min(n, 20)]
    if n == 0 and start < len(body):
        payload = dict(P.decode_tlvs(body, start)).get(C.TAG_MESSAGE_PAYLOAD)
        if payload:
            text = payload[:20]
    return Submitted(src_ton, src_npi, src, dst_ton, dst_npi, dst, reg, text)


class SmscFactory(protocol.ServerFactory):
    """One simulated SMSC: shared counters, receipt queue, receiver registry, recording."""

    log = Logger()
    noisy = False

    def __init__(self, config: SmscConfig | None = None, reactor: Any = None,
                 wallclock: Callable[[], float] = time.time) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.config = config or SmscConfig()
        self.reactor: IReactorTime = reactor
        self.wallclock = wallclock
        c = self.config
        self._next_id = c.id_start if c.id_start is not None else int(wallclock() * 1000) * 1000
        self._id_fmt = "%x" if c.id_format == "hex" else "%d"
        self._submit_count = 0                  # for fail_every
        self._accepted = 0                      # for the receipt stat cycle
        self._throttle_sec = -1
        self._throttle_count = 0
        self.counters = {"submits": 0, "accepted": 0, "failed": 0, "throttled": 0,
                         "dropped": 0, "receipts": 0, "mo": 0, "deliver_sent": 0,
                         "deliver_queued": 0, "binds": 0}
        # receivers: system_id -> list of bound rx/trx protocols; round robin index
        self.receivers: dict[str, list[SmscProtocol]] = {}
        self._rr: dict[str, int] = {}
        self.pending: dict[str, deque[bytes]] = {}   # deliver_sm bodies waiting for a receiver
        # receipts not yet due: (due, system_id, fields); one timer for the head
        self._receipts: deque[DueReceipt] = deque()
        self._receipt_timer: Any = None
        # recording
        self._record_fh: IO[str] | None = None
        self._record_buf: list[str] = []
        self._stats_fh: IO[str] | None = None
        self._stat_sec = -1
        self._stat = [0, 0, 0]                   # received, accepted, rejected
        self._stats_loop: task.LoopingCall | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def startFactory(self) -> None:
        if self.config.stats and self._stats_loop is None:
            self._stats_loop = task.LoopingCall(self._stats_tick)
            self._stats_loop.clock = self.reactor
            self._stats_loop.start(1.0, now=False)

    def stopFactory(self) -> None:
        if self._stats_loop is not None and self._stats_loop.running:
            self._stats_loop.stop()
        self._stats_loop = None
        if self._receipt_timer is not None and self._receipt_timer.active():
            self._receipt_timer.cancel()
        self._receipt_timer = None
        self.close()

    def close(self) -> None:
        """Flush and close the record and stats files (they reopen on the next write)."""
        self.flush()
        self._emit_stats()
        for name in ("_record_fh", "_stats_fh"):
            fh = getattr(self, name)
            if fh is not None:
                fh.close()
                setattr(self, name, None)

    def buildProtocol(self, addr: Any) -> "SmscProtocol":
        p = SmscProtocol(self)
        p.factory = self
        return p

    # --- ids, counters, recording -----------------------------------------------------------
    def new_id(self) -> bytes:
        n = self._next_id
        self._next_id = n + 1
        return (self._id_fmt % n).encode("ascii")

    def record(self, message_id: bytes, system_id_json: str, cmd: str, body: bytes) -> None:
        self._record_buf.append('{"t": %.6f, "id": "%s", "system_id": %s, "cmd": "%s", '
                                '"body": "%s"}\n' % (self.wallclock(), message_id.decode(),
                                                     system_id_json, cmd, body.hex()))

    def flush(self) -> None:
        """Write out the recorded lines of this batch (called before answers are written)."""
        if self._record_buf:
            if self._record_fh is None:
                self._record_fh = open(self.config.record, "a", encoding="utf-8")  # type: ignore[arg-type]
            self._record_fh.write("".join(self._record_buf))
            self._record_fh.flush()
            self._record_buf.clear()

    def count_stats(self, received: int, accepted: int, rejected: int) -> None:
        sec = int(self.wallclock())
        if sec != self._stat_sec:
            self._emit_stats()
            self._stat_sec = sec
        s = self._stat
        s[0] += received
        s[1] += accepted
        s[2] += rejected

    def _stats_tick(self) -> None:
        if self._stat_sec >= 0 and int(self.wallclock()) != self._stat_sec:
            self._emit_stats()

    def _emit_stats(self) -> None:
        s = self._stat
        if self.config.stats and s[0] and self._stat_sec >= 0:
            if self._stats_fh is None:
                self._stats_fh = open(self.config.stats, "a", encoding="utf-8")
            self._stats_fh.write('{"t": %d, "submits": %d, "accepted": %d, "rejected": %d}\n'
                                 % (self._stat_sec, s[0], s[1], s[2]))
            self._stats_fh.flush()
        self._stat = [0, 0, 0]
        self._stat_sec = -1

    def admit(self, now_sec: int) -> int:
        """Status for the next submit before it is accepted: 0, throttled or fail_status."""
        c = self.config
        if c.throttle_tps:
            if now_sec != self._throttle_sec:
                self._throttle_sec = now_sec
                self._throttle_count = 0
            self._throttle_count += 1
            if self._throttle_count > c.throttle_tps:
                self.counters["throttled"] += 1
                return _RTHROTTLED
        if c.fail_every:
            self._submit_count += 1
            if self._submit_count % c.fail_every == 0:
                self.counters["failed"] += 1
                return c.fail_status
        return _ROK

    # --- receipts and MO ----------------------------------------------------------------------
    def schedule_receipt(self, system_id: str, message_id: bytes, fields: Submitted,
                         submit_time: float) -> None:
        stats = self.config.receipt_stat
        stat = stats[self._accepted % len(stats)]
        self._accepted += 1
        due = self.reactor.seconds() + self.config.receipt_delay_s
        self._receipts.append(DueReceipt(due, system_id, message_id, fields, submit_time,
                                         stat))
        if self._receipt_timer is None:
            self._receipt_timer = self.reactor.callLater(
                max(0.0, due - self.reactor.seconds()), self._fire_receipts)

    def _fire_receipts(self) -> None:
        self._receipt_timer = None
        now = self.reactor.seconds()
        q = self._receipts
        batch: dict[str, list[bytes]] = {}
        while q and q[0].due <= now:
            r = q.popleft()
            batch.setdefault(r.system_id, []).append(
                self._receipt_body(r.message_id, r.submitted, r.submit_time, r.stat))
        for system_id, bodies in batch.items():
            self.counters["receipts"] += len(bodies)
            self.deliver(system_id, bodies)
        if q:
            self._receipt_timer = self.reactor.callLater(max(0.0, q[0].due - now),
                                                         self._fire_receipts)

    def _receipt_body(self, message_id: bytes, f: Submitted, submit_time: float,
                      stat: str) -> bytes:
        done = self.wallclock()
        delivered = stat == "DELIVRD"
        sm = b"id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:%s" % (
            message_id, b"001" if delivered else b"000",
            time.strftime("%y%m%d%H%M", time.localtime(submit_time)).encode(),
            time.strftime("%y%m%d%H%M", time.localtime(done)).encode(),
            stat.encode(), b"000" if stat in ("DELIVRD", "ACCEPTD", "ENROUTE") else b"001",
            f.text)
        tlvs = (_tlv(C.TAG_RECEIPTED_MESSAGE_ID, message_id + b"\0")
                + _tlv(C.TAG_MESSAGE_STATE, bytes((MESSAGE_STATE.get(stat, 5),))))
        # a receipt goes from the recipient back to the sender: addresses swapped
        return deliver_sm_body(f.dst, f.dst_ton, f.dst_npi, f.src, f.src_ton, f.src_npi,
                               C.ESM_DELIVERY_RECEIPT, 0, sm, tlvs)

    def send_mo(self, source: str | bytes, dest: str | bytes, text_bytes: bytes,
                data_coding: int = 0, system_id: str | None = None, source_ton: int = 1,
                source_npi: int = 1, dest_ton: int = 0, dest_npi: int = 1,
                esm_class: int = 0) -> bool:
        """Inject a mobile-originated message (a deliver_sm without receipt bits).

        Sent to a receiver/transceiver bind of `system_id` (any bind when None), round
        robin; queued until one binds otherwise. True if sent now, False if queued.
        Set ``esm_class=0x40`` when text_bytes starts with a UDH.
        """
        body = deliver_sm_body(_cstr(source)[:-1], source_ton, source_npi, _cstr(dest)[:-1],
                               dest_ton, dest_npi, esm_class & ~C.ESM_RECEIPT_MASK,
                               data_coding, text_bytes)
        self.counters["mo"] += 1
        return self.deliver(system_id or ANY_SYSTEM, [body])

    def deliver(self, system_id: str, bodies: list[bytes]) -> bool:
        """Send deliver_sm bodies to the receiver binds of system_id, one by one in round
        robin (one write per bind), or queue them until one binds. True if sent now."""
        if system_id == ANY_SYSTEM:
            targets = [p for lst in self.receivers.values() for p in lst]
        else:
            targets = self.receivers.get(system_id) or []
        if not targets:
            self.pending.setdefault(system_id, deque()).extend(bodies)
            self.counters["deliver_queued"] += len(bodies)
            return False
        n = len(targets)
        i = self._rr.get(system_id, 0)
        self._rr[system_id] = i + len(bodies)
        if n == 1:
            targets[0].send_deliver(bodies)
            return True
        groups: dict[int, list[bytes]] = {}
        for k, body in enumerate(bodies):
            groups.setdefault((i + k) % n, []).append(body)
        for j, group in groups.items():
            targets[j].send_deliver(group)
        return True

    def add_receiver(self, p: "SmscProtocol") -> None:
        self.receivers.setdefault(p.system_id, []).append(p)

    def remove_receiver(self, p: "SmscProtocol") -> None:
        lst = self.receivers.get(p.system_id)
        if lst and p in lst:
            lst.remove(p)
            if not lst:
                del self.receivers[p.system_id]

    def flush_pending(self, p: "SmscProtocol") -> None:
        """A receiver just bound: hand it what was queued for its system_id (and for any)."""
        out: list[bytes] = []
        for key in (p.system_id, ANY_SYSTEM):
            q = self.pending.pop(key, None)
            if q:
                self.counters["deliver_queued"] -= len(q)
                out.extend(q)
        if out:
            p.send_deliver(out)


class SmscProtocol(protocol.Protocol, S.SessionHandler):
    """One ESME connection to the simulated SMSC: a thin adapter over the sans-IO `Session`
    (role SMSC, no timers); binds, enquire_link, unbind, bind-state refusals and framing
    errors are the session's, submits and receipts the simulator's."""

    log = Logger()

    def __init__(self, factory: SmscFactory) -> None:
        self.factory = factory
        c = factory.config
        self.config = c
        self.session = S.Session(S.SMSC, self, S.SessionConfig(max_pdu_bytes=c.max_pdu_bytes))
        self.seq = self.session.seq
        self.system_id = ""
        self._sid_json = '""'
        self.submits = 0                       # received on this connection (drop_after)
        self.closing = False
        self.peer = "?"
        self._latency = c.latency_ms / 1000.0
        self._late: deque[tuple[float, bytes]] = deque()
        self._late_timer: Any = None
        self._batch_late: list[bytes] = []     # answers of this batch due after latency
        self._receipts = c.receipts
        self._drop_after = c.drop_after
        self._record = c.record
        self._now_sec = -1
        self._received = self._accepted = self._rejected = 0

    @property
    def mode(self) -> str | None:
        """transmitter / receiver / transceiver while bound, else None."""
        return self.session.mode if self.session.state == S.BOUND else None

    @property
    def can_submit(self) -> bool:
        return self.session.can_submit

    @property
    def can_receive(self) -> bool:
        return self.session.can_receive

    # --- connection ---------------------------------------------------------------------------
    def connectionMade(self) -> None:
        t = self.transport
        set_nodelay = getattr(t, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except Exception:  # not a TCP socket (unix, TLS over something exotic)
                pass
        peer = t.getPeer()
        self.peer = "%s:%s" % (getattr(peer, "host", peer), getattr(peer, "port", ""))

    def connectionLost(self, reason: Any = None) -> None:
        if self._late_timer is not None and self._late_timer.active():
            self._late_timer.cancel()
        self._late_timer = None
        self._late.clear()
        mode = self.mode
        if mode is not None:
            self.factory.remove_receiver(self)
            self.log.info("smsc: {peer} system_id={sid} {mode} connection closed",
                          peer=self.peer, sid=self.system_id, mode=mode)
        self.session.connection_lost()

    # --- input -------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self._now_sec = -1
        self._received = self._accepted = self._rejected = 0
        self.session.receive_data(data, 0.0)    # one write of this batch's answers
        f = self.factory
        if self._received:
            f.count_stats(self._received, self._accepted, self._rejected)
        f.flush()
        late = self._batch_late
        if late:
            if not self.closing:
                self._late.append((f.reactor.seconds() + self._latency, b"".join(late)))
                if self._late_timer is None:
                    self._late_timer = f.reactor.callLater(self._latency, self._fire_late)
            late.clear()

    def write(self, data: bytes) -> None:
        self.factory.flush()                   # recorded before answered
        self.transport.write(data)

    def close_connection(self, reason: str) -> None:
        self.closing = True
        if reason == S.FRAMING:
            self.log.warn("smsc: {peer} framing error: {err}; closing", peer=self.peer,
                          err=self.session.error)
        chunks: list[bytes] = []
        self._flush_late(chunks)
        chunks.extend(self._batch_late)
        self._batch_late.clear()
        if chunks:
            self.write(b"".join(chunks))
        self.transport.loseConnection()

    def on_request(self, cid: int, status: int, seq: int, body: bytes) -> None:
        if cid == _SUBMIT_SM or cid == _DATA_SM:
            self._submit(cid, status, seq, body)
        else:
            # a request SMPP 3.4 defines that this simulator does not implement
            self.session.reply(_HEADER.pack(16, cid | C.RESP_BIT, _RINVCMDID, seq))

    def _answer(self, data: bytes) -> None:
        if self._latency:
            self._batch_late.append(data)
            self.session.answered()
        else:
            self.session.reply(data)

    def _submit(self, cid: int, status: int, seq: int, body: bytes) -> None:
        f = self.factory
        self._received += 1
        self.submits += 1
        f.counters["submits"] += 1
        if self._drop_after and self.submits >= self._drop_after:
            f.counters["dropped"] += 1
            self.log.info("smsc: {peer} system_id={sid} dropping the connection after "
                          "{n} submits (drop_after)", peer=self.peer,
                          sid=self.system_id, n=self.submits)
            self.session.close()                # this one is never answered
            return
        if self._now_sec < 0:
            self._now_sec = int(f.wallclock())
        st = f.admit(self._now_sec)
        resp_cid = _SUBMIT_SM_RESP if cid == _SUBMIT_SM else _DATA_SM_RESP
        if st:
            self._rejected += 1
            self._answer(_HEADER.pack(16, resp_cid, st, seq))
            return
        fields = None
        if self._receipts:
            try:
                if cid == _SUBMIT_SM:
                    fields = _scan_submit(body)
                else:
                    fields = self._scan_data_sm(body)
            except (ValueError, IndexError):
                bad = P.decode_body(cid, status, seq, body)
                err = bad.error if isinstance(bad, P.BadPdu) else C.STATUS["ESME_RSYSERR"]
                self._rejected += 1
                self._answer(_HEADER.pack(16, resp_cid, err, seq))
                return
        mid = f.new_id()
        self._accepted += 1
        f.counters["accepted"] += 1
        if self._record:
            f.record(mid, self._sid_json, "submit_sm" if cid == _SUBMIT_SM else "data_sm",
                     body)
        if fields is not None and fields.registered_delivery & 1:
            f.schedule_receipt(self.system_id, mid, fields, f.wallclock())
        self._answer(_HEADER.pack(17 + len(mid), resp_cid, 0, seq) + mid + b"\0")

    def on_unbind(self) -> None:
        chunks: list[bytes] = []
        self._flush_late(chunks)               # answers still delayed go out first
        chunks.extend(self._batch_late)
        self._batch_late.clear()
        if chunks:
            self.session.send(b"".join(chunks))
        mode = self.mode
        if mode is not None:
            self.log.info("smsc: {peer} system_id={sid} {mode} unbound",
                          peer=self.peer, sid=self.system_id, mode=mode)
            self.factory.remove_receiver(self)

    def _fire_late(self) -> None:
        self._late_timer = None
        now = self.factory.reactor.seconds()
        q = self._late
        chunks = []
        while q and q[0][0] <= now + 1e-9:
            chunks.append(q.popleft()[1])
        if chunks:
            self.transport.write(b"".join(chunks))
        if q:
            self._late_timer = self.factory.reactor.callLater(max(0.0, q[0][0] - now),
                                                              self._fire_late)

    def _flush_late(self, out: list[bytes]) -> None:
        """Answer every delayed response now (before an unbind_resp or a drop)."""
        if self._late_timer is not None and self._late_timer.active():
            self._late_timer.cancel()
        self._late_timer = None
        while self._late:
            out.append(self._late.popleft()[1])

    def on_bind_request(self, cid: int, status: int, seq: int, body: bytes) -> None:
        st = self._bind(cid, status, seq, body)
        if st:
            self.session.refuse_bind(cid, seq, st)
            return
        self.session.accept_bind(cid, seq, SMSC_SYSTEM_ID)
        self.factory.counters["binds"] += 1
        self.log.info("smsc: {peer} bound as {mode} system_id={sid}", peer=self.peer,
                      mode=self.session.mode, sid=self.system_id)
        if self.session.can_receive:
            self.factory.add_receiver(self)
            self.factory.flush_pending(self)    # after the bind_resp, in the same write

    def _bind(self, cid: int, status: int, seq: int, body: bytes) -> int:
        b = P.decode_body(cid, status, seq, body)
        if isinstance(b, P.BadPdu):
            return b.error
        system_id = b.system_id.decode("latin-1")
        password = b.password.decode("latin-1")
        mode = BIND_MODES[cid]
        c = self.config
        if c.system_id is not None and system_id != c.system_id:
            self.log.info("smsc: {peer} bind_{mode} refused: unknown system_id {sid}",
                          peer=self.peer, mode=mode, sid=system_id)
            return _RINVSYSID
        if c.password is not None and password != c.password:
            self.log.info("smsc: {peer} bind_{mode} refused: wrong password for {sid}",
                          peer=self.peer, mode=mode, sid=system_id)
            return _RINVPASWD
        self.system_id = system_id
        self._sid_json = json.dumps(system_id)
        return _ROK

    @staticmethod
    def _scan_data_sm(body: bytes) -> Submitted:
        d = P.decode_body(C.DATA_SM, 0, 0, body)
        if isinstance(d, P.BadPdu):
            raise ValueError(d.message)
        text = d.payload[:20]
        return Submitted(d.source_addr_ton, d.source_addr_npi, d.source_addr, d.dest_addr_ton,
                         d.dest_addr_npi, d.destination_addr, d.registered_delivery, text)

    # --- output -------------------------------------------------------------------------------
    def send_deliver(self, bodies: list[bytes]) -> None:
        """deliver_sm PDUs (bodies built by the factory), numbered and written at once."""
        nxt = self.session.seq.next
        hdr = _HEADER.pack
        self.factory.counters["deliver_sent"] += len(bodies)
        self.session.send(b"".join(hdr(16 + len(b), C.DELIVER_SM, 0, nxt()) + b
                                   for b in bodies))

    def send_mo(self, source: str | bytes, dest: str | bytes, text_bytes: bytes,
                data_coding: int = 0) -> None:
        """An MO message to this very connection."""
        self.send_deliver([deliver_sm_body(_cstr(source)[:-1], 1, 1, _cstr(dest)[:-1], 0, 1,
                                           0, data_coding, text_bytes)])
