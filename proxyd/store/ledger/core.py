"""`Ledger`: the balance operations of all accounts over one `Store`. It puts together the
store access, the per-turn `Batcher`, this node's `Leases` and the `Queries`."""
from __future__ import annotations

import os
import socket
from typing import Any, Callable, Sequence

from twisted.internet import defer

from proxyd.store import journal as J
from proxyd.store.client import Store
from proxyd.store.ledger import sweeper, wal
from proxyd.store.ledger.access import StoreAccess
from proxyd.store.ledger.batcher import Batcher
from proxyd.store.ledger.keys import RETENTION_DAYS, day_of
from proxyd.store.ledger.leases import Leases
from proxyd.store.ledger.ops import (ADMIT, COUNT, EVENT, RESERVE, SEP, SETTLE, LeasedMessage,
                                     field, pack_admit, pack_event, pack_reject, pack_settle)
from proxyd.store.ledger.queries import Queries


class Ledger(Queries):
    """Balance operations of all accounts over one `Store`.

    The relay's two calls per message on a lease are its parts' own methods (attributes
    set in the constructor, so that no call frame comes between):

    ``admit_leased(account, msg_ids, price, number, to="") -> LeasedMessage | None``
        `admit`, done at once if it can be: on this node's lease, with the opt-out answer
        in memory (or no `number` to check). The record of the message (for
        `settle_leased`), or None: not possible (then `admit` it). `msg_ids` are plain (no
        control characters: proxyd's own ids). (`Leases.admit_leased`)
    ``settle_leased(entry, i, note, commit) -> None``
        `settle` part `i` of a message `admit_leased` took (`entry`: what it returned):
        written with the part's reservation as one group item, or apart (`settle`) if the
        reservation went first. (`Batcher.settle_leased`)
    """

    keeps_records = True        # every outcome is journaled: the gate writes settle notes

    def __init__(self, store: Store | None, reactor: Any = None,
                 day_of: Callable[[float], str] = day_of, batch_max: int = 500,
                 retention_days: int = RETENTION_DAYS, node: str = "",
                 lease_parts: int = 0, lease_ttl_s: float = 30.0,
                 lease_idle_s: float = 0.5, record_delay_s: float = 0.005,
                 retry_for_s: float = 5.0, optout_mirror: Any = None,
                 outcome_log: str = "", outcome_fsync_s: float = 1.0) -> None:
        """`store` may be None until `attach` (calls fail with StoreUnavailable till then).

        `lease_parts` > 0 turns balance leases on: this node takes up to that many parts'
        worth of balance at a time (`lease_ttl_s`, renewed with every refill, returned when
        unused for `lease_idle_s`), admits messages against it without waiting for the
        store and writes their reservations within `record_delay_s` (sooner when their
        outcome comes first). `node` names this process's lease (default: host, pid and a
        random suffix). `optout_mirror`: a `proxyd.store.optout.OptOutMirror`, whose
        opt-out answers need no store call. `outcome_log`: a directory for this node's
        write-ahead log of outcomes (`proxyd.store.ledger.wal`; "" none), fsynced every
        `outcome_fsync_s`."""
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        super().__init__(StoreAccess(reactor, day_of, retention_days))
        self.node = node or "%s:%d:%s" % (socket.gethostname(), os.getpid(),
                                          os.urandom(3).hex())
        self.lease_parts = lease_parts
        self.outcome_log_dir = outcome_log
        self.outcome_log = wal.OutcomeLog(outcome_log, self.node, reactor, outcome_fsync_s) \
            if outcome_log else wal.NoLog()
        self.batcher = Batcher(self.access, self.node, batch_max=batch_max,
                               record_delay_s=record_delay_s, lease_ttl_s=lease_ttl_s,
                               retry_for_s=retry_for_s, on_store_failure=self._store_failed,
                               outcome_log=self.outcome_log)
        self.leases = Leases(self.batcher, self.node, lease_parts=lease_parts,
                             lease_ttl_s=lease_ttl_s, lease_idle_s=lease_idle_s,
                             optout_mirror=optout_mirror)
        self.admit_leased: Callable[..., LeasedMessage | None] = self.leases.admit_leased
        self.settle_leased: Callable[[LeasedMessage, int, str, bool], None] = \
            self.batcher.settle_leased
        if store is not None:
            self.attach(store)

    def attach(self, store: Store) -> None:
        """Use `store` from now on."""
        self.access.attach(store)

    @property
    def store(self) -> Store | None:
        return self.access.store

    @property
    def optout_mirror(self) -> Any:
        return self.leases.optout_mirror

    @optout_mirror.setter
    def optout_mirror(self, mirror: Any) -> None:
        # (kept for the builders that set it after construction; prefer the argument)
        self.leases.optout_mirror = mirror

    def _store_failed(self, account: str) -> None:
        self.leases.store_failed(account)

    def flush(self) -> None:
        """Send what was queued so far (it goes by itself within the turn)."""
        self.batcher.flush()

    # -- per message ----------------------------------------------------------------------

    def admit(self, account: str, msg_ids: list[str], price: int, number: str,
              cb: Callable[[int, int], None], to: str = "") -> None:
        """Opt-out check and reservation of one message (one msg_id per part, `price` each)
        in one atomic step, batched with the other operations of this reactor turn: one
        EVALSHA per account and turn. cb(code, balance): 0 reserved, -1 insufficient
        balance, -3 `number` opted out (both counted and journaled as rejected), -2
        duplicate id; on a store failure cb(-9, 0). The reserved records of the parts carry
        the note "to=<to or number>" (for ``proxyd-admin trace --to``)."""
        if not msg_ids or SEP.join(msg_ids).count(SEP) != len(msg_ids) - 1:
            raise ValueError("bad message ids")
        number, to = field(number), field(to)
        if self.lease_parts > 0 and self.leases.admit(account, msg_ids, price, number, to,
                                                      cb):
            return
        self.batcher.queue_op(account, ADMIT, pack_admit("a", price, number, to, msg_ids),
                              cb, (msg_ids, self.reactor.seconds()))

    def reserve(self, account: str, msg_id: str, parts: int, price: int) -> defer.Deferred:
        """Take parts*price from the balance for `msg_id` (one reservation of the whole
        amount). Deferred[int]: the balance after. Errbacks InsufficientBalance,
        DuplicateReservation, StoreUnavailable. A refusal is not counted: the caller
        does that with `count_rejected`."""
        d: defer.Deferred = defer.Deferred()
        parts, price = int(parts), int(price)
        self.batcher.queue_op(account, RESERVE, pack_admit("v", parts * price, "", "",
                                                           [field(msg_id)]),
                              d, (msg_id, parts * price))
        return d

    def commit(self, account: str, msg_id: str, note: str = "") -> defer.Deferred:
        """Settle a reservation as charged. Deferred[int | None]: the amount, or None if
        there was no open reservation (unknown or already settled). The relay's note:
        ``up=<upstream name> id=<upstream message id>``."""
        d: defer.Deferred = defer.Deferred()
        self.batcher.queue_op(account, SETTLE, pack_settle("c", field(msg_id), field(note)),
                              d, msg_id)
        return d

    def refund(self, account: str, msg_id: str, note: str = "") -> defer.Deferred:
        """Give a reservation back. Deferred[int | None]: the amount refunded, or None if
        there was no open reservation (so refunding twice is harmless)."""
        d: defer.Deferred = defer.Deferred()
        self.batcher.queue_op(account, SETTLE, pack_settle("r", field(msg_id), field(note)),
                              d, msg_id)
        return d

    def settle(self, account: str, msg_id: str, note: str, commit: bool) -> None:
        """`commit` or `refund` without an answer (the relay's: cheaper). A store failure is
        logged, and the record is sent again while the store is away; a reservation left
        open in the end is refunded by the sweeper ("outcome unknown")."""
        # with leases the reservation itself is written within record_delay_s: its
        # outcome goes with it when it is still queued, else in the same kind of call
        self.batcher.settle(account, msg_id, note, commit, urgent=self.lease_parts <= 0)

    def count_rejected(self, account: str, reason: str, msg_id: str = "",
                       parts: int = 1, detail: str = "") -> defer.Deferred:
        """Count (and journal) a message refused before charging, `parts` parts; `detail`
        (e.g. "term=... variant=..." of a content refusal) goes into the journal record's
        note after the reason, not into the counters. Deferred[int]: today's count (parts)
        for that reason."""
        d: defer.Deferred = defer.Deferred()
        note = field(reason).replace(" ", "_")
        if detail:
            note += " " + field(detail)
        self.batcher.queue_op(account, COUNT, pack_reject(note, field(msg_id), int(parts)), d)
        return d

    def journal_event(self, account: str, msg_id: str, event: str,
                      note: str = "") -> defer.Deferred:
        """Journal a state event of a message that moves no money (received, relayed,
        receipt with note "STATE ERR" such as "DELIVRD 000", receipt_delivered,
        negative_receipt, ...), batched like the rest. Deferred[0]."""
        if not event or not event.replace("_", "").isalpha() or not event.islower() or (
                event in J.MONEY_EVENTS or event == "rejected"):
            return defer.fail(ValueError("bad journal event name %r" % (event,)))
        d: defer.Deferred = defer.Deferred()
        self.batcher.queue_op(account, EVENT, pack_event(field(event), field(msg_id),
                                                         field(note)), d)
        return d

    def hold_part(self, account: str, keys: Sequence[str], *args: Any) -> defer.Deferred:
        """A part of a client's long message kept, the first one reserving the whole
        message (``hold.lua`` says what it answers). `keys`: the message's parts hash, the
        index of open messages, the account's pending counters; `args`: the script's own.
        The reservations are settled like any other (`settle`, `refund`)."""
        k, argv = self.access.args(account, *args)
        return self.access.evalsha("hold", k + list(keys), argv)

    def give_back_lease(self, account: str) -> None:
        """Return this node's lease of `account` to its free balance (queued)."""
        self.leases.drop(account)

    def replay_outcome_log(self) -> defer.Deferred:
        """At start: write into the store what the outcome logs of dead nodes (this one's
        before a crash, or another's in the same directory) hold and the store may lack.
        Deferred[(calls, outcomes)] replayed."""
        if not self.outcome_log_dir:
            return defer.succeed((0, 0))
        return wal.replay(self.access, self.outcome_log_dir)

    def close_outcome_log(self) -> defer.Deferred:
        """At shutdown, once the last calls were answered."""
        self.batcher.flush()
        return self.outcome_log.close()

    def release_leases(self) -> defer.Deferred:
        """Give every lease of this node back (at shutdown). Deferred: when the store has
        them (errors are logged)."""
        return self.leases.release_all()

    # -- sweeping -------------------------------------------------------------------------

    def accounts_with_reservations(self) -> defer.Deferred:
        """Accounts that have open reservations or leases (found with SCAN; single server
        only)."""
        return sweeper.accounts_with_reservations(self.access)

    def sweep(self, max_age_s: float, now: float | None = None,
              accounts: Sequence[str] | None = None, limit: int = 1000) -> defer.Deferred:
        """Refund reservations older than `max_age_s` (note "outcome unknown").
        Deferred[list[(account, msg_id, amount)]]: what was settled."""
        return sweeper.sweep(self.access, max_age_s, now, accounts, limit)
