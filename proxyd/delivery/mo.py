"""MO (mobile originated) messages from operators: to the account whose service code the
destination starts with (the longest), then to its receiver binds (the account's stream) or
its `mo_url`; an unsubscribe word ("T", "TD", "退订", ...) adds the sender to the account's
opt-out set first.

    upstream deliver_sm/data_sm MO
      ─ service code -> account (longest prefix) ─ [opt-out] ─ XADD dlv:{A} or hcb:{A}
                                                            └─ ack the operator

The operator's deliver_sm is acknowledged only once the MO is stored (or with ESME_RX_T_APPN
when the store failed, so the operator retries).

An MO for an account with a `mo_url` goes to the HTTP callback queue (the same durable,
retried queue as HTTP receipts, api "mo"), not to the SMPP stream. A part of a concatenated
MO (UDH or SAR) is kept in ``mocc:{A}:...`` (store/reassembly.lua) and acknowledged once kept; the
script that stores the last part queues the one callback of the whole message in the same
step. The unsubscribe word is looked for in the whole text, after.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterator

from twisted.logger import Logger

from ..policy.optout import is_unsubscribe
from ..text.reassembly import message_text
from ..logs import mask
from ..smpp import constants as C
from ..smpp import pdu as P
from ..store.messages import mo_parts_key
from ..store.receipts import MO, RECEIPT
from ..text.reassembly import concat_key, strip_udh
from .records import pack_hexparts
from .text import mo_facts

log = Logger(namespace="proxyd.delivery")

_OK = 0
_RX_T_APPN = C.STATUS["ESME_RX_T_APPN"]


class MoIntake:
    """The MO of this node on their way into the store."""

    def __init__(self, config: Callable[[], Any], rs: Any, messages: Any, optout: Any,
                 dlr: Any, feeds: Any, clock: Any, counters: dict[str, int],
                 cb_prefix: str, cb_numbers: Iterator[int]) -> None:
        self.config = config
        self.rs = rs
        self.messages = messages
        self.optout = optout
        self.dlr = dlr
        self.feeds = feeds
        self.clock = clock
        self.counters = counters
        self._cb_prefix = cb_prefix
        self._cb_numbers = cb_numbers

    def on_mo(self, upstream: Any, pdu: Any, ack: Callable[[int], None]) -> None:
        self.counters["mo"] += 1
        dest = pdu.destination_addr.decode("latin-1")
        source = pdu.source_addr.decode("latin-1")
        account = self._account(dest)
        if account is None:
            self.counters["mo_unrouted"] += 1
            log.warn("MO from {up} {src} -> {dest}: no account has this service code; "
                     "acknowledged and dropped", up=upstream.name, src=mask(source), dest=dest)
            ack(_OK)
            return
        url = self._mo_url_of(account)
        if url:
            self._mo_http(account, url, upstream, pdu, ack)
            return
        try:
            text = message_text(pdu)
        except Exception:       # a malformed UDH: not a text, so not an unsubscribe word
            text = None

        def failed(f: Any) -> None:
            self.counters["store_errors"] += 1
            log.warn("opt-out of {src} for {acct} not stored: {err}; operator asked to "
                     "retry", src=mask(source), acct=account, err=f.getErrorMessage())
            ack(_RX_T_APPN)

        self._optout(account, source, text, lambda _=None: self._enqueue(account, pdu, MO, ack),
                     failed)

    def _account(self, dest: str) -> str | None:
        best, best_len = None, 0
        for a in self.config().accounts:
            for code in a.service_codes:
                if len(code) > best_len and dest.startswith(code):
                    best, best_len = a.system_id, len(code)
        return best

    def _enqueue(self, account: str, pdu: Any, kind: str, ack: Callable[[int], None]) -> None:
        body = P.encode(pdu)[P.HEADER_LEN:]

        def stored(_: Any) -> None:
            self.counters["enqueued"] += 1
            ack(_OK)
            self.feeds.wake(account)

        def failed(f: Any) -> None:
            self.counters["store_errors"] += 1
            log.warn("{kind} for {acct} not stored: {err}; operator asked to retry",
                     kind="receipt" if kind == RECEIPT else "MO", acct=account,
                     err=f.getErrorMessage())
            ack(_RX_T_APPN)

        self.rs.enqueue(account, pdu.command_id, body, kind).addCallbacks(stored, failed)

    # --- MO to an account's mo_url ----------------------------------------------------------
    def _mo_url_of(self, account: str) -> str:
        for a in self.config().accounts:
            if a.system_id == account:
                return getattr(a, "mo_url", "") or ""
        return ""

    def _mo_http(self, account: str, url: str, upstream: Any, pdu: Any,
                 ack: Callable[[int], None]) -> None:
        source = pdu.source_addr.decode("latin-1")
        dest = pdu.destination_addr.decode("latin-1")
        data = pdu.payload
        try:
            key = concat_key(pdu.esm_class, data, dict(pdu.tlvs))
            payload = strip_udh(pdu.esm_class, data)
        except ValueError:      # a malformed UDH or SAR: passed as it is, one message
            key, payload = None, data
        mid = "mo%s%x" % (self._cb_prefix, next(self._cb_numbers))
        cb_id = "%s:%s" % (mid, uuid.uuid4().hex[:8])
        facts = {"ev": "mo", "from": source, "to": dest, "dc": pdu.data_coding,
                 "upstream": upstream.name, "id": mid, "ts": int(self.clock.seconds())}
        sj = json.dumps({"api": "mo", "url": url, "acct": account}, separators=(",", ":"))

        def failed(f: Any) -> None:
            self.counters["store_errors"] += 1
            log.warn("MO for {acct} (mo_url) not stored: {err}; operator asked to retry",
                     acct=account, err=f.getErrorMessage())
            ack(_RX_T_APPN)

        if key is None or key[1] <= 1:
            whole = dict(facts, hexparts=pack_hexparts([(1, payload)]))

            def single_queued(_: Any) -> None:
                self.counters["enqueued"] += 1
                self.dlr.kick(account)
                ack(_OK)

            def queue_single(_: Any = None) -> None:
                self.messages.add_callback(account, cb_id, sj, whole).addCallbacks(
                    single_queued, failed)

            self._optout(account, source, mo_facts(whole)["text"], queue_single, failed)
            return
        ref, total, seq = key
        pkey = mo_parts_key(account, source, dest, ref, total)
        ttl = int(self.config().policy.reassembly_timeout_s * 4) + 60

        def kept(r: tuple) -> None:
            code, what = r
            if code != 1:
                if code > 2:      # (2: the operator sent a part again; nothing changed)
                    log.info("MO part for {acct} dropped: {why}", acct=account,
                             why="another total" if code == 3 else "another data_coding")
                ack(_OK)
                return
            self.counters["enqueued"] += 1
            self.dlr.kick(account)
            text = mo_facts({"hexparts": what, "dc": pdu.data_coding})["text"]

            def optout_failed(f: Any) -> None:
                # the whole MO is queued already: asking the operator for the last part
                # again would start a new message; the opt-out is logged as lost
                log.error("opt-out of {src} for {acct} (long MO) not stored: {err}",
                          src=mask(source), acct=account, err=f.getErrorMessage())
                ack(_OK)
            self._optout(account, source, text, lambda _=None: ack(_OK), optout_failed)

        self.messages.add_mo_part(account, pkey, seq, payload, total, ttl, cb_id, sj,
                                  facts, pdu.data_coding).addCallbacks(kept, failed)

    def _optout(self, account: str, source: str, text: str | None,
                then: Callable, failed: Callable) -> None:
        """Add `source` to the account's opt-out set when `text` is an unsubscribe word,
        then `then()`; `failed(failure)` when the store failed."""
        words = self.config().policy.unsubscribe_words
        if not (text and source and is_unsubscribe(text, words)):
            then()
            return

        def added(_: Any) -> None:
            self.counters["optouts"] += 1
            log.info("{src} opted out of {acct} (MO reply)", src=mask(source), acct=account)
            then()

        self.optout.add(account, source).addCallbacks(added, failed)
