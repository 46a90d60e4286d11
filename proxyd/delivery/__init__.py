"""Receipts and MO: from the operator's deliver_sm to the owning account's receiver binds.

    upstream deliver_sm/data_sm
      receipt ─ receipt map (rmap:{U}:<id>, retried ~2 s) ─ rewrite id ─┐        (intake)
      MO ────── service code -> account (longest prefix) ─ [opt-out] ───┴─ XADD dlv:{A} (mo)
                                                                          └─ ack the operator
    dlv:{A} (consumer group "proxyd", one consumer per node holding a receiver bind of A)
      ─ XREADGROUP ─ this node's feed of A ─ deliver_sm to a receiver (window per session)
      ─ deliver_sm_resp OK ─ XACK + XDEL;  error / no answer ─ retry with backoff    (feed)

The rooms:

    records.py  the records of the path (a receipt to store, a lookup, a send in flight),
                with pack/parse beside those that are stored
    text.py     what receipts say: parse_receipt, receipt_state, own_err, proxyd's own
                receipt PDU, the facts of HTTP callbacks (expand_facts, mo_facts); the
                forms of an operator's id (normalise_upstream_id), rewrite_receipt
    expect.py   what the gate and the HTTP API tell of parts to come: state records,
                receipt map entries, HTTP receipt settings (`remember`, `expect_http_dlr`)
    intake.py   receipts from operators -> the receipt map -> stored for the right client
    mo.py       MO -> the account's stream or its mo_url; opt-out words
    feed.py     the streams -> deliver_sm to the bound receivers, retries; the Keeper
                touches what this node holds and takes over what dead nodes held
    expiry.py   proxyd's own receipts, and EXPIRED ones for parts without a receipt
    memory.py   MemoryReceipts: the receipt book of a node without a store (in memory)

`Delivery` composes them: one LoopingCall drives every timer of the node (lookup retries,
response timeouts, backoff, polling of the streams, expiry, touch and claim); stopping
waits for the store writes in flight.

Every receipt, the operator's or proxyd's own, is stored by one script in the account's
slot that updates the state and then either queues an HTTP callback (the part was submitted
over HTTP with a dlr-url: the report goes to the URL *instead of* the SMPP delivery stream,
so an HTTP client's reports never pile up for a receiver bind that may never come) or
appends it to ``dlv:{A}``.
"""
from __future__ import annotations

import itertools
import uuid
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..http.callclient import CallbackClient
from ..http.dlr import DlrCaller
from ..smpp import constants as C
from ..store.messages import MessageStore
from ..store.receipts import ReceiptStore
from .expect import Expected
from .expiry import EXPIRE_BATCH, EXPIRE_EVERY_S, EXPIRED_STATUS, OWN_RETRIES, OwnReceipts
from .feed import HOLD_MIN, Feed, Feeds, Keeper, alive, consumer_name
from .intake import LOOKUP_RETRIES, Intake
from .mo import MoIntake
from .text import (expand_facts, mo_facts, normalise_upstream_id, own_err, parse_receipt,
                   receipt_state)

__all__ = ["Delivery", "NO_JOURNAL", "expand_facts", "mo_facts", "own_err", "parse_receipt",
           "receipt_state", "LOOKUP_RETRIES", "OWN_RETRIES", "EXPIRE_EVERY_S",
           "EXPIRE_BATCH", "EXPIRED_STATUS", "HOLD_MIN"]

log = Logger(namespace="proxyd.delivery")

# the names the single module had
_Feed = Feed
_alive = alive


class _NoJournal:
    """The journal of a node without a ledger: nothing is written."""

    @staticmethod
    def journal_event(account: str, mid: str, event: str, note: str) -> defer.Deferred:
        return defer.succeed(None)


NO_JOURNAL = _NoJournal()


class Delivery(service.Service):
    """Receipts and MO of one node (see the module docstring).

    config: the node's config as it is now (a reload replaces it): accounts (service codes,
    mo_url), policy (unsubscribe words, reassembly timeout); its [delivery] and [store]
    settings are read once, here. store: proxyd.store.client.Store. clock: the reactor
    (IReactorTime). optout: proxyd.store.optout.OptOut. ledger: what `journal_event`s the
    state events of messages (proxyd.store.ledger.Ledger). The keyword arguments override
    the config (tests)."""

    name = "delivery"

    def __init__(self, config: Callable[[], Any], store: Any, clock: Any, optout: Any,
                 ledger: Any = NO_JOURNAL, *, window: int | None = None,
                 resp_timeout_s: float | None = None, ttl_s: float | None = None,
                 claim_idle_s: float | None = None, tick_s: float = 0.1,
                 poll_s: float = 0.25, max_attempts: int | None = None,
                 consumer: str | None = None, callbacks: Any = None,
                 callback_per_account: int = 5,
                 on_notice: Callable[[str, dict], None] = lambda account, facts: None
                 ) -> None:
        cfg = config()
        dc = cfg.delivery
        self.config = config
        self.clock = clock
        self.ledger = ledger
        self.consumer = consumer or consumer_name(cfg)
        self.tick_s = tick_s
        ttl = ttl_s or cfg.store.receipt_ttl_s
        self.rs = ReceiptStore(store, ttl, clock=clock)
        self.messages = MessageStore(store, ttl, clock=clock)
        if callbacks is None:         # tests: no callback_allow, the [delivery] deadline
            callbacks = CallbackClient(clock, timeout_s=dc.dlr_timeout_s)
        self.dlr = DlrCaller(self.messages, clock, self._accounts, callbacks,
                             concurrency=dc.dlr_concurrency,
                             per_account=callback_per_account, timeout_s=dc.dlr_timeout_s,
                             max_attempts=dc.dlr_max_attempts, backoff_s=dc.dlr_backoff_s,
                             expand=expand_facts, on_notice=on_notice)
        self._writes: set = set()                   # store writes in flight (waited on stop)
        self.counters: dict[str, int] = dict.fromkeys((
            "receipts", "receipts_unknown", "mo", "mo_unrouted", "optouts", "enqueued",
            "store_errors", "delivered", "retried", "timeouts", "dropped", "expired",
            "claimed", "own_receipts", "http_receipts", "record_errors", "expired_own"), 0)
        cb_prefix = uuid.uuid4().hex[:6]            # callback ids: mid:<node><counter>
        cb_numbers = itertools.count(1)
        self.feed = Feeds(self.rs, clock, self.consumer, self.counters, self._journal,
                          window=window or dc.window,
                          resp_timeout_s=resp_timeout_s or dc.resp_timeout_s,
                          max_attempts=max_attempts or dc.max_attempts,
                          backoff_max_s=dc.backoff_max_s, poll_s=poll_s)
        expire_after_s = float(dc.expire_after_s or 0.0)
        self.keeper = Keeper(self.feed, claim_idle_s or dc.claim_idle_s)
        self.expected = Expected(self.rs, self.messages, clock, self.dlr, self.counters,
                                 self._track, expire_after_s)
        self.intake = Intake(self.rs, self.messages, clock, self.feed, self.dlr,
                             self.counters, self._journal, self._track, self.consumer,
                             cb_prefix, cb_numbers)
        self.mo = MoIntake(config, self.rs, self.messages, optout, self.dlr, self.feed,
                           clock, self.counters, cb_prefix, cb_numbers)
        self.own = OwnReceipts(self.intake, self.messages, clock, self._accounts,
                               self.counters, self._track, expire_after_s)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = clock

    @property
    def feeds(self) -> dict[str, Feed]:
        """The feeds of this node, by account."""
        return self.feed.feeds

    # --- service ----------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        if not self._ticker.running:
            self._ticker.start(self.tick_s, now=False)
        self.dlr.start()

    def stopService(self) -> Any:
        super().stopService()
        if self._ticker.running:
            self._ticker.stop()
        self.dlr.stop()
        self.expected.flush()
        writes = list(self._writes)
        self.intake.stop()
        return defer.gatherResults([self.feed.flush_acks()] + writes, consumeErrors=True)

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.intake.tick(now)
        self.feed.tick(now)
        self.own.tick(now)
        self.keeper.keep(now)

    def _track(self, d: defer.Deferred) -> defer.Deferred:
        """Keep a write in flight until it is answered: stopping waits for it (the store
        is closed only after this service stopped)."""
        self._writes.add(d)

        def done(r: Any) -> Any:
            self._writes.discard(d)
            return r
        d.addBoth(done)
        return d

    def _journal(self, account: str, mid: str, event: str, note: str) -> None:
        """A state event of a message in the journal (batched per turn by the ledger);
        a failure is logged, never raised."""
        if not mid:
            return
        try:
            d = self.ledger.journal_event(account, mid, event, note)
        except Exception as e:      # pragma: no cover - defensive
            log.warn("journal {ev} of {mid} failed: {err}", ev=event, mid=mid, err=e)
            return
        d.addErrback(lambda f: log.warn("journal {ev} of {mid} of {acct} not written: {err}",
                                        ev=event, mid=mid, acct=account,
                                        err=f.getErrorMessage()))

    def _accounts(self) -> list[str]:
        return [a.system_id for a in self.config().accounts]

    # --- what the gate, the HTTP API and reassembly call -----------------------------------
    def remember(self, upstream: str, upstream_id: bytes, account: str, mid: bytes,
                 source: bytes = b"", destination: bytes = b"") -> None:
        """The operator took a part that asked for a receipt (see expect.py);
        `upstream_id` as the operator gave it."""
        self.expected.remember(upstream, normalise_upstream_id(upstream_id)[0], account,
                               mid, source, destination)

    def expect_http_dlr(self, account_id: str, number: str, part_ids: Any,
                        settings: Any, status: int = 0) -> None:
        """An HTTP-submitted message with dlr settings was answered (see expect.py)."""
        self.expected.expect_http_dlr(account_id, number, part_ids, settings, status)

    def on_deliver(self, upstream: Any, pdu: Any, ack: Callable[[int], None]) -> None:
        """A deliver_sm/data_sm from an operator: a receipt or an MO."""
        if pdu.esm_class & C.ESM_RECEIPT_MASK:
            self.intake.on_receipt(upstream, pdu, ack)
        else:
            self.mo.on_mo(upstream, pdu, ack)

    def own_receipt(self, account_id: str, mid: bytes, submit_pdu: Any, stat: str,
                    status: int) -> None:
        """proxyd's own receipt for a part it acknowledged but did not get to the operator
        (see expiry.py), delivered like an operator's."""
        self.own.own_receipt(account_id, mid, submit_pdu, stat, status)

    # --- receiver binds ---------------------------------------------------------------------
    def session_ready(self, session: Any) -> None:
        self.feed.session_ready(session)

    def session_gone(self, session: Any) -> None:
        self.feed.session_gone(session)
