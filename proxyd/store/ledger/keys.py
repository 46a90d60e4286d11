"""The ledger's keys and script arguments, shared with the synchronous admin client.

Every key of one account carries the hash tag ``{account}``, so that one script only
touches keys of one Redis Cluster slot (the layout: the package's docstring)."""
from __future__ import annotations

import time
from typing import Any

RETENTION_DAYS = 90


def day_of(ts: float) -> str:
    """The day (local time) whose stats and journal keys an event at `ts` goes to."""
    return time.strftime("%Y%m%d", time.localtime(ts))


def balance_key(account: str) -> str:
    return "bal:{%s}" % account


def reservations_key(account: str) -> str:
    return "res:{%s}" % account


def stats_key(account: str, day: str) -> str:
    return "stats:{%s}:%s" % (account, day)


def journal_key(account: str, day: str) -> str:
    return "journal:{%s}:%s" % (account, day)


def jhead_key(account: str) -> str:
    return "jhead:{%s}" % account


def lease_key(account: str) -> str:
    return "lease:{%s}" % account


def low_key(account: str) -> str:
    """The low-balance notice of an account (hash: t threshold, url, low "1" when notified
    and not re-armed, n notices so far; see proxyd.lowbalance)."""
    return "low:{%s}" % account


def optout_key(account: str) -> str:
    return "optout:{%s}" % account


def account_keys(account: str, day: str) -> list[str]:
    """KEYS of every ledger script, in order."""
    t = "{%s}" % account
    return ["bal:" + t, "res:" + t, "stats:%s:%s" % (t, day), "journal:%s:%s" % (t, day),
            "jhead:" + t, "optout:" + t, "lease:" + t, "calls:" + t,
            "low:" + t, "hcb:" + t, "hcbd:" + t]     # the low-balance notice (prelude.lua)


def script_call(account: str, now: float, day: str, *extra: Any,
                retention_days: int = RETENTION_DAYS) -> tuple[list[str], list[Any]]:
    """(KEYS, ARGV) for a ledger script; `extra` are the script's own arguments."""
    return (account_keys(account, day),
            [account, int(now * 1000), day, int(retention_days * 86400), *extra])
