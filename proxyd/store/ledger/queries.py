"""Account operations (top-up, adjustment, refund of everything) and the reads: balance,
daily counters, open reservations, the journal and its money records."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet import defer

from proxyd.store import journal as J
from proxyd.store.ledger.access import StoreAccess, text
from proxyd.store.ledger.errors import InsufficientBalance
from proxyd.store.ledger.keys import jhead_key, journal_key, reservations_key, stats_key

# journal entries read per store round trip (a day may hold millions: parsed a slice at a time)
JOURNAL_SLICE = 2000


class Queries:
    """What an administrator asks of the ledger of one account, over `access`; each one
    store call (or one per page), not batched."""

    def __init__(self, access: StoreAccess) -> None:
        self.access = access

    @property
    def reactor(self) -> Any:
        return self.access.reactor

    @property
    def day_of(self) -> Callable[[float], str]:
        return self.access.day_of

    @property
    def retention_days(self) -> int:
        return self.access.retention_days

    # -- account operations ---------------------------------------------------------------

    def topup(self, account: str, amount: int, note: str = "") -> defer.Deferred:
        """Add `amount` (> 0) fen. Deferred[int]: the balance after."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return defer.fail(ValueError("top-up amount must be a positive integer"))
        return self.access.call("topup", account, amount, note).addCallback(int)

    def adjust(self, account: str, delta: int, note: str) -> defer.Deferred:
        """Add a signed correction. Deferred[int]: the balance after; InsufficientBalance
        if it would make the balance negative."""
        if not isinstance(delta, int) or isinstance(delta, bool):
            return defer.fail(ValueError("adjustment must be an integer"))

        def done(r: list) -> int:
            if int(r[0]) != 0:
                raise InsufficientBalance(account, int(r[1]), -delta)
            return int(r[1])
        return self.access.call("adjust", account, delta, note).addCallback(done)

    def refund_all(self, account: str, note: str) -> defer.Deferred:
        """Set the balance to 0, recorded. Deferred[int]: the amount taken out."""
        return self.access.call("refund_all", account, note).addCallback(int)

    # -- reads ----------------------------------------------------------------------------

    def balance(self, account: str) -> defer.Deferred:
        """Deferred[int]: the balance in fen (0 for an account never topped up): the free
        balance plus what nodes hold on lease."""
        return self.access.call("balance", account).addCallback(_int)

    def days(self, account: str) -> defer.Deferred:
        """Deferred[list[str]]: the days that have a journal, oldest first."""
        return self.access.execute("HKEYS", jhead_key(account)).addCallback(
            lambda r: sorted(text(x) for x in r or []))

    @defer.inlineCallbacks
    def entries(self, account: str, limit: int = 50) -> Any:
        """Deferred[list[dict]]: the last `limit` money records of the journal (fields
        time, op, amount, balance_after, msg_id, note), newest first."""
        out: list[dict[str, str]] = []
        for day in reversed((yield self.days(account))):
            end = "+"
            while len(out) < limit:
                reply = yield self.access.execute("XREVRANGE", journal_key(account, day),
                                                  end, "-", "COUNT", 500)
                recs = J.records_from_stream(reply, account, day, reverse=True)
                out += [money_entry(r) for r in recs if r.event in J.MONEY_EVENTS]
                if len(reply or ()) < 500:      # entries, not records
                    break
                end = "(" + recs[-1].id
            if len(out) >= limit:
                break
        return out[:limit]

    def reservations(self, account: str) -> defer.Deferred:
        """Deferred[dict[msg_id, amount]]: the open reservations."""
        def done(flat: list) -> dict[str, int]:
            return {text(flat[i]): int(text(flat[i + 1]).split(":")[0])
                    for i in range(0, len(flat), 2)}
        return self.access.execute("HGETALL", reservations_key(account)).addCallback(done)

    def stats(self, account: str, day: str | None = None) -> defer.Deferred:
        """Deferred[dict[str, int]]: the day's counters (default: today)."""
        day = day or self.day_of(self.reactor.seconds())

        def done(flat: list) -> dict[str, int]:
            return {text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return self.access.execute("HGETALL", stats_key(account, day)).addCallback(done)

    @defer.inlineCallbacks
    def journal(self, account: str, day: str | None = None) -> Any:
        """Deferred[list[Record]]: the day's journal records, oldest first."""
        day = day or self.day_of(self.reactor.seconds())
        out: list[J.Record] = []
        start = "-"
        while True:
            # in slices of JOURNAL_SLICE entries: the reactor runs other work between two
            reply = yield self.access.execute("XRANGE", journal_key(account, day), start,
                                              "+", "COUNT", JOURNAL_SLICE)
            recs = J.records_from_stream(reply, account, day)
            out += recs
            if len(reply or ()) < JOURNAL_SLICE:        # entries, not records
                return out
            start = "(" + recs[-1].id

    def journal_head(self, account: str, day: str) -> defer.Deferred:
        """Deferred[str | None]: the h of the day's last record as the scripts left it."""
        return self.access.execute("HGET", jhead_key(account), day).addCallback(
            lambda r: text(r) if r is not None else None)


def verify_journal(records: Sequence[J.Record], account: str | None = None,
                   head: str | None = None) -> bool:
    """True if the records (one day of one account, oldest first) form an unbroken chain
    (and end at `head`, if given)."""
    if not records:
        return not head
    acct = account if account is not None else records[0].account
    if head is None:
        head = records[-1].h
    return J.verify(acct, records, head) is None


def money_entry(r: J.Record) -> dict[str, str]:
    """A journal money record as a ledger entry (the old ``ledger:{A}`` stream's fields)."""
    return {"id": r.id, "time": str(r.ts), "op": J.MONEY_EVENTS[r.event],
            "amount": str(r.amount), "balance_after": str(r.balance_after),
            "msg_id": r.msg_id, "note": r.note}


def _int(x: Any) -> int:
    return int(x) if x is not None else 0
