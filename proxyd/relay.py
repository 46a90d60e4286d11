"""The one path every message takes: checks -> charge -> route -> upstream -> outcome.

Cut-through: a single-part submit_sm is forwarded as the client's own body under a new
header, and the client's submit_sm_resp waits for the operator's. The id the client gets is
proxyd's own (`MessageIds`); the receipt map ties it to (upstream, upstream id).

Plain callbacks, no Deferred per message: `submit(session, pdu, body, reply)` ends in exactly
one `reply(status, message_id)`.
"""
from __future__ import annotations

import os
import re
import socket
import time
import zlib
from collections import deque
from typing import Any, Callable

from twisted.logger import Logger

from .smpp import constants as C
from .smpp import pdu as P

log = Logger(namespace="proxyd.relay")
_S = C.STATUS
_OK = 0
Reply = Callable[..., None]


class MessageIds:
    """proxyd message ids: node tag + start time + counter, hex; unique across restarts
    (the start time moves on) and nodes (the node tag), at most 32 characters."""

    def __init__(self, node_id: str = "") -> None:
        node = node_id or "%s-%d" % (socket.gethostname(), os.getpid())
        tag = zlib.crc32(node.encode()) & 0xFFFFFF
        start = int(time.time() * 1000) & 0xFFFFFFFFFFF
        self._prefix = "%06x%011x" % (tag, start)
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        return ("%s%08x" % (self._prefix, self._n)).encode()


_ID_RE = re.compile(rb"id:(\S+)")


def normalise_upstream_id(mid: bytes | str) -> list[str]:
    """The keys under which an operator id may be looked up: as given (lower case, no
    leading zeros), and its decimal<->hex twin, so receipts match whatever form they use."""
    s = mid.decode("latin-1") if isinstance(mid, bytes) else mid
    s = s.strip().lower()
    keys = [s.lstrip("0") or "0"]
    if s.isdigit():
        keys.append(format(int(s), "x"))
    else:
        try:
            keys.append(str(int(s, 16)))
        except ValueError:
            pass
    return keys


class Relay:
    """Submit path and delivery path (receipts, MO) of one proxyd node."""

    def __init__(self, config: Any, router: Any, registry: Any, clock: Any,
                 ids: MessageIds | None = None) -> None:
        self.config = config
        self.router = router
        self.registry = registry
        self.clock = clock
        self.ids = ids or MessageIds(config.relay.node_id)
        self.checks: list[Callable[[Any, Any, Any], Any]] = []   # (session, pdu, account)
        # in-memory receipt map and delivery queues (a later issue moves them to the store)
        self.receipt_map: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.pending: dict[str, deque] = {}
        registry.on_ready.append(self._flush_pending)
        self.counters = {"submitted": 0, "ok": 0, "refused": 0, "upstream_error": 0}

    # --- submit ----------------------------------------------------------------------------
    def submit(self, session: Any, pdu: Any, body: bytes, reply: Reply) -> None:
        account = session.account
        self.counters["submitted"] += 1
        for check in self.checks:
            refusal = check(session, pdu, account)
            if refusal is not None:
                self.counters["refused"] += 1
                reply(refusal.status, b"")
                return
        dest = pdu.destination_addr.decode("latin-1")
        up = self.router.pick(dest, account)
        if up is None:
            self.counters["refused"] += 1
            if self.router.routable(dest, account):
                reply(_S["ESME_RMSGQFUL"], b"")
            else:
                reply(_S["ESME_RINVDSTADR"], b"")
            return
        mid = self.ids.next()
        want_receipt = pdu.registered_delivery & 0x03

        def on_resp(status: int, upstream_id: bytes | None) -> None:
            if status == _OK:
                self.counters["ok"] += 1
                if want_receipt and upstream_id:
                    self._remember(up.name, upstream_id, account.system_id, mid)
                reply(_OK, mid)
            else:
                self.counters["upstream_error"] += 1
                reply(status, b"")

        up.submit(C.SUBMIT_SM, body, on_resp)

    def other_request(self, session: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        """query_sm, cancel_sm, replace_sm, submit_multi, data_sm: a spec-valid refusal
        until a later issue implements them."""
        resp = P.resp_class(pdu.command_id)
        status = {C.QUERY_SM: _S["ESME_RQUERYFAIL"], C.CANCEL_SM: _S["ESME_RCANCELFAIL"],
                  C.REPLACE_SM: _S["ESME_RREPLACEFAIL"]}.get(pdu.command_id,
                                                             _S["ESME_RINVCMDID"])
        reply(resp(0, status))

    # --- receipts and MO -------------------------------------------------------------------
    def _remember(self, upstream: str, upstream_id: bytes, account: str, mid: bytes) -> None:
        self.receipt_map[(upstream, normalise_upstream_id(upstream_id)[0])] = (account, mid)

    def _lookup(self, upstream: str, upstream_id: bytes) -> tuple[str, bytes] | None:
        for k in normalise_upstream_id(upstream_id):
            hit = self.receipt_map.get((upstream, k))
            if hit is not None:
                return hit
        return None

    def on_deliver(self, upstream: Any, pdu: Any, ack: Callable[[int], None]) -> None:
        """A deliver_sm/data_sm from an operator: a receipt or an MO."""
        if pdu.esm_class & C.ESM_RECEIPT_MASK:
            rid = pdu.tlv(C.TAG_RECEIPTED_MESSAGE_ID)
            if rid is not None:
                rid = rid.rstrip(b"\0")
            elif pdu.command_id == C.DELIVER_SM:
                m = _ID_RE.search(pdu.short_message)
                rid = m.group(1) if m else None
            hit = self._lookup(upstream.name, rid) if rid else None
            if hit is None:
                log.info("receipt from {up} for unknown id {rid}", up=upstream.name,
                         rid=rid)
                ack(_OK)   # nobody to give it to; acknowledged so the operator stops resending
                return
            account, mid = hit
            tlvs = tuple((t, mid + b"\0") if t == C.TAG_RECEIPTED_MESSAGE_ID else (t, v)
                         for t, v in pdu.tlvs)
            changes: dict[str, Any] = {"tlvs": tlvs}
            if pdu.command_id == C.DELIVER_SM:
                changes["short_message"] = _ID_RE.sub(b"id:" + mid, pdu.short_message, 1)
            out = pdu._replace(**changes)
        else:
            account = self._mo_account(pdu.destination_addr.decode("latin-1"))
            if account is None:
                log.info("MO from {up} to an unknown service code", up=upstream.name)
                ack(_OK)
                return
            out = pdu
        body = P.encode(out)[P.HEADER_LEN:]
        self.pending.setdefault(account, deque()).append((out.command_id, body))
        ack(_OK)
        self._flush(account)

    def _mo_account(self, dest: str) -> str | None:
        best, best_len = None, 0
        for a in self.config.accounts:
            for code in a.service_codes:
                if dest.startswith(code) and len(code) > best_len:
                    best, best_len = a.system_id, len(code)
        return best

    def _flush_pending(self, session: Any) -> None:
        if session.can_receive:
            self._flush(session.account.system_id)

    def _flush(self, account: str) -> None:
        q = self.pending.get(account)
        if not q:
            return
        receivers = self.registry.receivers(account)
        if not receivers:
            return
        i = 0
        while q:
            cid, body = q.popleft()
            session = receivers[i % len(receivers)]
            i += 1

            def on_resp(status: int, cid: int = cid, body: bytes = body) -> None:
                if status != _OK:
                    log.info("client refused a delivery ({status}); kept for retry",
                             status=C.status_name(status))
                    self.pending.setdefault(account, deque()).append((cid, body))
                    self.clock.callLater(5.0, self._flush, account)

            session.deliver(cid, body, on_resp)
