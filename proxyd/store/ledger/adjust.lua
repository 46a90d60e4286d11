-- ARGV[5] signed delta, ARGV[6] note -> {0, balance after} | {-1, balance} (would go < 0)
LOW = 'rearm'     -- the low-balance notice (prelude.lua)
local delta = int_arg(5)
if type(delta) == 'table' then return delta end
local b = balance()
if b + delta < 0 then return {-1, b} end
bal = b + delta
stat('adjust', delta)
journal('adjust', '', 1, delta, jbal(), ARGV[6])
finish()
return {0, jbal()}
