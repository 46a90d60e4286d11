"""Balance leases: this node takes up to `lease_parts` parts' worth of an account's free
balance at a time (the 'L' operation), admits messages against it in memory (the opt-out
lookup aside, no store round trip before the relay) and has the batcher write their
reservations later. Unused leases go back when idle and at shutdown; a crashed node's
lease goes back when it expires (the sweeper)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from twisted.internet import defer
from twisted.logger import Logger

from proxyd.store.ledger.batcher import Batcher
from proxyd.store.ledger.keys import optout_key
from proxyd.store.ledger.ops import ADMIT, LEASE, SEPS, LeasedMessage, pack_admit, pack_lease

log = Logger()

AdmitCallback = Callable[[int, int], None]


@dataclass(slots=True, eq=False)
class Lease:
    """This node's lease of one account: what is left of it, until when it may be used
    (well before the store may take it back), when it was last used, and the level below
    which it is refilled."""
    remaining: int
    until: float
    last_use: float
    refill_below: int


class LeaseAsk(NamedTuple):
    """What a queued 'L' operation asked: when, how much (0: only a return), at what
    price per part."""
    sent_at: float
    want: int
    price: int


class OptoutWait(NamedTuple):
    """A message admitted on the lease whose destination is being checked against the
    opt-out list."""
    number: str
    msg_ids: list[str]
    price: int
    cb: AdmitCallback
    to: str


class Leases:
    """This node's leases, over `batcher` (which writes what they admit). `lease_parts` 0:
    none are taken."""

    def __init__(self, batcher: Batcher, node: str, lease_parts: int = 0,
                 lease_ttl_s: float = 30.0, lease_idle_s: float = 0.5,
                 optout_mirror: Any = None) -> None:
        """`optout_mirror`: a `proxyd.store.optout.OptOutMirror` (opt-out answers without a
        store call), or None (every admit with a number asks the store)."""
        self.batcher = batcher
        self.reactor = batcher.reactor
        self.node = node
        self.lease_parts = lease_parts
        self.lease_ttl_s = lease_ttl_s
        self.lease_idle_s = lease_idle_s
        self.optout_mirror = optout_mirror
        self.held: dict[str, Lease] = {}
        self._asking: dict[str, defer.Deferred] = {}    # account -> its refill, queued
        self._backoff: dict[str, float] = {}            # account -> no refill before
        self._tick_call: Any = None
        self._oq: dict[str, list[OptoutWait]] = {}      # account -> waiting for SMISMEMBER
        self._oq_call: Any = None

    # -- admits ---------------------------------------------------------------------------

    def admit_leased(self, account: str, msg_ids: list[str], price: int, number: str,
                     to: str = "") -> LeasedMessage | None:
        """`Ledger.admit_leased`: the queued message, or None."""
        lz = self.held.get(account)
        if lz is None:
            return None
        need = price * len(msg_ids)
        now = self.reactor.seconds()
        if lz.remaining < need or now >= lz.until:
            return None
        if number:
            mirror = self.optout_mirror
            if mirror is None:
                return None
            known = mirror.sets.get(account)    # (OptOutMirror.opted, inlined: per message)
            if known is None or number in known:
                return None
        lz.remaining -= need
        lz.last_use = now
        if lz.remaining < lz.refill_below and account not in self._asking:
            self.ask(account, price)
        to = to or number
        if not to.isprintable():
            to = to.translate(SEPS)
        return self.batcher.queue_leased(account, price, to, msg_ids, now)

    def admit(self, account: str, msg_ids: list[str], price: int, number: str, to: str,
              cb: AdmitCallback) -> bool:
        """`Ledger.admit` on the lease, if it can be (`number` and `to` are fields): True
        if it is (cb called or to be called), False: the store must admit it (a refill
        is asked for meanwhile)."""
        entry = self.admit_leased(account, msg_ids, price, number, to)
        if entry is not None:
            self.batcher.pend(entry)
            cb(0, self.held[account].remaining)
            return True
        need = price * len(msg_ids)
        lz = self.held.get(account)
        now = self.reactor.seconds()
        if lz is not None and lz.remaining >= need and now < lz.until:
            # the number is opted out, or its list is not in memory
            if self.optout_mirror is not None and self.optout_mirror.opted(account, number):
                # refused, counted and journaled by the store
                self.batcher.queue_op(account, ADMIT, pack_admit("a", price, number, to,
                                                                 msg_ids), cb, (msg_ids, now))
                return True
            lz.remaining -= need
            lz.last_use = now
            if lz.remaining < lz.refill_below and account not in self._asking:
                self.ask(account, price)
            self._optout_then(account, OptoutWait(number, msg_ids, price, cb, to))
            return True
        if lz is not None:      # too little left, or expiring: give it back first
            self.drop(account)
        if account not in self._asking and now >= self._backoff.get(account, 0):
            self.ask(account, price)
        return False

    # -- taking and giving back -----------------------------------------------------------

    def ask(self, account: str, price: int, release: int = 0,
            want: int | None = None) -> defer.Deferred:
        """Queue a lease refill (or, with want=0, a return of `release`). Deferred[int]:
        what was granted."""
        d: defer.Deferred = defer.Deferred()
        if want is None:
            want = price * self.lease_parts
            self._asking[account] = d
        ask = LeaseAsk(self.reactor.seconds(), want, price)
        d.addCallbacks(self._answered, self._refused, callbackArgs=(account, ask),
                       errbackArgs=(account,))
        if ask.want and account in self._asking and self._asking[account] is d:
            # a refill nobody waits for: a failure is logged by the batcher, not raised
            d.addErrback(lambda f: None)
        self.batcher.queue_op(account, LEASE, pack_lease(
            self.node, price, want, int(self.lease_ttl_s * 1000), release), d, ask)
        return d

    def _answered(self, r: str | None, account: str, ask: LeaseAsk) -> int | None:
        if r is None:       # (a call sent again that had been done: nothing to read)
            return None
        granted = int(r.partition(":")[0])
        if ask.want:
            self._asking.pop(account, None)
            if granted:
                lz = self.held.get(account)
                if lz is None:
                    lz = self.held[account] = Lease(0, 0.0, self.reactor.seconds(), 0)
                lz.remaining += granted
                # stop using it well before the store may take it back
                lz.until = ask.sent_at + self.lease_ttl_s * 0.8
                lz.refill_below = granted // 2
                if self._tick_call is None:
                    self._tick_call = self.reactor.callLater(self.lease_idle_s / 2,
                                                             self._tick)
            else:
                self._backoff[account] = self.reactor.seconds() + 1.0
        return granted

    def _refused(self, f: Any, account: str) -> Any:
        self._asking.pop(account, None)
        self._backoff[account] = self.reactor.seconds() + 1.0
        return f

    def store_failed(self, account: str) -> None:
        """A call of `account` failed: admit against the store again, not against a lease
        it may lose."""
        self.held.pop(account, None)

    def _tick(self) -> None:
        """Return leases unused for `lease_idle_s` or about to expire."""
        self._tick_call = None
        now = self.reactor.seconds()
        for account, lz in list(self.held.items()):
            if now - lz.last_use >= self.lease_idle_s or now >= lz.until:
                self.drop(account)
        if self.held:
            self._tick_call = self.reactor.callLater(self.lease_idle_s / 2, self._tick)

    def drop(self, account: str) -> defer.Deferred | None:
        """Give the lease of `account` back (queued)."""
        lz = self.held.pop(account, None)
        if lz is None or lz.remaining <= 0:
            return None
        return self.ask(account, 1, release=lz.remaining, want=0)

    def release_all(self) -> defer.Deferred:
        """`Ledger.release_leases`."""
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        self.batcher.stop_waiting()
        ds = [d for d in (self.drop(a) for a in list(self.held)) if d is not None]
        for d in ds:
            d.addErrback(lambda f: log.warn("ledger: a lease was not returned: {err} (the "
                                            "sweeper returns it when it expires)",
                                            err=f.getErrorMessage()))
        return defer.gatherResults(ds)

    # -- opt-out checks of messages admitted on the lease ----------------------------------

    def _optout_then(self, account: str, w: OptoutWait) -> None:
        """Check the destination against the opt-out list first (batched: one SMISMEMBER
        per account and turn)."""
        q = self._oq.get(account)
        if q is None:
            q = self._oq[account] = []
            if self._oq_call is None:
                self._oq_call = self.reactor.callLater(0, self._flush_optout)
        q.append(w)

    def _flush_optout(self) -> None:
        self._oq_call = None
        pending, self._oq = self._oq, {}
        for account, items in pending.items():
            numbers = list(dict.fromkeys(w.number for w in items))
            d = self.batcher.access.execute("SMISMEMBER", optout_key(account), *numbers)
            d.addCallbacks(self._optout_done, self._optout_failed,
                           callbackArgs=(account, numbers, items),
                           errbackArgs=(account, items))

    def _optout_done(self, reply: Any, account: str, numbers: list[str],
                     items: list[OptoutWait]) -> None:
        opted = {n for n, r in zip(numbers, reply) if int(r)}
        lz = self.held.get(account)
        for w in items:
            try:
                if w.number in opted:
                    # give the lease its money back; the admit counts and journals the
                    # refusal exactly as without a lease
                    if lz is not None:
                        lz.remaining += w.price * len(w.msg_ids)
                    self.batcher.queue_op(account, ADMIT, pack_admit(
                        "a", w.price, w.number, w.to, w.msg_ids), w.cb,
                        (w.msg_ids, self.reactor.seconds()))
                else:
                    entry = self.batcher.queue_leased(account, w.price, w.to or w.number,
                                                      w.msg_ids, self.reactor.seconds())
                    self.batcher.pend(entry)        # (settled by id: `settle`)
                    w.cb(0, lz.remaining if lz is not None else 0)
            except Exception:
                log.failure("ledger: callback of an admit failed")

    def _optout_failed(self, f: Any, account: str, items: list[OptoutWait]) -> None:
        log.warn("ledger: opt-out check of {account} failed: {err}", account=account,
                 err=f.getErrorMessage())
        lz = self.held.get(account)
        for w in items:
            if lz is not None:
                lz.remaining += w.price * len(w.msg_ids)
            try:
                w.cb(-9, 0)
            except Exception:
                log.failure("ledger: callback of an admit failed")
