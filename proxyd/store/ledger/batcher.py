"""The per-turn batch: the operations of one reactor turn go to the store as one ``batch``
call per account (and `batch_max` operations), in the order they were queued, and each
answer goes to whoever waits for it.

The reservations of messages admitted on a lease (`LeasedMessage`) are written within
`record_delay_s`, together with the outcomes that came meanwhile ('g' items, reserved and
settled in one step), else alone ('l') followed by the settles that did come. Calls that
carry money records of messages already relayed have a token and are sent again after a
store failure (the store does nothing twice) while the lease still holds their money."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from twisted.logger import Logger
from twisted.python.failure import Failure
import txredisapi

from proxyd.store.client import StoreError
from proxyd.store.ledger.access import StoreAccess, text
from proxyd.store.ledger.errors import DuplicateReservation, InsufficientBalance
from proxyd.store.ledger.ops import (ADMIT, LEASE, LEASED, RESERVE, SEP, SEPS, SETTLE,
                                     LeasedMessage, Queued, field, final_admit, pack_group,
                                     pack_leased, pack_settle)
from proxyd.store.ledger.wal import NoLog

log = Logger()


class Retry(NamedTuple):
    """A call that failed, sent again with the same token (so never done twice)."""
    account: str
    token: str
    ops: list[Queued]


class Batcher:
    """The queue of operations of this reactor turn, per account, over `access`."""

    def __init__(self, access: StoreAccess, node: str, batch_max: int = 500,
                 record_delay_s: float = 0.005, lease_ttl_s: float = 30.0,
                 retry_for_s: float = 5.0,
                 on_store_failure: Callable[[str], None] = lambda account: None,
                 outcome_log: Any = None) -> None:
        """`on_store_failure(account)`: a call of the account failed (its lease is not
        to be trusted any more). `outcome_log`: a `proxyd.store.ledger.wal.OutcomeLog`
        (every outcome and every call that carries money records written ahead), or
        None."""
        self.access = access
        self.reactor = access.reactor
        self.node = node
        self.batch_max = batch_max
        self.record_delay_s = record_delay_s
        self.lease_ttl_s = lease_ttl_s
        self.retry_for_s = retry_for_s
        self.token_ttl_s = int(max(60.0, 4 * lease_ttl_s))
        self.on_store_failure = on_store_failure
        # account -> the operations queued for the next call
        self._queue: dict[str, list[Queued]] = {}
        self._flush_call: Any = None
        self._flush_urgent = False
        # msg_id of a lease reservation being sent again after a store failure -> settles
        # (account, op) held until it is recorded. (Otherwise the order is kept: every
        # batch goes over the same connection, `Store.evalsha(ordered=True)`.)
        self._l_wait: dict[str, list[tuple[str, Queued]]] = {}
        # account -> messages admitted on the lease whose reservation is queued, not yet
        # sent; an outcome that comes meanwhile is written with the reservation
        self._lq: dict[str, list[LeasedMessage]] = {}
        # msg_id -> its queued message, for `settle` by id (the relay settles through the
        # message: `settle_leased`)
        self._lpend: dict[str, LeasedMessage] = {}
        self._closing = False   # `stop_waiting` was called: nothing waits any more
        self._retries: list[Retry] = []
        self._giveup: dict[str, float] = {}     # token -> when to give it up
        self._calls = 0
        self.wal = outcome_log if outcome_log is not None else NoLog()

    # -- queueing -------------------------------------------------------------------------

    def queue_op(self, account: str, kind: int, packed: str, target: Any,
                 info: Any = None, urgent: bool = True) -> None:
        """Queue one packed operation; `target` gets its answer (see `_done`)."""
        if kind == SETTLE and info in self._l_wait:
            # its reservation is on its way: settled after it (a pool does not keep order)
            self._l_wait[info].append((account, Queued(kind, packed, target, info)))
            return
        q = self._queue.get(account)
        if q is None:
            q = self._queue[account] = []
        q.append(Queued(kind, packed, target, info))
        if self._flush_call is None:
            self._flush_urgent = urgent
            self._flush_call = self.reactor.callLater(0 if urgent else self.record_delay_s,
                                                      self.flush)
        elif urgent and not self._flush_urgent:
            self._flush_call.cancel()
            self._flush_urgent = True
            self._flush_call = self.reactor.callLater(0, self.flush)

    def queue_leased(self, account: str, price: int, to: str, msg_ids: list[str],
                     now: float) -> LeasedMessage:
        """Queue the reservation of a message admitted on the lease: written within
        `record_delay_s`, with the outcomes that come meanwhile."""
        n = len(msg_ids)
        entry = LeasedMessage(price, to, msg_ids, [None] * n, now, n, account)
        self.wal.sent(account, msg_ids, price, to)
        q = self._lq.get(account)
        if q is None:
            q = self._lq[account] = []
        q.append(entry)
        if self._flush_call is None:
            self._flush_urgent = False
            self._flush_call = self.reactor.callLater(self.record_delay_s, self.flush)
        return entry

    def pend(self, entry: LeasedMessage) -> None:
        """Let `settle` find `entry` by its ids."""
        for m in entry.ids:
            self._lpend[m] = entry

    def settle(self, account: str, msg_id: str, note: str, commit: bool,
               urgent: bool) -> None:
        """A commit or refund without an answer: with the queued reservation of a message
        admitted on the lease, else as an operation of its own."""
        entry = self._lpend.pop(msg_id, None)
        if entry is not None and entry.left >= 0:
            self.settle_leased(entry, entry.ids.index(msg_id), note, commit)
            return
        self.wal.part(account, msg_id, commit, note)
        self.queue_op(account, SETTLE, pack_settle("C" if commit else "R", field(msg_id),
                                                   field(note)), None, msg_id, urgent=urgent)

    def settle_leased(self, entry: LeasedMessage, i: int, note: str, commit: bool) -> None:
        """The outcome of part `i` of `entry`: written with the part's reservation (a
        group part), or apart if the reservation went first."""
        self.wal.part(entry.account, entry.ids[i], commit, note, entry.price, entry.to)
        if entry.left < 0:
            m = entry.ids[i]
            self.queue_op(entry.account, SETTLE, pack_settle("C" if commit else "R", m,
                                                             field(note)),
                          None, m, urgent=False)
            return
        if not note.isprintable():
            note = note.translate(SEPS)
        # (`pack_part`, inlined: per part)
        entry.parts[i] = "%s\x1d%s\x1d%s\x1d%s" % (entry.ids[i], entry.to,
                                                    "C" if commit else "R", note)
        entry.left -= 1

    def stop_waiting(self) -> None:
        """From now on every queued reservation is written with the next call (shutdown)."""
        self._closing = True

    # -- calls ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Send what was queued so far: one EVALSHA per account (and `batch_max` ops)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        pending, self._queue = self._queue, {}
        retries, self._retries = self._retries, []
        lq, self._lq = self._lq, {}
        for account, token, chunk in retries:
            self._send(account, chunk, token)
        carried: dict[str, list[LeasedMessage]] = {}
        # (the timer fires record_delay_s after the first of them was queued: not kept;
        # when closing nothing waits any more: every reservation is written now, so a part
        # relayed before the shutdown is charged even if its outcome never comes)
        young = float("inf") if self._closing else -1.0 if not lq else \
            self.reactor.seconds() - self.record_delay_s * 0.999
        for account in (list(pending) + [a for a in lq if a not in pending]) if lq else pending:
            queued = pending.get(account, [])
            leased: list[Queued] = []
            if account in lq:
                leased, keep = leased_ops(lq[account], self.node, young, self._lpend)
                if keep:
                    carried[account] = keep
            items, n_first = call_order(queued, leased)
            for lo, hi in cuts(len(items), n_first, self.batch_max):
                chunk = items[lo:hi]
                token = ""
                for c in chunk:
                    if c.kind == SETTLE or c.kind == LEASED:  # may be sent again: a token
                        self._calls += 1
                        token = "%s:%d" % (self.node, self._calls)
                        break
                self._send(account, chunk, token)
        if carried:
            # leased reservations still waiting for their outcomes: the next flush
            for account, keep in carried.items():
                q = self._lq.get(account)
                self._lq[account] = keep + q if q else keep
            if self._flush_call is None:
                self._flush_urgent = False
                self._flush_call = self.reactor.callLater(self.record_delay_s, self.flush)

    def _send(self, account: str, chunk: list[Queued], token: str) -> None:
        ops = SEP.join([c.packed for c in chunk])
        if token:
            self.wal.call(token, account, chunk)
            keys, argv = self.access.args(account, ops, token, self.token_ttl_s)
        else:
            keys, argv = self.access.args(account, ops)
        d = self.access.evalsha("batch", keys, argv, ordered=True)
        d.addCallbacks(self._done, self._failed, callbackArgs=(chunk, account, token),
                       errbackArgs=(chunk, account, token))

    # -- answers --------------------------------------------------------------------------

    def _done(self, reply: Any, chunk: list[Queued], account: str, token: str) -> None:
        results = text(reply).split(",")
        if token:
            self.wal.ack(token)
        if self._giveup:
            self._giveup.pop(token, None)
        if results == ["="]:
            # a call sent again whose first attempt had been done: nothing more to do
            for kind, _packed, target, info in chunk:
                if kind == LEASED:
                    self._release_held(info)
                elif target is not None:
                    target.callback(None)   # a settle: nothing open (any more)
            return
        if len(results) != len(chunk):
            self._failed(Failure(StoreError("batch: %d results for %d operations"
                                            % (len(results), len(chunk)))), chunk, account,
                         token)
            return
        l_wait = self._l_wait
        for (kind, packed, target, info), r in zip(chunk, results):
            if not r:       # a lease reservation or an unanswered settle, done: the bulk
                if l_wait and kind == LEASED:
                    self._release_held(info)
                continue
            try:
                if kind == ADMIT:
                    code, _, bal = r.partition(":")
                    if code == "-4":
                        self._retry_admit(account, packed, target, info)
                    else:
                        target(int(code), int(bal))
                elif kind == LEASED:
                    log.error("ledger: {account}: parts {ids} were relayed on this node's "
                              "lease, which the store no longer had (swept or refunded): "
                              "not charged ({r})", account=account,
                              ids=r[3:].replace(" ", ",") if packed[0] == "g"
                              else ",".join(info), r=r)
                    self._release_held(info)
                elif kind == LEASE:
                    target.callback(r)      # (`Leases` reads it)
                elif kind == SETTLE:
                    if target is not None:
                        n = int(r)
                        target.callback(n if n >= 0 else None)
                elif kind == RESERVE:
                    code, _, bal = r.partition(":")
                    if code == "0":
                        target.callback(int(bal))
                    elif code == "-1":
                        target.errback(InsufficientBalance(account, int(bal), info[1]))
                    else:
                        target.errback(DuplicateReservation(account, info[0]))
                else:
                    target.callback(int(r))
            except Exception:  # a caller's callback failed: not ours to stop the others
                log.failure("ledger: callback of a batched operation failed")

    def _failed(self, f: Any, chunk: list[Queued], account: str, token: str) -> None:
        log.warn("ledger: batch of {n} operations of {account} failed: {err}", n=len(chunk),
                 account=account, err=f.getErrorMessage())
        # the store is in trouble: admit against it again, not against a lease it may lose
        self.on_store_failure(account)
        now = self.reactor.seconds()
        retry: list[Queued] | None = None
        if token and not f.check(txredisapi.ResponseError):
            # money records of parts already relayed (and maybe answered OK): sent again
            # (the same token: if the call that failed was done after all, the store does
            # nothing twice) until the store is back, while the lease still holds their
            # money in the store
            if now < self._giveup.setdefault(token, now + self.lease_ttl_s / 2):
                retry = []
            else:
                del self._giveup[token]
        for q in chunk:
            kind, packed, target, info = q
            try:
                if retry is not None and kind in (LEASED, SETTLE):
                    retry.append(q)
                    if kind == LEASED:      # its settles wait for it from now on
                        for m in info:
                            self._l_wait.setdefault(m, [])
                    continue
                if kind == ADMIT:
                    target(-9, 0)
                elif kind == LEASED:
                    log.warn("ledger: {account}: the reservations of {ids} (relayed on this "
                             "node's lease) were not recorded", account=account,
                             ids=",".join(info))
                    self._release_held(info)
                elif target is not None:
                    target.errback(f)
                elif kind == SETTLE:
                    log.warn("ledger: {account}: {op} of {id} not recorded: {err} (an open "
                             "reservation is refunded by the sweeper)", account=account,
                             op="commit" if packed[0] in "cC" else "refund", id=info,
                             err=f.getErrorMessage())
            except Exception:
                log.failure("ledger: callback of a failed batched operation failed")
        if retry:
            self.reactor.callLater(0.5, self._requeue, account, token, retry)
        elif token:
            self.wal.ack(token)     # given up (logged above): nothing to replay

    def _requeue(self, account: str, token: str, ops: list[Queued]) -> None:
        self._retries.append(Retry(account, token, ops))
        if self._flush_call is None:
            self._flush_urgent = True
            self._flush_call = self.reactor.callLater(0, self.flush)

    def _release_held(self, ids: Sequence[str]) -> None:
        if not self._l_wait:
            return
        for m in ids:
            for account, q in self._l_wait.pop(m, ()):
                self.queue_op(account, q.kind, q.packed, q.target, q.info)

    def _retry_admit(self, account: str, packed: str, cb: Any, info: Any) -> None:
        """The free balance is short but other nodes hold leases: ask again soon, then
        once more as final (an answer either way)."""
        _ids, first = info
        if self.reactor.seconds() - first < self.retry_for_s:
            self.reactor.callLater(0.02, self.queue_op, account, ADMIT, packed, cb, info)
        else:
            self.queue_op(account, ADMIT, final_admit(packed), cb, info)


# --- how the queued operations of one account make calls ------------------------------------

def call_order(queued: list[Queued], leased: list[Queued]) -> tuple[list[Queued], int]:
    """The operations of one account in the order they are sent, and where the first call
    ends: commits and refunds in a second call after the rest, since the admits' answers
    are what the relay waits for before relaying (kept in one call, in order, when one
    settles a message admitted in this same turn); the records of messages admitted on a
    lease (`leased`) go in that second call too."""
    waited = False      # does anyone wait for an answer in this batch?
    for q in queued:
        if q.kind == ADMIT or q.kind == RESERVE:
            waited = True
            break
    if not waited:
        items = queued + leased if leased else queued
        return items, len(items)
    firsts, rest = queued, []
    settles = [q for q in queued if q.kind == SETTLE]
    if 0 < len(settles) < len(queued):
        f = [q for q in queued if q.kind != SETTLE]
        admitted = {m for q in f if q.kind == ADMIT for m in q.info[0]}
        admitted.update(q.info[0] for q in f if q.kind == RESERVE)
        if not any(q.info in admitted for q in settles):
            firsts, rest = f, settles
    return firsts + leased + rest, len(firsts)


def cuts(n: int, split: int, batch_max: int) -> list[tuple[int, int]]:
    """[start, end) of the calls for `n` queued operations: a cut at `split` (the end of
    the admits) and every `batch_max`."""
    out = []
    for lo, hi in ((0, split), (split, n)):
        for i in range(lo, hi, batch_max):
            out.append((i, min(i + batch_max, hi)))
    return out


def leased_ops(entries: list[LeasedMessage], node: str, young: float,
               lpend: dict[str, LeasedMessage]) -> tuple[list[Queued], list[LeasedMessage]]:
    """The queued records of messages admitted on the lease as operations: the parts
    whose outcome came meanwhile in one 'g' per price (reserved and settled together);
    the others, when queued at `young` or before, as 'l' followed by the settles that did
    come (those written are marked so, and leave `lpend`), else kept for the next flush
    (returned second)."""
    out: list[Queued] = []
    keep: list[LeasedMessage] = []
    groups: dict[int, tuple[list, list]] = {}     # price -> (packed parts, ids)
    for e in entries:
        if not e.left:
            g = groups.get(e.price)
            if g is None:
                g = groups[e.price] = ([], [])
            if len(e.parts) == 1:
                g[0].append(e.parts[0])
                g[1].append(e.ids[0])
            else:
                g[0].extend(e.parts)
                g[1].extend(e.ids)
        elif e.queued_at > young:
            keep.append(e)
        else:
            ids = e.ids
            e.left = -1         # written: an outcome that comes now is settled apart
            out.append(Queued(LEASED, pack_leased(e.price, node, e.to, ids), None, ids))
            for m, part in zip(ids, e.parts):
                if part is None:
                    lpend.pop(m, None)
                else:
                    _m, _to, o, note = part.split("\x1d", 3)
                    out.append(Queued(SETTLE, pack_settle(o, m, note), None, m))
    for price, (items, ids) in groups.items():
        out.insert(0, Queued(LEASED, pack_group(price, node, items), None, ids))
    return out, keep
