-- -> the account's balance: the free balance plus every node's lease
return jbal()
