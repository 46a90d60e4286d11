-- ARGV[5] amount (> 0), ARGV[6] note -> balance after
LOW = 'rearm'     -- the low-balance notice (prelude.lua)
local amount = int_arg(5)
if type(amount) == 'table' then return amount end
if amount <= 0 then return redis.error_reply('ERR top-up amount must be > 0') end
bal = balance() + amount
stat('topup', amount)
journal('topup', '', 1, amount, jbal(), ARGV[6])
finish()
return jbal()
