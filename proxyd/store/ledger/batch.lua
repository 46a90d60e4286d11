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
LOW = 'charge'    -- the low-balance notice (prelude.lua)
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
    -- reason, or "reason detail" (content: the term and its variant class, journal only)
    local note, id, parts = A[i + 1], A[i + 2], tonumber(A[i + 3])
    local reason = string.match(note, '^[^ ]*')
    stat('submitted', parts)
    stat('rejected:' .. reason, parts)
    journal('rejected', id, parts, 0, jbal(), note)
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
