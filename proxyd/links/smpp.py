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
from typing import Any, Callable, NamedTuple

from twisted.application import internet, service
from twisted.internet import endpoints, protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp import session as S

log = Logger(namespace="proxyd.upstream")
_S = C.STATUS

OnResp = Callable[[int, "bytes | None"], None]


class Waiting(NamedTuple):
    """A request waiting for a free window, until `deadline`."""
    deadline: float
    command_id: int
    body: bytes
    on_resp: OnResp


class UpstreamBind(protocol.Protocol, S.SessionHandler):
    """One connection to an operator SMSC: a thin adapter over the sans-IO `Session`
    (role ESME); the window, keepalive and response timeouts live there."""

    def __init__(self, upstream: "Upstream") -> None:
        self.upstream = upstream
        cfg = upstream.cfg
        self.session = S.Session(S.ESME, self, S.SessionConfig(
            window=cfg.window, bind_timeout_s=cfg.response_timeout_s,
            enquire_link_s=cfg.enquire_link_s, enquire_timeout_s=cfg.response_timeout_s,
            response_timeout_s=cfg.response_timeout_s, max_pdu_bytes=1 << 20),
            upstream.clock.seconds(), seq_start=random.randrange(0, 1 << 20))
        self.closing = False            # we chose to close (or the operator unbound)
        self._was_bound = False

    @property
    def bound(self) -> bool:
        return self.session.state == S.BOUND

    @property
    def inflight(self) -> dict[int, tuple[float, OnResp]]:
        """Requests awaiting the operator's answer: seq -> (deadline, on_resp)."""
        return self.session.pending

    @property
    def free(self) -> int:
        return self.session.free

    def connectionMade(self) -> None:
        t = self.transport
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except Exception:  # pragma: no cover
                pass
        cfg = self.upstream.cfg
        now = self.upstream.clock.seconds()
        s = self.session
        s.last_rx = s.connected_at = now
        s.bind(cfg.bind, cfg.system_id.encode(), cfg.password.encode(),
               cfg.system_type.encode(), now)

    def connectionLost(self, reason: Any = None) -> None:
        was_bound, self._was_bound = self._was_bound, False
        pending = self.session.connection_lost()
        if not was_bound and not self.closing:
            why = reason.getErrorMessage() if reason is not None else "?"
            log.warn("upstream {name}: connection lost before bound: {why}",
                     name=self.upstream.name, why=why)
        self.upstream.bind_lost(self, was_bound, len(pending))
        self.session.fail_pending(pending)

    def request(self, command_id: int, body: bytes, on_resp: OnResp) -> None:
        self.session.request(command_id, body, on_resp, self.upstream.clock.seconds())

    def dataReceived(self, data: bytes) -> None:
        self.session.receive_data(data, self.upstream.clock.seconds())
        if self.upstream.waiting and self.session.state == S.BOUND:
            self.upstream.dispatch()

    # --- SessionHandler ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None:
            t.write(data)

    def close_connection(self, reason: str) -> None:
        self.closing = True
        if reason == S.FRAMING:
            log.warn("upstream {name}: framing error {err}; reconnecting",
                     name=self.upstream.name, err=self.session.error)
        elif reason == S.ENQUIRE_TIMEOUT:
            log.warn("upstream {name}: enquire_link unanswered; reconnecting",
                     name=self.upstream.name)
        elif reason == S.BIND_TIMEOUT:
            log.warn("upstream {name}: no answer to the bind; reconnecting",
                     name=self.upstream.name)
        if self.transport is not None:
            self.transport.loseConnection()

    def on_bound(self) -> None:
        self._was_bound = True
        self.upstream.bind_ready(self)
        log.info("upstream {name} bound ({n} of {total})", name=self.upstream.name,
                 n=self.upstream.bound_count(), total=self.upstream.cfg.binds)

    def on_bind_refused(self, status: int) -> None:
        log.warn("upstream {name} refused the bind: {status}", name=self.upstream.name,
                 status=C.status_name(status))

    def on_response(self, callback: Any, status: int, body: bytes | None) -> None:
        mid = None
        if status == 0 and body:
            end = body.find(b"\0")
            mid = body[:end] if end >= 0 else body
        callback(status, mid)

    def on_request(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        """deliver_sm / data_sm from the operator (receipts, MO)."""
        session = self.session
        pdu = P.decode_body(command_id, status, seq, body)
        resp_id = command_id | C.RESP_BIT
        if pdu.__class__ is P.BadPdu:
            session.reply(P.message_id_resp(resp_id, seq, pdu.error, b""))
            return

        def ack(status_: int) -> None:
            session.reply(P.message_id_resp(resp_id, seq, status_, b""))

        self.upstream.on_deliver(self.upstream, pdu, ack)

    def tick(self, now: float) -> None:
        expired = self.session.tick(now)
        if expired:
            log.warn("upstream {name}: {n} requests timed out", name=self.upstream.name,
                     n=expired)

    def unbind(self) -> None:
        if self.session.state == S.BOUND:
            self._was_bound = False
            self.session.unbind(self.upstream.clock.seconds(), wait=True)


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
        self.waiting: deque[Waiting] = deque()
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
            for w in waiting:
                w.on_resp(_S["ESME_RMSGQFUL"], None)

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
        self.waiting.append(Waiting(self.clock.seconds() + self.queue_wait_s, command_id, body,
                                    on_resp))

    def dispatch(self) -> None:
        waiting = self.waiting
        while waiting:
            b = self._pick()
            if b is None or not self._take():
                return
            w = waiting.popleft()
            b.request(w.command_id, w.body, w.on_resp)

    def _tick(self) -> None:
        now = self.clock.seconds()
        for b in list(self.binds):
            b.tick(now)
        if self.waiting:
            self.dispatch()
        waiting = self.waiting
        status = _S["ESME_RTHROTTLED"] if self.tps and self.free_window() else _S["ESME_RMSGQFUL"]
        while waiting and waiting[0].deadline <= now:
            waiting.popleft().on_resp(status, None)

    def startService(self) -> None:
        super().startService()
        self._ticker.start(0.05 if self.tps else 0.1, now=False)

    def stopService(self) -> Any:
        if self._ticker.running:
            self._ticker.stop()
        for b in list(self.binds):
            b.unbind()
        return super().stopService()
