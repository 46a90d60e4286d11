"""Everything shared between proxyd processes, on a Redis-compatible server.

    client.py    Store: txredisapi pool, a timeout on every call, StoreUnavailable, EVALSHA
    ledger.py    Ledger: prepaid balances, reservations, journal (Lua); LedgerSweeper
    embedded.py  EmbeddedServer: a local valkey-server under <store.dir>, shared by the
                 processes of one machine; start_blocking for synchronous tools

`StoreService` puts them together from a `StoreConfig` for the node's service tree::

    store = StoreService(cfg.store, reactor)
    store.setServiceParent(node)
    relay = Relay(..., ledger=store.ledger)      # usable at once; calls made before the
                                                 # store is up fail with StoreUnavailable
"""
from __future__ import annotations

from typing import Any, Sequence

from twisted.application import service
from twisted.internet import defer

from proxyd.store.client import Store, StoreError, StoreUnavailable, target_for
from proxyd.store.embedded import EmbeddedServer
from proxyd.store.ledger import InsufficientBalance, Ledger, LedgerSweeper

__all__ = ["StoreService", "Store", "StoreError", "StoreUnavailable", "Ledger",
           "InsufficientBalance", "EmbeddedServer"]


class StoreService(service.MultiService):
    """The embedded server (if ``url = "embedded"``), the connection pool, the ledger and
    its sweeper. ``ledger`` exists from construction; the pool is opened in startService."""

    name = "store"

    def __init__(self, cfg: Any, reactor: Any = None,
                 sweep_accounts: Sequence[str] | None = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.cfg = cfg
        self.reactor = reactor
        self.store: Store | None = None
        self.ledger = Ledger(None, reactor)
        self.embedded: EmbeddedServer | None = None
        if cfg.url == "embedded":
            self.embedded = EmbeddedServer(cfg.dir, cfg.appendfsync, reactor=reactor)
            self.embedded.setServiceParent(self)
        self.sweeper = LedgerSweeper(self.ledger, cfg.reservation_max_age_s,
                                     cfg.sweep_interval_s, accounts=sweep_accounts,
                                     reactor=reactor)
        self.sweeper.setServiceParent(self)

    def startService(self) -> None:
        self.store = Store.lazy(target_for(self.cfg), self.cfg.pool_size, self.cfg.timeout_s,
                                self.reactor)
        self.ledger.attach(self.store)
        super().startService()

    def whenReady(self) -> defer.Deferred:
        """Deferred[Ledger]: fires once the store has a live connection."""
        if self.store is None:
            return defer.fail(StoreUnavailable("the store service is not started"))
        d = self.embedded.whenReady() if self.embedded is not None else defer.succeed(None)
        store = self.store
        return d.addCallback(lambda _: store.whenConnected()).addCallback(
            lambda _: self.ledger)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        # the pool first (so it does not reconnect in a loop), then the server
        if self.store is not None:
            yield self.store.disconnect()
        yield super().stopService()
