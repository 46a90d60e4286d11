"""The ledger's way to the store: the scripts registered, the calls' keys and arguments,
StoreUnavailable as a failed Deferred."""
from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer

from proxyd.store.client import Store, StoreUnavailable
from proxyd.store.ledger.keys import script_call
from proxyd.store.ledger.scripts import SCRIPTS


class StoreAccess:
    """One `Store` (None until `attach`: calls fail with StoreUnavailable till then)."""

    def __init__(self, reactor: Any, day_of: Callable[[float], str],
                 retention_days: int) -> None:
        self.reactor = reactor
        self.day_of = day_of
        self.retention_days = retention_days
        self.store: Store | None = None

    def attach(self, store: Store) -> None:
        """Use `store` from now on."""
        for name, src in SCRIPTS.items():
            store.register_script(name, src)
        self.store = store

    def get(self) -> Store:
        if self.store is None:
            raise StoreUnavailable("the store is not started")
        return self.store

    def args(self, account: str, *extra: Any) -> tuple[list[str], list[Any]]:
        """(KEYS, ARGV) of a script call for `account` now."""
        now = self.reactor.seconds()
        return script_call(account, now, self.day_of(now), *extra,
                           retention_days=self.retention_days)

    def evalsha(self, name: str, keys: list[str], argv: list[Any],
                ordered: bool = False) -> defer.Deferred:
        try:
            return self.get().evalsha(name, keys, argv, ordered=ordered)
        except StoreUnavailable as e:
            return defer.fail(e)

    def call(self, name: str, account: str, *extra: Any) -> defer.Deferred:
        """Run script `name` for `account` now, with its own arguments `extra`."""
        keys, argv = self.args(account, *extra)
        return self.evalsha(name, keys, argv)

    def execute(self, *args: Any) -> defer.Deferred:
        try:
            return self.get().execute(*args)
        except StoreUnavailable as e:
            return defer.fail(e)


def text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
