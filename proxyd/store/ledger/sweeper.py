"""Refunds of reservations whose outcome never came (note "outcome unknown"), and the
return of leases of nodes that stopped renewing them: `sweep`, and `LedgerSweeper`, the
service that runs it every `interval_s`."""
from __future__ import annotations

from typing import Any, Sequence

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from proxyd.store import journal as J
from proxyd.store.client import StoreUnavailable
from proxyd.store.ledger.access import StoreAccess, text

log = Logger()

UNKNOWN_OUTCOME = J.UNKNOWN_OUTCOME


@defer.inlineCallbacks
def accounts_with_reservations(access: StoreAccess) -> Any:
    """Accounts that have open reservations or leases (found with SCAN; single server
    only)."""
    found: set[str] = set()
    for prefix in ("res:", "lease:"):
        cursor = "0"
        while True:
            reply = yield access.execute("SCAN", cursor, "MATCH", prefix + "{*}",
                                         "COUNT", 1000)
            cursor, keys = text(reply[0]), reply[1]
            for k in keys:
                k = text(k)
                found.add(k[len(prefix) + 1:-1])
            if cursor == "0":
                break
    return sorted(found)


@defer.inlineCallbacks
def sweep(access: StoreAccess, max_age_s: float, now: float | None = None,
          accounts: Sequence[str] | None = None, limit: int = 1000) -> Any:
    """Refund reservations older than `max_age_s` (note "outcome unknown") and take expired
    leases back. Ages and expiries are measured on the store's clock (TIME, inside the
    script), never this node's: nodes whose clocks differ never sweep each other's live
    leases. `now` (tests, admin): sweep as if it were `now - reactor.seconds()` later.
    Deferred[list[(account, msg_id, amount)]]: what was settled."""
    ahead_ms = 0 if now is None else int((now - access.reactor.seconds()) * 1000)
    if accounts is None:
        accounts = yield accounts_with_reservations(access)
    max_age_ms = int(max_age_s * 1000)
    settled: list[tuple[str, str, int]] = []
    for account in accounts:
        while True:
            keys, args = access.args(account, max_age_ms, limit, UNKNOWN_OUTCOME, ahead_ms)
            flat = yield access.get().evalsha("sweep", keys, args)
            for i in range(0, len(flat), 2):
                settled.append((account, text(flat[i]), int(flat[i + 1])))
            if len(flat) < 2 * limit:
                break
    return settled


class LedgerSweeper(TimerService):
    """Refunds reservations whose outcome never came, every `interval_s` (the first one
    `interval_s` after the start). `ledger`: a `Ledger` (its `sweep`)."""

    name = "ledger-sweeper"

    def __init__(self, ledger: Any, max_age_s: float, interval_s: float,
                 accounts: Sequence[str] | None = None, reactor: Any = None) -> None:
        TimerService.__init__(self, interval_s, self._step)
        self.ledger = ledger
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self.accounts = accounts
        self.clock = reactor or ledger.reactor
        self.last: list[tuple[str, str, int]] = []
        self._started = False

    def startService(self) -> None:
        self._started = False
        TimerService.startService(self)

    def _step(self) -> defer.Deferred | None:
        # a TimerService calls at once when it starts: that call only starts the clock
        if not self._started:
            self._started = True
            return None
        return self.run_once()

    def run_once(self) -> defer.Deferred:
        """One sweep; errors are logged, never raised (the loop keeps running)."""
        d = self.ledger.sweep(self.max_age_s, accounts=self.accounts)

        def done(settled: list) -> None:
            self.last = settled
            for account, msg_id, amount in settled:
                log.warn("ledger: refunded {amount} to {account} for {msg_id}: outcome "
                         "unknown after {age}s", amount=amount, account=account,
                         msg_id=msg_id, age=self.max_age_s)

        def failed(f: Any) -> None:
            if f.check(StoreUnavailable):
                log.warn("ledger sweep skipped: {err}", err=f.getErrorMessage())
            else:
                log.failure("ledger sweep failed", f)
        return d.addCallbacks(done, failed)
