"""The store-backed authentication throttle (its Lua script) against a real valkey-server."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from proxyd.auth import MemoryThrottle, StoreThrottle
from proxyd.auth.throttle import keys
from proxyd.config import AuthConfig, Config
from proxyd.store.client import Store
from tests.valkey_fixture import connect_store, valkey_class, valkey_socket  # noqa: F401

CFG = Config(auth=AuthConfig(max_failures=3, max_failures_per_address=5, lockout_s=60,
                             window_s=30, delay_s=0.5, max_delay_s=2.0))


def source() -> str:
    return "src-" + uuid.uuid4().hex[:10]


@pytest.mark.usefixtures("valkey_class")
class TestStoreThrottle(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.store = yield connect_store(self)
        self.memory = MemoryThrottle(lambda: CFG, Clock())
        self.t = StoreThrottle(lambda: CFG, self.store, self.memory)

    @defer.inlineCallbacks
    def test_failures_delay_then_lock_one_address_and_the_lock_has_its_own_ttl(self) -> Any:
        src, other = source(), source()
        self.assertEqual((yield self.t.begin(src, "acme")), (False, 0.0))
        yield self.t.failed(src, "acme")
        self.assertEqual((yield self.t.begin(src, "acme")), (False, 0.5))
        yield self.t.failed(src, "acme")
        pair, addr = keys(src, "acme")
        self.assertLessEqual((yield self.store.execute("PTTL", pair)), 30_000)
        yield self.t.failed(src, "acme")
        self.assertTrue((yield self.t.begin(src, "acme")).locked)
        ttl = yield self.store.execute("PTTL", pair)
        self.assertTrue(30_000 < ttl <= 60_000, ttl)        # the lockout, not the window
        self.assertFalse((yield self.t.begin(other, "acme")).locked)
        self.assertEqual(self.memory.counts(src, "acme"), (0, 0))   # all in the store

    @defer.inlineCallbacks
    def test_success_clears_the_pair_only(self) -> Any:
        src = source()
        yield self.t.failed(src, "acme")
        yield self.t.succeeded(src, "acme")
        pair, addr = keys(src, "acme")
        self.assertEqual((yield self.store.execute("MGET", pair, addr)), [None, "1"])

    @defer.inlineCallbacks
    def test_per_address_limit_across_accounts(self) -> Any:
        src = source()
        for i in range(5):
            yield self.t.failed(src, "user%d" % i)
        self.assertTrue((yield self.t.begin(src, "someone")).locked)

    @defer.inlineCallbacks
    def test_without_the_store_the_node_counts_in_memory(self) -> Any:
        src = source()
        store = yield Store.connect(self.socket_path, pool_size=1, timeout_s=1.0,
                                    reactor=reactor)
        t = StoreThrottle(lambda: CFG, store, self.memory)
        yield store.disconnect()
        for _ in range(3):
            yield t.failed(src, "acme")
        self.assertEqual(self.memory.counts(src, "acme"), (3, 3))
        self.assertTrue((yield t.begin(src, "acme")).locked)
