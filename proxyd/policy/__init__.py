"""The inline checks, one small pure module each; `Policy` runs them in order.

The account's rate bucket comes first of all, taken by the gate before any other work on a
message (`Policy.throttle`, one token per billable part): refusals cost tokens too, so a client
hammering refused messages is throttled (0x58 "rate") like any other, and its refusals stop
costing journal records and log lines at the account's rate.

Order of `Policy.check` (first refusal wins; pure, spends nothing):

1. caller       -- numeric, displayable sender (no empty, TON 5 or non-digit)   0x0A "caller"
2. sender       -- one of the account's service codes or an extension of one     0x0A "sender"
3. destination  -- 5 to 20 digits, optional '+'                                  0x0B "destination"
4. binary       -- 8-bit data only for accounts with allow_binary                0x400 "binary"
5. signature    -- 【...】 where the account requires it                           0x400 "signature"
   unsubscribe  -- marketing accounts must tell how to unsubscribe               0x400 "unsubscribe"
6. content      -- the nine categories (+ the account's own lists), whole text   0x400 "content"

Cheap syntactic checks come first, so malformed messages cost nothing more. The opt-out
lookup is asynchronous (store) and done by the gate after these, with `optout.check_optout`.

Everything is pure and precomputed at construction: no I/O at check time, no Twisted.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from proxyd.config import AccountConfig, Config
from proxyd.message import Message, Refusal, Verdict
from proxyd.policy.caller import check_caller
from proxyd.policy.content import (
    ContentFilter, check_binary, has_unsubscribe_hint, normalise_words, check_signature,
    UNSUBSCRIBE_REFUSED,
)
from proxyd.policy.optout import check_destination
from proxyd.policy.rate import THROTTLED, TokenBucket, make_bucket
from proxyd.policy.sender import effective_source

__all__ = ["Policy"]


class Policy:
    """Holds the content filter, one token bucket per account and the config."""

    needs_text = True       # the gate decodes each message's text for `check`

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 content: ContentFilter | None = None) -> None:
        self.config = config
        self.clock = clock
        if content is None:
            content = self.load_content(config)
        self.content = content
        self._buckets: dict[str, TokenBucket | None] = {
            a.system_id: make_bucket(a.tps, a.burst, clock) for a in config.accounts}

    @staticmethod
    def load_content(config: Config, previous: ContentFilter | None = None) -> ContentFilter:
        """The content filter of `config`'s word lists (`previous`: see ContentFilter)."""
        return ContentFilter.load(
            config.policy.filters_dir,
            {a.system_id: a.filters for a in config.accounts if a.filters},
            config.policy.max_gap, previous)

    def reconfigured(self, config: Config, content: ContentFilter | None = None) -> "Policy":
        """A Policy for a reloaded config; accounts whose tps and burst did not change keep
        their bucket (and its current level). The lists are read again; terms already
        expanded by this policy's filter are not expanded again."""
        if content is None:
            content = self.load_content(config, self.content)
        new = Policy(config, clock=self.clock, content=content)
        for a in config.accounts:
            old = self.config.account(a.system_id)
            if old is not None and (old.tps, old.burst) == (a.tps, a.burst):
                new._buckets[a.system_id] = self._buckets.get(a.system_id)
        return new

    def bucket(self, account: AccountConfig) -> TokenBucket | None:
        try:
            return self._buckets[account.system_id]
        except KeyError:
            b = self._buckets[account.system_id] = make_bucket(account.tps, account.burst,
                                                               self.clock)
            return b

    def throttle(self, account: AccountConfig, parts: int) -> Verdict:
        """Take `parts` tokens from the account's bucket: None, or THROTTLED. The gate calls
        this first, before any other work on a message (refusals included)."""
        try:
            bucket = self._buckets[account.system_id]
        except KeyError:
            bucket = self.bucket(account)
        if bucket is None or bucket.take(parts):
            return None
        return THROTTLED

    def check(self, msg: Message, account: AccountConfig) -> Verdict:
        """The checks above, in order; pure (the rate is `throttle`, taken before)."""
        r = check_caller(msg, account)
        if r is not None:
            return r
        r = effective_source(msg.source_addr, account)
        if type(r) is Refusal:
            return r
        r = check_destination(msg.destination_addr)
        if r is not None:
            return r
        r = check_binary(msg, account)
        if r is not None:
            return r
        text = msg.text
        if text is None:
            return None
        if account.signature:
            r = check_signature(text, account)
            if r is not None:
                return r
        norm, words = normalise_words(text)
        if account.marketing and not has_unsubscribe_hint(norm):
            return UNSUBSCRIBE_REFUSED
        return self.content.check_normalised(norm, account.system_id, words)

    def rewrite_source(self, msg: Message, account: AccountConfig) -> str:
        """The source_addr to relay: in sender_mode "prefix" the service code + extension,
        otherwise the client's own. Call after `check` passed (raises ValueError if not)."""
        r = effective_source(msg.source_addr, account)
        if type(r) is Refusal:
            raise ValueError(str(r))
        return r
