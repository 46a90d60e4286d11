-- Take an expired message's parts. KEYS[1] the parts hash, KEYS[2] the index.
-- -> every field of the hash (deleted), or {} when another node took it first
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return all
