"""Connection caps and the quiet log of refusals, shared by the SMPP and HTTP listeners.

`Caps` counts a listener's live connections: in total, per source address and, for SMPP,
those not bound yet. `admit(host, ...)` says whether one more may stay (and counts it) or
names the cap it would pass; the adapter then closes the connection at once, before reading
anything. `release` forgets it when it is gone.

`QuietLog` is how a listener speaks about peers that have not authenticated: at most one
line per source address per `interval_s`; the lines left out are counted and reported in
one line per interval (`flush`, from the listener's timer). An unauthenticated peer can
therefore never write more than a bounded number of lines, however fast it connects or
sends garbage. It remembers at most `max_keys` addresses per interval; beyond, lines are
only counted.
"""
from __future__ import annotations

from typing import Any

# why a connection was refused (the name of the config key whose cap it would pass)
MAX_CONNECTIONS = "max_connections"
MAX_PER_ADDRESS = "max_connections_per_address"
MAX_UNBOUND = "max_unbound"


class Caps:
    """Live connections of one listener: total, per address, not yet bound."""

    __slots__ = ("total", "unbound", "by_address")

    def __init__(self) -> None:
        self.total = 0
        self.unbound = 0
        self.by_address: dict[str, int] = {}

    def admit(self, host: str, max_total: int, max_per_address: int,
              max_unbound: int = 0) -> str:
        """Count one more connection from `host` (not bound yet when `max_unbound` is set)
        and return "", or return the name of the cap it would pass (nothing counted)."""
        if self.total >= max_total:
            return MAX_CONNECTIONS
        n = self.by_address.get(host, 0)
        if n >= max_per_address:
            return MAX_PER_ADDRESS
        if max_unbound:
            if self.unbound >= max_unbound:
                return MAX_UNBOUND
            self.unbound += 1
        self.total += 1
        self.by_address[host] = n + 1
        return ""

    def bound(self) -> None:
        """A connection admitted as unbound has bound."""
        self.unbound -= 1

    def release(self, host: str, unbound: bool = False) -> None:
        """An admitted connection is gone (`unbound`: it never bound)."""
        self.total -= 1
        if unbound:
            self.unbound -= 1
        n = self.by_address.get(host, 0) - 1
        if n > 0:
            self.by_address[host] = n
        else:
            self.by_address.pop(host, None)


class QuietLog:
    """Lines about unauthenticated peers: at most one per address per interval."""

    def __init__(self, log: Any, clock: Any, interval_s: float, max_keys: int = 4096,
                 what: str = "lines about unauthenticated peers") -> None:
        self.log = log
        self.clock = clock
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.what = what
        self.suppressed = 0
        self._last: dict[str, float] = {}
        self._since = clock.seconds()

    def __call__(self, key: str, fmt: str, **kw: Any) -> bool:
        """Log `fmt` at INFO unless a line about `key` was logged within the interval;
        returns whether it was logged."""
        now = self.clock.seconds()
        last = self._last.get(key)
        if (last is not None and now - last < self.interval_s) or (
                last is None and len(self._last) >= self.max_keys):
            self.suppressed += 1
            return False
        self._last[key] = now
        self.log.info(fmt, **kw)
        return True

    def flush(self) -> None:
        """Once an interval has passed: one line counting what was left out, and the
        addresses not heard from within the interval forgotten."""
        now = self.clock.seconds()
        if now - self._since < self.interval_s:
            return
        if self.suppressed:
            self.log.info("{n} more {what} not logged in the last {s:.0f}s",
                          n=self.suppressed, what=self.what, s=now - self._since)
            self.suppressed = 0
        self._since = now
        horizon = now - self.interval_s
        self._last = {k: t for k, t in self._last.items() if t > horizon}


__all__ = ["Caps", "QuietLog", "MAX_CONNECTIONS", "MAX_PER_ADDRESS", "MAX_UNBOUND"]
