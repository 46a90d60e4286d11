"""Whose clock: the ledger's times (reservation ages, lease expiries, journal timestamps)
come from the store's clock (TIME, read inside the scripts: `proxyd/store/ledger/prelude.lua`),
so nodes whose clocks differ never judge each other's leases by their own clock. A node's
own clock only measures its own delays (timers, its lease's "stop using it" time).

`PROXYD_TEST_CLOCK_SKEW_S` (tests only): shift this process's reactor clock by that many
seconds, to show that a skewed node changes nothing in the store.
"""
from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger

log = Logger()

SKEW_ENV = "PROXYD_TEST_CLOCK_SKEW_S"


def apply_test_skew(reactor: Any, environ: Any = os.environ) -> float:
    """Shift `reactor.seconds()` by $PROXYD_TEST_CLOCK_SKEW_S (tests only). The skew
    applied (0.0: none). A bad value is a start error (ValueError)."""
    raw = environ.get(SKEW_ENV, "")
    if not raw:
        return 0.0
    try:
        skew = float(raw)
    except ValueError:
        raise ValueError("%s=%r: want a number of seconds" % (SKEW_ENV, raw)) from None
    if skew:
        real = reactor.seconds
        reactor.seconds = lambda: real() + skew
        log.warn("clock: this node's clock is shifted by {skew}s ({env}; tests only)",
                 skew=skew, env=SKEW_ENV)
    return skew
