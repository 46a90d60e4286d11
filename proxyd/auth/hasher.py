"""Password verification in a pool of its own, with a cap on verifications in flight.

scrypt costs tens of milliseconds of CPU and 16 MiB; on the reactor's shared thread pool a flood
of wrong passwords would make DNS lookups (and anything else deferred to a thread) wait. Here it
runs on ``[auth] hash_threads`` threads, started and stopped with the node; beyond
``max_verifying`` verifications queued or running, `verify` answers None at once (busy).
"""
from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from ..passwords import verify_password


class Hasher(service.Service):
    """`verify(stored, given)`: Deferred[True | False | None (busy: not checked)]."""

    name = "hasher"

    def __init__(self, reactor: Any, threads_: int = 2, max_in_flight: int = 16) -> None:
        self.reactor = reactor
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.pool = ThreadPool(minthreads=0, maxthreads=threads_, name="proxyd-hash")

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Any:
        super().stopService()
        self.pool.stop()

    def verify(self, stored: str, given: str) -> defer.Deferred:
        if self.in_flight >= self.max_in_flight:
            return defer.succeed(None)
        self.in_flight += 1

        def done(result: Any) -> Any:
            self.in_flight -= 1
            return result
        return threads.deferToThreadPool(self.reactor, self.pool, verify_password, stored,
                                         given).addBoth(done)
