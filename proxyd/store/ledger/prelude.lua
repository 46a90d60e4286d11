local K_BAL, K_RES, K_STATS, K_JOURNAL, K_JHEAD, K_OPTOUT, K_LEASE, K_CALLS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_LOW, K_HCB, K_HCBD = KEYS[9], KEYS[10], KEYS[11]
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
-- the low-balance notice (proxyd.lowbalance): a script that charges sets LOW = 'charge', a
-- top-up or adjustment LOW = 'rearm'. K_LOW holds the threshold t (0 = off), the notice's
-- url, and low = '1' once notified: the first charge that leaves the balance (free +
-- leases) below t queues one callback in hcb/hcbd (the durable callback queue) and sets
-- it; a top-up or adjustment that brings the balance back to t or more clears it.
local LOW = nil
local function low_check()
  local v = redis.call('HMGET', K_LOW, 't', 'low', 'url')
  local t = tonumber(v[1] or '0') or 0
  if t <= 0 then return end
  local b = jbal()
  if LOW == 'charge' then
    if b < t and v[2] ~= '1' then
      local n = redis.call('HINCRBY', K_LOW, 'n', 1)
      redis.call('HSET', K_LOW, 'low', '1', 'at', NOW, 'bal', fmt(b))
      local id = 'low:' .. NOW .. ':' .. n
      redis.call('HSET', K_HCBD, id, cjson.encode({api = 'notify', url = v[3] or '',
        acct = ACCT}) .. '\n' .. cjson.encode({ev = 'low', bal = b, low = t,
        t = math.floor(tonumber(NOW) / 1000), n = n}))
      redis.call('ZADD', K_HCB, NOW, id)
    end
  elseif b >= t and v[2] == '1' then
    redis.call('HSET', K_LOW, 'low', '0')
  end
end
local function finish()
  if LOW ~= nil and K_LOW ~= nil and (bal ~= nil or leases ~= nil) then low_check() end
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
