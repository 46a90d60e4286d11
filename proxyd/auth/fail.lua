-- One failed authentication: count it for the (address, account) and for the address.
-- KEYS[1] the (address, account) counter, KEYS[2] the address counter
-- ARGV[1] max failures per (address, account), ARGV[2] per address,
-- ARGV[3] window (ms): failures are forgotten this long after the last one,
-- ARGV[4] lockout (ms): from the failure that reaches the limit; later ones do not extend it.
-- Returns the two counts.
local function count(key, limit)
  local n = redis.call('INCR', key)
  if n < limit then
    redis.call('PEXPIRE', key, ARGV[3])
  elseif n == limit or redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, ARGV[4])
  end
  return n
end
return {count(KEYS[1], tonumber(ARGV[1])), count(KEYS[2], tonumber(ARGV[2]))}
