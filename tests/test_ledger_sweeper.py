"""LedgerSweeper on a TimerService: the first sweep one interval after the start (not at
once), then every interval; errors are logged and the timer keeps going. No store."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from proxyd.store.client import StoreUnavailable
from proxyd.store.ledger import LedgerSweeper


class FakeLedger:
    def __init__(self, clock: Clock) -> None:
        self.reactor = clock
        self.calls: list[tuple[float, Any]] = []
        self.answer: Any = [("acme", "m1", 10)]

    def sweep(self, max_age_s: float, accounts: Any = None) -> defer.Deferred:
        self.calls.append((max_age_s, accounts))
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


def test_sweeps_every_interval_from_one_interval_after_the_start() -> None:
    clock = Clock()
    led = FakeLedger(clock)
    s = LedgerSweeper(led, max_age_s=60, interval_s=10, accounts=["acme"])
    s.startService()
    assert led.calls == []                  # not at the start
    clock.advance(9.9)
    assert led.calls == []
    clock.advance(0.1)
    assert led.calls == [(60, ["acme"])]
    assert s.last == [("acme", "m1", 10)]
    led.answer = StoreUnavailable("down")   # logged; the timer goes on
    clock.advance(10)
    led.answer = []
    clock.advance(10)
    assert len(led.calls) == 3 and s.last == []
    s.stopService()
    clock.advance(100)
    assert len(led.calls) == 3
    s.startService()                        # a restart waits one interval again
    assert len(led.calls) == 3
    clock.advance(10)
    assert len(led.calls) == 4
    s.stopService()
