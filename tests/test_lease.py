"""Balance leases (issue 3's throughput): a node admits against a block of balance it took
from the store, records the reservations afterwards, gives the block back when idle, and a
crashed node's block comes back through the sweeper. Real embedded Valkey."""
from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, reactor, task

from proxyd.store import journal as J
from proxyd.store.ledger import Ledger, lease_key
from tests.test_store import LedgerTestBase, wait_until
from tests.valkey_fixture import valkey_class, valkey_socket  # noqa: F401


def admit(ledger: Ledger, account: str, ids: list[str], price: int = 5,
          number: str = "") -> tuple[list, defer.Deferred]:
    """Start an admit; (answers so far, Deferred of the final (code, balance))."""
    got: list = []
    d: defer.Deferred = defer.Deferred()

    def cb(code: int, bal: int) -> None:
        got.append(code)
        d.callback((code, bal))
    ledger.admit(account, ids, price, number, cb)
    return got, d


@pytest.mark.usefixtures("valkey_class")
class TestLease(LedgerTestBase):

    def node(self, name: str, **kw: Any) -> Ledger:
        args = dict(lease_parts=10, lease_ttl_s=30.0, lease_idle_s=0.3,
                    record_delay_s=0.005)
        args.update(kw)
        led = Ledger(self.store, reactor, node=name, **args)
        self.addCleanup(led.release_leases)
        return led

    @defer.inlineCallbacks
    def report(self, led: Ledger) -> Any:
        recs = yield led.journal(self.a)
        day = led.day_of(reactor.seconds())
        stats = yield led.stats(self.a)
        head = yield led.journal_head(self.a, day)
        res = yield led.reservations(self.a)
        return J.build_report(self.a, 5, [day], {day: recs}, {day: stats}, res,
                              heads={day: head})

    @defer.inlineCallbacks
    def test_admits_on_the_lease_without_waiting_and_records_them(self) -> Any:
        led = self.node("n1")
        yield led.topup(self.a, 1000)
        got, d = admit(led, self.a, ["m0"])
        self.assertEqual(got, [])               # the first one goes to the store
        self.assertEqual((yield d)[0], 0)
        yield wait_until(lambda: self.a in led._leases, "the lease")
        leased = yield self.store.execute("HGET", lease_key(self.a), "n1")
        self.assertTrue(leased.startswith("50:"), leased)   # 10 parts x 5
        # the next ones are answered at once, before any store call
        answers = [admit(led, self.a, ["m%d" % i])[0] for i in range(1, 6)]
        self.assertEqual(answers, [[0]] * 5)
        # the balance (free + leases) is the same as without a lease, and the reservations
        # and the journal follow within record_delay_s
        yield wait_until(lambda: led.reservations(self.a).addCallback(len).addCallback(
            lambda n: n == 6), "six reservations")
        self.assertEqual((yield led.balance(self.a)), 1000 - 6 * 5)
        for i in range(6):
            led.settle(self.a, "m%d" % i, "up=sim id=%d" % i, i % 2 == 0)
        yield wait_until(lambda: led.reservations(self.a).addCallback(lambda r: not r),
                         "settled")
        self.assertEqual((yield led.balance(self.a)), 1000 - 3 * 5)
        rep = yield self.report(led)
        self.assertTrue(rep.ok, rep.failures)
        self.assertEqual((rep.accepted, rep.upstream_refused, rep.charged), (3, 3, 15))

    @defer.inlineCallbacks
    def test_an_idle_lease_goes_back(self) -> Any:
        led = self.node("n1", lease_idle_s=0.2)
        yield led.topup(self.a, 1000)
        yield admit(led, self.a, ["m0"])[1]
        yield wait_until(lambda: self.a in led._leases, "the lease")
        yield wait_until(lambda: self.store.execute("HLEN", lease_key(self.a)).addCallback(
            lambda n: n == 0), "the lease returned")
        self.assertEqual(int((yield self.store.execute("GET", "bal:{%s}" % self.a))), 995)
        self.assertNotIn(self.a, led._leases)

    @defer.inlineCallbacks
    def test_two_nodes_spend_exactly_the_balance(self) -> Any:
        """Leases never strand money: with 40 parts paid, two nodes admitting 100 messages
        each get exactly 40 admitted between them, and the balance ends at 0."""
        nodes = [self.node("n1"), self.node("n2")]
        yield nodes[0].topup(self.a, 40 * 5)
        finals = []
        for i in range(100):
            for k, led in enumerate(nodes):
                finals.append(admit(led, self.a, ["n%d-%d" % (k, i)])[1])
            yield task.deferLater(reactor, 0.001, lambda: None)
        codes = [c for c, _ in (yield defer.gatherResults(finals))]
        self.assertEqual(codes.count(0), 40, codes)
        self.assertEqual(codes.count(-1), 160)
        yield wait_until(lambda: nodes[0].reservations(self.a).addCallback(
            lambda r: len(r) == 40), "40 reservations recorded")
        self.assertEqual((yield nodes[0].balance(self.a)), 0)
        rep = yield self.report(nodes[0])
        self.assertTrue(rep.ok, rep.failures)
        self.assertEqual(rep.refused.get("insufficient_balance"), 160)

    @defer.inlineCallbacks
    def test_a_crashed_nodes_lease_is_swept_back(self) -> Any:
        led = self.node("dead", lease_ttl_s=0.5)
        yield led.topup(self.a, 1000)
        yield admit(led, self.a, ["m0"])[1]
        yield wait_until(lambda: self.a in led._leases, "the lease")
        led._leases.clear()                     # the process is gone: nothing returns it
        self.assertEqual((yield led.balance(self.a)), 995)
        yield task.deferLater(reactor, 0.6, lambda: None)
        yield led.sweep(1000.0, accounts=[self.a])
        self.assertEqual((yield self.store.execute("HLEN", lease_key(self.a))), 0)
        self.assertEqual(int((yield self.store.execute("GET", "bal:{%s}" % self.a))), 995)
        self.assertEqual((yield led.balance(self.a)), 995)
