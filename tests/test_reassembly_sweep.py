"""The reassembly sweeper drains a backlog of expired messages in one go (no store: a fake
that holds an index), so no part outlives its TTL unjournaled."""
from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock

from proxyd.gate.reassembly import Reassembly


class FakeStore:
    def __init__(self, n: int) -> None:
        self.index = ["cc:{acme}:1069:138:u8%d" % i for i in range(n)]
        self.taken: list[str] = []

    def register_script(self, name: str, source: str) -> None:
        pass

    def execute(self, *args):
        limit = args[-1]
        return defer.succeed([k.encode() for k in self.index[:limit]])

    def evalsha(self, name: str, keys: list, args: list):
        self.index.remove(keys[0])
        self.taken.append(keys[0])
        return defer.succeed([])        # (already empty: nothing to journal in this fake)


class Gate:
    class config:
        @staticmethod
        def account(acct):
            return None


def test_a_backlog_of_250_is_taken_in_one_sweep():
    store = FakeStore(250)
    r = Reassembly(store, Gate(), None, Clock(), 1.0)
    r.sweep()
    assert len(store.taken) == 250 and store.index == []


def test_a_small_backlog_is_one_batch():
    store = FakeStore(3)
    r = Reassembly(store, Gate(), None, Clock(), 1.0)
    r.sweep()
    assert len(store.taken) == 3
