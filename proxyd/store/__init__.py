"""Everything shared between proxyd processes, on a Redis-compatible server.

    client.py    Store: txredisapi pool, a timeout on every call, StoreUnavailable, EVALSHA
    ledger/      Ledger: prepaid balances, reservations, the hash-chained journal (Lua);
                 LedgerSweeper
    journal.py   journal records, verification, trace and reconciliation reports
    embedded.py  EmbeddedServer: a local valkey-server under <store.dir>, shared by the
                 processes of one machine; start_blocking for synchronous tools
    optout.py, concat.py, receipts.py, messages.py: opt-out sets, long-message parts,
                 the receipt map and delivery queues, message states and HTTP callbacks

`proxyd.service.ProxydService` puts them together (one place): the embedded server first,
the pool once it answers, then the ledger, the sweeper and the listeners.
"""
