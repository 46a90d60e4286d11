"""Null collaborators of the gate, for a node that runs without them.

`[policy] enabled = false` gets `NoChecks`; `[store] url = "none"` (benchmarks and tests of
the bare relay) gets `FreeLedger` (nothing charged, nothing journaled, no opt-out lists) and
`NoReassembly` (long messages sent as separate parts need the store: refused). With them
the per-message path has no `is None` branch.
"""
from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer

from proxyd.message import Message, Refusal
from proxyd.policy.sender import effective_source
from proxyd.smpp import constants as C


class NoChecks:
    """The policy when `[policy] enabled = false`: every message passes; text is not
    decoded (nothing reads it)."""

    needs_text = False

    def throttle(self, account: Any, parts: int) -> None:
        return None

    def check(self, msg: Message, account: Any) -> None:
        return None

    def rewrite_source(self, msg: Message, account: Any) -> str:
        r = effective_source(msg.source_addr, account)
        return msg.source_addr if type(r) is Refusal else r

    def reconfigured(self, config: Any) -> "NoChecks":
        return self


_FREE: tuple = ()


class FreeLedger:
    """No store: every message is admitted at once, free; outcomes are not recorded."""

    optout_mirror = None
    keeps_records = False       # the gate makes no settle notes for it

    def admit_leased(self, account: str, msg_ids: list, price: int, number: str,
                     to: str = "") -> tuple:
        return _FREE

    def admit(self, account: str, msg_ids: list, price: int, number: str,
              cb: Callable[[int, int], None], to: str = "") -> None:  # pragma: no cover
        cb(0, 0)

    def settle_leased(self, rec: Any, i: int, note: str, commit: bool) -> None:
        pass

    def settle(self, account: str, msg_id: str, note: str, commit: bool) -> None:
        pass

    def count_rejected(self, account: str, reason: str, msg_id: str = "",
                       parts: int = 1, detail: str = "") -> defer.Deferred:
        return defer.succeed(0)

    def release_leases(self) -> defer.Deferred:
        return defer.succeed(None)

    def replay_outcome_log(self) -> defer.Deferred:
        return defer.succeed((0, 0))    # no store, no outcome log (issue 17)

    def close_outcome_log(self) -> defer.Deferred:
        return defer.succeed(None)

    def balance(self, account: str) -> defer.Deferred:
        return defer.fail(RuntimeError("no store: balances are not kept"))


class NoReassembly:
    """No store: a part of a long message cannot be kept until its siblings come."""

    def add_part(self, account: Any, part: Any, reply: Callable[[int, bytes], None]) -> None:
        reply(C.STATUS["ESME_RSYSERR"], b"")
