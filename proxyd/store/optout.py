"""Per-account opt-out sets: numbers that replied "T"/"TD"/"退订" and may not be sent to.

    optout:{A}   set   normalised numbers (see proxyd.policy.optout.normalise_number)
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer

from proxyd.policy.optout import normalise_number


def optout_key(account: str) -> str:
    return "optout:{%s}" % account


class OptOut:
    def __init__(self, store: Any) -> None:
        self.store = store

    def check(self, account: str, number: str) -> defer.Deferred:
        """Deferred[bool]: True if the number opted out of this account's messages."""
        return self.store.execute("SISMEMBER", optout_key(account),
                                  normalise_number(number)).addCallback(lambda r: int(r) == 1)

    def add(self, account: str, number: str) -> defer.Deferred:
        return self.store.execute("SADD", optout_key(account), normalise_number(number))

    def remove(self, account: str, number: str) -> defer.Deferred:
        return self.store.execute("SREM", optout_key(account), normalise_number(number))
