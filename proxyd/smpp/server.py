"""Sessions of client ESMEs: the Twisted adapter around the sans-IO codec.

One `ClientSession` per TCP (or TLS) connection. It frames the byte stream, enforces the bind
state machine, answers what it can itself (enquire_link, unbind, bad input) and hands submits
to the relay with a reply callback. Back-pressure: a session with `window` submits awaiting an
answer stops reading from its socket; frames already read wait in a small queue.

Timers: the factory runs ONE LoopingCall (1 s) over all sessions for inactivity, bind timeout
and keepalive; no callLater per request.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from . import constants as C
from . import pdu as P

log = Logger(namespace="proxyd.smpp")

_S = C.STATUS
OPEN, BINDING, BOUND, CLOSING = range(4)
BIND_MODE = {C.BIND_TRANSMITTER: "transmitter", C.BIND_RECEIVER: "receiver",
             C.BIND_TRANSCEIVER: "transceiver"}


class ClientSession(protocol.Protocol):
    """One client ESME connection."""

    def __init__(self, factory: "ClientFactory") -> None:
        self.factory = factory
        self.framer = P.Framer(factory.smpp.max_pdu_bytes)
        self.seq = P.Sequence()
        self.state = OPEN
        self.account: Any = None
        self.mode = ""                      # transmitter / receiver / transceiver
        self.can_submit = False
        self.can_receive = False
        self.outstanding = 0                # submits awaiting the relay's answer
        self.window = factory.smpp.window
        self.backlog: deque = deque()       # frames read while the window was full
        self.paused = False
        self.last_rx = 0.0
        self.connected_at = 0.0
        self.enquire_sent = 0.0             # time of our unanswered enquire_link, or 0
        self.peer = ""
        self.delivery_waiters: dict[int, Callable[[int], None]] = {}

    # --- connection -----------------------------------------------------------------------
    def connectionMade(self) -> None:
        t = self.transport
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except Exception:  # pragma: no cover - not a TCP socket
                pass
        peer = t.getPeer()
        self.peer = "%s:%s" % (getattr(peer, "host", "?"), getattr(peer, "port", "?"))
        now = self.factory.clock.seconds()
        self.last_rx = self.connected_at = now
        self.factory.sessions.add(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.sessions.discard(self)
        if self.account is not None:    # bound; also after a clean unbind (state CLOSING)
            self.factory.registry.unbound(self)
            log.info("unbind {account} {mode} from {peer}", account=self.account.system_id,
                     mode=self.mode, peer=self.peer)
        self.state = CLOSING
        waiters, self.delivery_waiters = self.delivery_waiters, {}
        for cb in waiters.values():
            cb(_S["ESME_RSYSERR"])

    def send(self, data: bytes) -> None:
        if self.state != CLOSING or self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.state = CLOSING
        self.transport.loseConnection()

    # --- input ----------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        self.last_rx = self.factory.clock.seconds()
        try:
            frames = self.framer.feed(data)
        except P.FramingError as e:
            log.warn("framing error from {peer}: {err}; closing", peer=self.peer, err=str(e))
            for f in e.frames:          # the good PDUs before the bad header still count
                if self.state == CLOSING:
                    break
                self.handle(*f)
            self.send(P.generic_nack(e.seq, _S["ESME_RINVCMDLEN"]))
            self.state = CLOSING
            self.transport.loseConnection()
            return
        if self.backlog or self.outstanding >= self.window:
            self.backlog.extend(frames)
            self._drain()
            return
        for f in frames:
            if self.state == CLOSING:
                return
            if self.outstanding >= self.window or self.state == BINDING:
                self.backlog.append(f)
                continue
            self.handle(*f)
        if self.backlog:
            self._pause()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pauseProducing()

    _draining = False

    def _drain(self) -> None:
        # a request answered synchronously (refused, or no upstream) calls this again from
        # inside handle(): the loop below goes on instead of recursing once per PDU
        if self._draining:
            return
        backlog = self.backlog
        self._draining = True
        try:
            while backlog and self.outstanding < self.window and self.state in (OPEN, BOUND):
                self.handle(*backlog.popleft())
        finally:
            self._draining = False
        if backlog:
            self._pause()
        elif self.paused and self.state != CLOSING:
            self.paused = False
            self.transport.resumeProducing()

    def handle(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        if command_id == C.SUBMIT_SM:
            if not self.can_submit:
                self.send(P.message_id_resp(C.SUBMIT_SM_RESP, seq, _S["ESME_RINVBNDSTS"], b""))
                return
            pdu = P.decode_body(command_id, status, seq, body)
            if pdu.__class__ is P.BadPdu:
                self._bad(pdu)
                return
            self.outstanding += 1
            self.factory.relay.submit(self, pdu, body, self._replier(C.SUBMIT_SM_RESP, seq))
            return
        if command_id == C.DELIVER_SM_RESP or command_id == C.DATA_SM_RESP:
            cb = self.delivery_waiters.pop(seq, None)
            if cb is not None:
                cb(status)
            return
        if command_id == C.ENQUIRE_LINK:
            self.send(P.frame(C.ENQUIRE_LINK_RESP, 0, seq))
            return
        if command_id == C.ENQUIRE_LINK_RESP:
            self.enquire_sent = 0.0
            return
        if command_id in C.BIND_COMMANDS:
            self._bind(command_id, status, seq, body)
            return
        if command_id == C.UNBIND:
            self.send(P.frame(C.UNBIND_RESP, 0, seq))
            self.close()
            return
        if command_id == C.UNBIND_RESP:
            self.close()
            return
        if command_id == C.GENERIC_NACK:
            log.info("generic_nack {status} from {peer} seq {seq}",
                     status=C.status_name(status), peer=self.peer, seq=seq)
            cb = self.delivery_waiters.pop(seq, None)
            if cb is not None:
                cb(status or _S["ESME_RUNKNOWNERR"])
            return
        cls = P.PDU_CLASSES.get(command_id)
        if cls is None or command_id in (C.OUTBIND, C.ALERT_NOTIFICATION):
            log.info("unknown or unexpected command 0x{cid:08X} from {peer}",
                     cid=command_id, peer=self.peer)
            self.send(P.generic_nack(seq, _S["ESME_RINVCMDID"]))
            return
        if command_id & C.RESP_BIT:
            log.debug("unexpected {name} from {peer}", name=cls.__name__, peer=self.peer)
            return
        resp = P.resp_class(command_id)
        if self.state != BOUND:
            self.send(P.encode(resp(seq, _S["ESME_RINVBNDSTS"])))
            return
        if command_id in (C.SUBMIT_MULTI, C.DATA_SM) and not self.can_submit:
            self.send(P.encode(resp(seq, _S["ESME_RINVBNDSTS"])))
            return
        pdu = P.decode_body(command_id, status, seq, body)
        if pdu.__class__ is P.BadPdu:
            self._bad(pdu)
            return
        handler = self.factory.relay.other_request
        self.outstanding += 1
        handler(self, pdu, self._pdu_replier(seq))

    def _bad(self, bad: P.BadPdu) -> None:
        log.info("bad {cmd} from {peer}: {msg}", cmd=C.COMMAND_NAMES.get(bad.command_id),
                 peer=self.peer, msg=bad.message)
        resp = P.resp_class(bad.command_id)
        if resp is None:
            self.send(P.generic_nack(bad.seq, bad.error))
        else:
            self.send(P.encode(resp(bad.seq, bad.error)))

    def _replier(self, resp_id: int, seq: int) -> Callable[[int, bytes], None]:
        def reply(status: int, message_id: bytes = b"") -> None:
            self.outstanding -= 1
            if self.state != CLOSING:
                self.transport.write(P.message_id_resp(resp_id, seq, status, message_id))
                if self.backlog:
                    self._drain()
        return reply

    def _pdu_replier(self, seq: int) -> Callable[[Any], None]:
        def reply(resp: Any) -> None:
            self.outstanding -= 1
            if self.state != CLOSING:
                self.transport.write(P.encode(resp._replace(seq=seq)))
                if self.backlog:
                    self._drain()
        return reply

    # --- bind -----------------------------------------------------------------------------
    def _bind(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        resp_id = command_id | C.RESP_BIT
        resp = P.PDU_CLASSES[resp_id]
        if self.state != OPEN:
            self.send(P.encode(resp(seq, _S["ESME_RALYBND"])))
            return
        pdu = P.decode_body(command_id, status, seq, body)
        if pdu.__class__ is P.BadPdu:
            self._bad(pdu)
            return
        system_id = pdu.system_id.decode("latin-1")
        self.state = BINDING
        d = self.factory.registry.authenticate(system_id, pdu.password.decode("latin-1"))

        def done(result: tuple[int, Any]) -> None:
            status_, account = result
            if self.state == CLOSING:
                return
            if status_ == 0:
                status_ = self.factory.registry.bound(self, account)
            if status_:
                self.state = OPEN
                log.info("bind refused for {sid} from {peer}: {status}", sid=system_id[:15],
                         peer=self.peer, status=C.status_name(status_))
                self.send(P.encode(resp(seq, status_)))
            else:
                self.state = BOUND
                self.account = account
                self.mode = BIND_MODE[command_id]
                self.can_submit = command_id != C.BIND_RECEIVER
                self.can_receive = command_id != C.BIND_TRANSMITTER
                log.info("bind {account} {mode} from {peer}", account=system_id,
                         mode=self.mode, peer=self.peer)
                self.send(P.encode(resp(seq, 0, self.factory.system_id,
                                        ((C.TAG_SC_INTERFACE_VERSION, b"\x34"),))))
                self.factory.registry.ready(self)
            if self.backlog:
                self._drain()

        def failed(f: Any) -> None:
            log.failure("bind of {sid} failed", f, sid=system_id)
            done((_S["ESME_RBINDFAIL"], None))

        d.addCallbacks(done, failed)

    # --- outgoing requests (deliver_sm to receivers) ---------------------------------------
    def deliver(self, command_id: int, body: bytes, on_resp: Callable[[int], None]) -> None:
        """Send deliver_sm/data_sm (body already encoded); on_resp(status) on the answer."""
        seq = self.seq.next()
        self.delivery_waiters[seq] = on_resp
        self.transport.write(P.frame(command_id, 0, seq, body))

    # --- timers ---------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        smpp = self.factory.smpp
        if self.state in (OPEN, BINDING) and now - self.connected_at > smpp.bind_timeout_s:
            log.info("no bind from {peer} within {s}s; closing", peer=self.peer,
                     s=smpp.bind_timeout_s)
            self.close()
            return
        idle = now - self.last_rx
        if idle > smpp.inactivity_s:
            log.info("inactivity timeout for {peer}; unbinding", peer=self.peer)
            self.send(P.frame(C.UNBIND, 0, self.seq.next()))
            self.close()
            return
        if self.state == BOUND:
            if self.enquire_sent and now - self.enquire_sent > smpp.enquire_link_s:
                log.info("enquire_link unanswered by {peer}; closing", peer=self.peer)
                self.close()
            elif not self.enquire_sent and idle > smpp.enquire_link_s:
                self.enquire_sent = now
                self.send(P.frame(C.ENQUIRE_LINK, 0, self.seq.next()))

    def unbind(self) -> None:
        """Unbind cleanly (shutdown, account removed)."""
        if self.state != CLOSING and self.transport is not None:
            self.send(P.frame(C.UNBIND, 0, self.seq.next()))
            self.close()


class ClientFactory(protocol.Factory):
    """Builds sessions; holds what they share (config, registry, relay, clock)."""

    noisy = False

    def __init__(self, smpp: Any, registry: Any, relay: Any, clock: Any,
                 system_id: bytes = b"proxyd") -> None:
        self.smpp = smpp
        self.registry = registry
        self.relay = relay
        self.clock = clock
        self.system_id = system_id
        self.sessions: set[ClientSession] = set()
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock

    def buildProtocol(self, addr: Any) -> ClientSession:
        p = ClientSession(self)
        p.factory = self
        return p

    def startFactory(self) -> None:
        if not self._ticker.running:
            self._ticker.start(1.0, now=False)

    def stopFactory(self) -> None:
        if self._ticker.running:
            self._ticker.stop()

    def _tick(self) -> None:
        now = self.clock.seconds()
        for s in list(self.sessions):
            s.tick(now)
