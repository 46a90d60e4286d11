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
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp import session as S

from .link import Link, OnResp, Waiting

log = Logger(namespace="proxyd.upstream")
_S = C.STATUS

__all__ = ["Upstream", "UpstreamBind", "Waiting", "OnResp"]


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


class Upstream(Link):
    """One operator account over SMPP: `binds` connections (`UpstreamBind`) and a short wait
    queue (the shared machinery is `proxyd.links.link.Link`)."""

    connection_class = UpstreamBind
    protocol_name = "smpp"

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

