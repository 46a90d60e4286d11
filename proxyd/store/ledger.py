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
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Any, Callable, Iterable, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
import txredisapi
from twisted.python.failure import Failure

from proxyd.store import journal as J
from proxyd.store.client import Store, StoreError, StoreUnavailable

__all__ = ["Ledger", "LedgerSweeper", "LedgerError", "InsufficientBalance",
           "DuplicateReservation", "SCRIPTS", "SHAS", "account_keys", "script_call",
           "day_of", "verify_journal", "UNKNOWN_OUTCOME", "RETENTION_DAYS"]

log = Logger()

UNKNOWN_OUTCOME = J.UNKNOWN_OUTCOME
RETENTION_DAYS = 90


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
# KEYS: bal, res, stats(day), journal(day), jhead, optout, lease, calls
# ARGV: account, now (ms), day, retention (s, 0 = keep), then the script's own from ARGV[5]

_PRELUDE = r"""
local K_BAL, K_RES, K_STATS, K_JOURNAL, K_JHEAD, K_OPTOUT, K_LEASE, K_CALLS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ACCT, NOW, DAY, TTL = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local function fmt(n) return string.format('%d', n) end
local function enc(s) return #s .. ':' .. s .. ',' end
local E_ACCT = enc(ACCT)
local CHUNK = 1000
local function chunks(list, fn)
  for i = 1, #list, CHUNK do fn({unpack(list, i, math.min(i + CHUNK - 1, #list))}) end
end
local function int_arg(i)
  local n = tonumber(ARGV[i])
  if n == nil or n ~= math.floor(n) then
    return redis.error_reply('ERR argument ' .. i .. ' must be an integer')
  end
  return n
end
-- the balance: read once, written once by finish()
local bal0, bal = nil, nil
local function balance()
  if bal == nil then
    bal0 = tonumber(redis.call('GET', K_BAL) or '0')
    bal = bal0
  end
  return bal
end
-- leases: node -> {amount, expires ms}; LT = their sum. The account's balance (what the
-- journal shows) is the free balance plus every lease; a lease only moves money between the
-- two, so it is not journaled.
local leases, LT, lease_dirty = nil, 0, {}
local function lease_load()
  if leases == nil then
    leases = {}
    local all = redis.call('HGETALL', K_LEASE)
    for k = 1, #all, 2 do
      local a, e = string.match(all[k + 1], '^(%d+):(%d+)$')
      if a then leases[all[k]] = {tonumber(a), tonumber(e)}; LT = LT + tonumber(a) end
    end
  end
end
local function lease_set(node, amount, expires)
  local cur = leases[node]
  LT = LT + amount - (cur and cur[1] or 0)
  if amount > 0 or expires then
    leases[node] = {amount, expires or (cur and cur[2]) or 0}
  else
    leases[node] = nil
  end
  lease_dirty[node] = true
end
local function jbal()
  lease_load()
  return balance() + LT
end
-- daily counters: summed here, one HINCRBY per field in finish()
local st, st_keys, st_base = {}, {}, {}
local function stat(f, n)
  if st[f] == nil then st[f] = 0; st_keys[#st_keys + 1] = f end
  st[f] = st[f] + n
end
local function stat_total(f)
  if st_base[f] == nil then st_base[f] = tonumber(redis.call('HGET', K_STATS, f) or '0') end
  return st_base[f] + (st[f] or 0)
end
-- the journal: the records of one call go into one stream entry (one XADD, one link of
-- the hash chain), written by finish(); the day's chain head read once, written once
local jrec = {}
local function journal(event, msg_id, n, amount, b, note)
  -- one string.format: every string Lua makes costs (~0.4 us), so as few as possible
  jrec[#jrec + 1] = string.format('%s|%s|%d|%d|%d|%d:%s|%d:%s', NOW, event, n, amount, b,
                                  #msg_id, msg_id, #note, note)
end
-- open reservations: res[id] = value | false (none); loaded with HMGET, written in finish()
local res, res_orig, touched = {}, {}, {}
local function res_load(ids)
  local want = {}
  for _, id in ipairs(ids) do
    if res[id] == nil then res[id] = false; res_orig[id] = false; want[#want + 1] = id end
  end
  chunks(want, function(c)
    local vals = redis.call('HMGET', K_RES, unpack(c))
    for j, id in ipairs(c) do res[id] = vals[j] or false; res_orig[id] = res[id] end
  end)
end
local function res_set(id, v)
  if res[id] == nil then res_load({id}) end
  touched[#touched + 1] = id
  res[id] = v
end
-- settled parts and amounts of this call, counted in finish(); amounts of the
-- reservations made in this call (so their settle needs no parsing)
local n_com, a_com, n_ref, a_ref, res_amt = 0, 0, 0, 0, {}
local function finish()
  if n_com > 0 then stat('committed', n_com); stat('charged', a_com) end
  if n_ref > 0 then stat('refunded', n_ref); stat('refunded_amount', a_ref) end
  if bal ~= nil and bal ~= bal0 then redis.call('SET', K_BAL, fmt(bal)) end
  local hset, hdel, done = {}, {}, {}
  for _, id in ipairs(touched) do
    if not done[id] then
      done[id] = true
      local v = res[id]
      if v ~= res_orig[id] then
        if v then hset[#hset + 1] = id; hset[#hset + 1] = v else hdel[#hdel + 1] = id end
      end
    end
  end
  chunks(hset, function(c) redis.call('HSET', K_RES, unpack(c)) end)
  chunks(hdel, function(c) redis.call('HDEL', K_RES, unpack(c)) end)
  if #st_keys > 0 then
    for _, f in ipairs(st_keys) do
      if st[f] ~= 0 then redis.call('HINCRBY', K_STATS, f, st[f]) end
    end
    if TTL > 0 then redis.call('EXPIRE', K_STATS, TTL) end
  end
  for node, _ in pairs(lease_dirty) do
    local v = leases[node]
    if v then redis.call('HSET', K_LEASE, node, fmt(v[1]) .. ':' .. fmt(v[2]))
    else redis.call('HDEL', K_LEASE, node) end
  end
  if #jrec > 0 then
    local d = table.concat(jrec, '\n')
    local head = redis.sha1hex((redis.call('HGET', K_JHEAD, DAY) or '') .. E_ACCT .. d)
    redis.call('XADD', K_JOURNAL, '*', 'd', d, 'h', head)
    redis.call('HSET', K_JHEAD, DAY, head)
    if TTL > 0 then
      redis.call('EXPIRE', K_JOURNAL, TTL)
      redis.call('HEXPIRE', K_JHEAD, TTL, 'FIELDS', 1, DAY)
    end
  end
end
-- settle one reservation: op 'c' commits, anything else refunds. Returns the amount or -1.
local function settle(op, msg_id, note)
  local r = res[msg_id]
  if r == nil then res_load({msg_id}); r = res[msg_id] end
  if not r then return -1 end
  res_set(msg_id, false)
  local amount = res_amt[msg_id] or tonumber(string.match(r, '^(%d+)'))
  if op == 'c' then
    n_com = n_com + 1
    a_com = a_com + amount
    journal('committed', msg_id, 1, amount, jbal(), note)
  else
    bal = balance() + amount
    n_ref = n_ref + 1
    a_ref = a_ref + amount
    journal('refunded', msg_id, 1, amount, jbal(), note)
  end
  return amount
end
"""

_BATCH = r"""
-- ARGV[6] (optional): the call's token, ARGV[7] how long (s) it is remembered: a call whose
-- token was seen before did everything already, and answers "=" doing nothing.
-- ARGV[5]: the operations, packed into one string of fields separated by \31 (fewer
-- arguments to encode and parse on the client); done in order; one result each, returned
-- as one string of results separated by ','. An admit (a) that the free balance cannot
-- cover while other nodes hold leases that could answers -4 (nothing recorded; retry later,
-- when they have used or returned them).
--   a price number to n id*n  admit: opt-out check of number ('' = none) and one
--                           reservation per part, journaled with note "to=<to or number>",
--                           all or nothing -> "code:balance": 0 reserved | -1 insufficient
--                           | -3 opted out (both counted and journaled as rejected, per
--                           part) | -2 duplicate id (nothing recorded)
--   f price number to n id*n  the same as a; a never answers -4
--   v price number to n id*n  the same without counting or journaling a refusal
--   l price node to n id*n    a message the node already admitted on its lease: one
--                           reservation per part taken from the node's lease (from the free
--                           balance for what the lease lacks), journaled like an admit ->
--                           "" (done) or "-1:balance" (neither has it: nothing recorded).
--                           Its ids are fresh (made by the node), so they are not looked up
--                           (a call sent again after a failure is kept from doing anything
--                           twice by its token, ARGV[6]);
--   g price node k parts      k parts (one-part messages, or parts of longer ones) that the
--                           node admitted on its lease and whose outcomes came before their
--                           reservations were written: each reserved (from the lease, else
--                           the free balance) and at once committed or refunded, the two
--                           records written together, nothing kept open. `parts` is one
--                           field: the parts separated by \30, each "id\29to\29C|R\29note"
--                           (C commit, R refund; parsed by one pattern match per part) ->
--                           "" (done) or "-1:id id ..." (parts neither had: not recorded)
--   L node price want ttl release   lease maintenance: give `release` of the node's lease
--                           back, then take up to `want` (at most half the free balance, in
--                           multiples of price) for `ttl` ms -> "granted:free balance"
--   c id note | r id note   commit | refund -> amount, or -1 if nothing was open
--   C id note | R id note   the same answering "" (done) or -1
--   x reason id parts       a refusal before charging -> today's count for that reason
--   e event id note         a state event (no money) -> 0
local MONEY = {reserved = 1, committed = 1, refunded = 1, rejected = 1, topup = 1,
               adjust = 1, refund_all = 1}
local A = {}
do
  local s, pos = ARGV[5], 1
  while true do
    local j = string.find(s, '\31', pos, true)
    if j == nil then A[#A + 1] = string.sub(s, pos); break end
    A[#A + 1] = string.sub(s, pos, j - 1)
    pos = j + 1
  end
end
local ids, numbers, nset, groups = {}, {}, {}, {}
local GPART = '^([^\29\30]*)\29([^\29\30]*)\29([CR])\29([^\29\30]*)'
local i = 1
while i <= #A do
  local op = A[i]
  -- everything is checked before anything is written: a script is not rolled back
  if op == 'a' or op == 'v' or op == 'f' or op == 'l' then
    local number, n = A[i + 2], tonumber(A[i + 4])
    if not tonumber(A[i + 1]) or not n or n < 1 then
      return redis.error_reply('ERR bad admit operation at field ' .. i)
    end
    if op == 'l' then
      -- fresh ids: nothing to load (res_set below still records them)
      for j = i + 5, i + 4 + n do
        local id = A[j]
        if res[id] == nil then res[id] = false; res_orig[id] = false end
      end
    else
      if number ~= '' and not nset[number] then
        nset[number] = true; numbers[#numbers + 1] = number
      end
      for j = i + 5, i + 4 + n do ids[#ids + 1] = A[j] end
    end
    i = i + 5 + n
  elseif op == 'g' then
    local k, body, P, pos = tonumber(A[i + 3]), A[i + 4], {}, 1
    if not tonumber(A[i + 1]) or not k or k < 1 or not body then
      return redis.error_reply('ERR bad group operation at field ' .. i)
    end
    for _ = 1, k do
      local _s, e, id, to, o, note = string.find(body, GPART, pos)
      if not e or (e < #body and string.byte(body, e + 1) ~= 30) then
        return redis.error_reply('ERR bad part at byte ' .. pos .. ' of field ' .. (i + 4))
      end
      P[#P + 1] = id; P[#P + 1] = to; P[#P + 1] = o; P[#P + 1] = note
      pos = e + 2
    end
    if pos <= #body then return redis.error_reply('ERR more parts than ' .. k) end
    groups[i] = P
    i = i + 5
  elseif op == 'L' then
    for j = i + 2, i + 5 do
      if not tonumber(A[j]) then
        return redis.error_reply('ERR bad lease operation at field ' .. i)
      end
    end
    i = i + 6
  elseif op == 'c' or op == 'r' or op == 'C' or op == 'R' then
    ids[#ids + 1] = A[i + 1]
    i = i + 3
  elseif op == 'x' then
    if not tonumber(A[i + 3]) then return redis.error_reply('ERR bad parts at field ' .. i) end
    i = i + 4
  elseif op == 'e' then
    if MONEY[A[i + 1]] then
      return redis.error_reply('ERR ' .. A[i + 1] .. ' is recorded by the ledger itself')
    end
    i = i + 4
  else
    return redis.error_reply('ERR unknown batch operation ' .. tostring(op))
  end
end
if i ~= #A + 1 then return redis.error_reply('ERR truncated batch') end
-- every check passed: from here on the call writes
if ARGV[6] and ARGV[6] ~= '' then
  if redis.call('HSETNX', K_CALLS, ARGV[6], '1') == 0 then return '=' end
  redis.call('HEXPIRE', K_CALLS, tonumber(ARGV[7]) or 3600, 'FIELDS', 1, ARGV[6])
end
-- ids A[first..last] include one already open or repeated?
local function dup(first, last)
  local seen = {}
  for j = first, last do
    local id = A[j]
    if res[id] or seen[id] then return true end
    seen[id] = true
  end
  return false
end
-- one reservation per part of A[first..last], journaled; b: the balance before -> after
local function reserve_parts(first, last, price, b, note)
  local v = fmt(price) .. ':' .. NOW
  for j = first, last do
    b = b - price
    res_set(A[j], v)
    res_amt[A[j]] = price
    journal('reserved', A[j], 1, price, b, note)
  end
  stat('submitted', last - first + 1)
  stat('reserved', last - first + 1)
  return b
end
res_load(ids)
local opted = {}
chunks(numbers, function(c)
  local r = redis.call('SMISMEMBER', K_OPTOUT, unpack(c))
  for j, number in ipairs(c) do opted[number] = (r[j] == 1) end
end)
local out = {}
i = 1
while i <= #A do
  local op = A[i]
  if op == 'a' or op == 'v' or op == 'f' then
    local price, number, to, n = tonumber(A[i + 1]), A[i + 2], A[i + 3], tonumber(A[i + 4])
    local first, last = i + 5, i + 4 + n
    if to == '' then to = number end
    local note = (to ~= '') and ('to=' .. to) or ''
    i = last + 1
    local free = balance()
    lease_load()
    local b = free + LT
    local code = 0
    if number ~= '' and opted[number] then
      code = -3
    elseif free < price * n then
      code = -1
      if op == 'a' and LT > 0 and b >= price * n then code = -4 end
    elseif dup(first, last) then
      code = -2
    end
    if code == 0 then
      b = reserve_parts(first, last, price, b, note)
      bal = free - price * n
    elseif code ~= -2 and code ~= -4 and op ~= 'v' then
      local reason = (code == -3) and 'optout' or 'insufficient_balance'
      stat('submitted', n)
      stat('rejected:' .. reason, n)
      local reason_note = reason
      if note ~= '' then reason_note = reason .. ' ' .. note end
      for j = first, last do journal('rejected', A[j], 1, 0, b, reason_note) end
    end
    out[#out + 1] = code .. ':' .. fmt(b)
  elseif op == 'l' then
    local price, node, to, n = tonumber(A[i + 1]), A[i + 2], A[i + 3], tonumber(A[i + 4])
    local first = i + 5
    local note = (to ~= '') and ('to=' .. to) or ''
    i = first + n
    lease_load()
    local cur = leases[node]
    local own = cur and cur[1] or 0
    local need = price * n
    local from_lease = math.min(own, need)
    local free = balance()
    local b = free + LT
    if need - from_lease > free then
      out[#out + 1] = '-1:' .. fmt(b)
    else
      lease_set(node, own - from_lease)
      bal = free - (need - from_lease)
      reserve_parts(first, i - 1, price, b, note)
      out[#out + 1] = ''
    end
  elseif op == 'g' then
    local price, node, P = tonumber(A[i + 1]), A[i + 2], groups[i]
    i = i + 5
    lease_load()
    local cur = leases[node]
    local own0 = cur and cur[1] or 0
    local own, free = own0, balance()
    local b = free + LT
    local missing, done = {}, 0
    for j = 1, #P, 4 do
      if own >= price or free >= price then
        if own >= price then own = own - price else free = free - price end
        local id, to, note = P[j], P[j + 1], P[j + 3]
        local pre = (to ~= '') and 'to=' or ''
        b = b - price
        done = done + 1
        -- both records of the part in one string.format
        if P[j + 2] == 'C' then
          n_com = n_com + 1
          a_com = a_com + price
          jrec[#jrec + 1] = string.format(
            '%s|reserved|1|%d|%d|%d:%s|%d:%s%s\n%s|committed|1|%d|%d|%d:%s|%d:%s',
            NOW, price, b, #id, id, #pre + #to, pre, to, NOW, price, b, #id, id, #note, note)
        else
          n_ref = n_ref + 1
          a_ref = a_ref + price
          free = free + price
          jrec[#jrec + 1] = string.format(
            '%s|reserved|1|%d|%d|%d:%s|%d:%s%s\n%s|refunded|1|%d|%d|%d:%s|%d:%s',
            NOW, price, b, #id, id, #pre + #to, pre, to, NOW, price, b + price, #id, id,
            #note, note)
          b = b + price
        end
      else
        missing[#missing + 1] = P[j]
      end
    end
    if own ~= own0 then lease_set(node, own) end
    bal = free
    if done > 0 then
      stat('submitted', done)
      stat('reserved', done)
    end
    out[#out + 1] = (#missing == 0) and '' or ('-1:' .. table.concat(missing, ' '))
  elseif op == 'L' then
    local node, price, want = A[i + 1], tonumber(A[i + 2]), tonumber(A[i + 3])
    local ttl, release = tonumber(A[i + 4]), tonumber(A[i + 5])
    i = i + 6
    lease_load()
    local cur = leases[node]
    local own = cur and cur[1] or 0
    local rel = math.max(0, math.min(release, own))
    local free = balance() + rel
    local g = 0
    if want > 0 and price > 0 then
      local half = math.floor(free / 2)
      g = math.min(want, half - half % price)
      if g < price then g = 0 end
    end
    bal = free - g
    own = own - rel + g
    if g > 0 then lease_set(node, own, NOW + ttl) else lease_set(node, own) end
    out[#out + 1] = fmt(g) .. ':' .. fmt(bal)
  elseif op == 'c' or op == 'r' then
    out[#out + 1] = fmt(settle(op, A[i + 1], A[i + 2]))
    i = i + 3
  elseif op == 'C' or op == 'R' then
    out[#out + 1] = (settle((op == 'C') and 'c' or 'r', A[i + 1], A[i + 2]) < 0) and '-1' or ''
    i = i + 3
  elseif op == 'x' then
    local reason, id, parts = A[i + 1], A[i + 2], tonumber(A[i + 3])
    stat('submitted', parts)
    stat('rejected:' .. reason, parts)
    journal('rejected', id, parts, 0, jbal(), reason)
    out[#out + 1] = fmt(stat_total('rejected:' .. reason))
    i = i + 4
  else
    local event, id, note = A[i + 1], A[i + 2], A[i + 3]
    journal(event, id, 1, 0, jbal(), note)
    out[#out + 1] = '0'
    i = i + 4
  end
end
finish()
return table.concat(out, ',')
"""

_TOPUP = r"""
-- ARGV[5] amount (> 0), ARGV[6] note -> balance after
local amount = int_arg(5)
if type(amount) == 'table' then return amount end
if amount <= 0 then return redis.error_reply('ERR top-up amount must be > 0') end
bal = balance() + amount
stat('topup', amount)
journal('topup', '', 1, amount, jbal(), ARGV[6])
finish()
return jbal()
"""

_ADJUST = r"""
-- ARGV[5] signed delta, ARGV[6] note -> {0, balance after} | {-1, balance} (would go < 0)
local delta = int_arg(5)
if type(delta) == 'table' then return delta end
local b = balance()
if b + delta < 0 then return {-1, b} end
bal = b + delta
stat('adjust', delta)
journal('adjust', '', 1, delta, jbal(), ARGV[6])
finish()
return {0, jbal()}
"""

_REFUND_ALL = r"""
-- ARGV[5] note -> the amount taken out (the balance before, leases included: a node whose
-- lease is gone charges the free balance, which is now 0); open reservations stay open
local b = jbal()
bal = 0
for node, _ in pairs(leases) do lease_set(node, 0) end
stat('refund_all', b)
journal('refund_all', '', 1, b, 0, ARGV[5])
finish()
return b
"""

_SWEEP = r"""
-- ARGV[5] cutoff (ms), ARGV[6] max count, ARGV[7] note -> flat {msg_id, amount, ...}
local cutoff, max = tonumber(ARGV[5]), tonumber(ARGV[6])
-- leases of nodes that stopped renewing them (crashed) go back to the free balance
lease_load()
for node, v in pairs(leases) do
  if v[2] <= tonumber(NOW) then bal = balance() + v[1]; lease_set(node, 0) end
end
local all = redis.call('HGETALL', K_RES)
local out = {}
for k = 1, #all, 2 do
  if #out >= 2 * max then break end
  local id, v = all[k], all[k + 1]
  local ts = tonumber(string.match(v, ':(%d+)$') or '0')
  if ts <= cutoff then
    res[id] = v
    res_orig[id] = v
    local amount = settle('r', id, ARGV[7])
    out[#out + 1] = id
    out[#out + 1] = amount
  end
end
finish()
return out
"""

_BALANCE = r"""
-- -> the account's balance: the free balance plus every node's lease
return jbal()
"""

SCRIPTS: dict[str, str] = {name: _PRELUDE + body for name, body in (
    ("batch", _BATCH), ("topup", _TOPUP), ("adjust", _ADJUST),
    ("refund_all", _REFUND_ALL), ("sweep", _SWEEP), ("balance", _BALANCE))}
SHAS: dict[str, str] = {name: hashlib.sha1(src.encode("utf-8")).hexdigest()
                        for name, src in SCRIPTS.items()}


# --- keys and arguments, shared with the synchronous admin client -------------------------

def day_of(ts: float) -> str:
    """The day (local time) whose stats and journal keys an event at `ts` goes to."""
    return time.strftime("%Y%m%d", time.localtime(ts))


def balance_key(account: str) -> str:
    return "bal:{%s}" % account


def reservations_key(account: str) -> str:
    return "res:{%s}" % account


def stats_key(account: str, day: str) -> str:
    return "stats:{%s}:%s" % (account, day)


def journal_key(account: str, day: str) -> str:
    return "journal:{%s}:%s" % (account, day)


def jhead_key(account: str) -> str:
    return "jhead:{%s}" % account


def lease_key(account: str) -> str:
    return "lease:{%s}" % account


def account_keys(account: str, day: str) -> list[str]:
    """KEYS of every ledger script, in order."""
    t = "{%s}" % account
    return ["bal:" + t, "res:" + t, "stats:%s:%s" % (t, day), "journal:%s:%s" % (t, day),
            "jhead:" + t, "optout:" + t, "lease:" + t, "calls:" + t]


def script_call(account: str, now: float, day: str, *extra: Any,
                retention_days: int = RETENTION_DAYS) -> tuple[list[str], list[Any]]:
    """(KEYS, ARGV) for a ledger script; `extra` are the script's own arguments."""
    return (account_keys(account, day),
            [account, int(now * 1000), day, int(retention_days * 86400), *extra])


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


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _int(x: Any) -> int:
    return int(x) if x is not None else 0


# --- the Twisted side -----------------------------------------------------------------------

# kinds of queued operations
_ADMIT, _RESERVE, _SETTLE, _COUNT, _EVENT, _LEASED, _LEASE = range(7)
_SEP = "\x1f"  # between the fields of the packed operations of a batch
# (and \x1e, \x1d between the parts of a group and their fields)
_SEPS = str.maketrans("\x1d\x1e\x1f", "   ")


def _field(s: str) -> str:
    """A text field of a packed operation (no separator can occur in it)."""
    return s if s.isprintable() else s.translate(_SEPS)


def _pack(*fields: Any) -> str:
    return _SEP.join([str(f) for f in fields])


class Ledger:
    """Balance operations of all accounts over one `Store`."""

    def __init__(self, store: Store | None, reactor: Any = None,
                 day_of: Callable[[float], str] = day_of, batch_max: int = 500,
                 retention_days: int = RETENTION_DAYS, node: str = "",
                 lease_parts: int = 0, lease_ttl_s: float = 30.0,
                 lease_idle_s: float = 0.5, record_delay_s: float = 0.005,
                 retry_for_s: float = 5.0, optout_mirror: Any = None) -> None:
        """`store` may be None until `attach` (calls fail with StoreUnavailable till then).

        `lease_parts` > 0 turns balance leases on: this node takes up to that many parts'
        worth of balance at a time (`lease_ttl_s`, renewed with every refill, returned when
        unused for `lease_idle_s`), admits messages against it without waiting for the
        store and writes their reservations within `record_delay_s` (sooner when their
        outcome comes first). `node` names this process's lease (default: host, pid and a
        random suffix)."""
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.reactor = reactor
        self.day_of = day_of
        self.batch_max = batch_max
        self.retention_days = retention_days
        # account -> [(kind, packed op, target, info)], sent once per reactor turn
        self._queue: dict[str, list[tuple[int, tuple, Any, Any]]] = {}
        self._flush_call: Any = None
        self._flush_urgent = False
        self.node = node or "%s:%d:%s" % (socket.gethostname(), os.getpid(),
                                          os.urandom(3).hex())
        self.lease_parts = lease_parts
        self.lease_ttl_s = lease_ttl_s
        self.lease_idle_s = lease_idle_s
        self.record_delay_s = record_delay_s
        self.retry_for_s = retry_for_s
        # account -> [remaining, usable until, last use, refill below]
        self._leases: dict[str, list] = {}
        self._lease_asking: dict[str, defer.Deferred] = {}
        self._lease_backoff: dict[str, float] = {}
        self._tick_call: Any = None
        # msg_id of a lease reservation being sent again after a store failure -> settles
        # held until it is recorded. (Otherwise the order is kept: every batch goes over
        # the same connection, `Store.evalsha(ordered=True)`.)
        self._l_wait: dict[str, list] = {}
        # messages admitted on the lease whose reservation is queued, not yet sent; an
        # outcome that comes meanwhile is written with the reservation (a group item, op
        # 'g'), not as an operation of its own. account -> those entries [price, to, ids,
        # parts, queued at, parts without an outcome (-1: the reservation was written
        # alone), account]; parts[k]: the group item "id\x1dto\x1dC|R\x1dnote" once the
        # outcome came
        self._lq: dict[str, list] = {}
        # msg_id -> its entry, for `settle` by id (the relay settles through the entry)
        self._lpend: dict[str, list] = {}
        self._closing = False   # release_leases was called: nothing waits any more
        self._oq: dict[str, list] = {}
        # calls that failed and are sent again (same token, so never done twice):
        # [(account, token, operations)], and when to give each token up
        self._retries: list[tuple[str, str, list]] = []
        self._giveup: dict[str, float] = {}
        self._calls = 0
        self.token_ttl_s = int(max(60.0, 4 * lease_ttl_s))
        self._oq_call: Any = None
        # proxyd.store.optout.OptOutMirror: opt-out answers without a store call
        self.optout_mirror: Any = optout_mirror
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

    def _args(self, account: str, *extra: Any) -> tuple[list[str], list[Any]]:
        now = self.reactor.seconds()
        return script_call(account, now, self.day_of(now), *extra,
                           retention_days=self.retention_days)

    def _call(self, name: str, account: str, *extra: Any) -> defer.Deferred:
        keys, args = self._args(account, *extra)
        try:
            return self._store().evalsha(name, keys, args)
        except StoreUnavailable as e:
            return defer.fail(e)

    def _execute(self, *args: Any) -> defer.Deferred:
        try:
            return self._store().execute(*args)
        except StoreUnavailable as e:
            return defer.fail(e)

    # -- the per-turn batch ---------------------------------------------------------------

    def _queue_op(self, account: str, kind: int, args: str, target: Any,
                  info: Any = None, urgent: bool = True) -> None:
        if kind == _SETTLE and info in self._l_wait:
            # its reservation is on its way: settled after it (a pool does not keep order)
            self._l_wait[info].append((account, kind, args, target, info))
            return
        q = self._queue.get(account)
        if q is None:
            q = self._queue[account] = []
        q.append((kind, args, target, info))
        if self._flush_call is None:
            self._flush_urgent = urgent
            self._flush_call = self.reactor.callLater(0 if urgent else self.record_delay_s,
                                                      self.flush)
        elif urgent and not self._flush_urgent:
            self._flush_call.cancel()
            self._flush_urgent = True
            self._flush_call = self.reactor.callLater(0, self.flush)

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
        carried: dict[str, list] = {}
        for account in (list(pending) + [a for a in lq if a not in pending]) if lq else pending:
            queued = pending.get(account, [])
            leased: list = []
            if account in lq:
                leased, keep = self._leased_ops(lq[account])
                if keep:
                    carried[account] = keep
            # commits and refunds in a second call after the rest: the admits' answers are
            # what the relay waits for before relaying (kept in one call, in order, when
            # one settles a message admitted in this same turn); the records of messages
            # admitted on a lease go in that second call too
            waited = False      # does anyone wait for an answer in this batch?
            for q in queued:
                if q[0] == _ADMIT or q[0] == _RESERVE:
                    waited = True
                    break
            if waited:
                firsts, rest = queued, []
                settles = [q for q in queued if q[0] == _SETTLE]
                if 0 < len(settles) < len(queued):
                    f = [q for q in queued if q[0] != _SETTLE]
                    admitted = {m for q in f if q[0] == _ADMIT for m in q[3][0]}
                    admitted.update(q[3][0] for q in f if q[0] == _RESERVE)
                    if not any(q[3] in admitted for q in settles):
                        firsts, rest = f, settles
                items, n_first = firsts + leased + rest, len(firsts)
            else:
                items = queued + leased if leased else queued
                n_first = len(items)
            for i in self._cuts(len(items), n_first):
                chunk = items[i[0]:i[1]]
                token = ""
                for c in chunk:
                    if c[0] == _SETTLE or c[0] == _LEASED:  # may be sent again: a token
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

    def _send(self, account: str, chunk: list, token: str) -> None:
        ops = _SEP.join([c[1] for c in chunk])
        if token:
            keys, argv = self._args(account, ops, token, self.token_ttl_s)
        else:
            keys, argv = self._args(account, ops)
        try:
            d = self._store().evalsha("batch", keys, argv, ordered=True)
        except StoreUnavailable as e:
            d = defer.fail(e)
        d.addCallbacks(self._done, self._failed, callbackArgs=(chunk, account, token),
                       errbackArgs=(chunk, account, token))

    def _leased_ops(self, entries: list) -> tuple[list, list]:
        """The queued records of messages admitted on the lease as packed operations: the
        parts whose outcome came meanwhile in one 'g' per price (reserved and settled
        together); the others, when queued for `record_delay_s` already (or the node is
        closing), as 'l' followed by the settles that did come, else kept for the next
        flush (returned second)."""
        out: list = []
        keep: list = []
        # (the timer fires record_delay_s after the first of them was queued: not kept)
        young = -1.0 if self._closing else \
            self.reactor.seconds() - self.record_delay_s * 0.999
        groups: dict[int, tuple[list, list]] = {}     # price -> (items, ids)
        for e in entries:
            if not e[5]:
                g = groups.get(e[0])
                if g is None:
                    g = groups[e[0]] = ([], [])
                if len(e[3]) == 1:
                    g[0].append(e[3][0])
                    g[1].append(e[2][0])
                else:
                    g[0].extend(e[3])
                    g[1].extend(e[2])
            elif e[4] > young:
                keep.append(e)
            else:
                price, to, ids, parts = e[0], e[1], e[2], e[3]
                e[5] = -1           # written: an outcome that comes now is settled apart
                out.append((_LEASED, "l\x1f%d\x1f%s\x1f%s\x1f%d\x1f%s" % (
                    price, self.node, to, len(ids), _SEP.join(ids)), None, ids))
                for m, part in zip(ids, parts):
                    if part is None:
                        self._lpend.pop(m, None)
                    else:
                        _m, _to, o, note = part.split("\x1d", 3)
                        out.append((_SETTLE, o + _SEP + m + _SEP + note, None, m))
        for price, (items, ids) in groups.items():
            out.insert(0, (_LEASED, "g\x1f%d\x1f%s\x1f%d\x1f%s" % (
                price, self.node, len(items), "\x1e".join(items)), None, ids))
        return out, keep

    def _cuts(self, n: int, split: int) -> list[tuple[int, int]]:
        """[start, end) of the calls for `n` queued operations: a cut at `split` (the end
        of the admits) and every `batch_max`."""
        out = []
        for lo, hi in ((0, split), (split, n)):
            for i in range(lo, hi, self.batch_max):
                out.append((i, min(i + self.batch_max, hi)))
        return out

    def _done(self, reply: Any, chunk: list, account: str, token: str) -> None:
        results = _text(reply).split(",")
        if self._giveup:
            self._giveup.pop(token, None)
        if results == ["="]:
            # a call sent again whose first attempt had been done: nothing more to do
            for kind, _args, target, info in chunk:
                if kind == _LEASED:
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
        for (kind, args, target, info), r in zip(chunk, results):
            if not r:       # a lease reservation or an unanswered settle, done: the bulk
                if l_wait and kind == _LEASED:
                    self._release_held(info)
                continue
            try:
                if kind == _ADMIT:
                    code, _, bal = r.partition(":")
                    if code == "-4":
                        self._retry_admit(account, args, target, info)
                    else:
                        target(int(code), int(bal))
                elif kind == _LEASED:
                    if r:
                        log.error("ledger: {account}: parts {ids} were relayed on this "
                                  "node's lease, which the store no longer had (swept or "
                                  "refunded): not charged ({r})", account=account,
                                  ids=r[3:].replace(" ", ",") if args[0] == "g"
                                  else ",".join(info), r=r)
                    self._release_held(info)
                elif kind == _LEASE:
                    self._leased(account, r, target, info)
                elif kind == _SETTLE:
                    if target is not None:
                        n = int(r)
                        target.callback(n if n >= 0 else None)
                elif kind == _RESERVE:
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

    def _failed(self, f: Any, chunk: list, account: str, token: str) -> None:
        log.warn("ledger: batch of {n} operations of {account} failed: {err}", n=len(chunk),
                 account=account, err=f.getErrorMessage())
        # the store is in trouble: admit against it again, not against a lease it may lose
        self._leases.pop(account, None)
        now = self.reactor.seconds()
        retry = None
        if token and not f.check(txredisapi.ResponseError):
            # money records of parts already relayed (and maybe answered OK): sent again
            # (the same token: if the call that failed was done after all, the store does
            # nothing twice) until the store is back, while the lease still holds their
            # money in the store
            if now < self._giveup.setdefault(token, now + self.lease_ttl_s / 2):
                retry = []
            else:
                del self._giveup[token]
        for kind, args, target, info in chunk:
            try:
                if retry is not None and kind in (_LEASED, _SETTLE):
                    retry.append((kind, args, target, info))
                    if kind == _LEASED:     # its settles wait for it from now on
                        for m in info:
                            self._l_wait.setdefault(m, [])
                    continue
                if kind == _ADMIT:
                    target(-9, 0)
                elif kind == _LEASED:
                    log.warn("ledger: {account}: the reservations of {ids} (relayed on this "
                             "node's lease) were not recorded", account=account,
                             ids=",".join(info))
                    self._release_held(info)
                elif kind == _LEASE:
                    self._lease_asking.pop(account, None)
                    self._lease_backoff[account] = self.reactor.seconds() + 1.0
                    if target is not None:
                        target.errback(f)
                elif target is not None:
                    target.errback(f)
                elif kind == _SETTLE:
                    log.warn("ledger: {account}: {op} of {id} not recorded: {err} (an open "
                             "reservation is refunded by the sweeper)", account=account,
                             op="commit" if args[0] in "cC" else "refund", id=info,
                             err=f.getErrorMessage())
            except Exception:
                log.failure("ledger: callback of a failed batched operation failed")
        if retry:
            self.reactor.callLater(0.5, self._requeue, account, token, retry)

    def _requeue(self, account: str, token: str, ops: list) -> None:
        self._retries.append((account, token, ops))
        if self._flush_call is None:
            self._flush_urgent = True
            self._flush_call = self.reactor.callLater(0, self.flush)

    # -- leases ---------------------------------------------------------------------------

    def _release_held(self, ids: Sequence[str]) -> None:
        if not self._l_wait:
            return
        for m in ids:
            for account, kind, args, target, info in self._l_wait.pop(m, ()):
                self._queue_op(account, kind, args, target, info)

    def _ask_lease(self, account: str, price: int, release: int = 0,
                   want: int | None = None) -> defer.Deferred:
        """Queue a lease refill (or, with want=0, a return of `release`)."""
        d: defer.Deferred = defer.Deferred()
        if want is None:
            want = price * self.lease_parts
            self._lease_asking[account] = d
        self._queue_op(account, _LEASE, "L\x1f%s\x1f%d\x1f%d\x1f%d\x1f%d" % (
            self.node, price, want, int(self.lease_ttl_s * 1000), release), d,
            (self.reactor.seconds(), want, price))
        return d

    def _leased(self, account: str, r: str, target: Any, info: Any) -> None:
        sent_at, want, price = info
        granted = int(r.partition(":")[0])
        if want:
            self._lease_asking.pop(account, None)
            if granted:
                lz = self._leases.get(account)
                if lz is None:
                    lz = self._leases[account] = [0, 0.0, self.reactor.seconds(), 0]
                lz[0] += granted
                # stop using it well before the store may take it back
                lz[1] = sent_at + self.lease_ttl_s * 0.8
                lz[3] = granted // 2
                if self._tick_call is None:
                    self._tick_call = self.reactor.callLater(self.lease_idle_s / 2,
                                                             self._tick)
            else:
                self._lease_backoff[account] = self.reactor.seconds() + 1.0
        if target is not None:
            target.callback(granted)

    def _tick(self) -> None:
        """Return leases unused for `lease_idle_s` or about to expire."""
        self._tick_call = None
        now = self.reactor.seconds()
        for account, lz in list(self._leases.items()):
            if now - lz[2] >= self.lease_idle_s or now >= lz[1]:
                self._drop_lease(account)
        if self._leases:
            self._tick_call = self.reactor.callLater(self.lease_idle_s / 2, self._tick)

    def _drop_lease(self, account: str) -> defer.Deferred | None:
        lz = self._leases.pop(account, None)
        if lz is None or lz[0] <= 0:
            return None
        return self._ask_lease(account, 1, release=lz[0], want=0)

    def release_leases(self) -> defer.Deferred:
        """Give every lease of this node back (at shutdown). Deferred: when the store has
        them (errors are logged)."""
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        self._closing = True
        ds = [d for d in (self._drop_lease(a) for a in list(self._leases)) if d is not None]
        for d in ds:
            d.addErrback(lambda f: log.warn("ledger: a lease was not returned: {err} (the "
                                            "sweeper returns it when it expires)",
                                            err=f.getErrorMessage()))
        return defer.gatherResults(ds)

    def _retry_admit(self, account: str, args: str, cb: Any, info: Any) -> None:
        """The free balance is short but other nodes hold leases: ask again soon, then
        once more as final (an answer either way)."""
        ids, first = info
        if self.reactor.seconds() - first < self.retry_for_s:
            self.reactor.callLater(0.02, self._queue_op, account, _ADMIT, args, cb, info)
        else:
            self._queue_op(account, _ADMIT, "f" + args[1:], cb, info)

    # -- per message ----------------------------------------------------------------------

    def admit(self, account: str, msg_ids: list[str], price: int, number: str,
              cb: Callable[[int, int], None], to: str = "") -> None:
        """Opt-out check and reservation of one message (one msg_id per part, `price` each)
        in one atomic step, batched with the other operations of this reactor turn: one
        EVALSHA per account and turn. cb(code, balance): 0 reserved, -1 insufficient
        balance, -3 `number` opted out (both counted and journaled as rejected), -2
        duplicate id; on a store failure cb(-9, 0). The reserved records of the parts carry
        the note "to=<to or number>" (for ``proxyd-admin trace --to``)."""
        ids = _SEP.join(msg_ids)
        if ids.count(_SEP) != len(msg_ids) - 1 or not msg_ids:
            raise ValueError("bad message ids")
        number, to = _field(number), _field(to)
        if self.lease_parts > 0:
            entry = self.admit_leased(account, msg_ids, price, number, to)
            if entry is not None:
                for m in msg_ids:       # (settled by id: `settle`)
                    self._lpend[m] = entry
                cb(0, self._leases[account][0])
                return
            need = price * len(msg_ids)
            lz = self._leases.get(account)
            now = self.reactor.seconds()
            if lz is not None and lz[0] >= need and now < lz[1]:
                # the number is opted out, or its list is not in memory
                if self.optout_mirror is not None and self.optout_mirror.opted(account,
                                                                              number):
                    # refused, counted and journaled by the store
                    self._queue_op(account, _ADMIT, "a\x1f%d\x1f%s\x1f%s\x1f%d\x1f%s" % (
                        price, number, to, len(msg_ids), ids), cb, (msg_ids, now))
                    return
                lz[0] -= need
                lz[2] = now
                if lz[0] < lz[3] and account not in self._lease_asking:
                    self._ask_lease(account, price)
                self._optout_then(account, number, msg_ids, price, cb, to)
                return
            if lz is not None:      # too little left, or expiring: give it back first
                self._drop_lease(account)
            if account not in self._lease_asking and now >= self._lease_backoff.get(account, 0):
                self._ask_lease(account, price)
        self._queue_op(account, _ADMIT, "a\x1f%d\x1f%s\x1f%s\x1f%d\x1f%s" % (
            price, number, to, len(msg_ids), ids), cb, (msg_ids, self.reactor.seconds()))

    def admit_leased(self, account: str, msg_ids: list[str], price: int, number: str,
                     to: str = "") -> list | None:
        """`admit`, done at once if it can be: on this node's lease, with the opt-out answer
        in memory (or no `number` to check). The record of the message (for
        `settle_leased`), or None: not possible (then `admit` it). `msg_ids` are plain (no
        control characters: proxyd's own ids)."""
        lz = self._leases.get(account)
        if lz is None:
            return None
        n = len(msg_ids)
        need = price * n
        now = self.reactor.seconds()
        if lz[0] < need or now >= lz[1]:
            return None
        if number:
            mirror = self.optout_mirror
            if mirror is None:
                return None
            known = mirror.sets.get(account)    # (OptOutMirror.opted, inlined: per message)
            if known is None or number in known:
                return None
        lz[0] -= need
        lz[2] = now
        if lz[0] < lz[3] and account not in self._lease_asking:
            self._ask_lease(account, price)
        to = to or number
        if not to.isprintable():
            to = to.translate(_SEPS)
        return self._queue_leased(account, price, to, msg_ids, now)

    def _queue_leased(self, account: str, price: int, to: str, msg_ids: list[str],
                      now: float) -> list:
        """Queue the reservation of a message admitted on the lease: written within
        `record_delay_s`, with the outcomes that come meanwhile. Its record (the entry)."""
        entry = [price, to, msg_ids, [None] * len(msg_ids), now, len(msg_ids), account]
        q = self._lq.get(account)
        if q is None:
            q = self._lq[account] = []
        q.append(entry)
        if self._flush_call is None:
            self._flush_urgent = False
            self._flush_call = self.reactor.callLater(self.record_delay_s, self.flush)
        return entry

    def _optout_then(self, account: str, number: str, msg_ids: list[str], price: int,
                     cb: Callable[[int, int], None], to: str) -> None:
        """A message admitted on the lease whose destination must be checked against the
        opt-out list first (batched: one SMISMEMBER per account and turn)."""
        q = self._oq.get(account)
        if q is None:
            q = self._oq[account] = []
            if self._oq_call is None:
                self._oq_call = self.reactor.callLater(0, self._flush_optout)
        q.append((number, msg_ids, price, cb, to))

    def _flush_optout(self) -> None:
        self._oq_call = None
        pending, self._oq = self._oq, {}
        for account, items in pending.items():
            numbers = list(dict.fromkeys(it[0] for it in items))
            d = self._execute("SMISMEMBER", "optout:{%s}" % account, *numbers)
            d.addCallbacks(self._optout_done, self._optout_failed,
                           callbackArgs=(account, numbers, items),
                           errbackArgs=(account, items))

    def _optout_done(self, reply: Any, account: str, numbers: list, items: list) -> None:
        opted = {n for n, r in zip(numbers, reply) if int(r)}
        lz = self._leases.get(account)
        for number, msg_ids, price, cb, to in items:
            try:
                if number in opted:
                    # give the lease its money back; the admit counts and journals the
                    # refusal exactly as without a lease
                    if lz is not None:
                        lz[0] += price * len(msg_ids)
                    self._queue_op(account, _ADMIT, "a\x1f%d\x1f%s\x1f%s\x1f%d\x1f%s" % (
                        price, number, to, len(msg_ids), _SEP.join(msg_ids)), cb,
                        (msg_ids, self.reactor.seconds()))
                else:
                    entry = self._queue_leased(account, price, to or number, msg_ids,
                                               self.reactor.seconds())
                    for m in msg_ids:       # (settled by id: `settle`)
                        self._lpend[m] = entry
                    cb(0, lz[0] if lz is not None else 0)
            except Exception:
                log.failure("ledger: callback of an admit failed")

    def _optout_failed(self, f: Any, account: str, items: list) -> None:
        log.warn("ledger: opt-out check of {account} failed: {err}", account=account,
                 err=f.getErrorMessage())
        lz = self._leases.get(account)
        for _number, msg_ids, price, cb, _to in items:
            if lz is not None:
                lz[0] += price * len(msg_ids)
            try:
                cb(-9, 0)
            except Exception:
                log.failure("ledger: callback of an admit failed")

    def reserve(self, account: str, msg_id: str, parts: int, price: int) -> defer.Deferred:
        """Take parts*price from the balance for `msg_id` (one reservation of the whole
        amount). Deferred[int]: the balance after. Errbacks InsufficientBalance,
        DuplicateReservation, StoreUnavailable. A refusal is not counted: the caller
        does that with `count_rejected`."""
        d: defer.Deferred = defer.Deferred()
        parts, price = int(parts), int(price)
        self._queue_op(account, _RESERVE, _pack("v", parts * price, "", "", 1, _field(msg_id)),
                       d, (msg_id, parts * price))
        return d

    def commit(self, account: str, msg_id: str, note: str = "") -> defer.Deferred:
        """Settle a reservation as charged. Deferred[int | None]: the amount, or None if
        there was no open reservation (unknown or already settled). The relay's note:
        ``up=<upstream name> id=<upstream message id>``."""
        d: defer.Deferred = defer.Deferred()
        self._queue_op(account, _SETTLE, "c\x1f%s\x1f%s" % (_field(msg_id), _field(note)), d,
                       msg_id)
        return d

    def settle(self, account: str, msg_id: str, note: str, commit: bool) -> None:
        """`commit` or `refund` without an answer (the relay's: cheaper). A store failure is
        logged, and the record is sent again while the store is away; a reservation left
        open in the end is refunded by the sweeper ("outcome unknown")."""
        # with leases the reservation itself is written within record_delay_s: its
        # outcome goes with it when it is still queued, else in the same kind of call
        entry = self._lpend.pop(msg_id, None)
        if entry is not None and entry[5] >= 0:
            self.settle_leased(entry, entry[2].index(msg_id), note, commit)
            return
        self._queue_op(account, _SETTLE, "%s\x1f%s\x1f%s" % (
            "C" if commit else "R", _field(msg_id), _field(note)), None, msg_id,
            urgent=self.lease_parts <= 0)

    def settle_leased(self, entry: list, i: int, note: str, commit: bool) -> None:
        """`settle` part `i` of a message `admit_leased` took (`entry`: what it returned):
        written with the part's reservation as one group item, or apart (`settle`) if the
        reservation went first."""
        if entry[5] < 0:
            self._queue_op(entry[6], _SETTLE, "%s\x1f%s\x1f%s" % (
                "C" if commit else "R", entry[2][i], _field(note)), None, entry[2][i],
                urgent=False)
            return
        if not note.isprintable():
            note = note.translate(_SEPS)
        entry[3][i] = "%s\x1d%s\x1d%s\x1d%s" % (entry[2][i], entry[1], "C" if commit else "R",
                                                 note)
        entry[5] -= 1

    def refund(self, account: str, msg_id: str, note: str = "") -> defer.Deferred:
        """Give a reservation back. Deferred[int | None]: the amount refunded, or None if
        there was no open reservation (so refunding twice is harmless)."""
        d: defer.Deferred = defer.Deferred()
        self._queue_op(account, _SETTLE, "r\x1f%s\x1f%s" % (_field(msg_id), _field(note)), d,
                       msg_id)
        return d

    def count_rejected(self, account: str, reason: str, msg_id: str = "",
                       parts: int = 1) -> defer.Deferred:
        """Count (and journal) a message refused before charging, `parts` parts.
        Deferred[int]: today's count (parts) for that reason."""
        d: defer.Deferred = defer.Deferred()
        self._queue_op(account, _COUNT, _pack("x", _field(reason), _field(msg_id),
                                               int(parts)), d)
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
        self._queue_op(account, _EVENT, _pack("e", _field(event), _field(msg_id),
                                               _field(note)), d)
        return d

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
        """Deferred[int]: the balance in fen (0 for an account never topped up): the free
        balance plus what nodes hold on lease."""
        return self._call("balance", account).addCallback(_int)

    def days(self, account: str) -> defer.Deferred:
        """Deferred[list[str]]: the days that have a journal, oldest first."""
        return self._execute("HKEYS", jhead_key(account)).addCallback(
            lambda r: sorted(_text(x) for x in r or []))

    @defer.inlineCallbacks
    def entries(self, account: str, limit: int = 50) -> Any:
        """Deferred[list[dict]]: the last `limit` money records of the journal (fields
        time, op, amount, balance_after, msg_id, note), newest first."""
        out: list[dict[str, str]] = []
        for day in reversed((yield self.days(account))):
            end = "+"
            while len(out) < limit:
                reply = yield self._execute("XREVRANGE", journal_key(account, day), end,
                                            "-", "COUNT", 500)
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
            return {_text(flat[i]): int(_text(flat[i + 1]).split(":")[0])
                    for i in range(0, len(flat), 2)}
        return self._execute("HGETALL", reservations_key(account)).addCallback(done)

    def stats(self, account: str, day: str | None = None) -> defer.Deferred:
        """Deferred[dict[str, int]]: the day's counters (default: today)."""
        day = day or self.day_of(self.reactor.seconds())

        def done(flat: list) -> dict[str, int]:
            return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return self._execute("HGETALL", stats_key(account, day)).addCallback(done)

    @defer.inlineCallbacks
    def journal(self, account: str, day: str | None = None) -> Any:
        """Deferred[list[Record]]: the day's journal records, oldest first."""
        day = day or self.day_of(self.reactor.seconds())
        out: list[J.Record] = []
        start = "-"
        while True:
            reply = yield self._execute("XRANGE", journal_key(account, day), start, "+",
                                        "COUNT", 10000)
            recs = J.records_from_stream(reply, account, day)
            out += recs
            if len(reply or ()) < 10000:        # entries, not records
                return out
            start = "(" + recs[-1].id

    def journal_head(self, account: str, day: str) -> defer.Deferred:
        """Deferred[str | None]: the h of the day's last record as the scripts left it."""
        return self._execute("HGET", jhead_key(account), day).addCallback(
            lambda r: _text(r) if r is not None else None)

    # -- sweeping -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def accounts_with_reservations(self) -> Any:
        """Accounts that have open reservations or leases (found with SCAN; single server
        only)."""
        found: set[str] = set()
        for prefix in ("res:", "lease:"):
            cursor = "0"
            while True:
                reply = yield self._execute("SCAN", cursor, "MATCH", prefix + "{*}",
                                            "COUNT", 1000)
                cursor, keys = _text(reply[0]), reply[1]
                for k in keys:
                    k = _text(k)
                    found.add(k[len(prefix) + 1:-1])
                if cursor == "0":
                    break
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
                                         UNKNOWN_OUTCOME,
                                         retention_days=self.retention_days)
                flat = yield self._store().evalsha("sweep", keys, args)
                for i in range(0, len(flat), 2):
                    settled.append((account, _text(flat[i]), int(flat[i + 1])))
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
