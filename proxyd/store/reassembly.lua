-- One part of a concatenated MO (proxyd.delivery.mo) for a mo_url. (A client's long
-- message is kept by the ledger's hold.lua, which also pays for it with its first part.)
-- KEYS[1] the message's parts: hash  seq -> value, "t" -> first seen (ms), "n" -> total,
--                                     "c" -> data_coding
-- KEYS[2] the callback index (hcb:{A}), KEYS[3] the callback data (hcbd:{A})
-- ARGV    seq, value, total, now_ms, ttl_s, data_coding, callback id, callback prefix
--         (settings JSON, newline, the facts JSON without its closing brace): the whole
--         MO is queued as ONE callback in the same step as its last part, its facts
--         completed with "hexparts": "seq:hex,..."
-- -> {0, n}        stored, n parts so far
--    {1, "seq:hex,..."}  complete: the parts (the hash deleted, the callback queued)
--    {2, n}        duplicate: that seq is already there (nothing changed)
--    {3, total}    conflicting total: the parts so far said another total
--    {4, coding}   mixed codings: the parts so far have another data_coding
if redis.call('HSETNX', KEYS[1], 't', ARGV[4]) == 1 then
  redis.call('HSET', KEYS[1], 'n', ARGV[3], 'c', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
else
  local total = redis.call('HGET', KEYS[1], 'n')
  if total ~= ARGV[3] then return {3, total or ''} end
  local coding = redis.call('HGET', KEYS[1], 'c')
  if coding ~= ARGV[6] then return {4, coding or ''} end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return {2, redis.call('HLEN', KEYS[1]) - 3}
end
local n = redis.call('HLEN', KEYS[1]) - 3
if n < tonumber(ARGV[3]) then return {0, n} end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
local parts = {}
for i = 1, #all, 2 do
  if tonumber(all[i]) then parts[#parts + 1] = all[i] .. ':' .. all[i + 1] end
end
local hp = table.concat(parts, ',')
redis.call('HSET', KEYS[3], ARGV[7], ARGV[8] .. ',"hexparts":"' .. hp .. '"}')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[7])
return {1, hp}
