"""Sessions of client ESMEs: a thin Twisted adapter around the sans-IO `Session`.

One `ClientSession` per TCP (or TLS) connection. The bind state machine, the window, the
keepalive and the timers live in `smpp/session.py` (role SMSC); this adapter owns the
transport, pause/resume of reading, and the calls into the registry (binds) and the gate
(submit_sm with its original body bytes, every other request the bind allows).
Back-pressure: a session with `window` requests awaiting the gate's answer stops reading
from its socket; frames already read wait in the session's backlog. A submit_multi holds one
slot per destination (it carries that many messages); when they do not fit in the free
window it is refused ESME_RTHROTTLED (a submit_multi alone in the window always fits).

Timers: the factory runs ONE LoopingCall (1 s) over all sessions for inactivity, bind timeout
and keepalive; no callLater per request.

Hostile peers: the factory caps connections (`[smpp] max_connections`, per source address
`max_connections_per_address`, not yet bound `max_unbound`); a connection past a cap is
closed in `connectionMade`, before anything is read. Until its bind is accepted a session
takes PDUs of at most `max_unbound_pdu_bytes` (the rule lives in the sans-IO session).
Every line about a peer that has not bound goes through the factory's `QuietLog` (at most
one per address per `[log] refusal_interval_s`, the rest counted). A bound peer's protocol
noise (malformed PDUs, unknown command ids, generic_nacks) goes through a second one, keyed
by account: a customer's broken or hostile client writes at most one such line per interval.
"""
from __future__ import annotations

from typing import Any, Callable

from twisted.internet import protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from proxyd.conns import Caps, QuietLog

from . import constants as C
from . import pdu as P
from . import session as S
from .session import BINDING, BOUND, CLOSING, OPEN  # noqa: F401  (re-exported)

log = Logger(namespace="proxyd.smpp")

_S = C.STATUS
BIND_MODE = S.BIND_MODE
_SUBMIT_SM = C.SUBMIT_SM
_SUBMIT_SM_RESP = C.SUBMIT_SM_RESP
_SUBMIT_MULTI = C.SUBMIT_MULTI


def session_config(smpp: Any) -> S.SessionConfig:
    """The session limits of the `smpp` config section (client sessions)."""
    return S.SessionConfig(window=smpp.window, inbound_window=smpp.window,
                           bind_timeout_s=smpp.bind_timeout_s, inactivity_s=smpp.inactivity_s,
                           enquire_link_s=smpp.enquire_link_s,
                           enquire_timeout_s=smpp.enquire_link_s,
                           max_pdu_bytes=smpp.max_pdu_bytes,
                           max_unbound_pdu_bytes=smpp.max_unbound_pdu_bytes)


class ClientSession(protocol.Protocol, S.SessionHandler):
    """One client ESME connection."""

    def __init__(self, factory: "ClientFactory") -> None:
        self.factory = factory
        self.session = S.Session(S.SMSC, self, factory.session_cfg, factory.clock.seconds())
        self.account: Any = None
        self.peer = ""
        self.host = ""
        self.admitted = False       # counted in the factory's caps (released on close)
        self.unbound = True         # counted as not bound yet

    # what the gate, the registry and the delivery feed read
    @property
    def state(self) -> int:
        return self.session.state

    @property
    def mode(self) -> str:
        return self.session.mode

    @property
    def can_submit(self) -> bool:
        return self.session.can_submit

    @property
    def can_receive(self) -> bool:
        return self.session.can_receive

    @property
    def outstanding(self) -> int:
        """Requests awaiting the gate's answer."""
        return self.session.inbound

    # --- connection -----------------------------------------------------------------------
    def connectionMade(self) -> None:
        t = self.transport
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except Exception:  # pragma: no cover - not a TCP socket
                pass
        peer = t.getPeer()
        host = self.host = str(getattr(peer, "host", "?"))
        self.peer = "%s:%s" % (host, getattr(peer, "port", "?"))
        factory = self.factory
        smpp = factory.smpp
        refused = factory.caps.admit(host, smpp.max_connections,
                                     smpp.max_connections_per_address, smpp.max_unbound)
        if refused:
            self.session.state = CLOSING
            factory.quiet(host, "connection from {peer} refused: {cap} reached",
                          peer=self.peer, cap=refused)
            t.abortConnection()
            return
        self.admitted = True
        s = self.session
        s.last_rx = s.connected_at = self.factory.clock.seconds()
        self.factory.sessions.add(self)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.factory.caps.release(self.host, self.unbound)
        self.factory.sessions.discard(self)
        if self.account is not None:    # bound; also after a clean unbind (state CLOSING)
            self.factory.registry.unbound(self)
            log.info("unbind {account} {mode} from {peer}", account=self.account.system_id,
                     mode=self.mode, peer=self.peer)
        s = self.session
        s.fail_pending(s.connection_lost())

    def dataReceived(self, data: bytes) -> None:
        self.session.receive_data(data, self.factory.clock.seconds())

    def close(self) -> None:
        self.session.close()

    # --- SessionHandler ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None:
            t.write(data)

    def _quiet(self, fmt: str, **kw: Any) -> None:
        """A line about this peer: rate-limited per address while it has not bound, per
        account once bound."""
        if self.unbound:
            self.factory.quiet(self.host, fmt, peer=self.peer, **kw)
        else:
            self.factory.noise(self.account.system_id, fmt, peer=self.peer, **kw)

    def close_connection(self, reason: str) -> None:
        if reason == S.FRAMING:
            if self.unbound:
                self.factory.quiet(self.host, "framing error from {peer} before bind: {err}; "
                                   "closing", peer=self.peer, err=self.session.error)
            else:
                log.warn("framing error from {peer}: {err}; closing", peer=self.peer,
                         err=self.session.error)
        elif reason == S.BIND_TIMEOUT:
            self.factory.quiet(self.host, "no bind from {peer} within {s}s; closing",
                               peer=self.peer, s=self.session.cfg.bind_timeout_s)
        elif reason == S.INACTIVITY:
            log.info("inactivity timeout for {peer}; unbinding", peer=self.peer)
        elif reason == S.ENQUIRE_TIMEOUT:
            log.info("enquire_link unanswered by {peer}; closing", peer=self.peer)
        if self.transport is not None:
            self.transport.loseConnection()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resumeProducing()

    def on_request(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        pdu = P.decode_body(command_id, status, seq, body)
        if pdu.__class__ is P.BadPdu:
            self._quiet("bad {cmd} from {peer}: {msg}", cmd=C.COMMAND_NAMES.get(pdu.command_id),
                        msg=pdu.message)
            self.session.reply(S.error_resp(command_id, seq, pdu.error))
            return
        if command_id == _SUBMIT_SM:
            self.factory.relay.submit(self, pdu, body, self._replier(seq))
        elif command_id == _SUBMIT_MULTI and len(pdu.dest_addresses) > 1:
            # one window slot per destination: refused ESME_RTHROTTLED when they do not fit
            extra = len(pdu.dest_addresses) - 1
            if not self.session.take_slots(extra):
                self.session.reply(P.encode(P.SubmitMultiResp(seq, _S["ESME_RTHROTTLED"])))
                return
            self.factory.relay.other_request(self, pdu, self._pdu_replier(seq, 1 + extra))
        else:
            self.factory.relay.other_request(self, pdu, self._pdu_replier(seq))

    def _replier(self, seq: int) -> Callable[[int, bytes], None]:
        session = self.session

        def reply(status: int, message_id: bytes = b"") -> None:
            session.reply(P.message_id_resp(_SUBMIT_SM_RESP, seq, status, message_id))
        return reply

    def _pdu_replier(self, seq: int, slots: int = 1) -> Callable[[Any], None]:
        session = self.session

        def reply(resp: Any) -> None:
            session.reply(P.encode(resp._replace(seq=seq)), slots)
        return reply

    def on_response(self, callback: Any, status: int, body: bytes | None) -> None:
        callback(status)

    def on_generic_nack(self, status: int, seq: int) -> None:
        self._quiet("generic_nack {status} from {peer} seq {seq}",
                    status=C.status_name(status), seq=seq)

    def on_unknown(self, command_id: int, seq: int) -> None:
        self._quiet("unknown or unexpected command 0x{cid:08X} from {peer}", cid=command_id)

    # --- bind -----------------------------------------------------------------------------
    def on_bind_request(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        session = self.session
        pdu = P.decode_body(command_id, status, seq, body)
        if pdu.__class__ is P.BadPdu:
            self._quiet("bad {cmd} from {peer}: {msg}", cmd=C.COMMAND_NAMES.get(command_id),
                        msg=pdu.message)
            session.refuse_bind(command_id, seq, pdu.error)
            return
        system_id = pdu.system_id.decode("latin-1")
        d = self.factory.auth.authenticate(system_id, pdu.password.decode("latin-1"),
                                           self.host)

        def done(result: tuple[int, Any]) -> None:
            status_, account = result
            if session.state != BINDING:
                return
            if status_ == 0:
                status_ = self.factory.registry.bound(self, account)
            if status_:
                self._quiet("bind refused for {sid} from {peer}: {status}", sid=system_id[:15],
                            status=C.status_name(status_))
                session.refuse_bind(command_id, seq, status_)
            else:
                self.account = account
                if self.unbound:
                    self.unbound = False
                    self.factory.caps.bound()
                session.accept_bind(command_id, seq, self.factory.system_id)
                log.info("bind {account} {mode} from {peer}", account=system_id,
                         mode=self.mode, peer=self.peer)
                self.factory.registry.ready(self)
            session.drain()

        def failed(f: Any) -> None:
            log.failure("bind of {sid} failed", f, sid=system_id)
            done((_S["ESME_RBINDFAIL"], None))

        d.addCallbacks(done, failed)

    # --- outgoing requests (deliver_sm to receivers) ---------------------------------------
    def deliver(self, command_id: int, body: bytes, on_resp: Callable[[int], None]) -> None:
        """Send deliver_sm/data_sm (body already encoded); on_resp(status) on the answer."""
        self.session.request(command_id, body, on_resp, 0.0)

    # --- timers ---------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.session.tick(now)

    def set_account(self, account: Any) -> None:
        """The bound account's new settings (a reload changed the config)."""
        self.account = account

    def unbind(self) -> None:
        """Unbind cleanly (shutdown, account removed)."""
        if self.session.state != CLOSING and self.transport is not None:
            self.session.unbind(self.factory.clock.seconds(), wait=False)


class ClientFactory(protocol.Factory):
    """Builds sessions; holds what they share (config, registry, relay, clock, and `auth`,
    the `proxyd.auth.Authenticator` of binds).

    `sessions` is the live set of connected sessions; pass one to share it with whoever
    reads it (the node's metrics and shutdown), or a new set is made."""

    noisy = False

    def __init__(self, smpp: Any, registry: Any, relay: Any, clock: Any,
                 system_id: bytes = b"proxyd", refusal_interval_s: float = 60.0,
                 sessions: set[ClientSession] | None = None, *, auth: Any) -> None:
        self.smpp = smpp
        self.registry = registry
        self.auth = auth
        self.relay = relay
        self.clock = clock
        self.system_id = system_id
        self._cfg_of: Any = None
        self._session_cfg: S.SessionConfig | None = None
        self.sessions: set[ClientSession] = set() if sessions is None else sessions
        self.caps = Caps()
        self.quiet = QuietLog(log, clock, refusal_interval_s,
                              what="lines about SMPP peers not bound")
        self.noise = QuietLog(log, clock, refusal_interval_s,
                              what="lines about malformed or unexpected PDUs of bound peers")
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock

    def set_config(self, smpp: Any) -> None:
        """The `smpp` section of a reloaded config; sessions take it at the next tick."""
        self.smpp = smpp

    @property
    def session_cfg(self) -> S.SessionConfig:
        """Session limits of the current `smpp` config (rebuilt after a reload)."""
        if self._cfg_of is not self.smpp or self._session_cfg is None:
            self._session_cfg = session_config(self.smpp)
            self._cfg_of = self.smpp
        return self._session_cfg

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
        cfg = self.session_cfg          # a reload applies to the sessions already bound too
        for s in list(self.sessions):
            s.session.cfg = cfg
            s.tick(now)
        self.quiet.flush()
        self.noise.flush()
