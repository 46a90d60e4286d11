"""The receipt map, the delivery streams and the Delivery service against a real valkey-server
(fake client sessions, real store). twisted.trial TestCases; limits are deadlines only.
"""
from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, Callable

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from proxyd.config import DeliveryConfig, StoreConfig
from proxyd.delivery import Delivery
from proxyd.delivery.text import normalise_upstream_id
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.store.client import Store
from proxyd.store.optout import OptOut
from proxyd.store.receipts import MO, RECEIPT, ReceiptStore, rmap_key, stream_key
from tests.procs import wait_until
from tests.valkey_fixture import valkey_class, valkey_socket  # noqa: F401


def acct() -> str:
    return "d" + uuid.uuid4().hex[:12]


class Base(unittest.TestCase):
    socket_path: str

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.store = yield Store.connect(self.socket_path, pool_size=4, timeout_s=5.0,
                                         reactor=reactor)
        self.addCleanup(self.store.disconnect)


@pytest.mark.usefixtures("valkey_class")
class ReceiptStoreTest(Base):
    @defer.inlineCallbacks
    def test_map_matches_every_form_of_an_id_per_upstream(self) -> Any:
        rs = ReceiptStore(self.store, ttl_s=3600)
        up = "up-" + acct()
        rs.remember(up, normalise_upstream_id(b"00000ABC")[0], "acme", b"m1")
        rs.remember(up, normalise_upstream_id(b"000123")[0], "acme", b"m2")
        yield wait_until(lambda: rs.lookup(up, ["abc"]), "map written", 20)
        for form, mid in [(b"abc", b"m1"), (b"0ABC", b"m1"), (b"2748", b"m1"),
                          (b"123", b"m2"), (b"0000123", b"m2"), (b"7b", b"m2")]:
            hit = yield rs.lookup(up, normalise_upstream_id(form))
            self.assertEqual(hit, ("acme", mid), form)
        other = yield rs.lookup("other-" + up, normalise_upstream_id(b"abc"))
        self.assertIsNone(other)
        ttl = yield self.store.execute("TTL", rmap_key(up, "abc"))
        self.assertTrue(0 < int(ttl) <= 3600)

    @defer.inlineCallbacks
    def test_stream_group_read_ack_history_claim_touch(self) -> Any:
        rs = ReceiptStore(self.store)
        a = acct()
        ids = []
        for i in range(3):
            ids.append((yield rs.enqueue(a, C.DELIVER_SM, b"\x00body%d\xff" % i, RECEIPT)))
        yield rs.ensure_group(a)
        yield rs.ensure_group(a)      # idempotent
        got, gone = yield rs.read(a, "n1", 2)
        self.assertEqual([e.id for e in got], ids[:2])
        self.assertEqual([e.body for e in got], [b"\x00body0\xff", b"\x00body1\xff"])
        self.assertEqual((got[0].command_id, got[0].kind, gone), (C.DELIVER_SM, RECEIPT, []))
        got2, _ = yield rs.read(a, "n2", 10)
        self.assertEqual([e.id for e in got2], ids[2:])
        yield rs.ack(a, [ids[0]])
        mine, _ = yield rs.read(a, "n1", 10, history=True)
        self.assertEqual([e.id for e in mine], [ids[1]])
        # n1 keeps ids[1] by touching it; an idle claim takes only what is idle long enough
        ours = yield rs.touch(a, "n1", [ids[1]])
        self.assertEqual(ours, {ids[1]})
        claimed, _ = yield rs.claim_idle(a, "n2", 60.0, 10)
        self.assertEqual(claimed, [])
        claimed, _ = yield rs.claim_idle(a, "n2", 0.0, 10)
        self.assertEqual(sorted(e.id for e in claimed), sorted(ids[1:]))
        ours = yield rs.touch(a, "n1", [ids[1]])
        self.assertEqual(ours, set())             # taken over by n2
        yield rs.ack(a, ids[1:])
        n = yield rs.backlog(a)
        self.assertEqual(n, 0)


# --- Delivery with fake sessions ---------------------------------------------------------
class FakeSession:
    def __init__(self, account: str, answer: int | None = None) -> None:
        self.account = SimpleNamespace(system_id=account)
        self.can_receive = True
        self.state = 2              # BOUND
        self.transport = object()
        self.answer = answer        # None: keep the callback for the test to answer
        self.sent: list = []        # (command_id, body)
        self.waiting: list = []     # on_resp callbacks not answered yet

    def deliver(self, command_id: int, body: bytes, on_resp: Callable[[int], None]) -> None:
        self.sent.append((command_id, body))
        if self.answer is None:
            self.waiting.append(on_resp)
        else:
            reactor.callLater(0, on_resp, self.answer)


def make_delivery(store: Store, account: str, clock: Any = reactor, codes=("1069",),
                  **kw: Any) -> Delivery:
    """A Delivery of one account (service codes `codes`) over `store`, timers on `clock`."""
    cfg = SimpleNamespace(
        relay=SimpleNamespace(node_id="test"), smpp=SimpleNamespace(listen=["tcp:0"]),
        accounts=[SimpleNamespace(system_id=account, service_codes=codes)],
        policy=SimpleNamespace(unsubscribe_words=("T", "TD", "退订"),
                               reassembly_timeout_s=60.0),
        store=StoreConfig(), delivery=DeliveryConfig())
    return Delivery(lambda: cfg, store, clock, OptOut(store), **kw)


def receipt(mid: bytes) -> Any:
    return P.DeliverSm(seq=1, source_addr=b"13800138000", destination_addr=b"1069001",
                       esm_class=C.ESM_DELIVERY_RECEIPT,
                       short_message=b"id:" + mid + b" sub:001 dlvrd:001 submit date:2601010000 "
                       b"done date:2601010000 stat:DELIVRD err:000 text:x",
                       tlvs=((C.TAG_RECEIPTED_MESSAGE_ID, mid + b"\0"),
                             (C.TAG_MESSAGE_STATE, b"\x02")))


def mo(text: bytes, source: bytes = b"13800138000", dest: bytes = b"1069001") -> Any:
    return P.DeliverSm(seq=1, source_addr=source, destination_addr=dest, short_message=text)


UP = SimpleNamespace(name="sim")


@pytest.mark.usefixtures("valkey_class")
class DeliveryTest(Base):
    def make(self, account: str, **kw: Any) -> Delivery:
        kw.setdefault("consumer", "c-" + account)
        d = make_delivery(self.store, account, **kw)
        d.startService()
        self.addCleanup(d.stopService)
        return d

    def inject(self, d: Delivery, pdu: Any) -> list:
        acks: list = []
        d.on_deliver(UP, pdu, acks.append)
        return acks

    @defer.inlineCallbacks
    def test_window_order_and_ack(self) -> Any:
        a = acct()
        d = self.make(a, window=10)
        for i in range(25):      # one after the other: stream order is arrival order
            acks = self.inject(d, mo(b"hello %02d" % i))
            yield wait_until(lambda: acks == [0], "operator ack", 20)
        s = FakeSession(a)
        d.session_ready(s)
        yield wait_until(lambda: len(s.sent) == 10, "first window", 20)
        yield task.deferLater(reactor, 0.3, lambda: None)   # the window holds
        self.assertEqual(len(s.sent), 10)
        while len(s.waiting):
            cbs, s.waiting = s.waiting, []
            for cb in cbs:
                cb(0)
            yield wait_until(lambda: s.waiting or len(s.sent) == 25, "next window", 20)
        texts = [P.decode_body(cid, 0, 1, body).short_message for cid, body in s.sent]
        self.assertEqual(texts, [b"hello %02d" % i for i in range(25)])
        yield wait_until(lambda: d.rs.backlog(a).addCallback(lambda n: n == 0), "acked", 20)
        self.assertEqual(d.counters["delivered"], 25)

    @defer.inlineCallbacks
    def test_client_error_and_silence_are_retried(self) -> Any:
        a = acct()
        clock = task.Clock()        # Delivery's timers on a fake clock, the store for real
        d = make_delivery(self.store, a, clock, window=5, resp_timeout_s=5.0,
                          consumer="c-" + a)
        d.startService()
        self.addCleanup(d.stopService)
        for text in (b"first", b"second"):
            acks = self.inject(d, mo(text))
            yield wait_until(lambda: acks, "stored", 20)
        s = FakeSession(a)
        d.session_ready(s)
        yield wait_until(lambda: len(s.waiting) == 2, "both sent", 20)
        first, second = s.waiting
        s.waiting = []
        first(C.STATUS["ESME_RX_T_APPN"])      # refused by the client: retry after 1 s
        clock.advance(0.5)
        self.assertEqual(len(s.sent), 2)       # backing off
        clock.advance(4.6)                     # first: again; second: timed out
        self.assertEqual(len(s.sent), 3)
        clock.advance(1.1)                     # second: again after its backoff
        bodies = [P.decode_body(cid, 0, 1, b).short_message for cid, b in s.sent]
        self.assertEqual(bodies, [b"first", b"second", b"first", b"second"])
        second(0)                              # late answer of the timed-out one: ignored
        self.assertEqual(d.counters["delivered"], 0)
        for cb in s.waiting:
            cb(0)
        clock.advance(0)                       # the batched XACK
        yield wait_until(lambda: d.rs.backlog(a).addCallback(lambda n: n == 0), "acked", 20)
        self.assertEqual((d.counters["delivered"], d.counters["retried"],
                          d.counters["timeouts"]), (2, 2, 1))

    @defer.inlineCallbacks
    def test_receipt_before_its_map_entry_is_retried(self) -> Any:
        a = acct()
        d = self.make(a)
        s = FakeSession(a, answer=0)
        d.session_ready(s)
        acks = self.inject(d, receipt(b"00A1B2"))
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(acks, [])             # not acknowledged before it is stored
        d.remember("sim", b"a1b2", a, b"proxyd-id-1")
        yield wait_until(lambda: acks == [0] and s.sent, "receipt delivered", 20)
        out = P.decode_body(*s.sent[0][:1], 0, 1, s.sent[0][1])
        self.assertEqual(out.tlv(C.TAG_RECEIPTED_MESSAGE_ID), b"proxyd-id-1\0")
        self.assertTrue(out.short_message.startswith(b"id:proxyd-id-1 sub:001"))
        self.assertEqual(out.tlv(C.TAG_MESSAGE_STATE), b"\x02")

    @defer.inlineCallbacks
    def test_unknown_receipt_acknowledged_and_counted(self) -> Any:
        d = self.make(acct())
        acks = self.inject(d, receipt(b"feedface"))
        yield wait_until(lambda: acks, "ack", 10)
        self.assertEqual(acks, [0])
        self.assertEqual(d.counters["receipts_unknown"], 1)

    @defer.inlineCallbacks
    def test_unsubscribe_mo_opts_out_before_ack(self) -> Any:
        a = acct()
        d = self.make(a)
        acks = self.inject(d, mo(b"td", source=b"+8613900000001"))
        yield wait_until(lambda: acks, "ack", 20)
        self.assertEqual(acks, [0])
        member = yield self.store.execute("SISMEMBER", "optout:{%s}" % a, "13900000001")
        self.assertEqual(int(member), 1)
        n = yield d.rs.backlog(a)
        self.assertEqual(n, 1)                 # and still delivered to the account
        acks = self.inject(d, mo(b"hello", dest=b"999"))    # no such service code
        yield wait_until(lambda: acks, "ack", 20)
        self.assertEqual((acks, d.counters["mo_unrouted"]), ([0], 1))

    @defer.inlineCallbacks
    def test_store_down_asks_the_operator_to_retry(self) -> Any:
        a = acct()
        store = yield Store.connect(self.socket_path, pool_size=1, timeout_s=1.0,
                                    reactor=reactor)
        d = make_delivery(store, a, consumer="x")
        yield store.disconnect()
        for pdu in (mo(b"hi"), receipt(b"abc")):
            acks: list = []
            d.on_deliver(UP, pdu, acks.append)
            yield wait_until(lambda: acks, "ack", 20)
            self.assertEqual(acks, [C.STATUS["ESME_RX_T_APPN"]])

    @defer.inlineCallbacks
    def test_entries_of_a_dead_node_are_taken_over(self) -> Any:
        a = acct()
        dead = self.make(a, consumer="dead-" + a)
        s1 = FakeSession(a)
        dead.session_ready(s1)
        self.inject(dead, mo(b"orphan"))
        yield wait_until(lambda: s1.sent, "held by the first node", 20)
        dead._ticker.stop()                    # the node "dies": no touch, no answer
        dead.feeds.clear()
        alive = self.make(a, consumer="alive-" + a, claim_idle_s=0.5)
        s2 = FakeSession(a, answer=0)
        alive.session_ready(s2)
        yield wait_until(lambda: s2.sent, "taken over", 20)
        self.assertEqual(P.decode_body(C.DELIVER_SM, 0, 1, s2.sent[0][1]).short_message,
                         b"orphan")
        yield wait_until(lambda: alive.rs.backlog(a).addCallback(lambda n: n == 0), "acked", 20)
