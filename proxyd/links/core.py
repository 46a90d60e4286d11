"""The sans-IO heart of a connection to an operator gateway, whatever its wire protocol.

CMPP, SMGP and SGIP share the shape SMPP has (`proxyd.smpp.session`): a length-prefixed frame,
a login, requests matched to answers by sequence number within a window, a keepalive when the
line is idle, a logout. `LinkCore` owns the protocol-independent part as plain state and
time; a protocol adapter (e.g. `proxyd.links.cmpp.link`) encodes and decodes the frames.

* `Framer` cuts a byte stream into frames whose first 4 octets are the total length
  (header included); a length below the header or above the cap is a framing error.
* `LinkCore.request(seq, callback, now)` records a request of ours as pending until
  `LinkCore.answer(seq)` (its response), its deadline (`tick` returns it as expired: fate
  unknown, ESME_RSYSERR for the gate) or the connection's end (`connection_lost`).
* Keepalive: after `keepalive_s` without input `tick` asks for a keepalive; one unanswered
  for `keepalive_timeout_s` is sent again, `keepalive_tries` (N) times in all, then the core
  asks to close (the specifications' C, T and N).
* States: OPEN -> LOGIN (login sent) -> BOUND -> LOGOUT (logout sent) -> CLOSED; a login
  unanswered within `login_timeout_s` asks to close.

Nothing here allocates per request beyond the pending entry; the pending table is in
insertion order, which is deadline order (one response timeout), so the sweep stops at the
first live entry.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable

OPEN, LOGIN, BOUND, LOGOUT, CLOSED = range(5)
STATE_NAMES = ("open", "login", "bound", "logout", "closed")

# what `tick` asks of the adapter
KEEPALIVE = "keepalive"
LOGIN_TIMEOUT = "login unanswered"
KEEPALIVE_TIMEOUT = "keepalive unanswered"
LOGOUT_TIMEOUT = "logout unanswered"

_LEN = struct.Struct(">I")
_NEVER = float("inf")


class FramingError(ValueError):
    """The stream cannot be cut into frames any more (the connection must close)."""


class Framer:
    """Length-prefixed frames: a 4-octet big-endian total length first."""

    __slots__ = ("header_len", "max_len", "buf")

    def __init__(self, header_len: int, max_len: int) -> None:
        self.header_len = header_len
        self.max_len = max_len
        self.buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The whole frames now available (header included); raises FramingError (the
        frames before the bad one are lost with the connection)."""
        buf = self.buf + data if self.buf else data
        n = len(buf)
        p = 0
        out = []
        unpack = _LEN.unpack_from
        hl, ml = self.header_len, self.max_len
        while n - p >= 4:
            (length,) = unpack(buf, p)
            if length < hl or length > ml:
                self.buf = b""
                raise FramingError("frame length %d outside %d..%d" % (length, hl, ml))
            if n - p < length:
                break
            out.append(buf[p:p + length])
            p += length
        self.buf = buf[p:] if p < n else b""
        return out


@dataclass(frozen=True)
class CoreConfig:
    window: int = 16
    response_timeout_s: float = 10.0
    login_timeout_s: float = 10.0
    keepalive_s: float = 180.0          # C: idle time before a keepalive (0: never)
    keepalive_timeout_s: float = 60.0   # T: wait for its answer before sending it again
    keepalive_tries: int = 3            # N: unanswered keepalives before closing


class LinkCore:
    """Window, timers and state of one link connection (no I/O)."""

    __slots__ = ("cfg", "state", "pending", "last_rx", "deadline", "ka_sent", "ka_tries",
                 "_seq", "seq_max")

    def __init__(self, cfg: CoreConfig, now: float, seq_start: int = 1,
                 seq_max: int = 0xFFFFFFFF) -> None:
        self.cfg = cfg
        self.state = OPEN
        self.pending: dict[Any, tuple[float, Any]] = {}
        self.last_rx = now
        self.deadline = _NEVER
        self.ka_sent = 0.0              # when the unanswered keepalive was sent (0: none)
        self.ka_tries = 0
        self.seq_max = seq_max
        self._seq = (seq_start - 1) % seq_max

    # --- sequence numbers and the window ----------------------------------------------------
    def next_seq(self) -> int:
        """1..seq_max, wrapping; never a sequence still pending."""
        s = self._seq
        pending = self.pending
        while True:
            s = s + 1 if s < self.seq_max else 1
            if s not in pending:
                self._seq = s
                return s

    @property
    def bound(self) -> bool:
        return self.state == BOUND

    @property
    def free(self) -> int:
        """Requests we may still send now (0 unless bound)."""
        return self.cfg.window - len(self.pending) if self.state == BOUND else 0

    def request(self, seq: Any, callback: Any, now: float) -> None:
        """A request of ours was sent with `seq`; pending until answered or late."""
        self.pending[seq] = (now + self.cfg.response_timeout_s, callback)

    def answer(self, seq: Any) -> Any:
        """The callback of our request `seq` now answered (None if nobody waits)."""
        entry = self.pending.pop(seq, None)
        return entry[1] if entry is not None else None

    # --- states ---------------------------------------------------------------------------
    def login_sent(self, now: float) -> None:
        self.state = LOGIN
        t = self.cfg.login_timeout_s
        self.deadline = now + t if t else _NEVER

    def logged_in(self, now: float) -> None:
        self.state = BOUND
        self.deadline = _NEVER
        self.last_rx = now

    def logout_sent(self, now: float) -> None:
        self.state = LOGOUT
        t = self.cfg.response_timeout_s
        self.deadline = now + t if t else _NEVER

    def received(self, now: float) -> None:
        """Input arrived: the line is alive (any frame answers a keepalive's purpose)."""
        self.last_rx = now
        self.ka_sent = 0.0
        self.ka_tries = 0

    def connection_lost(self) -> dict[Any, tuple[float, Any]]:
        """CLOSED; returns our requests that will never be answered."""
        self.state = CLOSED
        pending, self.pending = self.pending, {}
        return pending

    # --- time -----------------------------------------------------------------------------
    def tick(self, now: float, expired: Callable[[Any], None]) -> str | None:
        """Timers: `expired(callback)` for each request past its deadline; returns what the
        adapter must do now: None, KEEPALIVE (send one) or a reason to close."""
        pending = self.pending
        if pending:
            late = []
            for seq, (deadline, _cb) in pending.items():
                if deadline > now:
                    break
                late.append(seq)
            for seq in late:
                entry = pending.pop(seq, None)
                if entry is not None:
                    expired(entry[1])
        state = self.state
        if state == LOGIN or state == LOGOUT:
            if now >= self.deadline:
                return LOGIN_TIMEOUT if state == LOGIN else LOGOUT_TIMEOUT
            return None
        if state != BOUND:
            return None
        cfg = self.cfg
        if not cfg.keepalive_s:
            return None
        if self.ka_sent:
            if now - self.ka_sent < cfg.keepalive_timeout_s:
                return None
            if self.ka_tries >= cfg.keepalive_tries:
                return KEEPALIVE_TIMEOUT
        elif now - self.last_rx < cfg.keepalive_s:
            return None
        self.ka_sent = now
        self.ka_tries += 1
        return KEEPALIVE


__all__ = ["Framer", "FramingError", "CoreConfig", "LinkCore", "OPEN", "LOGIN", "BOUND",
           "LOGOUT", "CLOSED", "KEEPALIVE", "LOGIN_TIMEOUT", "KEEPALIVE_TIMEOUT",
           "LOGOUT_TIMEOUT"]
