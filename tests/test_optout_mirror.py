"""The in-memory copy of the opt-out sets (`OptOutMirror`): loaded on first use, kept current
by the changes every writer publishes, dropped (lookups go to the store) while the
subscription is down, reloaded after it. Real embedded Valkey."""
from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, reactor

from proxyd.store.ledger import Ledger
from proxyd.store.optout import OptOut, OptOutMirror, optout_key
from tests.test_lease import admit
from tests.procs import wait_until
from tests.test_store import LedgerTestBase
from tests.valkey_fixture import valkey_class, valkey_socket  # noqa: F401


@pytest.mark.usefixtures("valkey_class")
class TestOptOutMirror(LedgerTestBase):

    @defer.inlineCallbacks
    def mirror(self) -> Any:
        m = OptOutMirror(self.store, self.socket_path, reactor, reconnect_max_s=0.2)
        m.start()
        self.addCleanup(m.stop)
        yield wait_until(lambda: m.live, "subscribed")
        return m

    @defer.inlineCallbacks
    def test_loaded_on_first_use_and_kept_current(self) -> Any:
        writer = OptOut(self.store)             # another node, say
        yield writer.add(self.a, "+8613900000001")
        m = yield self.mirror()
        self.assertIsNone(m.opted(self.a, "13900000001"))    # not loaded yet: ask the store
        yield wait_until(lambda: self.a in m.sets, "loaded")
        self.assertIs(m.opted(self.a, "13900000001"), True)
        self.assertIs(m.opted(self.a, "13900000002"), False)
        yield writer.add(self.a, "13900000002")
        yield wait_until(lambda: m.opted(self.a, "13900000002"), "the added number")
        yield writer.remove(self.a, "13900000001")
        yield wait_until(lambda: m.opted(self.a, "13900000001") is False, "the removed one")
        # the check of the node that holds the mirror answers from it
        reader = OptOut(self.store, m)
        self.assertTrue((yield reader.check(self.a, "13900000002")))
        self.assertFalse((yield reader.check(self.a, "13900000001")))
        # other accounts are separate
        self.assertIsNone(m.opted(self.a + "x", "13900000002"))

    @defer.inlineCallbacks
    def test_lost_subscription_falls_back_to_the_store_then_reloads(self) -> Any:
        m = yield self.mirror()
        m.opted(self.a, "13900000003")
        yield wait_until(lambda: self.a in m.sets, "loaded")
        self.assertIs(m.opted(self.a, "13900000003"), False)
        yield self.store.execute("CLIENT", "KILL", "TYPE", "pubsub")
        yield wait_until(lambda: not m.live, "the loss noticed")
        # a change nobody published, made while the copy is gone: seen after the reload
        yield self.store.execute("SADD", optout_key(self.a), "13900000003")
        self.assertIsNone(m.opted(self.a, "13900000003"))
        reader = OptOut(self.store, m)
        self.assertTrue((yield reader.check(self.a, "13900000003")))   # from the store
        yield wait_until(lambda: m.live, "subscribed again")
        yield wait_until(lambda: m.opted(self.a, "13900000003"), "reloaded")

    @defer.inlineCallbacks
    def test_leased_admits_use_the_copy(self) -> Any:
        m = yield self.mirror()
        led = Ledger(self.store, reactor, node="n1", lease_parts=10, record_delay_s=0.005,
                     lease_idle_s=30.0)
        self.addCleanup(led.release_leases)
        led.optout_mirror = m
        yield OptOut(self.store).add(self.a, "13900000004")
        yield led.topup(self.a, 1000)
        got, d = admit(led, self.a, ["m0"], number="13900000005")
        self.assertEqual((yield d)[0], 0)
        m.opted(self.a, "13900000005")          # the copy loads on first use
        yield wait_until(lambda: self.a in led.leases.held and self.a in m.sets, "lease and copy")
        # answered at once from the lease and the copy
        got, d = admit(led, self.a, ["m1"], number="13900000005")
        self.assertEqual(got, [0])
        # an opted-out number is refused by the store, which counts and journals it
        got, d = admit(led, self.a, ["m2"], number="13900000004")
        self.assertEqual(got, [])
        self.assertEqual((yield d)[0], -3)
        stats = yield led.stats(self.a)
        self.assertEqual(stats.get("rejected:optout"), 1)
        yield wait_until(lambda: led.reservations(self.a).addCallback(len).addCallback(
            lambda n: n == 2), "two reservations recorded")
