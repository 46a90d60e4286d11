-- ARGV[5] note -> the amount taken out (the balance before, leases included: a node whose
-- lease is gone charges the free balance, which is now 0); open reservations stay open
local b = jbal()
bal = 0
for node, _ in pairs(leases) do lease_set(node, 0) end
stat('refund_all', b)
journal('refund_all', '', 1, b, 0, ARGV[5])
finish()
return b
