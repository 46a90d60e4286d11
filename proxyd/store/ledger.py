"""Prepaid balances, charged per message part, with Lua scripts so that every change is atomic.

All amounts are integers in minor units ("fen"). Every key of one account carries the hash tag
``{account}`` so that one script only touches keys of one Redis Cluster slot.

Key layout (``A`` = account system_id, ``D`` = day ``YYYYMMDD`` in local time)::

    bal:{A}              string   balance, in fen; never negative
    res:{A}              hash     msg_id -> "<amount>:<reserved at, ms since epoch>"
    resq:{A}             zset     msg_id scored by reserved-at ms (for the sweeper)
    ledger:{A}           stream   every money operation: time (ms), op, amount, balance_after,
                                  msg_id, note. op is reserve | commit | refund | topup |
                                  adjust | refund_all. amount is the (positive) sum the op is
                                  about, except adjust where it is the signed change;
                                  commit does not move the balance (reserve already did).
    stats:{A}:D          hash     daily counters: submitted, reserved, committed, refunded,
                                  rejected:<reason> (counts), charged, refunded_amount, topup,
                                  adjust, refund_all (amounts in fen)
    journal:{A}:D        stream   one record per event: ts (ms), account, msg_id, event
                                  (reserved | committed | refunded | rejected | topup | adjust |
                                  refund_all), amount, balance_after, note, h
    jhead:{A}            hash     D -> h of the last journal record of that day

Journal hash chain: ``h = sha1(prev_h .. enc(ts) .. enc(account) .. enc(msg_id) .. enc(event)
.. enc(amount) .. enc(balance_after) .. enc(note))`` with ``enc(s) = <byte length>:s,`` and
``prev_h`` the h of the previous record of the same day ("" for the first). It is computed
inside the same script that moves the money, so a charge never exists without its record;
`verify_journal` checks a day's chain.

Accounting identity per account: topups + adjusts - refund_all - charged (committed) - sum of
open reservations = balance.

Semantics:

* ``reserve`` takes ``parts * price`` from the balance and records a reservation, or changes
  nothing at all if the balance is too small (``InsufficientBalance``): the caller records
  that outcome with ``count_rejected(account, reason, msg_id)`` like any other refusal. A
  second reserve of an open msg_id is refused (``DuplicateReservation``).
* Counters: ``submitted`` = successful reserves + ``count_rejected`` calls.
* ``commit`` / ``refund`` settle a reservation once; settling an unknown or already settled
  msg_id is a no-op that returns None. Calls made during one reactor turn go to the server as
  one EVALSHA per account (``settle``); each caller's Deferred gets its own result.
* ``sweep`` refunds reservations older than ``max_age_s`` with the note "outcome unknown".
"""
from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Iterable, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from proxyd.store.client import Store, StoreError, StoreUnavailable

__all__ = ["Ledger", "LedgerSweeper", "LedgerError", "InsufficientBalance",
           "DuplicateReservation", "SCRIPTS", "SHAS", "account_keys", "script_call",
           "day_of", "verify_journal", "UNKNOWN_OUTCOME"]

log = Logger()

UNKNOWN_OUTCOME = "outcome unknown"


class LedgerError(StoreError):
    """A ledger operation was refused."""


class InsufficientBalance(LedgerError):
    def __init__(self, account: str, balance: int, needed: int) -> None:
        super().__init__("account %s: balance %d < %d needed" % (account, balance, needed))
        self.account = account
        self.balance = balance
        self.needed = needed


class DuplicateReservation(LedgerError):
    def __init__(self, account: str, msg_id: str) -> None:
        super().__init__("account %s: message %s is already reserved" % (account, msg_id))
        self.account = account
        self.msg_id = msg_id


# --- Lua ----------------------------------------------------------------------------------
# KEYS: bal, res, resq, ledger, stats(day), journal(day), jhead
# ARGV: account, now (ms), day, then the script's own arguments from ARGV[4]

_PRELUDE = r"""
local K_BAL, K_RES, K_RESQ, K_LEDGER = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_STATS, K_JOURNAL, K_JHEAD = KEYS[5], KEYS[6], KEYS[7]
local ACCT, NOW, DAY = ARGV[1], ARGV[2], ARGV[3]
local function fmt(n) return string.format('%d', n) end
local function get_balance() return tonumber(redis.call('GET', K_BAL) or '0') end
local function stat(field, n) redis.call('HINCRBY', K_STATS, field, n) end
local function ledger(op, amount, bal, msg_id, note)
  redis.call('XADD', K_LEDGER, '*', 'time', NOW, 'op', op, 'amount', fmt(amount),
             'balance_after', fmt(bal), 'msg_id', msg_id, 'note', note)
end
local function enc(s) return #s .. ':' .. s .. ',' end
local function journal(event, msg_id, amount, bal, note)
  local prev = redis.call('HGET', K_JHEAD, DAY) or ''
  local a, b = fmt(amount), fmt(bal)
  local h = redis.sha1hex(prev .. enc(NOW) .. enc(ACCT) .. enc(msg_id) .. enc(event) ..
                          enc(a) .. enc(b) .. enc(note))
  redis.call('XADD', K_JOURNAL, '*', 'ts', NOW, 'account', ACCT, 'msg_id', msg_id,
             'event', event, 'amount', a, 'balance_after', b, 'note', note, 'h', h)
  redis.call('HSET', K_JHEAD, DAY, h)
end
local function int_arg(i)
  local n = tonumber(ARGV[i])
  if n == nil or n ~= math.floor(n) then
    return redis.error_reply('ERR argument ' .. i .. ' must be an integer')
  end
  return n
end
-- settle one reservation: op 'c' commits, anything else refunds. Returns the amount or -1.
local function settle(op, msg_id, note)
  local r = redis.call('HGET', K_RES, msg_id)
  redis.call('ZREM', K_RESQ, msg_id)
  if not r then return -1 end
  redis.call('HDEL', K_RES, msg_id)
  local amount = tonumber(string.match(r, '^(%d+)'))
  if op == 'c' then
    local bal = get_balance()
    stat('committed', 1)
    stat('charged', amount)
    ledger('commit', amount, bal, msg_id, note)
    journal('committed', msg_id, amount, bal, note)
  else
    local bal = redis.call('INCRBY', K_BAL, amount)
    stat('refunded', 1)
    stat('refunded_amount', amount)
    ledger('refund', amount, bal, msg_id, note)
    journal('refunded', msg_id, amount, bal, note)
  end
  return amount
end
"""

_RESERVE = r"""
-- ARGV[4] msg_id, ARGV[5] parts, ARGV[6] price -> {0, balance} | {-1, balance} | {-2, balance}
local msg_id = ARGV[4]
local parts, price = int_arg(5), int_arg(6)
if type(parts) == 'table' then return parts end
if type(price) == 'table' then return price end
local amount = parts * price
if redis.call('HEXISTS', K_RES, msg_id) == 1 then return {-2, get_balance()} end
local bal = get_balance()
if bal < amount then return {-1, bal} end
bal = redis.call('DECRBY', K_BAL, amount)
stat('submitted', 1)
redis.call('HSET', K_RES, msg_id, fmt(amount) .. ':' .. NOW)
redis.call('ZADD', K_RESQ, NOW, msg_id)
stat('reserved', 1)
ledger('reserve', amount, bal, msg_id, '')
journal('reserved', msg_id, amount, bal, '')
return {0, bal}
"""

_ADMIT = r"""
-- KEYS[8] the account's opt-out set.
-- ARGV[4..]: groups of: price, number ('' = no opt-out check), n, then n msg_ids (one per
-- part). Per group, all or nothing: {0, balance} reserved (price per part) | {-1, balance}
-- insufficient | {-3, balance} opted out | {-2, balance} duplicate msg_id.
local out = {}
local i = 4
while i <= #ARGV do
  local price, number, n = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local first = i + 3
  i = first + n
  local bal = get_balance()
  local code = 0
  if number ~= '' and redis.call('SISMEMBER', KEYS[8], number) == 1 then
    code = -3
  elseif bal < price * n then
    code = -1
  else
    for j = first, first + n - 1 do
      if redis.call('HEXISTS', K_RES, ARGV[j]) == 1 then code = -2 end
    end
  end
  if code == 0 then
    for j = first, first + n - 1 do
      local msg_id = ARGV[j]
      bal = redis.call('DECRBY', K_BAL, price)
      stat('submitted', 1)
      redis.call('HSET', K_RES, msg_id, fmt(price) .. ':' .. NOW)
      redis.call('ZADD', K_RESQ, NOW, msg_id)
      stat('reserved', 1)
      ledger('reserve', price, bal, msg_id, '')
      journal('reserved', msg_id, price, bal, '')
    end
  elseif code ~= -2 then
    local reason = (code == -3) and 'optout' or 'insufficient_balance'
    stat('submitted', n)
    redis.call('HINCRBY', K_STATS, 'rejected:' .. reason, n)
    journal('rejected', ARGV[first], 0, bal, reason)
  end
  out[#out + 1] = {code, bal}
end
return out
"""

_SETTLE = r"""
-- ARGV[4..]: triples op ('c' commit | 'r' refund), msg_id, note -> amounts (-1: no-op)
local out = {}
for i = 4, #ARGV, 3 do
  out[#out + 1] = settle(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return out
"""

_TOPUP = r"""
-- ARGV[4] amount (> 0), ARGV[5] note -> balance after
local amount = int_arg(4)
if type(amount) == 'table' then return amount end
if amount <= 0 then return redis.error_reply('ERR top-up amount must be > 0') end
local bal = redis.call('INCRBY', K_BAL, amount)
stat('topup', amount)
ledger('topup', amount, bal, '', ARGV[5])
journal('topup', '', amount, bal, ARGV[5])
return bal
"""

_ADJUST = r"""
-- ARGV[4] signed delta, ARGV[5] note -> {0, balance after} | {-1, balance} (would go < 0)
local delta = int_arg(4)
if type(delta) == 'table' then return delta end
local bal = get_balance()
if bal + delta < 0 then return {-1, bal} end
bal = redis.call('INCRBY', K_BAL, delta)
stat('adjust', delta)
ledger('adjust', delta, bal, '', ARGV[5])
journal('adjust', '', delta, bal, ARGV[5])
return {0, bal}
"""

_REFUND_ALL = r"""
-- ARGV[4] note -> the amount taken out (the balance before); open reservations stay open
local bal = get_balance()
redis.call('SET', K_BAL, '0')
stat('refund_all', bal)
ledger('refund_all', bal, 0, '', ARGV[4])
journal('refund_all', '', bal, 0, ARGV[4])
return bal
"""

_COUNT_REJECTED = r"""
-- ARGV[4] reason, ARGV[5] msg_id -> count of that reason today
stat('submitted', 1)
local n = redis.call('HINCRBY', K_STATS, 'rejected:' .. ARGV[4], 1)
journal('rejected', ARGV[5], 0, get_balance(), ARGV[4])
return n
"""

_SWEEP = r"""
-- ARGV[4] cutoff (ms), ARGV[5] max count, ARGV[6] note -> flat {msg_id, amount, ...}
local ids = redis.call('ZRANGEBYSCORE', K_RESQ, '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for _, msg_id in ipairs(ids) do
  local amount = settle('r', msg_id, ARGV[6])
  if amount >= 0 then
    out[#out + 1] = msg_id
    out[#out + 1] = amount
  end
end
return out
"""

SCRIPTS: dict[str, str] = {name: _PRELUDE + body for name, body in (
    ("reserve", _RESERVE), ("admit", _ADMIT), ("settle", _SETTLE), ("topup", _TOPUP), ("adjust", _ADJUST),
    ("refund_all", _REFUND_ALL), ("count_rejected", _COUNT_REJECTED), ("sweep", _SWEEP))}
SHAS: dict[str, str] = {name: hashlib.sha1(src.encode("utf-8")).hexdigest()
                        for name, src in SCRIPTS.items()}


# --- keys and arguments, shared with the synchronous admin client -------------------------

def day_of(ts: float) -> str:
    """The day (local time) whose stats and journal keys an event at `ts` goes to."""
    return time.strftime("%Y%m%d", time.localtime(ts))


def balance_key(account: str) -> str:
    return "bal:{%s}" % account


def ledger_key(account: str) -> str:
    return "ledger:{%s}" % account


def stats_key(account: str, day: str) -> str:
    return "stats:{%s}:%s" % (account, day)


def journal_key(account: str, day: str) -> str:
    return "journal:{%s}:%s" % (account, day)


def account_keys(account: str, day: str) -> list[str]:
    """KEYS of every ledger script, in order."""
    t = "{%s}" % account
    return ["bal:" + t, "res:" + t, "resq:" + t, "ledger:" + t,
            "stats:%s:%s" % (t, day), "journal:%s:%s" % (t, day), "jhead:" + t]


def script_call(account: str, now: float, day: str,
                *extra: Any) -> tuple[list[str], list[str]]:
    """(KEYS, ARGV) for a ledger script; `extra` are the script's own arguments."""
    return (account_keys(account, day),
            [account, str(int(now * 1000)), day] + [str(x) for x in extra])


def _enc(s: str) -> bytes:
    b = s.encode("utf-8")
    return str(len(b)).encode() + b":" + b + b","


def verify_journal(records: Iterable[dict[str, str]]) -> bool:
    """True if the records (one day of one account, oldest first) form an unbroken chain."""
    prev = ""
    for r in records:
        data = prev.encode() + b"".join(_enc(r[k]) for k in (
            "ts", "account", "msg_id", "event", "amount", "balance_after", "note"))
        h = hashlib.sha1(data).hexdigest()
        if r.get("h") != h:
            return False
        prev = h
    return True


def stream_entries(reply: Any) -> list[dict[str, str]]:
    """XRANGE/XREVRANGE reply -> [{"id": ..., field: value, ...}, ...]."""
    out = []
    for item in reply or []:
        entry_id, flat = item[0], item[1] or []
        if isinstance(entry_id, bytes):
            entry_id = entry_id.decode()
        d = {"id": entry_id}
        for i in range(0, len(flat) - 1, 2):
            k, v = flat[i], flat[i + 1]
            d[k.decode() if isinstance(k, bytes) else str(k)] = (
                v.decode() if isinstance(v, bytes) else str(v))
        out.append(d)
    return out


def _int(x: Any) -> int:
    return int(x) if x is not None else 0


# --- the Twisted side -----------------------------------------------------------------------

class Ledger:
    """Balance operations of all accounts over one `Store`."""

    def __init__(self, store: Store | None, reactor: Any = None,
                 day_of: Callable[[float], str] = day_of, batch_max: int = 500) -> None:
        """`store` may be None until `attach` (calls fail with StoreUnavailable till then)."""
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.reactor = reactor
        self.day_of = day_of
        self.batch_max = batch_max
        self._pending: dict[str, list[tuple[str, str, str, defer.Deferred]]] = {}
        self._admits: dict[str, list] = {}
        self._admit_call: Any = None
        self._flush_call: Any = None
        self.store: Store | None = None
        if store is not None:
            self.attach(store)

    def attach(self, store: Store) -> None:
        """Use `store` from now on."""
        for name, src in SCRIPTS.items():
            store.register_script(name, src)
        self.store = store

    def _store(self) -> Store:
        if self.store is None:
            raise StoreUnavailable("the store is not started")
        return self.store

    def _call(self, name: str, account: str, *extra: Any) -> defer.Deferred:
        now = self.reactor.seconds()
        keys, args = script_call(account, now, self.day_of(now), *extra)
        try:
            return self._store().evalsha(name, keys, args)
        except StoreUnavailable as e:
            return defer.fail(e)

    def _execute(self, *args: Any) -> defer.Deferred:
        try:
            return self._store().execute(*args)
        except StoreUnavailable as e:
            return defer.fail(e)

    # -- per message ----------------------------------------------------------------------

    def reserve(self, account: str, msg_id: str, parts: int, price: int) -> defer.Deferred:
        """Take parts*price from the balance for `msg_id`. Deferred[int]: the balance after.
        Errbacks InsufficientBalance, DuplicateReservation, StoreUnavailable."""
        def done(r: list) -> int:
            code, bal = int(r[0]), int(r[1])
            if code == 0:
                return bal
            if code == -1:
                raise InsufficientBalance(account, bal, parts * price)
            raise DuplicateReservation(account, msg_id)
        return self._call("reserve", account, msg_id, int(parts), int(price)).addCallback(done)

    def admit(self, account: str, msg_ids: list[str], price: int, number: str,
              cb: Callable[[int, int], None]) -> None:
        """Opt-out check and reservation of one message (one msg_id per part, `price` each)
        in one atomic step, batched with the other messages of this reactor turn: one
        EVALSHA per account and turn. cb(code, balance): 0 reserved, -1 insufficient
        balance, -3 `number` opted out (both counted and journaled as rejected), -2
        duplicate id; on a store failure cb(-9, 0)."""
        self._admits.setdefault(account, []).append((price, number, msg_ids, cb))
        if self._admit_call is None:
            self._admit_call = self.reactor.callLater(0, self.flush_admits)

    def flush_admits(self) -> None:
        self._admit_call = None
        pending, self._admits = self._admits, {}
        for account, items in pending.items():
            for i in range(0, len(items), self.batch_max):
                chunk = items[i:i + self.batch_max]
                extra: list[Any] = []
                for price, number, ids, _cb in chunk:
                    extra += (price, number, len(ids), *ids)
                now = self.reactor.seconds()
                keys, args = script_call(account, now, self.day_of(now), *extra)
                keys.append("optout:{%s}" % account)
                try:
                    d = self._store().evalsha("admit", keys, args)
                except StoreUnavailable as e:
                    d = defer.fail(e)
                d.addCallbacks(self._admitted, self._admit_failed,
                               callbackArgs=(chunk,), errbackArgs=(chunk, account))

    @staticmethod
    def _admitted(results: list, chunk: list) -> None:
        for (_p, _n, _ids, cb), r in zip(chunk, results):
            cb(int(r[0]), int(r[1]))

    @staticmethod
    def _admit_failed(f: Any, chunk: list, account: str) -> None:
        log.warn("ledger: admit of {n} messages of {account} failed: {err}", n=len(chunk),
                 account=account, err=f.getErrorMessage())
        for _p, _n, _ids, cb in chunk:
            cb(-9, 0)

    def commit(self, account: str, msg_id: str, note: str = "") -> defer.Deferred:
        """Settle a reservation as charged. Deferred[int | None]: the amount, or None if
        there was no open reservation (unknown or already settled)."""
        return self._settle(account, "c", msg_id, note)

    def refund(self, account: str, msg_id: str, note: str = "") -> defer.Deferred:
        """Give a reservation back. Deferred[int | None]: the amount refunded, or None if
        there was no open reservation (so refunding twice is harmless)."""
        return self._settle(account, "r", msg_id, note)

    def _settle(self, account: str, op: str, msg_id: str, note: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._pending.setdefault(account, []).append((op, msg_id, note, d))
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self.flush)
        return d

    def flush(self) -> None:
        """Send the commits and refunds queued so far (normally called by the reactor)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        pending, self._pending = self._pending, {}
        for account, items in pending.items():
            for i in range(0, len(items), self.batch_max):
                chunk = items[i:i + self.batch_max]
                extra: list[str] = []
                for op, msg_id, note, _ in chunk:
                    extra += (op, msg_id, note)
                try:
                    d = self._call("settle", account, *extra)
                except Exception as e:  # pragma: no cover - defensive
                    d = defer.fail(e)
                d.addCallbacks(self._settled, self._settle_failed,
                               callbackArgs=(chunk,), errbackArgs=(chunk,))

    @staticmethod
    def _settled(results: list, chunk: list) -> None:
        for (_, _, _, d), r in zip(chunk, results):
            r = int(r)
            d.callback(r if r >= 0 else None)

    @staticmethod
    def _settle_failed(f: Any, chunk: list) -> None:
        for _, _, _, d in chunk:
            d.errback(f)

    def count_rejected(self, account: str, reason: str, msg_id: str = "") -> defer.Deferred:
        """Count (and journal) a message refused before charging. Deferred[int]: today's
        count for that reason."""
        return self._call("count_rejected", account, reason, msg_id).addCallback(int)

    # -- account operations ---------------------------------------------------------------

    def topup(self, account: str, amount: int, note: str = "") -> defer.Deferred:
        """Add `amount` (> 0) fen. Deferred[int]: the balance after."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return defer.fail(ValueError("top-up amount must be a positive integer"))
        return self._call("topup", account, amount, note).addCallback(int)

    def adjust(self, account: str, delta: int, note: str) -> defer.Deferred:
        """Add a signed correction. Deferred[int]: the balance after; InsufficientBalance
        if it would make the balance negative."""
        if not isinstance(delta, int) or isinstance(delta, bool):
            return defer.fail(ValueError("adjustment must be an integer"))

        def done(r: list) -> int:
            if int(r[0]) != 0:
                raise InsufficientBalance(account, int(r[1]), -delta)
            return int(r[1])
        return self._call("adjust", account, delta, note).addCallback(done)

    def refund_all(self, account: str, note: str) -> defer.Deferred:
        """Set the balance to 0, recorded. Deferred[int]: the amount taken out."""
        return self._call("refund_all", account, note).addCallback(int)

    def balance(self, account: str) -> defer.Deferred:
        """Deferred[int]: the balance in fen (0 for an account never topped up)."""
        return self._execute("GET", balance_key(account)).addCallback(_int)

    def entries(self, account: str, limit: int = 50) -> defer.Deferred:
        """Deferred[list[dict]]: the last `limit` ledger entries, newest first."""
        return self._execute("XREVRANGE", ledger_key(account), "+", "-",
                                  "COUNT", int(limit)).addCallback(stream_entries)

    def reservations(self, account: str) -> defer.Deferred:
        """Deferred[dict[msg_id, amount]]: the open reservations."""
        def done(flat: list) -> dict[str, int]:
            return {flat[i]: int(str(flat[i + 1]).split(":")[0])
                    for i in range(0, len(flat), 2)}
        return self._execute("HGETALL", "res:{%s}" % account).addCallback(done)

    def stats(self, account: str, day: str | None = None) -> defer.Deferred:
        """Deferred[dict[str, int]]: the day's counters (default: today)."""
        day = day or self.day_of(self.reactor.seconds())

        def done(flat: list) -> dict[str, int]:
            return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return self._execute("HGETALL", stats_key(account, day)).addCallback(done)

    def journal(self, account: str, day: str | None = None,
                count: int = 100000) -> defer.Deferred:
        """Deferred[list[dict]]: the day's journal records, oldest first."""
        day = day or self.day_of(self.reactor.seconds())
        return self._execute("XRANGE", journal_key(account, day), "-", "+", "COUNT",
                                  int(count)).addCallback(stream_entries)

    # -- sweeping -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def accounts_with_reservations(self) -> Any:
        """Accounts that have a reservation index (found with SCAN; single server only)."""
        found: set[str] = set()
        cursor = "0"
        while True:
            reply = yield self._execute("SCAN", cursor, "MATCH", "resq:{*}",
                                             "COUNT", 1000)
            cursor, keys = str(reply[0]), reply[1]
            for k in keys:
                k = k.decode() if isinstance(k, bytes) else k
                found.add(k[len("resq:{"):-1])
            if cursor == "0":
                return sorted(found)

    @defer.inlineCallbacks
    def sweep(self, max_age_s: float, now: float | None = None,
              accounts: Sequence[str] | None = None, limit: int = 1000) -> Any:
        """Refund reservations older than `max_age_s` (note "outcome unknown").
        Deferred[list[(account, msg_id, amount)]]: what was settled."""
        if now is None:
            now = self.reactor.seconds()
        if accounts is None:
            accounts = yield self.accounts_with_reservations()
        cutoff = int((now - max_age_s) * 1000)
        settled: list[tuple[str, str, int]] = []
        for account in accounts:
            while True:
                keys, args = script_call(account, now, self.day_of(now), cutoff, limit,
                                         UNKNOWN_OUTCOME)
                flat = yield self._store().evalsha("sweep", keys, args)
                for i in range(0, len(flat), 2):
                    settled.append((account, str(flat[i]), int(flat[i + 1])))
                if len(flat) < 2 * limit:
                    break
        return settled


class LedgerSweeper(service.Service):
    """Refunds reservations whose outcome never came, every `interval_s`."""

    name = "ledger-sweeper"

    def __init__(self, ledger: Ledger, max_age_s: float, interval_s: float,
                 accounts: Sequence[str] | None = None, reactor: Any = None) -> None:
        self.ledger = ledger
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self.accounts = accounts
        self.reactor = reactor or ledger.reactor
        self._loop: LoopingCall | None = None
        self.last: list[tuple[str, str, int]] = []

    def startService(self) -> None:
        service.Service.startService(self)
        self._loop = LoopingCall(self.run_once)
        self._loop.clock = self.reactor
        self._loop.start(self.interval_s, now=False)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

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
