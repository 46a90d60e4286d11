-- One part of a long message sent as separate parts.
-- KEYS[1] the message's parts: hash  seq -> value, "t" -> first seen (ms), "n" -> total,
--                                     "c" -> data_coding
-- KEYS[2] the index of open messages (zset scored by first seen)
-- ARGV    seq, value, total, now_ms, ttl_s, data_coding
-- -> {0, n}        stored, n parts so far
--    {1, flat}     complete: every field of the hash (the hash is deleted)
--    {2, n}        duplicate: that seq is already there (nothing changed)
--    {3, total}    conflicting total: the parts so far said another total
--    {4, coding}   mixed codings: the parts so far have another data_coding
local first = redis.call('HSETNX', KEYS[1], 't', ARGV[4])
if first == 1 then
  redis.call('HSET', KEYS[1], 'n', ARGV[3], 'c', ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
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
if n >= tonumber(ARGV[3]) then
  local all = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return {1, all}
end
return {0, n}
