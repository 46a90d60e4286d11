"""The throttle of failed authentications: per source address, and per (address, account).

Every attempt is judged by the failures counted so far (`judge`): none, it goes on at once; some,
it waits a delay that doubles with each failure (``[auth] delay_s`` .. ``max_delay_s``); as
many as ``max_failures`` for the (address, account) or ``max_failures_per_address`` for the
address, it is locked: answered as a failure after the longest delay, without checking the
password, until ``lockout_s`` after the failure that reached the limit. Failures are forgotten
``window_s`` after the last one. A success forgets the (address, account) failures only (an
attacker holding an account of its own cannot clear its address). Nothing is counted per account
alone, so no one can lock a customer out from another address.

Two throttles with the same interface:

* `StoreThrottle`: the counters in the store (one MGET per attempt, one Lua script per failure,
  each bounded by the store's timeout), so every node sees them. A store that does not answer
  falls back to the in-memory counters of the node.
* `MemoryThrottle`: the counters in this process (a node without a store), bounded in size.
"""
from __future__ import annotations

import ipaddress
from importlib import resources
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="proxyd.auth")

PREFIX = "auth:"
MAX_USER_IN_KEY = 64
FAIL_SCRIPT = "auth_fail"
FAIL_LUA = resources.files(__package__).joinpath("fail.lua").read_text(encoding="utf-8")


class Attempt(NamedTuple):
    """What an attempt may do: wait `delay` seconds, then check the password (or, `locked`,
    answer a failure without checking it)."""
    locked: bool
    delay: float


def source_of(host: str) -> str:
    """The throttled source of a peer address: an IPv4 address, or the /64 of an IPv6 one (a
    host has a whole /64 to pick addresses from)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network("%s/64" % ip, strict=False))


def keys(source: str, user: str) -> tuple[str, str]:
    """(the (address, account) key, the address key)."""
    return ("%sp:%s:%s" % (PREFIX, source, user[:MAX_USER_IN_KEY]), "%sa:%s" % (PREFIX, source))


def delay_for(cfg: Any, failures: int) -> float:
    """The delay before an attempt that follows `failures` failures."""
    if failures <= 0:
        return 0.0
    return min(cfg.max_delay_s, cfg.delay_s * 2.0 ** min(failures - 1, 30))


def judge(cfg: Any, pair_failures: int, address_failures: int) -> Attempt:
    """The attempt after these counts of failures (`cfg`: the [auth] section)."""
    if pair_failures >= cfg.max_failures or address_failures >= cfg.max_failures_per_address:
        return Attempt(True, cfg.max_delay_s)
    return Attempt(False, delay_for(cfg, max(pair_failures, address_failures)))


class MemoryThrottle:
    """The counters in this process; `config()` gives the current Config, `clock` the time.
    At most `max_entries` counters are kept (the oldest go first when full)."""

    def __init__(self, config: Any, clock: Any, max_entries: int = 100_000) -> None:
        self.config = config
        self.clock = clock
        self.max_entries = max_entries
        self._counts: dict[str, list] = {}     # key -> [failures, expires at]

    def _get(self, key: str, now: float) -> int:
        e = self._counts.get(key)
        if e is None:
            return 0
        if e[1] <= now:
            del self._counts[key]
            return 0
        return e[0]

    def counts(self, source: str, user: str) -> tuple[int, int]:
        now = self.clock.seconds()
        return tuple(self._get(k, now) for k in keys(source, user))  # type: ignore[return-value]

    def begin(self, source: str, user: str) -> defer.Deferred:
        """Deferred[Attempt]."""
        return defer.succeed(judge(self.config().auth, *self.counts(source, user)))

    def failed(self, source: str, user: str) -> defer.Deferred:
        cfg = self.config().auth
        now = self.clock.seconds()
        for key, limit in zip(keys(source, user), (cfg.max_failures,
                                                   cfg.max_failures_per_address)):
            n = self._get(key, now) + 1
            e = self._counts.pop(key, None)
            if n < limit:
                expires = now + cfg.window_s
            elif n == limit or e is None:
                expires = now + cfg.lockout_s       # the lockout starts now
            else:
                expires = e[1]
            self._counts[key] = [n, expires]        # (re)inserted last: the newest
        self._prune(now)
        return defer.succeed(None)

    def succeeded(self, source: str, user: str) -> defer.Deferred:
        self._counts.pop(keys(source, user)[0], None)
        return defer.succeed(None)

    def _prune(self, now: float) -> None:
        if len(self._counts) <= self.max_entries:
            return
        for k in [k for k, e in self._counts.items() if e[1] <= now]:
            del self._counts[k]
        while len(self._counts) > self.max_entries:
            del self._counts[next(iter(self._counts))]


class StoreThrottle:
    """The counters in the store (shared by every node); `fallback` (a `MemoryThrottle`)
    serves while the store does not answer."""

    def __init__(self, config: Any, store: Any, fallback: MemoryThrottle) -> None:
        self.config = config
        self.store = store
        self.fallback = fallback
        store.register_script(FAIL_SCRIPT, FAIL_LUA)

    def begin(self, source: str, user: str) -> defer.Deferred:
        pair, addr = keys(source, user)
        d = self.store.execute("MGET", pair, addr)

        def judged(reply: Any) -> Attempt:
            p, a = (int(v) if v else 0 for v in reply)
            lp, la = self.fallback.counts(source, user)     # failures seen while it was away
            return judge(self.config().auth, max(p, lp), max(a, la))

        def unavailable(f: Any) -> Any:
            log.warn("auth throttle: store error ({err}); using this node's counters",
                     err=f.getErrorMessage())
            return self.fallback.begin(source, user)
        return d.addCallbacks(judged, unavailable)

    def failed(self, source: str, user: str) -> defer.Deferred:
        cfg = self.config().auth
        d = self.store.evalsha(FAIL_SCRIPT, keys(source, user),
                               (cfg.max_failures, cfg.max_failures_per_address,
                                int(cfg.window_s * 1000), int(cfg.lockout_s * 1000)))

        def unavailable(f: Any) -> Any:
            log.warn("auth throttle: store error ({err}); failure counted on this node",
                     err=f.getErrorMessage())
            return self.fallback.failed(source, user)
        return d.addCallbacks(lambda _: None, unavailable)

    def succeeded(self, source: str, user: str) -> defer.Deferred:
        self.fallback.succeeded(source, user)
        return self.store.execute("DEL", keys(source, user)[0]).addCallbacks(
            lambda _: None, lambda f: None)
