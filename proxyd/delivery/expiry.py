"""proxyd's own receipts: for parts it acknowledged but did not get to the operator (a long
message refused once complete, incomplete, or refused by the operator after the parts were
acknowledged), and EXPIRED ones for parts whose operator receipt never came. Their text and
``err:`` codes: proxyd.delivery.text.

Expiry (``[delivery] expire_after_s``, 0 = off, the default): the script that writes a
part's ENROUTE state also puts its mid in ``enr:{A}`` scored by when the wait ends; every
receipt takes it off. Once a second the ticker pops the due mids of each account
(`MessageStore.take_expired`, atomic: one node gets each) and sends proxyd's own EXPIRED
receipt (err 409) for those still ENROUTE, by `own_receipt` (receiver binds or the dlr-url);
their state becomes EXPIRED. A real receipt that comes later is still relayed (a final
state replaces EXPIRED): late but true beats silent, and the client sees the last word.
The relay does not hand the submit_sm to `remember`, so the EXPIRED receipt carries no
addresses (an HTTP report takes the number from its dlr settings).
"""
from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from ..smpp import pdu as P
from ..store.messages import STATE
from .text import own_err, own_receipt_pdu

log = Logger(namespace="proxyd.delivery")

_OK = 0
# a store failure while keeping one of proxyd's own receipts: tried again after these delays
OWN_RETRIES = (1.0, 2.0, 4.0, 8.0)
# how often due expiries are looked for, and at most how many per account and call
EXPIRE_EVERY_S = 1.0
EXPIRE_BATCH = 500
# the status behind the err 409 of an EXPIRED own receipt (see own_err)
EXPIRED_STATUS = 409


class OwnReceipts:
    """proxyd's own receipts, and the EXPIRED ones of parts whose wait is over."""

    def __init__(self, intake: Any, messages: Any, clock: Any,
                 accounts: Callable[[], list[str]], counters: dict[str, int],
                 track: Callable[[defer.Deferred], defer.Deferred],
                 expire_after_s: float) -> None:
        self.intake = intake
        self.messages = messages
        self.clock = clock
        self.accounts = accounts
        self.counters = counters
        self.track = track
        self.expire_after_s = expire_after_s
        self._last_expire = 0.0
        self._expiring: set[str] = set()            # accounts with a take in flight

    def own_receipt(self, account_id: str, mid: bytes, submit_pdu: Any, stat: str,
                    status: int, _try: int = 0) -> None:
        """proxyd's own receipt for a part it acknowledged but did not get to the operator,
        delivered like an operator's."""
        state = STATE.get(stat, 7)
        err = own_err(stat, status)
        pdu = own_receipt_pdu(mid, submit_pdu, stat, err, state, self.clock.seconds())

        def ack(st: int) -> None:
            if st == _OK:
                self.counters["own_receipts"] += 1
                log.info("own receipt {mid} of {acct}: stat:{stat} err:{err}",
                         mid=mid.decode("latin-1"), acct=account_id, stat=stat, err=err)
            elif _try < len(OWN_RETRIES):
                self.clock.callLater(OWN_RETRIES[_try], self.own_receipt, account_id, mid,
                                     submit_pdu, stat, status, _try + 1)
            else:
                log.error("own receipt {mid} of {acct} (stat:{stat}) lost: the store kept "
                          "failing", mid=mid.decode("latin-1"), acct=account_id, stat=stat)

        self.intake.receipt(account_id, mid, pdu, (state, err), ack, kind="own receipt")

    def tick(self, now: float) -> None:
        if self.expire_after_s > 0 and now - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = now
            for account in self.accounts():
                if account not in self._expiring:
                    self._expire(account)

    def _expire(self, account: str) -> None:
        """proxyd's own EXPIRED receipt for the parts of `account` whose wait is over."""
        self._expiring.add(account)

        def got(mids: list) -> None:
            self._expiring.discard(account)
            if not mids:
                return
            self.counters["expired_own"] += len(mids)
            log.info("{n} parts of {acct} got no receipt within {s}s: EXPIRED", n=len(mids),
                     acct=account, s=self.expire_after_s)
            for m, src, dst in mids:
                # the addresses the part was submitted with (own_receipt swaps them)
                submit = P.SubmitSm(seq=0, source_addr=src.encode("latin-1")[:20],
                                    destination_addr=dst.encode("latin-1")[:20])
                self.own_receipt(account, m.encode("latin-1"), submit, "EXPIRED",
                                 EXPIRED_STATUS)
            if len(mids) >= EXPIRE_BATCH:
                self._expire(account)

        def failed(f: Any) -> None:
            self._expiring.discard(account)
            log.warn("looking for expired parts of {acct} failed: {err}", acct=account,
                     err=f.getErrorMessage())

        self.track(self.messages.take_expired(account, EXPIRE_BATCH).addCallbacks(got,
                                                                                  failed))
