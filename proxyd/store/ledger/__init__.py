"""Prepaid balances, charged per message part, with Lua scripts so that every change is atomic.

All amounts are integers in minor units ("fen"). Every key of one account carries the hash tag
``{account}`` so that one script only touches keys of one Redis Cluster slot.

Key layout (``A`` = account system_id, ``D`` = day ``YYYYMMDD`` in local time)::

    bal:{A}              string   balance, in fen; never negative
    res:{A}              hash     open reservations: msg_id -> "<amount>:<reserved at, ms>"
                                  (only the parts in flight; the sweeper reads it whole)
    stats:{A}:D          hash     daily counters: submitted, reserved, committed, refunded,
                                  rejected:<reason> (parts), charged, refunded_amount, topup,
                                  adjust, refund_all (amounts in fen)
    journal:{A}:D        stream   one hash-chained record per event (see
                                  `proxyd.store.journal`): reserved, committed, refunded,
                                  rejected, topup, adjust, refund_all, and the state events of
                                  `journal_event` (receipts, ...)
    jhead:{A}            hash     D -> h of the last journal record of that day
    optout:{A}           set      opted-out numbers (`proxyd.store.optout`), read by admit
    lease:{A}            hash     node -> "<amount>:<expires, ms>": balance a node took to
                                  admit against in memory (see "Leases" below)

The journal is the ledger: each money record carries time, event, amount, balance after,
msg id and note, so there is no second stream (`Ledger.entries` and ``proxyd-admin ledger``
read the money records of the journal). Daily keys (journal, stats, the day's jhead field)
expire ``retention_days`` (default 90) after their last write; ``proxyd-admin export`` writes
a day to JSON lines for archival before that.

One script, ``batch``, does all the per-message work of one account and reactor turn: admits
(opt-out check + one reservation per part), commits, refunds, rejections and state events, in
the order they were queued. Inside it the balance, the chain head, the reservation changes
and the counters are Lua locals, read once and written once per call; the call's journal
records are one stream entry (one XADD, one sha1). Per message that leaves no server command
of its own beyond the reservation hash (HMGET, and HSET/HDEL when the commit comes in a later
call); per call ~12 (GET/SET balance, HGET/HSET/HEXPIRE jhead, XADD, HMGET/HSET/HDEL res,
SMISMEMBER optout for store admits, HINCRBY per counter, EXPIRE).

Accounting identity per account: topups + adjusts - refund_all - charged (committed) - sum of
open reservations = balance = free balance (``bal``) + sum of leases.

Leases (``lease_parts`` > 0): a node takes up to that many parts' worth of the free balance
(never more than half of it) into its lease with the ``L`` operation, admits messages against
it in memory (the opt-out lookup aside, no store round trip before the relay), and writes
each part's reservation later with ``l`` ("reserved" record, taken from its lease), in the
same ordered stream of calls as the commit or refund. A lease only moves money between the
free balance and the node, so it writes no journal record, and the balance every record
shows is free + leases. Unused leases go back when idle and at shutdown; a crashed node's
lease goes back when it expires (``sweep``). An admit the free balance cannot cover while
other leases could answers -4 and is asked again until they are used or returned.

Semantics:

* ``reserve`` takes ``parts * price`` from the balance and records a reservation, or changes
  nothing at all if the balance is too small (``InsufficientBalance``): the caller records
  that outcome with ``count_rejected(account, reason, msg_id)`` like any other refusal. A
  second reserve of an open msg_id is refused (``DuplicateReservation``).
* ``admit`` is the relay's: opt-out check and reservation, and a refusal is counted and
  journaled (one "rejected" record per part) in the same step.
* Counters: ``submitted`` = reserved parts + rejected parts.
* ``commit`` / ``refund`` settle a reservation once; settling an unknown or already settled
  msg_id is a no-op that returns None.
* ``sweep`` refunds reservations older than ``max_age_s`` with the note "outcome unknown".

The package, one room each:

    keys.py      key names, day_of, script_call (shared with the synchronous admin client)
    scripts.py   the Lua (``*.lua`` beside it): SCRIPTS, SHAS
    ops.py       the batch operations as records, packed and parsed; Queued, LeasedMessage
    access.py    StoreAccess: scripts registered, calls made, StoreUnavailable as a failure
    batcher.py   Batcher: the per-turn calls, their answers, retries of money records
    leases.py    Leases: this node's blocks of balance and the admits made on them
    queries.py   Queries: top-up, adjust, refund_all, balance, stats, reservations, journal
    sweeper.py   sweep, LedgerSweeper (a TimerService)
    core.py      Ledger: puts them together; the API the relay and the services call
    errors.py    LedgerError, InsufficientBalance, DuplicateReservation
"""
from __future__ import annotations

from proxyd.store.ledger.core import Ledger
from proxyd.store.ledger.errors import DuplicateReservation, InsufficientBalance, LedgerError
from proxyd.store.ledger.keys import (RETENTION_DAYS, account_keys, balance_key, day_of,
                                      jhead_key, journal_key, lease_key, optout_key,
                                      reservations_key, script_call, stats_key)
from proxyd.store.ledger.ops import LeasedMessage
from proxyd.store.ledger.queries import money_entry, verify_journal
from proxyd.store.ledger.scripts import SCRIPTS, SHAS
from proxyd.store.ledger.sweeper import UNKNOWN_OUTCOME, LedgerSweeper

__all__ = ["Ledger", "LedgerSweeper", "LedgerError", "InsufficientBalance",
           "DuplicateReservation", "SCRIPTS", "SHAS", "account_keys", "script_call",
           "day_of", "verify_journal", "UNKNOWN_OUTCOME", "RETENTION_DAYS", "LeasedMessage",
           "money_entry", "balance_key", "reservations_key", "stats_key", "journal_key",
           "jhead_key", "lease_key", "optout_key"]
