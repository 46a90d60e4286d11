"""The receipt book of a node without a store: receipts and MO held in memory.

`[store] url = "none"` (benchmarks and tests of the bare relay) has no durable delivery;
this null object takes its place so the gate's path is the same with or without a store.
Receipts are matched by the operator's id and queued per account until a receiver binds.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.logger import Logger

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P

from .text import RECEIPT_ID, normalise_upstream_id, rewrite_receipt

log = Logger(namespace="proxyd.delivery")
_OK = 0
class MemoryReceipts:
    """remember / on_deliver / own_receipt / session_ready, in memory; HTTP delivery
    reports (`expect_http_dlr`) are not kept."""

    messages = None         # no stored message state: query/cancel/replace are refused

    def __init__(self, config: Callable[[], Any], registry: Any, clock: Any) -> None:
        self.config = config        # () -> the current Config (a reload replaces it)
        self.registry = registry
        self.clock = clock
        self.receipt_map: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.pending: dict[str, deque] = {}

    def remember(self, upstream: str, upstream_id: bytes, account: str, mid: bytes,
                 source: bytes = b"", destination: bytes = b"") -> None:
        """`upstream_id` as the operator gave it."""
        self.receipt_map[(upstream, normalise_upstream_id(upstream_id)[0])] = (account, mid)

    def expect_http_dlr(self, account_id: str, number: str, part_ids: Any,
                        settings: Any, status: int = 0) -> None:
        """No durable delivery: HTTP delivery reports are not sent without a store."""

    def own_receipt(self, account: str, mid: bytes, pdu: Any, stat: str,
                    status: int) -> None:
        """No durable delivery: proxyd's own negative receipts are only logged."""
        log.info("{acct}: part {mid} not sent ({stat})", acct=account, mid=mid, stat=stat)

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
                m = RECEIPT_ID.search(pdu.short_message)
                rid = m.group(1) if m else None
            hit = self._lookup(upstream.name, rid) if rid else None
            if hit is None:
                log.info("receipt from {up} for unknown id {rid}", up=upstream.name,
                         rid=rid)
                ack(_OK)   # nobody to give it to; acknowledged so the operator stops resending
                return
            account, mid = hit
            out = rewrite_receipt(pdu, mid)
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
        for a in self.config().accounts:
            for code in a.service_codes:
                if dest.startswith(code) and len(code) > best_len:
                    best, best_len = a.system_id, len(code)
        return best

    def session_ready(self, session: Any) -> None:
        if session.can_receive:
            self._flush(session.account.system_id)

    def session_gone(self, session: Any) -> None:
        pass

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
