-- Take an expired message's parts. KEYS[1] the parts hash, KEYS[2] the index, KEYS[3] the
-- account's pending parts (hash "p" parts, "b" octets: what the taken parts free).
-- -> every field of the hash (deleted), or {} when another node took it first
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
local parts, octets = 0, 0
for j = 1, #all, 2 do
  if tonumber(all[j]) then parts = parts + 1; octets = octets + #all[j + 1] end
end
if parts > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'p', -parts)
  redis.call('HINCRBY', KEYS[3], 'b', -octets)
end
return all
