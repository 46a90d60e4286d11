"""The store against a real valkey-server: ledger scripts, batching, failures, supervision.

These are twisted.trial TestCases (pytest runs them); each test returns a Deferred.
"""
from __future__ import annotations

import copy
import os
import shutil
import socket
import signal
import subprocess
import tempfile
import uuid
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from proxyd.passwords import hash_password, verify_password  # noqa: F401  (import check)
from proxyd.store.client import Store, StoreError, StoreUnavailable, parse_target
from proxyd.store.embedded import (EmbeddedServer, find_server_binary, ping_blocking,
                                   server_args, socket_path_for, start_blocking)
from proxyd.store.ledger import (SCRIPTS, UNKNOWN_OUTCOME, DuplicateReservation,
                                 InsufficientBalance, Ledger, LedgerSweeper, verify_journal)
from tests.procs import wait_until
from tests.valkey_fixture import ValkeyProcess, valkey_class, valkey_socket  # noqa: F401


def acct() -> str:
    return "t" + uuid.uuid4().hex[:12]


def store_pings(store: Store) -> defer.Deferred:
    return store.ping().addCallbacks(lambda r: r == "PONG", lambda f: False)


class LedgerTestBase(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.store = yield Store.connect(self.socket_path, pool_size=4, timeout_s=5.0,
                                         reactor=reactor)
        self.addCleanup(self.store.disconnect)
        self.ledger = Ledger(self.store, reactor)
        self.a = acct()


@pytest.mark.usefixtures("valkey_class")
class TestLedger(LedgerTestBase):

    @defer.inlineCallbacks
    def test_reserve_commit(self) -> Any:
        self.assertEqual((yield self.ledger.balance(self.a)), 0)
        self.assertEqual((yield self.ledger.topup(self.a, 100, "first")), 100)
        self.assertEqual((yield self.ledger.reserve(self.a, "m1", 3, 5)), 85)
        self.assertEqual((yield self.ledger.reservations(self.a)), {"m1": 15})
        self.assertEqual((yield self.ledger.commit(self.a, "m1")), 15)
        self.assertEqual((yield self.ledger.balance(self.a)), 85)
        self.assertEqual((yield self.ledger.reservations(self.a)), {})
        entries = yield self.ledger.entries(self.a, 10)
        self.assertEqual([(e["op"], e["amount"], e["balance_after"], e["msg_id"])
                          for e in entries],
                         [("commit", "15", "85", "m1"), ("reserve", "15", "85", "m1"),
                          ("topup", "100", "100", "")])
        self.assertEqual(entries[-1]["note"], "first")
        stats = yield self.ledger.stats(self.a)
        self.assertEqual(stats, {"topup": 100, "submitted": 1, "reserved": 1,
                                 "committed": 1, "charged": 15})

    @defer.inlineCallbacks
    def test_on_latency_sees_every_round_trip(self) -> Any:
        seen: list = []
        store = yield Store.connect(self.socket_path, pool_size=1, timeout_s=5.0,
                                    reactor=reactor, on_latency=seen.append)
        self.addCleanup(store.disconnect)
        self.assertEqual((yield store.ping()), "PONG")
        yield store.execute("GET", "nothing:" + self.a)
        self.assertEqual(len(seen), 2)
        self.assertTrue(all(isinstance(s, float) and s >= 0 for s in seen), seen)

    @defer.inlineCallbacks
    def test_insufficient_balance_changes_nothing(self) -> Any:
        yield self.ledger.topup(self.a, 10)
        before = yield self.ledger.entries(self.a, 100)
        e = yield self.assertFailure(self.ledger.reserve(self.a, "m1", 3, 5),
                                     InsufficientBalance)
        self.assertEqual((e.balance, e.needed, e.account), (10, 15, self.a))
        self.assertEqual((yield self.ledger.balance(self.a)), 10)
        self.assertEqual((yield self.ledger.reservations(self.a)), {})
        self.assertEqual((yield self.ledger.entries(self.a, 100)), before)
        self.assertEqual((yield self.ledger.stats(self.a)), {"topup": 10})
        self.assertEqual(len((yield self.ledger.journal(self.a))), 1)
        # an exact fit still passes
        self.assertEqual((yield self.ledger.reserve(self.a, "m2", 2, 5)), 0)
        yield self.assertFailure(self.ledger.reserve(self.a, "m3", 1, 1), InsufficientBalance)
        self.assertEqual((yield self.ledger.balance(self.a)), 0)

    @defer.inlineCallbacks
    def test_refund_is_idempotent(self) -> Any:
        yield self.ledger.topup(self.a, 50)
        yield self.ledger.reserve(self.a, "m1", 2, 10)
        self.assertEqual((yield self.ledger.refund(self.a, "m1", "upstream refused")), 20)
        self.assertIsNone((yield self.ledger.refund(self.a, "m1", "again")))
        self.assertIsNone((yield self.ledger.commit(self.a, "m1")))
        self.assertEqual((yield self.ledger.balance(self.a)), 50)
        entries = yield self.ledger.entries(self.a, 10)
        self.assertEqual([e["op"] for e in entries], ["refund", "reserve", "topup"])
        self.assertEqual(entries[0]["note"], "upstream refused")
        stats = yield self.ledger.stats(self.a)
        self.assertEqual((stats["refunded"], stats["refunded_amount"]), (1, 20))

    @defer.inlineCallbacks
    def test_commit_is_idempotent_and_unknown_is_noop(self) -> Any:
        yield self.ledger.topup(self.a, 50)
        self.assertIsNone((yield self.ledger.commit(self.a, "nope")))
        self.assertIsNone((yield self.ledger.refund(self.a, "nope")))
        yield self.ledger.reserve(self.a, "m1", 1, 10)
        self.assertEqual((yield self.ledger.commit(self.a, "m1")), 10)
        self.assertIsNone((yield self.ledger.commit(self.a, "m1")))
        self.assertIsNone((yield self.ledger.refund(self.a, "m1")))
        self.assertEqual((yield self.ledger.balance(self.a)), 40)
        self.assertEqual(len((yield self.ledger.entries(self.a, 10))), 3)

    @defer.inlineCallbacks
    def test_duplicate_reservation_refused(self) -> Any:
        yield self.ledger.topup(self.a, 50)
        yield self.ledger.reserve(self.a, "m1", 1, 10)
        yield self.assertFailure(self.ledger.reserve(self.a, "m1", 1, 10),
                                 DuplicateReservation)
        self.assertEqual((yield self.ledger.balance(self.a)), 40)

    @defer.inlineCallbacks
    def test_never_negative_under_concurrent_reserves(self) -> Any:
        yield self.ledger.topup(self.a, 600 * 7)
        ds = [self.ledger.reserve(self.a, "m%d" % i, 1, 7) for i in range(1000)]
        results = yield defer.DeferredList(ds, consumeErrors=True)
        ok = [r for success, r in results if success]
        refused = [r for success, r in results if not success]
        self.assertEqual(len(ok), 600)
        self.assertEqual(len(refused), 400)
        for f in refused:
            f.trap(InsufficientBalance)
        self.assertEqual(min(ok), 0)
        self.assertEqual(sorted(ok), [7 * i for i in range(600)])
        self.assertEqual((yield self.ledger.balance(self.a)), 0)
        self.assertEqual(len((yield self.ledger.reservations(self.a))), 600)
        stats = yield self.ledger.stats(self.a)
        self.assertEqual((stats["submitted"], stats["reserved"]), (600, 600))

    @defer.inlineCallbacks
    def test_commits_and_refunds_of_one_turn_are_one_call(self) -> Any:
        other = acct()
        yield self.ledger.topup(self.a, 10000)
        yield self.ledger.topup(other, 10000)
        yield defer.gatherResults([self.ledger.reserve(self.a, "m%d" % i, 1 + i % 3, 2)
                                   for i in range(300)])
        yield self.ledger.reserve(other, "o1", 1, 1)
        calls: list[str] = []
        real = self.store.evalsha

        def counting(name: str, keys: Any, args: Any, **kw: Any) -> defer.Deferred:
            calls.append(name)
            return real(name, keys, args, **kw)
        self.store.evalsha = counting  # type: ignore[method-assign]
        try:
            ds = []
            for i in range(300):
                if i % 2:
                    ds.append(self.ledger.commit(self.a, "m%d" % i))
                else:
                    ds.append(self.ledger.refund(self.a, "m%d" % i, "rejected"))
            ds.append(self.ledger.commit(self.a, "unknown"))
            ds.append(self.ledger.commit(self.a, "m1"))  # second settle of m1, same batch
            ds.append(self.ledger.commit(other, "o1"))
            self.assertEqual(calls, [])  # nothing sent until the reactor turn ends
            results = yield defer.gatherResults(ds)
        finally:
            del self.store.evalsha
        self.assertEqual(calls, ["batch", "batch"])  # one per account
        self.assertEqual(results[:300], [2 * (1 + i % 3) for i in range(300)])
        self.assertEqual(results[300:], [None, None, 1])
        refunded = sum(2 * (1 + i % 3) for i in range(0, 300, 2))
        charged = sum(2 * (1 + i % 3) for i in range(1, 300, 2))
        self.assertEqual((yield self.ledger.balance(self.a)), 10000 - charged)
        stats = yield self.ledger.stats(self.a)
        self.assertEqual((stats["charged"], stats["refunded_amount"]), (charged, refunded))
        self.assertEqual((yield self.ledger.reservations(self.a)), {})

    @defer.inlineCallbacks
    def test_large_batches_are_split(self) -> Any:
        ledger = Ledger(self.store, reactor, batch_max=7)
        yield ledger.topup(self.a, 1000)
        yield defer.gatherResults([ledger.reserve(self.a, "m%d" % i, 1, 1)
                                   for i in range(20)])
        results = yield defer.gatherResults([ledger.commit(self.a, "m%d" % i)
                                             for i in range(20)])
        self.assertEqual(results, [1] * 20)
        self.assertEqual((yield ledger.reservations(self.a)), {})

    @defer.inlineCallbacks
    def test_sweep_refunds_old_reservations(self) -> Any:
        yield self.ledger.topup(self.a, 100)
        yield self.ledger.reserve(self.a, "old1", 1, 10)
        yield self.ledger.reserve(self.a, "old2", 2, 10)
        now = reactor.seconds()
        # as seen 121 s later, with max age 120 s: both are too old
        settled = yield self.ledger.sweep(120, now=now + 121, accounts=[self.a])
        self.assertEqual(sorted(settled), [(self.a, "old1", 10), (self.a, "old2", 20)])
        self.assertEqual((yield self.ledger.balance(self.a)), 100)
        self.assertEqual((yield self.ledger.sweep(120, now=now + 121, accounts=[self.a])), [])
        entries = yield self.ledger.entries(self.a, 2)
        self.assertEqual([(e["op"], e["note"]) for e in entries],
                         [("refund", UNKNOWN_OUTCOME)] * 2)
        # a late commit of a swept message changes nothing
        self.assertIsNone((yield self.ledger.commit(self.a, "old1")))

    @defer.inlineCallbacks
    def test_sweep_keeps_young_reservations_and_finds_accounts(self) -> Any:
        yield self.ledger.topup(self.a, 100)
        yield self.ledger.reserve(self.a, "young", 1, 10)
        self.assertEqual((yield self.ledger.sweep(120)), [])
        self.assertIn(self.a, (yield self.ledger.accounts_with_reservations()))
        settled = yield self.ledger.sweep(120, now=reactor.seconds() + 200)
        self.assertIn((self.a, "young", 10), settled)

    @defer.inlineCallbacks
    def test_sweeper_service(self) -> Any:
        yield self.ledger.topup(self.a, 100)
        yield self.ledger.reserve(self.a, "m1", 1, 10)
        sweeper = LedgerSweeper(self.ledger, max_age_s=0, interval_s=3600, accounts=[self.a])
        sweeper.startService()
        self.addCleanup(sweeper.stopService)
        yield task.deferLater(reactor, 0.01, lambda: None)
        yield sweeper.run_once()
        self.assertEqual(sweeper.last, [(self.a, "m1", 10)])
        self.assertEqual((yield self.ledger.balance(self.a)), 100)

    @defer.inlineCallbacks
    def test_journal_chain(self) -> Any:
        yield self.ledger.topup(self.a, 100, "年费 | a|b")
        yield self.ledger.reserve(self.a, "m1", 1, 10)
        yield self.ledger.commit(self.a, "m1")
        yield self.ledger.reserve(self.a, "m2", 1, 10)
        yield self.ledger.refund(self.a, "m2", "refused")
        yield self.ledger.count_rejected(self.a, "content", "m3")
        yield self.assertFailure(self.ledger.reserve(self.a, "m4", 100, 10),
                                 InsufficientBalance)
        yield self.ledger.count_rejected(self.a, "insufficient_balance", "m4")
        records = yield self.ledger.journal(self.a)
        self.assertEqual([(r.event, r.msg_id) for r in records],
                         [("topup", ""), ("reserved", "m1"), ("committed", "m1"),
                          ("reserved", "m2"), ("refunded", "m2"), ("rejected", "m3"),
                          ("rejected", "m4")])
        self.assertEqual([(r.amount, r.balance_after, r.note) for r in records],
                         [(100, 100, "年费 | a|b"), (10, 90, ""), (10, 90, ""), (10, 80, ""),
                          (10, 90, "refused"), (0, 90, "content"),
                          (0, 90, "insufficient_balance")])
        day = self.ledger.day_of(reactor.seconds())
        head = yield self.ledger.journal_head(self.a, day)
        self.assertEqual(head, records[-1].h)
        self.assertTrue(verify_journal(records, self.a, head))
        # an edited amount
        tampered = [copy.copy(r) for r in records]
        tampered[2].d = tampered[2].d.replace("|10|90|", "|1|90|", 1)
        self.assertFalse(verify_journal(tampered, self.a, head))
        # a deleted record, in the middle and at the end; another account's chain
        self.assertFalse(verify_journal(records[:2] + records[3:], self.a, head))
        self.assertFalse(verify_journal(records[:-1], self.a, head))
        self.assertFalse(verify_journal(records, "other", head))

    @defer.inlineCallbacks
    def test_count_rejected(self) -> Any:
        self.assertEqual((yield self.ledger.count_rejected(self.a, "content")), 1)
        self.assertEqual((yield self.ledger.count_rejected(self.a, "content")), 2)
        yield self.ledger.count_rejected(self.a, "optout")
        stats = yield self.ledger.stats(self.a)
        self.assertEqual(stats, {"submitted": 3, "rejected:content": 2, "rejected:optout": 1})

    @defer.inlineCallbacks
    def test_adjust_and_refund_all(self) -> Any:
        yield self.ledger.topup(self.a, 100)
        self.assertEqual((yield self.ledger.adjust(self.a, -30, "correction")), 70)
        e = yield self.assertFailure(self.ledger.adjust(self.a, -71, "too much"),
                                     InsufficientBalance)
        self.assertEqual(e.balance, 70)
        self.assertEqual((yield self.ledger.adjust(self.a, 5, "bonus")), 75)
        yield self.ledger.reserve(self.a, "m1", 1, 5)
        self.assertEqual((yield self.ledger.refund_all(self.a, "contract ended")), 70)
        self.assertEqual((yield self.ledger.balance(self.a)), 0)
        entries = yield self.ledger.entries(self.a, 1)
        self.assertEqual((entries[0]["op"], entries[0]["amount"], entries[0]["note"]),
                         ("refund_all", "70", "contract ended"))
        # the open reservation can still be refunded afterwards
        self.assertEqual((yield self.ledger.refund(self.a, "m1")), 5)
        self.assertEqual((yield self.ledger.balance(self.a)), 5)

    @defer.inlineCallbacks
    def test_bad_arguments(self) -> Any:
        yield self.assertFailure(self.ledger.topup(self.a, 0), ValueError)
        yield self.assertFailure(self.ledger.topup(self.a, -5), ValueError)
        yield self.assertFailure(self.ledger.adjust(self.a, 1.5, ""), ValueError)  # type: ignore
        f = yield self.assertFailure(self.store.execute("NOSUCHCOMMAND"), StoreError)
        self.assertNotIsInstance(f, StoreUnavailable)

    @defer.inlineCallbacks
    def test_scripts_reloaded_after_flush(self) -> Any:
        yield self.ledger.topup(self.a, 10)
        yield self.store.execute("SCRIPT", "FLUSH")
        self.assertEqual((yield self.ledger.topup(self.a, 10)), 20)
        yield self.store.execute("SCRIPT", "FLUSH")
        yield self.ledger.reserve(self.a, "m1", 1, 1)
        yield self.store.execute("SCRIPT", "FLUSH")
        self.assertEqual((yield self.ledger.commit(self.a, "m1")), 1)
        # a burst after a flush: every call reloads-and-retries, sharing one SCRIPT LOAD
        yield self.store.execute("SCRIPT", "FLUSH")
        yield self.ledger.topup(self.a, 50)
        bals = yield defer.gatherResults([self.ledger.reserve(self.a, "b%d" % i, 1, 1)
                                          for i in range(50)])
        self.assertEqual(sorted(bals), list(range(19, 69)))
        yield self.store.load_scripts()
        exists = yield self.store.execute("SCRIPT", "EXISTS",
                                          *[Store.register_script(self.store, n, s)
                                            for n, s in SCRIPTS.items()])
        self.assertEqual(exists, [1] * len(SCRIPTS))


class TestParseTarget(unittest.SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_target("/run/x.sock")["unix"], "/run/x.sock")
        self.assertEqual(parse_target("unix:///run/x.sock?db=2&password=pw"),
                         {"unix": "/run/x.sock", "password": "pw", "username": None, "db": 2})
        self.assertEqual(parse_target("redis://:s%40cret@redis.example:6380/3"),
                         {"host": "redis.example", "port": 6380, "ssl": False,
                          "password": "s@cret", "username": None, "db": 3})
        t = parse_target("rediss://user:pw@h")
        self.assertEqual((t["ssl"], t["port"], t["username"], t["db"]), (True, 6379, "user",
                                                                        None))
        self.assertRaises(ValueError, parse_target, "http://x")


class TestUnavailable(unittest.TestCase):
    """A server of its own, stopped and paused on purpose."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.server = ValkeyProcess()
        self.addCleanup(self.server.cleanup)
        self.path = self.server.start()
        self.store = yield Store.connect(self.path, pool_size=2, timeout_s=0.5,
                                         reactor=reactor, reconnect_max_s=0.2)
        self.addCleanup(self.store.disconnect)
        self.ledger = Ledger(self.store, reactor)
        self.a = acct()

    @defer.inlineCallbacks
    def test_stopped_server_fails_fast_then_recovers(self) -> Any:
        yield self.ledger.topup(self.a, 100)
        yield self.ledger.reserve(self.a, "m1", 1, 10)
        self.server.stop()
        yield wait_until(lambda: not self.store.connected, "the pool to notice")
        yield self.assertFailure(self.ledger.balance(self.a), StoreUnavailable)
        yield self.assertFailure(self.ledger.reserve(self.a, "m2", 1, 10), StoreUnavailable)
        ds = [self.ledger.commit(self.a, "m1"), self.ledger.refund(self.a, "m9")]
        for d in ds:
            yield self.assertFailure(d, StoreUnavailable)
        # back, from its append-only file
        self.server.start()
        yield wait_until(lambda: store_pings(self.store), "the pool to reconnect")
        self.assertEqual((yield self.ledger.balance(self.a)), 90)
        self.assertEqual((yield self.ledger.commit(self.a, "m1")), 10)  # scripts reloaded

    @defer.inlineCallbacks
    def test_unresponsive_server_times_out(self) -> Any:
        yield self.ledger.topup(self.a, 100)
        assert self.server.proc is not None
        self.server.proc.send_signal(signal.SIGSTOP)
        try:
            yield self.assertFailure(self.ledger.balance(self.a), StoreUnavailable)
            yield self.assertFailure(self.ledger.reserve(self.a, "m1", 1, 1), StoreUnavailable)
        finally:
            self.server.proc.send_signal(signal.SIGCONT)
        yield wait_until(lambda: store_pings(self.store), "the server to answer again")

    @defer.inlineCallbacks
    def test_connect_to_nothing(self) -> Any:
        d = Store.connect(os.path.join(self.server.dir, "nothing.sock"), pool_size=2,
                          timeout_s=0.3, reactor=reactor)
        yield self.assertFailure(d, StoreUnavailable)

    @defer.inlineCallbacks
    def test_bad_password(self) -> Any:
        d = Store.connect("unix://%s?password=wrong" % self.path, pool_size=1,
                          timeout_s=2, reactor=reactor)
        yield self.assertFailure(d, StoreUnavailable)


class TestStartBlocking(unittest.SynchronousTestCase):
    def test_start_use_stop(self) -> None:
        d = tempfile.mkdtemp(prefix="proxyd-sb-")
        self.addCleanup(shutil.rmtree, d, True)
        self.assertTrue(os.access(find_server_binary(), os.X_OK))
        path, stop = start_blocking(d, "always")
        try:
            self.assertEqual(path, socket_path_for(d))
            self.assertTrue(ping_blocking(path))
            # a second user of the same dir shares the running server
            path2, stop2 = start_blocking(d, "always")
            self.assertEqual(path2, path)
            stop2()
            self.assertTrue(ping_blocking(path))
        finally:
            stop()
        self.assertFalse(ping_blocking(path))

    def test_embedded_store_has_a_memory_cap_and_evicts_nothing(self) -> None:
        d = tempfile.mkdtemp(prefix="proxyd-mm-")
        self.addCleanup(shutil.rmtree, d, True)
        path, stop = start_blocking(d, "no", maxmemory="3mb")
        try:
            def command(*args: bytes) -> bytes:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(path)
                s.sendall(b"*%d\r\n" % len(args)
                          + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
                buf = s.recv(65536)
                s.close()
                return buf
            self.assertIn(b"noeviction", command(b"CONFIG", b"GET", b"maxmemory-policy"))
            self.assertIn(b"3145728", command(b"CONFIG", b"GET", b"maxmemory"))
            # filling it: a write is refused with the store's OOM error, nothing is evicted
            big = b"x" * (512 * 1024)
            answers = [command(b"SET", b"k%d" % i, big) for i in range(12)]
            self.assertTrue(any(a.startswith(b"-OOM") for a in answers), answers)
            self.assertEqual(command(b"GET", b"k0")[:8], b"$524288\r")
        finally:
            stop()

    def test_socket_path_too_long(self) -> None:
        from proxyd.store.embedded import EmbeddedServerError
        self.assertRaises(EmbeddedServerError, server_args, "x", "/tmp/" + "d" * 120,
                          "everysec")


class TestEmbeddedServer(unittest.TestCase):

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="proxyd-es-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def server(self) -> EmbeddedServer:
        s = EmbeddedServer(self.dir, "always", reactor=reactor, check_interval_s=0.1,
                           restart_min_s=0.05)
        s.startService()
        self.addCleanup(lambda: s.running and s.stopService())
        return s

    @defer.inlineCallbacks
    def test_restarted_after_crash_and_stopped_cleanly(self) -> Any:
        es = self.server()
        path = yield es.whenReady()
        self.assertTrue(es.is_owner)
        store = yield Store.connect(path, pool_size=2, timeout_s=2, reactor=reactor,
                                    reconnect_max_s=0.2)
        self.addCleanup(store.disconnect)
        ledger = Ledger(store, reactor)
        yield ledger.topup("acme", 42)
        first = es.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        yield wait_until(lambda: es.restarts == 1 and es.pid not in (None, first),
                         "a restart")
        yield es.whenReady()
        yield wait_until(lambda: store_pings(store), "the store to reconnect")
        self.assertEqual((yield ledger.balance("acme")), 42)  # appendfsync always
        pid = es.pid
        yield es.stopService()
        self.assertFalse(ping_blocking(path))
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)

    @defer.inlineCallbacks
    def test_second_process_shares_and_takes_over(self) -> Any:
        owner = self.server()
        yield owner.whenReady()
        follower = self.server()  # another open of the lock file: like another process
        yield follower.whenReady()
        self.assertTrue(owner.is_owner)
        self.assertFalse(follower.is_owner)
        self.assertIsNone(follower.pid)
        yield owner.stopService()
        yield wait_until(lambda: follower.is_owner and follower.pid is not None,
                         "the follower to take over")
        yield follower.whenReady()
        self.assertTrue(ping_blocking(follower.socket_path))
        yield follower.stopService()
        self.assertFalse(ping_blocking(follower.socket_path))

    @defer.inlineCallbacks
    def test_adopts_an_orphan(self) -> Any:
        # a server left running by an owner that was killed (no lock held)
        orphan = subprocess.Popen(server_args(find_server_binary(), self.dir, "always"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: orphan.poll() is None and orphan.kill())
        yield wait_until(lambda: ping_blocking(socket_path_for(self.dir)), "the orphan")
        es = self.server()
        yield es.whenReady()
        self.assertTrue(es.is_owner)
        self.assertIsNone(es.pid)  # not spawned: adopted
        yield es.stopService()
        yield wait_until(lambda: orphan.poll() is not None, "the orphan to stop")
        self.assertEqual(orphan.returncode, 0)


class TestEmbeddedPersistence(unittest.TestCase):

    @defer.inlineCallbacks
    def test_balance_survives_a_restart_of_the_embedded_server(self) -> Any:
        d = tempfile.mkdtemp(prefix="proxyd-ss-")
        self.addCleanup(shutil.rmtree, d, True)
        ledger = Ledger(None, reactor)
        # usable before the store is there: fails fast
        yield self.assertFailure(ledger.balance("acme"), StoreUnavailable)
        for expected, topup in ((5, 5), (5, 0)):
            es = EmbeddedServer(d, "always", reactor=reactor)
            es.startService()
            self.addCleanup(lambda es=es: es.running and es.stopService())
            path = yield es.whenReady()
            store = yield Store.connect(path, pool_size=1, timeout_s=5.0, reactor=reactor)
            ledger.attach(store)
            if topup:
                self.assertEqual((yield ledger.topup("acme", topup)), expected)
            else:          # a second start finds the data again (AOF)
                self.assertEqual((yield ledger.balance("acme")), expected)
            yield store.disconnect()
            yield es.stopService()
            self.assertFalse(ping_blocking(socket_path_for(d)))
