"""One SMPP 3.4 session as a sans-IO state machine (the h11 model).

Bytes and time go in (`Session.receive_data(data, now)`, `Session.tick(now)`); bytes and
events come out through a `SessionHandler` (plain method calls, no Deferreds, nothing
allocated per PDU beyond the frame itself). The same class serves both roles:

* ``SMSC`` -- the side that accepts binds: client ESME sessions (`smpp/server.py`) and the
  simulator (`sim/smsc.py`);
* ``ESME`` -- the side that binds: the links to operator SMSCs (`links/smpp.py`).

What the session owns:

* bind state (`OPEN`, `BINDING`, `BOUND`, `CLOSING`, `UNBINDING`), bind mode and what the
  mode allows: a receiver bind may send nothing but deliver_sm_resp, data_sm_resp,
  enquire_link(_resp), unbind(_resp) and generic_nack -- every other request is answered
  ESME_RINVBNDSTS; a second bind is answered ESME_RALYBND;
* sequence numbers of its own requests and the table of those awaiting an answer
  (`pending`: seq -> (deadline, callback)), matched by sequence number, swept once per tick
  for response timeouts (insertion order is deadline order: the sweep stops at the first
  live entry);
* the windows: `window` caps our requests in flight (`free`), `inbound_window` caps the
  peer's requests awaiting our answer -- past it, frames wait in a backlog and the handler
  is asked to stop reading (back-pressure, not a disconnect);
* enquire_link (answered; sent when the peer is idle; an unanswered one closes), the
  inactivity and bind timeouts;
* framing errors (generic_nack ESME_RINVCMDLEN, then close) and unknown command ids
  (generic_nack ESME_RINVCMDID; the session stays up); in the SMSC role, until the bind is
  accepted, a command_length over `max_unbound_pdu_bytes` is a framing error too (the
  header is enough: the body is never buffered). The good requests read before a
  framing error are answered before the connection closes: those already handed to the
  handler (and those of the same read, within the window) get their real answers -- the
  session stops reading and lingers until the last one is answered; those still waiting in
  the backlog were never handed over and are refused at once (ESME_RSYSERR). Nothing the
  handler took is left unanswered.

Output written while `receive_data` runs is gathered and handed to `handler.write` once at
the end of the call (one transport write per read); output at other times is written at once.

A request the session lets through reaches `handler.on_request(command_id, status, seq,
body)` with the body bytes exactly as received (the relay forwards them unchanged); the
handler answers it exactly once with `reply(data)` (or `answered()` when it wrote the answer
itself).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from . import constants as C
from . import pdu as P

OPEN, BINDING, BOUND, CLOSING, UNBINDING = range(5)
STATE_NAMES = ("open", "binding", "bound", "closing", "unbinding")
SMSC, ESME = "smsc", "esme"

BIND_MODE = {C.BIND_TRANSMITTER: "transmitter", C.BIND_RECEIVER: "receiver",
             C.BIND_TRANSCEIVER: "transceiver"}
BIND_ID = {v: k for k, v in BIND_MODE.items()}
_BIND_RESPS = frozenset(c | C.RESP_BIT for c in C.BIND_COMMANDS)

# why the session closed (argument of handler.close_connection)
UNBOUND = "unbound"                     # an unbind (ours or the peer's) completed
LOCAL = "local"                         # the handler asked for it
FRAMING = "framing error"
BIND_TIMEOUT = "bind timeout"
BIND_REFUSED = "bind refused"
INACTIVITY = "inactivity"
ENQUIRE_TIMEOUT = "enquire_link unanswered"
UNBIND_TIMEOUT = "unbind unanswered"

_S = C.STATUS
_RINVBNDSTS = _S["ESME_RINVBNDSTS"]
_RINVCMDID = _S["ESME_RINVCMDID"]
_RSYSERR = _S["ESME_RSYSERR"]
_HDR = P._HDR.pack
_SUBMIT_SM = C.SUBMIT_SM
_SUBMIT_SM_RESP = C.SUBMIT_SM_RESP
_RESP_BIT = C.RESP_BIT
_GENERIC_NACK = C.GENERIC_NACK
_NEVER = float("inf")
UNLIMITED = 1 << 30


@dataclass(frozen=True)
class SessionConfig:
    """Limits and timers of a session; 0 turns a timer off."""

    window: int = 100                   # our requests in flight
    inbound_window: int = UNLIMITED     # the peer's requests awaiting our answer
    bind_timeout_s: float = 0.0         # SMSC: connect -> bound; ESME: bind -> bind_resp
    inactivity_s: float = 0.0           # nothing received: unbind and close
    enquire_link_s: float = 0.0         # idle this long: send enquire_link
    enquire_timeout_s: float = 0.0      # an enquire_link unanswered this long: close
    response_timeout_s: float = 0.0     # a request of ours unanswered this long: failed
    max_pdu_bytes: int = 65536
    # SMSC role: the largest PDU a peer that has not bound may send (a bind is at most 97
    # octets); beyond it generic_nack ESME_RINVCMDLEN and close, the body never buffered.
    # 0: max_pdu_bytes. The framer's limit is raised to max_pdu_bytes once bound.
    max_unbound_pdu_bytes: int = 0


def error_resp(command_id: int, seq: int, status: int) -> bytes:
    """The response of a request carrying only an error status (generic_nack if none)."""
    cls = P.resp_class(command_id)
    if cls is None:
        return P.generic_nack(seq, status)
    return P.encode(cls(seq, status))


class SessionHandler:
    """What a session calls. Null object: every method does nothing; adapters override."""

    def write(self, data: bytes) -> None:
        """Bytes for the peer."""

    def close_connection(self, reason: str) -> None:
        """The session is over (state CLOSING): drop the connection after what was written."""

    def pause_reading(self) -> None:
        """The inbound window is full: stop reading until `resume_reading`."""

    def resume_reading(self) -> None:
        """The backlog is empty again."""

    def on_bind_request(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        """SMSC role: a bind while OPEN (now BINDING). Answer with `accept_bind` or
        `refuse_bind`, now or later; frames read meanwhile wait."""

    def on_request(self, command_id: int, status: int, seq: int, body: bytes) -> None:
        """A request the bind state allows. Answer exactly once: `reply` or `answered`."""

    def on_response(self, callback: Any, status: int, body: bytes | None) -> None:
        """One of our requests answered (body None: timed out or connection lost;
        a generic_nack arrives as its status, never 0)."""

    def on_bound(self) -> None:
        """ESME role: the bind was accepted."""

    def on_bind_refused(self, status: int) -> None:
        """ESME role: the bind was refused (the session closes next)."""

    def on_unbind(self) -> None:
        """The peer sent unbind; unbind_resp follows this call, then the session closes."""

    def on_generic_nack(self, status: int, seq: int) -> None:
        """The peer sent generic_nack (after it was matched to a request, if any)."""

    def on_unknown(self, command_id: int, seq: int) -> None:
        """A command id this side does not take was answered generic_nack ESME_RINVCMDID."""


class Session:
    """One SMPP session, either role. See the module docstring."""

    def __init__(self, role: str, handler: SessionHandler, cfg: SessionConfig,
                 now: float = 0.0, seq_start: int = 0) -> None:
        if role not in (SMSC, ESME):
            raise ValueError("role must be %r or %r" % (SMSC, ESME))
        self.role = role
        self.handler = handler
        self.cfg = cfg
        if role == SMSC and cfg.max_unbound_pdu_bytes:
            self.framer = P.Framer(cfg.max_unbound_pdu_bytes, "max_unbound_pdu_bytes")
        else:
            self.framer = P.Framer(cfg.max_pdu_bytes)
        self.seq = P.Sequence(seq_start)
        self.state = OPEN
        self.mode = ""                          # transmitter / receiver / transceiver
        self.can_submit = False                 # SMSC role: the peer may send requests
        self.can_receive = False                # SMSC role: we may send deliver_sm
        self.inbound = 0                        # peer requests awaiting our answer
        self.pending: dict[int, tuple[float, Any]] = {}     # our requests: seq -> (deadline, cb)
        self.backlog: deque = deque()           # frames read past the inbound window
        self.paused = False
        self.connected_at = now
        self.last_rx = now
        self.enquire_sent = 0.0                 # time of our unanswered enquire_link, or 0
        self.deadline = _NEVER                  # ESME bind / our unbind: answer expected by
        self.error = ""                         # detail of the last framing error
        self._bind_seq = 0
        self._hold = BINDING if role == SMSC else -1    # frames wait while in this state
        self._handle = self._handle_smsc if role == SMSC else self._handle_esme
        self._out: list | None = None           # output gathered during receive_data
        self._close_reason: str | None = None
        self._linger: str | None = None         # closing once the handled requests are answered
        self._draining = False

    # --- output -----------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Bytes for the peer: gathered while input is handled, else written at once."""
        out = self._out
        if out is not None:
            out.append(data)
        else:
            self.handler.write(data)

    def _flush(self, out: list) -> None:
        self._out = None
        if out:
            self.handler.write(b"".join(out) if len(out) > 1 else out[0])
        reason = self._close_reason
        if reason is not None:
            self._close_reason = None
            self.handler.close_connection(reason)

    def close(self, reason: str = LOCAL) -> None:
        """End the session; the handler drops the connection once pending output is out."""
        if self.state == CLOSING:
            return
        self.state = CLOSING
        self.can_submit = self.can_receive = False
        if reason == FRAMING:
            self._refuse_backlog()
            if self.inbound > 0:        # answer what the handler took, then close
                self._linger = reason
                if not self.paused:
                    self.paused = True
                    self.handler.pause_reading()
                return
        self._end(reason)

    def _end(self, reason: str) -> None:
        if self._out is not None:
            self._close_reason = reason
        else:
            self.handler.close_connection(reason)

    def _refuse_backlog(self) -> None:
        """The requests still waiting in the backlog, never handed over: ESME_RSYSERR."""
        backlog = self.backlog
        while backlog:
            cid, _status, seq, _body = backlog.popleft()
            if not cid & _RESP_BIT:
                self.send(error_resp(cid, seq, _RSYSERR))

    # --- input ------------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        self.last_rx = now
        if self.state == CLOSING:
            return
        self._out = out = []
        try:
            try:
                frames = self.framer.feed(data)
            except P.FramingError as e:
                # the good PDUs before the bad header still count: handled (and answered
                # before the close, see `close`) within the window, else refused
                window = self.cfg.inbound_window
                for f in e.frames:
                    if self.state == CLOSING:
                        break
                    if self.backlog or self.inbound >= window or self.state == self._hold:
                        self.backlog.append(f)
                    else:
                        self._handle(*f)
                self.error = str(e)
                self.send(P.generic_nack(e.seq, _S["ESME_RINVCMDLEN"]))
                self.close(FRAMING)
                return
            backlog = self.backlog
            if backlog or self.inbound >= self.cfg.inbound_window:
                backlog.extend(frames)
                self._drain()
                return
            handle = self._handle
            window = self.cfg.inbound_window
            hold = self._hold
            for f in frames:
                state = self.state
                if state == CLOSING:
                    return
                if self.inbound >= window or state == hold:
                    backlog.append(f)
                    continue
                handle(*f)
            if backlog:
                self._pause()
        finally:
            self._flush(out)

    def _pause(self) -> None:
        if not self.paused and self.state != CLOSING:
            self.paused = True
            self.handler.pause_reading()

    def drain(self) -> None:
        """Handle what waits in the backlog (after an asynchronous bind answer)."""
        if self.backlog:
            self._drain()

    def _drain(self) -> None:
        # a request answered synchronously calls this again from inside handle(): the loop
        # below goes on instead of recursing once per PDU
        if self._draining:
            return
        backlog = self.backlog
        window = self.cfg.inbound_window
        self._draining = True
        out = None
        if self._out is None:
            self._out = out = []
        try:
            while backlog and self.inbound < window and (self.state == BOUND
                                                         or self.state == OPEN):
                self._handle(*backlog.popleft())
        finally:
            self._draining = False
            if out is not None:
                self._flush(out)
        if backlog:
            self._pause()
        elif self.paused and self.state != CLOSING:
            self.paused = False
            self.handler.resume_reading()

    # --- answers to the peer's requests -------------------------------------------------------
    def take_slots(self, extra: int) -> bool:
        """A request worth more than one slot of the inbound window (a submit_multi takes
        one per destination): take `extra` more slots for the request being handled, or
        False when they do not fit. A request alone in the window always fits (it may
        overfill it: reading stops until it is answered), so none waits for ever."""
        if self.inbound > 1 and self.inbound + extra > self.cfg.inbound_window:
            return False
        self.inbound += extra
        return True

    def reply(self, data: bytes, slots: int = 1) -> None:
        """Answer one request passed to on_request (dropped if the session closed); `slots`
        is what it held of the window (1, or more after `take_slots`)."""
        self.inbound -= slots
        if self.state != CLOSING:
            self.send(data)
            if self.backlog:
                self._drain()
        elif self._linger is not None:  # closing after a framing error: answered first
            self.send(data)
            if self.inbound <= 0:
                reason, self._linger = self._linger, None
                self._end(reason)

    def answered(self) -> None:
        """A request passed to on_request was answered by the handler itself."""
        self.inbound -= 1
        if self.backlog and self.state != CLOSING:
            self._drain()
        elif self._linger is not None and self.inbound <= 0:
            reason, self._linger = self._linger, None
            self._end(reason)

    # --- SMSC role ------------------------------------------------------------------------------
    def _handle_smsc(self, cid: int, status: int, seq: int, body: bytes) -> None:
        if cid == _SUBMIT_SM:
            if self.can_submit:
                self.inbound += 1
                self.handler.on_request(cid, status, seq, body)
            else:
                self.send(_HDR(16, _SUBMIT_SM_RESP, _RINVBNDSTS, seq))
            return
        if cid & _RESP_BIT:
            self._response(cid, status, seq, body)
            return
        if cid == C.ENQUIRE_LINK:
            self.send(_HDR(16, C.ENQUIRE_LINK_RESP, 0, seq))
            return
        if cid in C.BIND_COMMANDS:
            if self.state != OPEN:
                self.send(error_resp(cid, seq, _S["ESME_RALYBND"]))
                return
            self.state = BINDING
            self.handler.on_bind_request(cid, status, seq, body)
            return
        if cid == C.UNBIND:
            self._peer_unbind(seq)
            return
        if cid == C.OUTBIND or cid == C.ALERT_NOTIFICATION or cid not in P.PDU_CLASSES:
            self.send(P.generic_nack(seq, _RINVCMDID))
            self.handler.on_unknown(cid, seq)
            return
        if not self.can_submit:             # not bound, or bound as a receiver
            self.send(error_resp(cid, seq, _RINVBNDSTS))
            return
        self.inbound += 1
        self.handler.on_request(cid, status, seq, body)

    def accept_bind(self, command_id: int, seq: int, system_id: bytes) -> None:
        """SMSC role: answer the bind passed to on_bind_request with OK; now BOUND.
        Frames that waited are handled on `drain()`."""
        if self.state != BINDING:
            return
        self.state = BOUND
        framer = self.framer
        framer.max_pdu_bytes = self.cfg.max_pdu_bytes
        framer.limit_name = "max_pdu_bytes"
        self.mode = BIND_MODE[command_id]
        self.can_submit = command_id != C.BIND_RECEIVER
        self.can_receive = command_id != C.BIND_TRANSMITTER
        self.send(P.encode(P.PDU_CLASSES[command_id | _RESP_BIT](
            seq, 0, system_id, ((C.TAG_SC_INTERFACE_VERSION, b"\x34"),))))

    def refuse_bind(self, command_id: int, seq: int, status: int) -> None:
        """SMSC role: answer the bind passed to on_bind_request with an error; OPEN again."""
        if self.state != BINDING:
            return
        self.state = OPEN
        self.send(error_resp(command_id, seq, status))

    # --- ESME role ------------------------------------------------------------------------------
    def _handle_esme(self, cid: int, status: int, seq: int, body: bytes) -> None:
        if cid & _RESP_BIT:
            self._response(cid, status, seq, body)
        elif cid == C.DELIVER_SM or cid == C.DATA_SM:
            self.inbound += 1
            self.handler.on_request(cid, status, seq, body)
        elif cid == C.ENQUIRE_LINK:
            self.send(_HDR(16, C.ENQUIRE_LINK_RESP, 0, seq))
        elif cid == C.UNBIND:
            self._peer_unbind(seq)
        elif cid == C.OUTBIND or cid == C.ALERT_NOTIFICATION:
            pass
        else:
            self.send(P.generic_nack(seq, _RINVCMDID))
            self.handler.on_unknown(cid, seq)

    def bind(self, mode: str, system_id: bytes, password: bytes, system_type: bytes,
             now: float) -> None:
        """ESME role: send the bind (BINDING until its answer or `bind_timeout_s`)."""
        command_id = BIND_ID[mode]
        seq = self._bind_seq = self.seq.next()
        self.state = BINDING
        self.mode = mode
        t = self.cfg.bind_timeout_s
        self.deadline = now + t if t else _NEVER
        self.send(P.encode(P.PDU_CLASSES[command_id](
            seq, 0, system_id, password, system_type, 0x34, 0, 0, b"")))

    def _bind_answer(self, status: int) -> None:
        self.deadline = _NEVER
        if status == 0:
            self.state = BOUND
            self.can_submit = self.mode != "receiver"
            self.can_receive = self.mode != "transmitter"
            self.handler.on_bound()
        else:
            self.handler.on_bind_refused(status)
            self.close(BIND_REFUSED)

    # --- both roles -----------------------------------------------------------------------------
    def _response(self, cid: int, status: int, seq: int, body: bytes) -> None:
        if cid == _GENERIC_NACK:
            status = status or _S["ESME_RUNKNOWNERR"]
            entry = self.pending.pop(seq, None)
            if entry is not None:
                self.handler.on_response(entry[1], status, b"")
            elif self.state == BINDING and seq == self._bind_seq and self.role == ESME:
                self._bind_answer(status)
            self.handler.on_generic_nack(status, seq)
            return
        entry = self.pending.pop(seq, None)
        if entry is not None:
            self.handler.on_response(entry[1], status, body)
        elif cid == C.ENQUIRE_LINK_RESP:
            self.enquire_sent = 0.0
        elif cid == C.UNBIND_RESP:
            if self.state == UNBINDING:     # the answer to our unbind; a stray one is ignored
                self.close(UNBOUND)
        elif cid in _BIND_RESPS and self.role == ESME and self.state == BINDING \
                and seq == self._bind_seq:
            self._bind_answer(status)
        # anything else: an answer nobody waits for (timed out already); ignored

    def _peer_unbind(self, seq: int) -> None:
        self.handler.on_unbind()
        self.send(_HDR(16, C.UNBIND_RESP, 0, seq))
        self.can_submit = self.can_receive = False
        self.close(UNBOUND)

    @property
    def free(self) -> int:
        """Requests we may still send now (0 unless bound)."""
        return self.cfg.window - len(self.pending) if self.state == BOUND else 0

    def request(self, command_id: int, body: bytes, callback: Any, now: float) -> int:
        """Send a request of ours; `handler.on_response(callback, ...)` once on its answer,
        its response timeout, or the connection's end. Returns its sequence number."""
        seq = self.seq.next()
        self.pending[seq] = (now + self.cfg.response_timeout_s, callback)
        self.send(P.frame(command_id, 0, seq, body))
        return seq

    def unbind(self, now: float, wait: bool = True) -> None:
        """Send unbind; close on its answer (or its response timeout), or at once."""
        if self.state == CLOSING or self.state == UNBINDING:
            return
        self.send(_HDR(16, C.UNBIND, 0, self.seq.next()))
        self.can_submit = self.can_receive = False
        if wait:
            self.state = UNBINDING
            t = self.cfg.response_timeout_s or self.cfg.bind_timeout_s
            self.deadline = now + t if t else _NEVER
        else:
            self.close(UNBOUND)

    def connection_lost(self) -> dict[int, tuple[float, Any]]:
        """The transport is gone: CLOSING; returns our requests that will never be
        answered (seq -> (deadline, callback)) for the caller to fail."""
        self.state = CLOSING
        self.can_submit = self.can_receive = False
        self.backlog.clear()
        self._linger = None
        pending, self.pending = self.pending, {}
        return pending

    def fail_pending(self, pending: dict[int, tuple[float, Any]]) -> None:
        """Answer each request of `pending` with ESME_RSYSERR (body None)."""
        on_response = self.handler.on_response
        for _deadline, cb in pending.values():
            on_response(cb, _RSYSERR, None)

    # --- time ---------------------------------------------------------------------------------
    def tick(self, now: float) -> int:
        """Timers, once a tick; returns how many of our requests timed out."""
        state = self.state
        if state == CLOSING:
            return 0
        cfg = self.cfg
        expired = 0
        if cfg.response_timeout_s and self.pending:
            pending = self.pending
            late = []
            for seq, (deadline, _cb) in pending.items():
                if deadline > now:
                    break                   # insertion order == deadline order
                late.append(seq)
            for seq in late:
                _deadline, cb = pending.pop(seq)
                self.handler.on_response(cb, _RSYSERR, None)
            expired = len(late)
            if self.state == CLOSING:
                return expired
        if state == UNBINDING:
            if now >= self.deadline:
                self.close(UNBIND_TIMEOUT)
            return expired
        if state != BOUND:
            if self.role == SMSC:
                t = cfg.bind_timeout_s
                if t and now - self.connected_at > t:
                    self.close(BIND_TIMEOUT)
                    return expired
            elif state == BINDING and now >= self.deadline:
                self.close(BIND_TIMEOUT)
                return expired
        idle = now - self.last_rx
        if cfg.inactivity_s and idle > cfg.inactivity_s:
            self.send(_HDR(16, C.UNBIND, 0, self.seq.next()))
            self.close(INACTIVITY)
            return expired
        if state == BOUND and cfg.enquire_link_s:
            if self.enquire_sent:
                if now - self.enquire_sent > (cfg.enquire_timeout_s or cfg.enquire_link_s):
                    self.enquire_sent = 0.0
                    self.close(ENQUIRE_TIMEOUT)
            elif idle > cfg.enquire_link_s:
                self.enquire_sent = now
                self.send(_HDR(16, C.ENQUIRE_LINK, 0, self.seq.next()))
        return expired


__all__ = ["Session", "SessionConfig", "SessionHandler", "error_resp", "SMSC", "ESME",
           "OPEN", "BINDING", "BOUND", "CLOSING", "UNBINDING", "BIND_MODE", "UNLIMITED"]
