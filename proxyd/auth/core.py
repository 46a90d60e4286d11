"""Who is this: `Authenticator.authenticate(user, password, peer)`, shared by SMPP binds and the
HTTP API (Kannel, Jasmin, /balance, /rate, /report).

    throttle.begin(source, user)      locked? -> failure after the delay, no password check
      delay (growing with failures)
    a slot of the source address (at most [auth] max_verifying_per_address checks at a time
      per address, the next ones wait in order; too many waiting -> failure after the delay)
    the account's hash, or DUMMY_HASH for an unknown user or a plain-text password
      -> hasher.verify (own thread pool; busy -> failure at once, logged now and then)
    plain-text password: hmac.compare_digest
    -> (0, account) and throttle.succeeded, or (ESME_RINVPASWD, None) and throttle.failed

An unknown user and a wrong password get the same status and cost the same scrypt. A password
verified once for a hash is remembered in memory (a reconnecting client does not pay it again);
that memory is cleared by a reload.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.logger import Logger

from ..passwords import DUMMY_HASH
from ..smpp.constants import STATUS
from .throttle import source_of

log = Logger(namespace="proxyd.auth")

REFUSED = STATUS["ESME_RINVPASWD"]
MAX_VERIFIED = 10_000


class QuietLog:
    """One log line per `every_s` for a kind of event, with the count of the ones not logged."""

    def __init__(self, clock: Any, every_s: float = 10.0) -> None:
        self.clock = clock
        self.every_s = every_s
        self._next: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, kind: str, emit: Callable[..., None], fmt: str, **kw: Any) -> None:
        now = self.clock.seconds()
        if now < self._next.get(kind, 0.0):
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        self._next[kind] = now + self.every_s
        emit(fmt + " ({more} more not logged)", more=self._quiet.pop(kind, 0), **kw)


class Slots:
    """At most `limit` password checks at a time per source address; up to `queue` more wait
    their turn (in order); beyond that, `acquire` answers False at once. One address cannot
    take the whole verification pool, so a customer on another address is not queued behind a
    brute force."""

    def __init__(self, limit: int, queue: int) -> None:
        self.limit = limit
        self.queue = queue
        self._running: dict[str, int] = {}
        self._waiting: dict[str, list[defer.Deferred]] = {}

    def acquire(self, source: str) -> defer.Deferred:
        """Deferred[True] once a slot is held (release it), or [False]: no slot."""
        if self._running.get(source, 0) < self.limit:
            self._running[source] = self._running.get(source, 0) + 1
            return defer.succeed(True)
        waiting = self._waiting.setdefault(source, [])
        if len(waiting) >= self.queue:
            return defer.succeed(False)
        d: defer.Deferred = defer.Deferred()
        waiting.append(d)
        return d

    def release(self, source: str) -> None:
        waiting = self._waiting.get(source)
        if waiting:
            d = waiting.pop(0)
            if not waiting:
                del self._waiting[source]
            d.callback(True)            # the slot passes on
            return
        n = self._running.get(source, 0) - 1
        if n > 0:
            self._running[source] = n
        else:
            self._running.pop(source, None)


class Authenticator:
    """`config()` the current Config; `throttle` a `StoreThrottle` or `MemoryThrottle`;
    `hasher` a `Hasher`; `clock` a reactor (delays)."""

    def __init__(self, config: Callable[[], Any], throttle: Any, hasher: Any,
                 clock: Any) -> None:
        self.config = config
        self.throttle = throttle
        self.hasher = hasher
        self.clock = clock
        self.quiet = QuietLog(clock)
        self._verified: set[bytes] = set()
        auth = config().auth
        self.slots = Slots(auth.max_verifying_per_address, auth.max_verifying)

    def reconfigured(self) -> None:
        """A reload: forget the passwords verified so far."""
        self._verified.clear()

    def authenticate(self, user: str, password: str, peer: str) -> defer.Deferred:
        """Deferred[(0, AccountConfig) | (ESME_RINVPASWD, None)]; `peer` the client's IP."""
        source = source_of(peer)
        d = self.throttle.begin(source, user)

        def judged(attempt: Any) -> Any:
            if attempt.locked:
                self.quiet("locked", log.warn, "authentication locked for {user} from "
                           "{source}: refused without a password check",
                           user=user[:32], source=source)
                return task.deferLater(self.clock, attempt.delay, lambda: (REFUSED, None))
            if attempt.delay > 0:
                return task.deferLater(self.clock, attempt.delay, self._check, user, password,
                                       source)
            return self._check(user, password, source)
        return d.addCallback(judged)

    def _check(self, user: str, password: str, source: str) -> defer.Deferred:
        account = self.config().account(user)
        stored = account.password if account is not None else DUMMY_HASH
        hashed = account is not None and account.password_is_hashed
        key = hashlib.sha256(stored.encode() + b"\0" + password.encode()).digest()
        if account is not None and key in self._verified:
            return self._succeeded(account, source, user)

        def slot(held: bool) -> Any:
            if not held:
                self.quiet("queue", log.warn, "authentication refused: too many password "
                           "checks waiting from {source}", source=source)
                return task.deferLater(self.clock, self.config().auth.max_delay_s,
                                       lambda: (REFUSED, None))
            d = self.hasher.verify(stored if hashed else DUMMY_HASH, password)
            d.addBoth(lambda r: (self.slots.release(source), r)[1])
            return d.addCallback(verified)

        def verified(ok: Any) -> Any:
            if ok is None:
                self.quiet("busy", log.warn, "authentication refused: {n} password checks "
                           "in flight already", n=self.hasher.max_in_flight)
                return (REFUSED, None)
            if account is not None and not hashed:
                ok = hmac.compare_digest(stored.encode(), password.encode())
            if ok and account is not None:
                if len(self._verified) >= MAX_VERIFIED:
                    self._verified.clear()
                self._verified.add(key)
                return self._succeeded(account, source, user)
            return self.throttle.failed(source, user).addBoth(lambda _: (REFUSED, None))
        return self.slots.acquire(source).addCallback(slot)

    def _succeeded(self, account: Any, source: str, user: str) -> defer.Deferred:
        return self.throttle.succeeded(source, user).addBoth(lambda _: (0, account))
