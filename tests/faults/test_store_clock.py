"""Issue 17, store clock: reservation ages and lease expiries are measured on the store's
clock (TIME inside the scripts), so two nodes whose clocks are 30 s apart never sweep each
other's live leases or young reservations, and an expired lease is taken back whatever the
sweeping node's clock says. Real embedded Valkey, in process (the real-process case with two
skewed twistd nodes is tests/faults/test_skew_nodes.py)."""
from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, reactor, task

from proxyd.store.clock import SKEW_ENV, apply_test_skew
from proxyd.store.ledger import Ledger, lease_key
from tests.procs import wait_until
from tests.test_lease import admit
from tests.test_store import LedgerTestBase
from tests.valkey_fixture import valkey_class, valkey_socket  # noqa: F401

SKEW_S = 30.0


class SkewedReactor:
    """The real reactor with a clock `skew` seconds off (what PROXYD_TEST_CLOCK_SKEW_S does
    to a whole node)."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def seconds(self) -> float:
        return reactor.seconds() + self.skew

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


@pytest.mark.usefixtures("valkey_class")
class TestStoreClock(LedgerTestBase):

    def node(self, name: str, skew: float, **kw: Any) -> Ledger:
        args = dict(lease_parts=10, lease_ttl_s=10.0, lease_idle_s=60.0,
                    record_delay_s=0.005)
        args.update(kw)
        led = Ledger(self.store, SkewedReactor(skew), node=name, **args)
        self.addCleanup(led.release_leases)
        return led

    @defer.inlineCallbacks
    def lease_of(self, node: str) -> Any:
        v = yield self.store.execute("HGET", lease_key(self.a), node)
        return v

    @defer.inlineCallbacks
    def test_a_node_30s_ahead_sweeps_neither_live_leases_nor_young_reservations(self) -> Any:
        behind, ahead = self.node("behind", -SKEW_S), self.node("ahead", +SKEW_S)
        yield behind.topup(self.a, 1000)
        self.assertEqual((yield admit(behind, self.a, ["b0"])[1])[0], 0)
        yield wait_until(lambda: self.a in behind.leases.held, "the lease of 'behind'")
        self.assertEqual((yield admit(ahead, self.a, ["a0"])[1])[0], 0)
        yield wait_until(lambda: self.a in ahead.leases.held, "the lease of 'ahead'")
        self.assertIsNotNone((yield self.lease_of("behind")))
        # each node sweeps with its own view: leases live for 10 s, reservations are kept
        # for 20 s; the nodes' clocks are 60 s apart, the store's clock says "just made"
        for led in (ahead, behind):
            settled = yield led.sweep(20.0, accounts=[self.a])
            self.assertEqual(settled, [])
        self.assertIsNotNone((yield self.lease_of("behind")))
        self.assertIsNotNone((yield self.lease_of("ahead")))
        self.assertEqual(set((yield behind.reservations(self.a))), {"b0", "a0"})
        # and what each node admits on its lease is recorded against its lease
        for i in range(1, 4):
            self.assertEqual(admit(behind, self.a, ["b%d" % i])[0], [0])
            self.assertEqual(admit(ahead, self.a, ["a%d" % i])[0], [0])
        yield wait_until(lambda: behind.reservations(self.a).addCallback(len).addCallback(
            lambda n: n == 8), "eight reservations")
        self.assertEqual((yield behind.balance(self.a)), 1000 - 8 * 5)

    @defer.inlineCallbacks
    def test_an_expired_lease_is_swept_by_a_node_30s_behind(self) -> Any:
        dead = self.node("dead", 0.0, lease_ttl_s=0.5)
        late = self.node("late", -SKEW_S)
        yield dead.topup(self.a, 1000)
        yield admit(dead, self.a, ["m0"])[1]
        yield wait_until(lambda: self.a in dead.leases.held, "the lease")
        dead.leases.held.clear()                    # the process is gone
        yield task.deferLater(reactor, 0.6, lambda: None)
        yield late.sweep(1000.0, accounts=[self.a])
        self.assertIsNone((yield self.lease_of("dead")))
        self.assertEqual(int((yield self.store.execute("GET", "bal:{%s}" % self.a))), 995)

    @defer.inlineCallbacks
    def test_journal_times_are_the_stores(self) -> Any:
        ahead = self.node("ahead", +SKEW_S, lease_parts=0)
        yield ahead.topup(self.a, 100)
        t = yield self.store.execute("TIME")
        store_ms = int(t[0]) * 1000 + int(t[1]) // 1000
        entries = yield ahead.entries(self.a, 1)
        self.assertLess(abs(int(entries[0]["time"]) - store_ms), 5000, entries[0])


def test_the_test_skew_comes_from_the_environment() -> None:
    class R:
        def seconds(self) -> float:
            return 100.0
    r = R()
    assert apply_test_skew(r, {}) == 0.0 and r.seconds() == 100.0
    assert apply_test_skew(r, {SKEW_ENV: "-30"}) == -30.0 and r.seconds() == 70.0
    with pytest.raises(ValueError, match=SKEW_ENV):
        apply_test_skew(R(), {SKEW_ENV: "soon"})
