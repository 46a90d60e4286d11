"""Regressions for what fuzzing (tests/test_fuzz_*.py, bench/fuzz.py) found, one test each,
written before the fix."""
from __future__ import annotations

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import session as S

from .test_session import bound, esme_bound, hdr, smsc


@pytest.mark.parametrize("state", ["open", "bound"])
def test_a_stray_unbind_resp_does_not_end_a_client_session(state):
    """bench/fuzz.py: an unbind_resp nobody asked for closed the session (every mutated
    stream with one lost its connection). It is an answer to nothing: ignored."""
    s, h = bound() if state == "bound" else smsc()
    s.receive_data(hdr(C.UNBIND_RESP, 0, 9) + hdr(C.ENQUIRE_LINK, 0, 10), 101.0)
    assert h.out() == hdr(C.ENQUIRE_LINK_RESP, 0, 10)
    assert h.take() == []
    assert s.state == (S.BOUND if state == "bound" else S.OPEN)


def test_a_stray_unbind_resp_does_not_end_an_upstream_session():
    s, h = esme_bound()
    s.receive_data(hdr(C.UNBIND_RESP, 0, 77), 2.0)
    assert h.take() == [] and s.state == S.BOUND
    s.unbind(3.0)                                   # ours is still answered as before
    s.receive_data(hdr(C.UNBIND_RESP, 0, 102), 4.0)
    assert h.take() == [("close", S.UNBOUND)]


class _Batcher:
    """Takes the queued operations of `Leases`; the test answers their Deferreds."""

    def __init__(self) -> None:
        from twisted.internet.task import Clock
        self.reactor = Clock()
        self.queued: list = []

    def queue_op(self, account, kind, packed, target, info=None) -> None:
        self.queued.append(target)

    def stop_waiting(self) -> None:
        pass


def test_a_lease_refill_or_idle_return_failing_leaves_no_unhandled_error():
    """bench/fuzz.py under load: a store timeout failed a lease refill nobody waited for,
    and the log got "Unhandled error in Deferred" with a traceback (one each time)."""
    from twisted.python.failure import Failure

    from proxyd.store.client import StoreUnavailable
    from proxyd.store.ledger.leases import Lease, Leases

    b = _Batcher()
    leases = Leases(b, "n1", lease_parts=10, lease_idle_s=0.5)
    timeout = Failure(StoreUnavailable("batch: no answer from the store in 2.0s"))
    leases.ask("acme", 5)                       # a refill, as admits make them
    refill = b.queued.pop()
    refill.errback(timeout)
    assert refill.result is None                # handled: nothing left to the collector
    assert "acme" not in leases._asking         # and asked again after the backoff
    leases.held["acme"] = Lease(remaining=20, until=100.0, last_use=0.0, refill_below=5)
    b.reactor.advance(1.0)
    leases._tick()                              # idle: given back...
    back = b.queued.pop()
    back.errback(timeout)                       # ...and that fails: logged, handled
    assert back.result is None
    leases.held["acme"] = Lease(remaining=20, until=100.0, last_use=1.0, refill_below=5)
    done = leases.release_all()                 # at shutdown: reported the same way
    b.queued.pop().errback(timeout)
    assert done.called and done.result == [None]
