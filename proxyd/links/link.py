"""The Twisted side of operator links, shared by every wire protocol.

`Link` is one configured `[[upstream]]`: `binds` parallel connections, each kept up by a
`ClientService` (capped exponential backoff with jitter, `reconnect_max_s`), a short wait
queue for parts when no window is free (`queue_wait_s`), and the operator's rate (`tps`,
one token bucket for all connections). It implements `proxyd.links.OperatorLink`;
a protocol sets `connection_class` and `submit_part` (turning the judged SMPP part into its
own request) -- see `proxyd.links.smpp.Upstream` and `proxyd.links.cmpp.link`.

A connection class offers `bound`, `free`, `inflight` (seq -> (deadline, callback)),
`request(command_id, body, on_resp)`, `tick(now)` and `unbind()`. `GatewayConnection` is one
for the length-prefixed gateway protocols (CMPP, SMGP, SGIP) over `proxyd.links.core.LinkCore`:
the protocol subclass encodes and decodes frames; the window, the response timeout
(ESME_RSYSERR: fate unknown), the keepalive and the login/logout timers are the core's.

`on_resp(status, operator_id)` is called exactly once per request: with the operator's
answer mapped to an SMPP status, or an error status when the request timed out, the
connection dropped with it in flight, or no window came free in time.
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

from . import core as K

log = Logger(namespace="proxyd.upstream")
_S = C.STATUS
_RSYSERR = _S["ESME_RSYSERR"]
_RMSGQFUL = _S["ESME_RMSGQFUL"]

OnResp = Callable[[int, "bytes | None"], None]


class Waiting(NamedTuple):
    """A request waiting for a free window, until `deadline`."""
    deadline: float
    command_id: int
    body: bytes
    on_resp: OnResp


class _ConnFactory(protocol.Factory):
    noisy = False

    def __init__(self, link: "Link") -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> Any:
        conn = self.link.connection_class(self.link)
        self.link.conns.add(conn)
        return conn


class Link(service.MultiService):
    """One operator account: `binds` connections and a short wait queue."""

    connection_class: type = type(None)     # set by each protocol
    protocol_name = "?"

    def __init__(self, cfg: Any, reactor: Any, on_deliver: Callable[..., None],
                 queue_wait_s: float = 0.5, queue_max: int = 10000) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = cfg.name
        self.clock = reactor
        self.on_deliver = on_deliver
        self.queue_wait_s = queue_wait_s
        self.queue_max = queue_max
        self.binds: list[Any] = []            # logged in (bound) connections
        self.conns: set[Any] = set()           # every connection, bound or not (timers)
        self.waiting: deque[Waiting] = deque()
        self.on_state: list[Callable[[Any], None]] = []
        endpoint = endpoints.clientFromString(reactor, cfg.connect)
        policy = internet.backoffPolicy(initialDelay=0.2, maxDelay=cfg.reconnect_max_s,
                                        factor=2.0)
        self.services_ = []
        for _ in range(cfg.binds):
            cs = internet.ClientService(endpoint, _ConnFactory(self), retryPolicy=policy,
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

    def bind_ready(self, b: Any) -> None:
        if b not in self.binds:
            self.binds.append(b)
        for cb in self.on_state:
            cb(self)
        self.dispatch()

    def bind_lost(self, b: Any, was_bound: bool, inflight: int) -> None:
        self.conns.discard(b)
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
                w.on_resp(_RMSGQFUL, None)

    # --- requests -------------------------------------------------------------------------
    def _pick(self) -> Any:
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
        raise NotImplementedError

    def submit(self, command_id: int, body: bytes, on_resp: OnResp) -> None:
        if not self.waiting:
            b = self._pick()
            if b is not None and self._take():
                b.request(command_id, body, on_resp)
                return
        if not self.available or len(self.waiting) >= self.queue_max or self.queue_wait_s <= 0:
            on_resp(_RMSGQFUL, None)
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
        for b in list(self.conns):          # the bound ones, and those still logging in
            b.tick(now)
        if self.waiting:
            self.dispatch()
        waiting = self.waiting
        status = _S["ESME_RTHROTTLED"] if self.tps and self.free_window() else _RMSGQFUL
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


class GatewayConnection(protocol.Protocol):
    """One connection of a length-prefixed gateway protocol, over a sans-IO `LinkCore`.

    A subclass supplies the wire format:

        header_len, max_frame_len      framing
        send_login(now)                write the login (CMPP_CONNECT, SMGP Login, SGIP Bind)
        frame(command_id, seq, body)   a whole frame of a request of ours
        keepalive_frame(seq)           the keepalive request (None: the protocol has none)
        logout_frame(seq)              the logout request
        handle_frame(data, now)        one received frame: calls `self.logged_in(now)` /
                                       `self.answered(seq, status, operator_id)` / answers
                                       the gateway's requests with `self.send(...)`
    """

    header_len = 12
    max_frame_len = 4096

    def __init__(self, link: Link) -> None:
        self.link = link
        cfg = link.cfg
        now = link.clock.seconds()
        self.core = K.LinkCore(K.CoreConfig(
            window=cfg.window, response_timeout_s=cfg.response_timeout_s,
            login_timeout_s=cfg.response_timeout_s, keepalive_s=cfg.enquire_link_s,
            keepalive_timeout_s=cfg.response_timeout_s,
            keepalive_tries=getattr(cfg, "keepalive_tries", 3)),
            now, seq_start=random.randrange(1, 1 << 20))
        self.framer = K.Framer(self.header_len, self.max_frame_len)
        self.closing = False
        self._was_bound = False
        self._out: list[bytes] | None = None

    # --- what Link reads ------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        return self.core.state == K.BOUND

    @property
    def free(self) -> int:
        return self.core.free

    @property
    def inflight(self) -> dict:
        return self.core.pending

    def request(self, command_id: int, body: bytes, on_resp: OnResp) -> None:
        core = self.core
        seq = core.next_seq()
        core.request(seq, on_resp, self.link.clock.seconds())
        self.send(self.frame(command_id, seq, body))

    def tick(self, now: float) -> None:
        n = len(self.core.pending)
        todo = self.core.tick(now, self._expired)
        late = n - len(self.core.pending)
        if late > 0:
            log.warn("upstream {name}: {n} requests timed out", name=self.link.name, n=late)
        if todo is None:
            return
        if todo == K.KEEPALIVE:
            data = self.keepalive_frame(self.core.next_seq())
            if data is not None:
                self.send(data)
            return
        log.warn("upstream {name}: {why}; reconnecting", name=self.link.name, why=todo)
        self.close()

    def unbind(self) -> None:
        if self.core.state == K.BOUND:
            self._was_bound = False
            self.core.logout_sent(self.link.clock.seconds())
            self.send(self.logout_frame(self.core.next_seq()))

    # --- the protocol subclass's helpers ----------------------------------------------------
    def send(self, data: bytes) -> None:
        out = self._out
        if out is not None:
            out.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            if self._out:
                self.transport.write(b"".join(self._out))
                self._out.clear()
            self.transport.loseConnection()

    def logged_in(self, now: float) -> None:
        self.core.logged_in(now)
        self._was_bound = True
        self.link.bind_ready(self)
        log.info("upstream {name} logged in ({n} of {total}, {proto})", name=self.link.name,
                 n=self.link.bound_count(), total=self.link.cfg.binds,
                 proto=self.link.protocol_name)

    def login_refused(self, why: str) -> None:
        log.warn("upstream {name} refused the login: {why}", name=self.link.name, why=why)
        self.close()

    def answered(self, seq: Any, status: int, operator_id: bytes | None) -> None:
        """The answer to our request `seq` (ignored when nobody waits any more)."""
        cb = self.core.answer(seq)
        if cb is not None:
            cb(status, operator_id)

    def _expired(self, cb: OnResp) -> None:
        cb(_RSYSERR, None)

    # --- Twisted --------------------------------------------------------------------------
    def connectionMade(self) -> None:
        t = self.transport
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except Exception:  # pragma: no cover
                pass
        now = self.link.clock.seconds()
        self.core.last_rx = now
        self.core.login_sent(now)
        self.send_login(now)

    def dataReceived(self, data: bytes) -> None:
        now = self.link.clock.seconds()
        self._out = out = []
        try:
            try:
                frames = self.framer.feed(data)
            except K.FramingError as e:
                log.warn("upstream {name}: framing error {err}; reconnecting",
                         name=self.link.name, err=str(e))
                frames = None
            if frames:
                self.core.received(now)
                for f in frames:
                    self.handle_frame(f, now)
            if frames is None:
                self.close()
        finally:
            self._out = None
            if out and self.transport is not None:
                self.transport.write(b"".join(out))
        if self.link.waiting and self.core.state == K.BOUND:
            self.link.dispatch()

    def connectionLost(self, reason: Any = None) -> None:
        was_bound, self._was_bound = self._was_bound, False
        state = self.core.state
        pending = self.core.connection_lost()
        if not was_bound and not self.closing and state != K.LOGOUT:
            why = reason.getErrorMessage() if reason is not None else "?"
            log.warn("upstream {name}: connection lost before logged in: {why}",
                     name=self.link.name, why=why)
        self.link.bind_lost(self, was_bound, len(pending))
        for _deadline, cb in pending.values():
            cb(_RSYSERR, None)

    # --- to implement -----------------------------------------------------------------------
    def send_login(self, now: float) -> None:
        raise NotImplementedError

    def frame(self, command_id: int, seq: Any, body: bytes) -> bytes:
        raise NotImplementedError

    def keepalive_frame(self, seq: Any) -> bytes | None:
        raise NotImplementedError

    def logout_frame(self, seq: Any) -> bytes:
        raise NotImplementedError

    def handle_frame(self, data: bytes, now: float) -> None:
        raise NotImplementedError
