"""Per-account rate: a token bucket refilled lazily from a clock.

A full bucket lets `burst` parts through at once; then parts pass at `rate` per second. A
message with more parts than the bucket holds passes when the bucket is full and leaves it in
debt, so long messages are slowed, never refused forever. rate 0 = unlimited.
"""
from __future__ import annotations

from collections.abc import Callable

from proxyd.message import Refusal, Verdict
from proxyd.smpp.constants import STATUS

THROTTLED = Refusal(STATUS["ESME_RTHROTTLED"], "rate", "over the account's rate, retry later")


class TokenBucket:
    __slots__ = ("rate", "burst", "_clock", "_tokens", "_last")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0, got %r" % rate)
        self.rate = float(rate)
        self.burst = float(max(1, burst))
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    @property
    def tokens(self) -> float:
        """Tokens available now (refills first)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        if elapsed > 0:
            t = self._tokens + elapsed * self.rate
            self._tokens = t if t < self.burst else self.burst

    def take(self, n: int = 1) -> bool:
        if self.rate == 0:
            return True
        self._refill()
        t = self._tokens
        if t >= n or t >= self.burst:   # the second case: n > burst, bucket full
            self._tokens = t - n
            return True
        return False


def make_bucket(tps: float, burst: int, clock: Callable[[], float]) -> TokenBucket | None:
    """The bucket for an account's tps/burst (burst 0 = max(1, tps)); None if unlimited."""
    if tps <= 0:
        return None
    return TokenBucket(tps, burst or max(1, int(tps)), clock)


def check_rate(bucket: TokenBucket | None, parts: int = 1) -> Verdict:
    if bucket is None or bucket.take(parts):
        return None
    return THROTTLED
