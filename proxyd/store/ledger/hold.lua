-- One part of a client's long message sent as separate parts (proxyd.gate.reassembly), kept
-- and paid for in one atomic step. The first part of a message (the one that creates its
-- parts hash) is kept only if the free balance covers the WHOLE message: one reservation
-- per part (total x price) is made then, under the ids of all its parts, so that no unpaid
-- part is ever parked in the store. The completed message is relayed on those
-- reservations (the gate settles them: committed, or refunded when refused or failed);
-- an incomplete one is refunded when it expires ("incomplete").
-- KEYS[n-2] the message's parts: hash  seq -> "<command id>:<base64 body>",
--          "t" -> first seen (ms), "n" -> total, "c" -> data_coding, "i" -> the ids, by seq
-- KEYS[n-1] the index of open messages (zset scored by first seen)
-- KEYS[n]  the account's pending parts: hash "p" -> parts kept, "b" -> octets kept
-- ARGV[5..] seq, value, total, ttl_s, data_coding, price, number (opt-out check, '' none),
--          to (the reservations' note), max pending parts, max pending octets, held until
--          (ms: the reservations' time, for the ledger sweeper), final (1: never answer 7),
--          ids (total ids, ',' between them: used by the first part only)
-- -> {0, ids}      kept; ids: the message's ids (the part's own is the seq-th)
--    {1, flat}     complete: every field of the hash (deleted)
--    {2, n}        duplicate: that seq is already there (nothing changed)
--    {3, total}    conflicting total: the parts so far said another total
--    {4, coding}   mixed codings: the parts so far have another data_coding
--    {5, "p:b"}    over the account's cap of pending parts or octets (nothing changed)
--    {6, balance}  first part, destination opted out (counted and journaled as rejected)
--    {7, balance}  first part, the free balance is short but leases could cover it
--                  (nothing recorded: ask again when they have been returned)
--    {8, balance}  first part, insufficient balance (counted and journaled as rejected)
-- Under a full store (maxmemory, noeviction) the first write of a part to keep (an HSET)
-- is refused, so the call fails having changed nothing (a script that has written is never
-- stopped midway); the last part of a message writes nothing new (it deletes the hash
-- first), so a message whose first parts were kept still completes.
-- (its own keys are the last three, after the account's: `keys.account_keys` may grow)
local K_PARTS, K_INDEX, K_PEND = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]
local seq, value, total_s, ttl, coding = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local total, price = tonumber(total_s), tonumber(ARGV[10])
local number, to = ARGV[11], ARGV[12]
local max_p, max_b, held = tonumber(ARGV[13]), tonumber(ARGV[14]), ARGV[15]
local final, idlist = ARGV[16] == '1', ARGV[17]
if not total or not price or not max_p or not max_b or not tonumber(seq) then
  return redis.error_reply('ERR bad hold arguments')
end
local h = redis.call('HMGET', K_PARTS, 'n', 'c', 'i', seq)
local first = h[1] == false
if not first then
  if h[1] ~= total_s then return {3, h[1]} end
  if h[2] ~= coding then return {4, h[2] or ''} end
  if h[4] then return {2, redis.call('HLEN', K_PARTS) - 4} end
end
-- the caps bound what stays kept: a part that completes its message is never refused
local kept = first and 0 or (redis.call('HLEN', K_PARTS) - 4)
if kept + 1 < total then
  local pend = redis.call('HMGET', K_PEND, 'p', 'b')
  local p, b = tonumber(pend[1] or '0'), tonumber(pend[2] or '0')
  if p + 1 > max_p or b + #value > max_b then return {5, fmt(p) .. ':' .. fmt(b)} end
end
local ids = h[3]
if first then
  local n_ids = 0
  for _ in string.gmatch(idlist, '[^,]+') do n_ids = n_ids + 1 end
  if n_ids ~= total then
    return redis.error_reply('ERR ' .. n_ids .. ' ids for ' .. total .. ' parts')
  end
  local note = (to ~= '') and ('to=' .. to) or ''
  local function refuse(reason)
    stat('submitted', 1)
    stat('rejected:' .. reason, 1)
    if note ~= '' then reason = reason .. ' ' .. note end
    journal('rejected', '', 1, 0, jbal(), reason)
    finish()
  end
  if number ~= '' and redis.call('SISMEMBER', K_OPTOUT, number) == 1 then
    refuse('optout')
    return {6, fmt(jbal())}
  end
  local need = price * total
  local free = balance()
  lease_load()
  if free < need then
    if not final and LT > 0 and free + LT >= need then return {7, fmt(free + LT)} end
    refuse('insufficient_balance')
    return {8, fmt(free + LT)}
  end
  -- the first write (denied on a full store: then nothing at all is written)
  redis.call('HSET', K_PARTS, 't', NOW, 'n', total_s, 'c', coding, 'i', idlist)
  redis.call('ZADD', K_INDEX, NOW, K_PARTS)
  redis.call('EXPIRE', K_PARTS, ttl)
  -- one reservation per part, timed when the message is due (not swept before)
  local v, jb = fmt(price) .. ':' .. held, free + LT
  for id in string.gmatch(idlist, '[^,]+') do
    res[id] = false; res_orig[id] = false
    res_set(id, v)
    jb = jb - price
    journal('reserved', id, 1, price, jb, note)
  end
  bal = free - need
  stat('submitted', total)
  stat('reserved', total)
  LOW = 'charge'
  finish()
  ids = idlist
end
if kept + 1 < total then
  redis.call('HSET', K_PARTS, seq, value)
  redis.call('HINCRBY', K_PEND, 'p', 1)
  redis.call('HINCRBY', K_PEND, 'b', #value)
  redis.call('EXPIRE', K_PEND, ttl)
  return {0, ids}
end
-- complete: this part is not written (so a full store completes a message too: the DEL
-- frees memory), and the parts kept before it leave the account's pending counters
local all = redis.call('HGETALL', K_PARTS)
redis.call('DEL', K_PARTS)
redis.call('ZREM', K_INDEX, K_PARTS)
local octets = 0
for j = 1, #all, 2 do
  if tonumber(all[j]) then octets = octets + #all[j + 1] end
end
all[#all + 1] = seq
all[#all + 1] = value
if kept > 0 and redis.call('EXISTS', K_PEND) == 1 then
  redis.call('HINCRBY', K_PEND, 'p', -kept)
  redis.call('HINCRBY', K_PEND, 'b', -octets)
end
return {1, all}
