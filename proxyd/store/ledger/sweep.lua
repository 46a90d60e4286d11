-- ARGV[5] max age (ms), ARGV[6] max count, ARGV[7] note, ARGV[8] (optional) ahead (ms):
-- sweep as the store's clock will be that much later (tests, admin) -> flat {msg_id, amount, ...}
-- Ages and expiries are measured on the store's clock (NOW), never a node's.
local max = tonumber(ARGV[6])
local now = tonumber(NOW) + (tonumber(ARGV[8] or '0') or 0)
local cutoff = now - tonumber(ARGV[5])
-- leases of nodes that stopped renewing them (crashed) go back to the free balance
lease_load()
for node, v in pairs(leases) do
  if v[2] <= now then bal = balance() + v[1]; lease_set(node, 0) end
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
