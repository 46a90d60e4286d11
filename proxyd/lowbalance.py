"""Low-balance notices: tell an account before its prepaid balance reaches zero.

An account with ``low_balance = N`` (fen, 0 = off) gets one notice each time a charge takes
its balance (the free balance plus every node's lease: what ``balance`` shows) below N.
The crossing is decided in the store, by the ledger script that moves the money
(`proxyd/store/ledger/prelude.lua`, ``low_check``), so it is exact however many nodes
charge at once: the script that first finds the balance below N sets ``low = 1`` in
``low:{A}`` and queues the notice in the account's durable callback queue (``hcb:{A}`` /
``hcbd:{A}``, the queue of dlr-url and mo_url calls) in the same atomic step. A top-up or an
adjustment that brings the balance back to N or more clears the flag (re-arms the notice);
refunds of failed messages do not, so a balance hovering around N sends one notice, not one
per message.

``low:{A}`` (hash): ``t`` the threshold and ``url`` the `notify_url` template, written by
every node from its config at start and at each reload (`sync`; with several nodes, the
last one started or reloaded wins); ``low`` "1" while notified; ``n`` notices so far;
``at`` / ``bal`` when and at what balance the last one was queued.

The notice is called like a dlr-url (`proxyd.http.dlr`, api "notify"): GET to `notify_url`
with these placeholders replaced (URL-encoded), through the same target checks
(`[http] callback_allow`), deadline, retries and slots; any 2xx is success:

    %a  the account (system_id)        %b  the balance when it crossed (fen)
    %l  the threshold (low_balance)    %t  unix time of the crossing
    %n  the notice's number (1, 2, ... per account)            %%  a percent sign

The node that first takes the notice from the queue logs one WARN line and counts it
(``proxyd_low_balance_notices_total``); an account without `notify_url` gets the line and
the count only. ``proxyd_balance_low{account}`` (1 while notified) comes from ``low:{A}``
at scrape time (`proxyd.monitor`).
"""
from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import defer
from twisted.logger import Logger

from .http.mo import fill
from .logs import mask_url
from .store.ledger.keys import low_key

__all__ = ["notify_url", "sync", "Notices", "SYNC_LUA"]

log = Logger(namespace="proxyd.lowbalance")

# KEYS low:{A}; ARGV threshold, url: the account's settings (a key is made only when the
# notice is on, or was on before)
SYNC_LUA = """
if ARGV[1] == '0' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[1], 'url', ARGV[2])
return 1
"""


def notify_values(facts: dict[str, Any], account: str = "") -> dict[str, str]:
    return {"a": str(account or facts.get("acct", "")), "b": str(int(facts.get("bal", 0))),
            "l": str(int(facts.get("low", 0))), "t": str(int(facts.get("t", 0))),
            "n": str(int(facts.get("n", 0)))}


def notify_url(template: str, facts: dict[str, Any], account: str = "") -> str:
    """The template with every known placeholder replaced by its URL-encoded value; an
    unknown %x is left as it is."""
    return fill(template, notify_values(facts, account))


def sync(store: Any, accounts: Iterable[Any]) -> defer.Deferred:
    """Write each account's `low_balance` and `notify_url` to ``low:{A}`` (start, reload).
    Deferred[int]: how many were written; a failure is logged, never raised."""
    store.register_script("low_sync", SYNC_LUA)
    calls = []
    for a in accounts:
        calls.append(store.evalsha("low_sync", [low_key(a.system_id)],
                                   [str(int(a.low_balance)), a.notify_url]))
    d = defer.gatherResults(calls, consumeErrors=True)

    def failed(f: Any) -> int:
        err = f.value.subFailure if isinstance(f.value, defer.FirstError) else f
        log.warn("low-balance settings not written to the store: {err} (written again at "
                 "the next reload)", err=err.getErrorMessage())
        return 0
    return d.addCallbacks(lambda r: sum(int(x) for x in r), failed)


class Notices:
    """What the node does with a notice it takes from the queue first: one WARN line and a
    count per account (`counts`, exported as proxyd_low_balance_notices_total)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.counts: dict[str, int] = {}

    def __call__(self, account: str, facts: dict) -> None:
        self.counts[account] = self.counts.get(account, 0) + 1
        acct = self.config().account(account)
        url = acct.notify_url if acct is not None else ""
        log.warn("account {acct}: balance {bal} fen fell below low_balance {low} fen; "
                 "{what}", acct=account, bal=int(facts.get("bal", 0)),
                 low=int(facts.get("low", 0)),
                 what=("notice to %s" % mask_url(url)) if url else "no notify_url set")
