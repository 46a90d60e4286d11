"""Binds to operator SMSCs: window, keepalive, response timeout, reconnect.

An `Upstream` is one configured operator account with `binds` parallel connections, each kept
up by a `ClientService` (capped exponential backoff with jitter). `Upstream.submit(cid, body,
on_resp)` sends a request on the bound connection with the most free window, or queues it for
at most `queue_wait_s`; `on_resp(status, message_id_or_None)` is called exactly once: with the
operator's answer, or with an error status when the request timed out, the connection dropped
with it in flight, or no window came free in time. Never OK unless the operator said OK.

Receipts and MO (deliver_sm / data_sm from the operator) go to `on_deliver(upstream, pdu,
ack)`; `ack(status)` sends the deliver_sm_resp, so the caller acknowledges only once it has
stored the receipt.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable

from twisted.application import internet, service
from twisted.internet import endpoints, protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from . import constants as C
from . import pdu as P

log = Logger(namespace="proxyd.upstream")
_S = C.STATUS
_BIND_IDS = {"transceiver": C.BIND_TRANSCEIVER, "transmitter": C.BIND_TRANSMITTER}

OnResp = Callable[[int, "bytes | None"], None]


class UpstreamBind(protocol.Protocol):
    """One connection to an operator SMSC."""

    def __init__(self, upstream: "Upstream") -> None:
        self.upstream = upstream
        self.framer = P.Framer(1 << 20)
        self.seq = P.Sequence(random.randrange(0, 1 << 20))
        self.bound = False
        self.inflight: dict[int, tuple[float, OnResp]] = {}   # seq -> (deadline, callback)
        self.last_rx = 0.0
        self.enquire_sent = 0.0
        self.closing = False

    @property
    def free(self) -> int:
        return self.upstream.cfg.window - len(self.inflight) if self.bound else 0

    def connectionMade(self) -> None:
        t = self.transport
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except Exception:  # pragma: no cover
                pass
        cfg = self.upstream.cfg
        self.last_rx = self.upstream.clock.seconds()
        bind = P.PDU_CLASSES[_BIND_IDS[cfg.bind]]
        seq = self.seq.next()
        self.inflight[seq] = (self.last_rx + cfg.response_timeout_s, self._bind_resp)
        self.transport.write(P.encode(bind(
            seq, 0, cfg.system_id.encode(), cfg.password.encode(),
            cfg.system_type.encode(), 0x34, 0, 0, b"")))

    def _bind_resp(self, status: int, _: Any) -> None:
        if status == 0:
            self.bound = True
            self.upstream.bind_ready(self)
            log.info("upstream {name} bound ({n} of {total})", name=self.upstream.name,
                     n=self.upstream.bound_count(), total=self.upstream.cfg.binds)
        else:
            log.warn("upstream {name} refused the bind: {status}", name=self.upstream.name,
                     status=C.status_name(status))
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        was_bound = self.bound
        self.bound = False
        inflight, self.inflight = self.inflight, {}
        if not was_bound and not self.closing:
            why = reason.getErrorMessage() if reason is not None else "?"
            log.warn("upstream {name}: connection lost before bound: {why}",
                     name=self.upstream.name, why=why)
            inflight = {k: v for k, v in inflight.items() if v[1] != self._bind_resp}
        self.upstream.bind_lost(self, was_bound, len(inflight))
        for _deadline, cb in inflight.values():
            cb(_S["ESME_RSYSERR"], None)

    def request(self, command_id: int, body: bytes, on_resp: OnResp) -> None:
        seq = self.seq.next()
        self.inflight[seq] = (self.upstream.clock.seconds() + self.upstream.cfg.response_timeout_s,
                              on_resp)
        self.transport.write(P.frame(command_id, 0, seq, body))

    def dataReceived(self, data: bytes) -> None:
        self.last_rx = self.upstream.clock.seconds()
        try:
            frames = self.framer.feed(data)
        except P.FramingError as e:
            log.warn("upstream {name}: framing error {err}; reconnecting",
                     name=self.upstream.name, err=str(e))
            self.transport.loseConnection()
            return
        inflight = self.inflight
        for command_id, status, seq, body in frames:
            if command_id & C.RESP_BIT:
                entry = inflight.pop(seq, None)
                if entry is None:
                    log.debug("upstream {name}: unexpected resp seq {seq}",
                              name=self.upstream.name, seq=seq)
                    continue
                if command_id == C.ENQUIRE_LINK_RESP:
                    self.enquire_sent = 0.0
                    continue
                mid = None
                if status == 0 and body:
                    end = body.find(b"\0")
                    mid = body[:end] if end >= 0 else body
                entry[1](status, mid)
            elif command_id == C.DELIVER_SM or command_id == C.DATA_SM:
                self._deliver(command_id, status, seq, body)
            elif command_id == C.ENQUIRE_LINK:
                self.transport.write(P.frame(C.ENQUIRE_LINK_RESP, 0, seq))
            elif command_id == C.UNBIND:
                self.transport.write(P.frame(C.UNBIND_RESP, 0, seq))
                self.closing = True
                self.transport.loseConnection()
            elif command_id == C.OUTBIND or command_id == C.ALERT_NOTIFICATION:
                pass
            else:
                self.transport.write(P.generic_nack(seq, _S["ESME_RINVCMDID"]))
        if self.bound and self.upstream.waiting:
            self.upstream.dispatch()

    def _deliver(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        pdu = P.decode_body(command_id, status, seq, body)
        resp_id = command_id | C.RESP_BIT
        if pdu.__class__ is P.BadPdu:
            self.transport.write(P.message_id_resp(resp_id, seq, pdu.error, b""))
            return

        def ack(status_: int) -> None:
            if self.transport is not None and self.inflight is not None:
                self.transport.write(P.message_id_resp(resp_id, seq, status_, b""))

        self.upstream.on_deliver(self.upstream, pdu, ack)

    def tick(self, now: float) -> None:
        inflight = self.inflight
        expired = []
        for seq, (deadline, _cb) in inflight.items():
            if deadline > now:
                break           # insertion order == deadline order
            expired.append(seq)
        for seq in expired:
            _deadline, cb = inflight.pop(seq)
            cb(_S["ESME_RSYSERR"], None)
        if expired:
            log.warn("upstream {name}: {n} requests timed out", name=self.upstream.name,
                     n=len(expired))
        cfg = self.upstream.cfg
        if self.bound and not self.enquire_sent and now - self.last_rx > cfg.enquire_link_s:
            self.enquire_sent = now
            self.request(C.ENQUIRE_LINK, b"", lambda s, m: None)
        elif self.enquire_sent and now - self.enquire_sent > cfg.response_timeout_s:
            log.warn("upstream {name}: enquire_link unanswered; reconnecting",
                     name=self.upstream.name)
            self.enquire_sent = 0.0
            self.transport.loseConnection()

    def unbind(self) -> None:
        if self.bound:
            self.bound = False
            self.request(C.UNBIND, b"", lambda s, m: self.transport.loseConnection())


class _BindFactory(protocol.Factory):
    noisy = False

    def __init__(self, upstream: "Upstream") -> None:
        self.upstream = upstream

    def buildProtocol(self, addr: Any) -> UpstreamBind:
        return UpstreamBind(self.upstream)


class Upstream(service.MultiService):
    """One operator account: `binds` connections and a short wait queue."""

    def __init__(self, cfg: Any, reactor: Any, on_deliver: Callable[..., None],
                 queue_wait_s: float = 0.5, queue_max: int = 10000) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = cfg.name
        self.clock = reactor
        self.on_deliver = on_deliver
        self.queue_wait_s = queue_wait_s
        self.queue_max = queue_max
        self.binds: list[UpstreamBind] = []
        self.waiting: deque = deque()     # (deadline, command_id, body, on_resp)
        self._rr = 0
        self.on_state: list[Callable[["Upstream"], None]] = []
        endpoint = endpoints.clientFromString(reactor, cfg.connect)
        policy = internet.backoffPolicy(initialDelay=0.2, maxDelay=cfg.reconnect_max_s,
                                        factor=2.0)
        self.services_ = []
        for _ in range(cfg.binds):
            cs = internet.ClientService(endpoint, _BindFactory(self), retryPolicy=policy,
                                        clock=reactor)
            cs.setServiceParent(self)
            self.services_.append(cs)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        # operator rate: a token bucket shared by all binds of this upstream (per node)
        self.tps = cfg.tps
        self.bucket_max = max(1.0, cfg.tps / 10.0)
        self.tokens = self.bucket_max
        self._refilled = reactor.seconds()

    # --- state ----------------------------------------------------------------------------
    def bound_count(self) -> int:
        return sum(1 for b in self.binds if b.bound)

    @property
    def available(self) -> bool:
        for b in self.binds:
            if b.bound:
                return True
        return False

    def free_window(self) -> int:
        return sum(b.free for b in self.binds)

    def bind_ready(self, b: UpstreamBind) -> None:
        if b not in self.binds:
            self.binds.append(b)
        for cb in self.on_state:
            cb(self)
        self.dispatch()

    def bind_lost(self, b: UpstreamBind, was_bound: bool, inflight: int) -> None:
        if b in self.binds:
            self.binds.remove(b)
        if was_bound:
            log.warn("upstream {name} connection lost ({n} in flight answered with errors)",
                     name=self.name, n=inflight)
            for cb in self.on_state:
                cb(self)
        if not self.available:
            # nothing can carry what waits: answer now rather than at the deadline
            waiting, self.waiting = self.waiting, deque()
            for _d, _cid, _body, cb in waiting:
                cb(_S["ESME_RMSGQFUL"], None)

    # --- requests -------------------------------------------------------------------------
    def _pick(self) -> UpstreamBind | None:
        best = None
        best_free = 0
        for b in self.binds:
            f = b.free
            if f > best_free:
                best, best_free = b, f
        return best

    def _take(self) -> bool:
        """One token of the operator's rate, if there is one now (always, without tps)."""
        if not self.tps:
            return True
        now = self.clock.seconds()
        tokens = self.tokens + (now - self._refilled) * self.tps
        self._refilled = now
        if tokens > self.bucket_max:
            tokens = self.bucket_max
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def submit_part(self, part: tuple, source: bytes | None, on_outcome: OnResp) -> None:
        """The operator-link interface (`proxyd.links.OperatorLink`): send one wire part
        (pdu, body) as the client sent it (cut-through), re-encoded only when a field is
        rewritten: a prefix-mode `source`, or this upstream's source TON/NPI."""
        pdu, body = part
        cfg = self.cfg
        if (source is not None and source != pdu.source_addr) or \
                0 <= cfg.source_addr_ton != pdu.source_addr_ton or \
                0 <= cfg.source_addr_npi != pdu.source_addr_npi:
            changes: dict[str, Any] = {}
            if source is not None and source != pdu.source_addr:
                changes["source_addr"] = source
            if 0 <= cfg.source_addr_ton != pdu.source_addr_ton:
                changes["source_addr_ton"] = cfg.source_addr_ton
            if 0 <= cfg.source_addr_npi != pdu.source_addr_npi:
                changes["source_addr_npi"] = cfg.source_addr_npi
            body = P.encode(pdu._replace(**changes))[P.HEADER_LEN:]
        self.submit(pdu.command_id, body, on_outcome)

    def submit(self, command_id: int, body: bytes, on_resp: OnResp) -> None:
        if not self.waiting:
            b = self._pick()
            if b is not None and self._take():
                b.request(command_id, body, on_resp)
                return
        if not self.available or len(self.waiting) >= self.queue_max or self.queue_wait_s <= 0:
            on_resp(_S["ESME_RMSGQFUL"], None)
            return
        self.waiting.append((self.clock.seconds() + self.queue_wait_s, command_id, body,
                             on_resp))

    def dispatch(self) -> None:
        waiting = self.waiting
        while waiting:
            b = self._pick()
            if b is None or not self._take():
                return
            _deadline, cid, body, cb = waiting.popleft()
            b.request(cid, body, cb)

    def _tick(self) -> None:
        now = self.clock.seconds()
        for b in list(self.binds):
            b.tick(now)
        if self.waiting:
            self.dispatch()
        waiting = self.waiting
        status = _S["ESME_RTHROTTLED"] if self.tps and self.free_window() else _S["ESME_RMSGQFUL"]
        while waiting and waiting[0][0] <= now:
            cb = waiting.popleft()[3]
            cb(status, None)

    def startService(self) -> None:
        super().startService()
        self._ticker.start(0.05 if self.tps else 0.1, now=False)

    def stopService(self) -> Any:
        if self._ticker.running:
            self._ticker.stop()
        for b in list(self.binds):
            b.unbind()
        return super().stopService()
