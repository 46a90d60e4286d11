"""Receipts from operators to the right client: the receipt map gives the account and
proxyd's id, the id is rewritten, and the receipt is stored (message state, then the HTTP
callback or the account's stream).

    upstream deliver_sm/data_sm receipt
      ─ receipt map (rmap:{U}:<id>, retried ~2 s) ─ rewrite id ─ XADD dlv:{A} or hcb:{A}
                                                             └─ ack the operator

Receipts are gathered per reactor turn: one MGET per upstream for their map entries (the
keys share the upstream's hash tag), then one script per account (RECEIPTS_LUA, the
account's hash tag) that stores the state of every part and appends each receipt to the
account's stream (or queues its HTTP callback) and, when this node is consuming the
account, reads the stream for it in the same step: what this node just wrote comes back as
ids only. Each step has at most one call in flight per upstream / account; what arrives
meanwhile goes with the next call. The operator's deliver_sm are acknowledged when the
account's call returns. Two calls, not one, so that the keys of each stay in one hash slot
(Redis Cluster). A receipt whose id is not in the map after the retries is acknowledged,
logged and counted: nobody can take it.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from twisted.internet import defer
from twisted.logger import Logger

from .text import RECEIPT_ID, normalise_upstream_id, rewrite_receipt
from ..smpp import constants as C
from ..smpp import pdu as P
from ..store.messages import STATE_NAMES, dlr_key, msg_key
from ..store.receipts import GROUP, RECEIPT, Entry
from .records import Lookup, PendingReceipt, Receipt
from .text import receipt_state

log = Logger(namespace="proxyd.delivery")

_OK = 0
_RX_T_APPN = C.STATUS["ESME_RX_T_APPN"]
# delays between the lookups of a receipt whose id is not mapped (yet): ~2 s in all
LOOKUP_RETRIES = (0.2, 0.3, 0.5, 1.0)


class Intake:
    """The receipts of this node on their way into the store."""

    def __init__(self, rs: Any, messages: Any, clock: Any, feeds: Any, dlr: Any,
                 counters: dict[str, int], journal: Callable[[str, str, str, str], None],
                 track: Callable[[defer.Deferred], defer.Deferred], consumer: str,
                 cb_prefix: str, cb_numbers: Iterator[int]) -> None:
        self.rs = rs
        self.messages = messages
        self.clock = clock
        self.feeds = feeds
        self.dlr = dlr
        self.counters = counters
        self.journal = journal
        self.track = track
        self.consumer = consumer
        self._cb_prefix = cb_prefix             # callback ids: mid:<node><counter>
        self._cb_numbers = cb_numbers
        self._retries: list[tuple[float, Lookup]] = []      # (due, lookup)
        self._lk: dict[str, list[Lookup]] = {}      # upstream -> receipts to look up
        self._lk_busy: set[str] = set()             # upstreams with a lookup in flight
        self._rb: dict[str, list[PendingReceipt]] = {}  # account -> receipts to store
        self._rb_busy: set[str] = set()             # accounts with a store call in flight
        self._turn_call: Any = None

    def on_receipt(self, upstream: Any, pdu: Any, ack: Callable[[int], None]) -> None:
        """A receipt (deliver_sm/data_sm with a receipt esm_class) from an operator."""
        self.counters["receipts"] += 1
        rid = pdu.tlv(C.TAG_RECEIPTED_MESSAGE_ID)
        if rid is not None:
            rid = rid.rstrip(b"\0")
        if not rid and pdu.command_id == C.DELIVER_SM:
            m = RECEIPT_ID.search(pdu.short_message)
            rid = m.group(1) if m else None
        if not rid:
            self.counters["receipts_unknown"] += 1
            log.warn("receipt from {up} without a message id; acknowledged and dropped",
                     up=upstream.name)
            ack(_OK)
            return
        self._lookup(Lookup(upstream.name, normalise_upstream_id(rid), pdu, ack, 0))

    def stop(self) -> None:
        """What waits is not stored: the operator is asked to send it again."""
        for _due, lk in self._retries:
            lk.ack(_RX_T_APPN)
        self._retries = []
        if self._turn_call is not None and self._turn_call.active():
            self._turn_call.cancel()
        self._turn_call = None
        lks, self._lk = self._lk, {}
        rb, self._rb = self._rb, {}
        for items in lks.values():
            for lk in items:
                lk.ack(_RX_T_APPN)
        for pending in rb.values():
            for p in pending:
                p.ack(_RX_T_APPN)

    def tick(self, now: float) -> None:
        """Look up again the receipts whose retry is due."""
        if self._retries:
            due = [r for r in self._retries if r[0] <= now]
            if due:
                self._retries = [r for r in self._retries if r[0] > now]
                for _, lk in due:
                    self._lookup(lk)

    # --- the receipts of a turn -------------------------------------------------------------
    def _schedule_turn(self) -> None:
        if self._turn_call is None:
            self._turn_call = self.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._turn_call = None
        for up in list(self._lk):
            if up not in self._lk_busy:
                self._lookup_batch(up)
        for account in list(self._rb):
            if account not in self._rb_busy:
                self._store_batch(account)

    def _lookup(self, lk: Lookup) -> None:
        self._lk.setdefault(lk.upstream, []).append(lk)
        self._schedule_turn()

    def _lookup_batch(self, up: str) -> None:
        items = self._lk.pop(up, None)
        if not items:
            return
        self._lk_busy.add(up)

        def found(hits: list) -> None:
            self._lk_busy.discard(up)
            now = self.clock.seconds()
            for lk, hit in zip(items, hits):
                if hit is None:
                    if lk.tries < len(LOOKUP_RETRIES):
                        self._retries.append((now + LOOKUP_RETRIES[lk.tries],
                                              lk._replace(tries=lk.tries + 1)))
                        continue
                    self.counters["receipts_unknown"] += 1
                    log.warn("receipt from {up} for unknown id {rid}; acknowledged and "
                             "dropped", up=up, rid=lk.keys[0])
                    lk.ack(_OK)
                    continue
                account, mid = hit
                out = rewrite_receipt(lk.pdu, mid)
                self.receipt(account, mid, out, receipt_state(out), lk.ack, up, lk.keys[0])
            if up in self._lk:
                self._lookup_batch(up)

        def failed(f: Any) -> None:
            self._lk_busy.discard(up)
            self.counters["store_errors"] += len(items)
            log.warn("receipt lookup for {n} receipts of {up} ({rid}...) failed: {err}; "
                     "operator asked to retry", n=len(items), up=up, rid=items[0].keys[0],
                     err=f.getErrorMessage())
            for lk in items:
                lk.ack(_RX_T_APPN)
            if up in self._lk:
                self._schedule_turn()

        self.track(self.rs.lookup_many(up, [lk.keys for lk in items]).addCallbacks(found,
                                                                                   failed))

    def receipt(self, account: str, mid: bytes, out: Any, state_err: tuple[int, str],
                ack: Callable[[int], None], upstream: str = "", upstream_id: str = "",
                kind: str = "receipt") -> None:
        """Store one receipt with the others of this turn for the account: message state,
        then the HTTP callback or the SMPP stream; `ack(status)` once stored (or not)."""
        m = mid.decode("latin-1")
        self._rb.setdefault(account, []).append(PendingReceipt(
            Receipt(m, state_err[0], state_err[1], upstream, upstream_id, out.command_id,
                    P.encode(out)[P.HEADER_LEN:],
                    "%s:%s%x" % (m, self._cb_prefix, next(self._cb_numbers))),
            ack, kind))
        self._schedule_turn()

    def _store_batch(self, account: str) -> None:
        items = self._rb.pop(account, None)
        if not items:
            return
        self._rb_busy.add(account)
        keys: list = []
        args: list = []
        for p in items:
            keys.append(msg_key(account, p.receipt.mid))
            keys.append(dlr_key(account, p.receipt.mid))
            args.append(p.receipt.pack())
        feed, count = self.feeds.read_along(account)
        d = self.messages.receipts(account, keys, args, GROUP,
                                   self.consumer if count else "", count, RECEIPT)

        def stored(result: tuple) -> None:
            self._rb_busy.discard(account)
            ids, own, other, gone, err = result
            http = 0
            by_id: dict[str, Receipt] = {}
            for p, eid in zip(items, ids):
                p.ack(_OK)
                r = p.receipt
                # the journal (issue 8): the operator's receipt with "STAT ERR", proxyd's
                # own as negative_receipt; batched per turn by the ledger
                self.journal(account, r.mid,
                             "receipt" if p.kind == "receipt" else "negative_receipt",
                             "%s %s" % (STATE_NAMES.get(r.state, "UNKNOWN"), r.err))
                if eid:
                    by_id[eid] = r
                else:
                    http += 1
            self.counters["enqueued"] += len(by_id)
            if http:
                self.counters["http_receipts"] += http
                self.dlr.kick(account)
            entries: list[Entry] = []
            if count:
                entries = [Entry(eid, by_id[eid].command_id, by_id[eid].body, RECEIPT)
                           for eid in own]
                entries += other
            self.feeds.read_along_done(account, feed, count, entries, gone, err,
                                       bool(by_id))
            if account in self._rb:
                self._store_batch(account)

        def failed(fl: Any) -> None:
            self._rb_busy.discard(account)
            self.feeds.read_along_failed(feed, count)
            self.counters["store_errors"] += len(items)
            log.warn("{n} receipts for {acct} ({kind} {mid}...) not stored: {err}",
                     n=len(items), kind=items[0].kind, mid=items[0].receipt.mid,
                     acct=account, err=fl.getErrorMessage())
            for p in items:
                p.ack(_RX_T_APPN)
            if account in self._rb:
                self._schedule_turn()

        self.track(d.addCallbacks(stored, failed))
