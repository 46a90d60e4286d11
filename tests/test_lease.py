"""Balance leases (issue 3's throughput): a node admits against a block of balance it took
from the store, records the reservations afterwards, gives the block back when idle, and a
crashed node's block comes back through the sweeper. Real embedded Valkey."""
from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, reactor, task

from proxyd.store import journal as J
from proxyd.store.client import StoreError
from proxyd.store.ledger import Ledger, lease_key
from tests.procs import wait_until
from tests.test_store import LedgerTestBase
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

    def record_batches(self, calls: list[str]) -> None:
        """Append the packed operations of every batch call to `calls` (still made)."""
        real = self.store.evalsha

        def spy(name: str, keys: Any, args: Any, ordered: bool = False) -> Any:
            if name == "batch":
                calls.append(args[4])
            return real(name, keys, args, ordered=ordered)
        self.patch(self.store, "evalsha", spy)

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
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
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
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
        yield wait_until(lambda: self.store.execute("HLEN", lease_key(self.a)).addCallback(
            lambda n: n == 0), "the lease returned")
        self.assertEqual(int((yield self.store.execute("GET", "bal:{%s}" % self.a))), 995)
        self.assertNotIn(self.a, led.leases.held)

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
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
        led.leases.held.clear()                     # the process is gone: nothing returns it
        self.assertEqual((yield led.balance(self.a)), 995)
        yield task.deferLater(reactor, 0.6, lambda: None)
        yield led.sweep(1000.0, accounts=[self.a])
        self.assertEqual((yield self.store.execute("HLEN", lease_key(self.a))), 0)
        self.assertEqual(int((yield self.store.execute("GET", "bal:{%s}" % self.a))), 995)
        self.assertEqual((yield led.balance(self.a)), 995)

    @defer.inlineCallbacks
    def test_outcomes_that_come_first_are_written_with_the_reservation(self) -> Any:
        led = self.node("n1", record_delay_s=0.05)
        yield led.topup(self.a, 1000)
        yield admit(led, self.a, ["m0"])[1]            # to the store; takes the lease
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
        calls: list[str] = []
        self.record_batches(calls)
        # a one-part message settled before its reservation is written, and a three-part
        # one with only two of its outcomes in time
        self.assertEqual(admit(led, self.a, ["s1"])[0], [0])
        self.assertEqual(admit(led, self.a, ["p1", "p2", "p3"])[0], [0])
        led.settle(self.a, "s1", "up=sim id=U1", True)
        led.settle(self.a, "p1", "up=sim id=U2", True)
        led.settle(self.a, "p3", "up=sim status=ESME_RTHROTTLED", False)
        yield wait_until(lambda: len(calls) >= 1, "the records")
        ops = calls[0].split("\x1f")
        # s1 reserved and settled in one group; p1-p3 reserved, then p1's and p3's settles
        self.assertEqual(ops, ["g", "5", "n1", "1", "s1\x1d\x1dC\x1dup=sim id=U1",
                               "l", "5", "n1", "", "3", "p1", "p2", "p3",
                               "C", "p1", "up=sim id=U2",
                               "R", "p3", "up=sim status=ESME_RTHROTTLED"])
        led.settle(self.a, "p2", "up=sim id=U3", True)          # after: a call of its own
        yield wait_until(lambda: led.reservations(self.a).addCallback(
            lambda r: set(r) == {"m0"}), "all settled but m0")
        self.assertEqual((yield led.balance(self.a)), 1000 - 4 * 5)
        recs = yield led.journal(self.a)
        self.assertEqual([(r.event, r.msg_id) for r in recs if r.msg_id[:1] in ("s", "p")], [
            ("reserved", "s1"), ("committed", "s1"), ("reserved", "p1"), ("reserved", "p2"),
            ("reserved", "p3"), ("committed", "p1"), ("refunded", "p3"), ("committed", "p2")])
        rep = yield self.report(led)
        self.assertTrue(rep.ok, rep.failures)

    @defer.inlineCallbacks
    def test_a_call_whose_answer_was_lost_is_not_done_twice(self) -> Any:
        """The store did the call but its answer never came (a timeout, a dropped
        connection): the records are sent again, and the store does not take the money
        twice."""
        led = self.node("n1")
        yield led.topup(self.a, 1000)
        yield admit(led, self.a, ["m0"])[1]
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
        real = self.store.evalsha
        lost: list[str] = []

        def lose_first(name: str, keys: Any, args: Any, ordered: bool = False) -> Any:
            d = real(name, keys, args, ordered=ordered)
            if name == "batch" and not lost:
                lost.append(args[5])        # the token
                d.addCallback(lambda _: defer.fail(StoreError("timed out")))
            return d
        self.patch(self.store, "evalsha", lose_first)
        self.assertEqual(admit(led, self.a, ["x1"])[0], [0])
        self.assertEqual(admit(led, self.a, ["x2"])[0], [0])
        led.settle(self.a, "x1", "up=sim id=U1", True)
        yield wait_until(lambda: lost, "the first call")
        led.settle(self.a, "x2", "up=sim id=U2", True)     # held until x2 is on record
        yield wait_until(lambda: led.reservations(self.a).addCallback(
            lambda r: set(r) == {"m0"}), "x1 and x2 settled")
        self.assertEqual((yield led.balance(self.a)), 1000 - 3 * 5)
        recs = yield led.journal(self.a)
        self.assertEqual([(r.event, r.msg_id) for r in recs if r.msg_id[:1] == "x"], [
            ("reserved", "x1"), ("committed", "x1"), ("reserved", "x2"), ("committed", "x2")])
        self.assertEqual((yield self.store.execute("HEXISTS", "calls:{%s}" % self.a,
                                                   lost[0])), 1)
        rep = yield self.report(led)
        self.assertTrue(rep.ok, rep.failures)

    @defer.inlineCallbacks
    def test_a_reservation_waits_for_its_outcome_up_to_record_delay(self) -> Any:
        """A call sent sooner for something else (here a refusal that is counted) does not
        take the reservation of a message still waiting for its outcome: it goes later,
        with the outcome, as one group item."""
        led = self.node("n1", record_delay_s=0.5, lease_idle_s=10.0)
        yield led.topup(self.a, 1000)
        yield admit(led, self.a, ["m0"])[1]
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
        calls: list[str] = []
        self.record_batches(calls)
        self.assertEqual(admit(led, self.a, ["w1"])[0], [0])
        yield led.count_rejected(self.a, "content", "", 1)      # a call of its own, now
        self.assertEqual([c.split("\x1f")[0] for c in calls], ["x"])
        led.settle(self.a, "w1", "up=sim id=U1", True)
        yield wait_until(lambda: len(calls) == 2, "the record of w1")
        self.assertEqual(calls[1], "g\x1f5\x1fn1\x1f1\x1fw1\x1d\x1dC\x1dup=sim id=U1")
        self.assertEqual((yield led.balance(self.a)), 1000 - 2 * 5)
        # one whose outcome does not come in time is written alone (within two delays)
        self.assertEqual(admit(led, self.a, ["w2"])[0], [0])
        yield wait_until(lambda: led.reservations(self.a).addCallback(
            lambda r: "w2" in r), "w2's reservation", deadline_s=5.0)
        self.assertEqual(calls[2], "l\x1f5\x1fn1\x1f\x1f1\x1fw2")
        led.settle(self.a, "w2", "up=sim status=ESME_RTHROTTLED", False)
        yield wait_until(lambda: led.reservations(self.a).addCallback(
            lambda r: "w2" not in r), "w2 refunded")
        rep = yield self.report(led)
        self.assertTrue(rep.ok, rep.failures)

    @defer.inlineCallbacks
    def test_the_relays_own_path_admit_leased_and_settle_leased(self) -> Any:
        led = self.node("n1", record_delay_s=0.05, lease_idle_s=10.0)
        yield led.topup(self.a, 1000)
        self.assertIsNone(led.admit_leased(self.a, ["r0"], 5, ""))     # no lease yet
        yield admit(led, self.a, ["m0"])[1]
        yield wait_until(lambda: self.a in led.leases.held, "the lease")
        fast = led.admit_leased(self.a, ["r1"], 5, "")
        late = led.admit_leased(self.a, ["r2", "r3"], 5, "")
        self.assertIsNotNone(fast)
        self.assertIsNotNone(late)
        led.settle_leased(fast, 0, "up=sim id=U1", True)
        led.settle_leased(late, 1, "up=sim status=ESME_RTHROTTLED", False)
        # r2's outcome does not come in time: r2 and r3 are reserved alone, r3 refunded
        yield wait_until(lambda: led.reservations(self.a).addCallback(
            lambda r: set(r) == {"m0", "r2"}), "r2 open")
        led.settle_leased(late, 0, "up=sim id=U2", True)            # now apart
        yield wait_until(lambda: led.reservations(self.a).addCallback(
            lambda r: set(r) == {"m0"}), "r2 committed")
        self.assertEqual((yield led.balance(self.a)), 1000 - 3 * 5)
        recs = yield led.journal(self.a)
        self.assertEqual([(r.event, r.msg_id) for r in recs if r.msg_id[:1] == "r"], [
            ("reserved", "r1"), ("committed", "r1"), ("reserved", "r2"), ("reserved", "r3"),
            ("refunded", "r3"), ("committed", "r2")])
        rep = yield self.report(led)
        self.assertTrue(rep.ok, rep.failures)
