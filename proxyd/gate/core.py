"""The one function every message passes: checks -> charge -> route -> relay -> outcome.

    Message (parts as sent, whole text, billable parts)
      -> policy.throttle                    (the account's bucket, one token per part: first,
                                             so refusals are throttled like anything else)
      -> policy.check                       (pure, in-process)
      -> ledger: opt-out + one reservation per billable part   (lease, or one batched call)
      -> router.routable / router.pick       (failover between links)
      -> link.submit(part) per wire part     (window, back-pressure)
      -> settle each part by its outcome; done(status, ids, refusal, ok_parts)

Nothing reaches an operator link any other way: the SMPP intake (`intake.py`), the
reassembly of long messages (`reassembly.py`) and the HTTP API all build a `Message` and
call `Gate.send`; replace_sm's new text is judged by `Gate.judge`, the same checks.

Failover: a part that no link took (not bound, window full, ESME_RTHROTTLED or
ESME_RMSGQFUL from the operator) is tried on the next eligible link until
`[relay] deadline_s`. A part whose fate is unknown (timeout, connection lost after it was
written) is never retried elsewhere: that could send it twice. It is refunded and answered
ESME_RSYSERR, so the account is never charged for what the operator may not have taken.

Billing: the ledger reserves `msg.parts` (the billable count, see `billing.py`) per
message. A long message sent as separate parts bills one per wire part; a single wire part
that the operator bills as several (a long message_payload) holds all its ids and settles
them together with its one outcome.

Plain callbacks, not a Deferred chain per message: `send(...)` ends in exactly one `done(...)`.
"""
from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from proxyd.logs import mask
from proxyd.message import Message, Refusal
from proxyd.policy.optout import normalise_number
from proxyd.smpp import constants as C

from .ids import MessageIds

log = Logger(namespace="proxyd.gate")
_S = C.STATUS
_OK = 0
_RETRYABLE = frozenset((_S["ESME_RTHROTTLED"], _S["ESME_RMSGQFUL"]))
# done(status, ids, refusal, ok_parts): ids are proxyd ids of the parts the operator took
Done = Callable[[int, list, "Refusal | None", int], None]

NO_BALANCE = Refusal(_S["PROXYD_RNOBALANCE"], "balance", "insufficient prepaid balance")
STORE_DOWN = Refusal(_S["ESME_RSYSERR"], "store", "store unavailable, try again later")
NO_ROUTE = Refusal(_S["ESME_RINVDSTADR"], "route", "no route for this destination")
NO_CAPACITY = Refusal(_S["ESME_RMSGQFUL"], "capacity", "no upstream capacity now")
OPTED_OUT = Refusal(_S["ESME_RINVDSTADR"], "optout", "recipient has opted out")


class _Job:
    """One message in flight: its wire parts, their ids, and what came back."""

    __slots__ = ("account", "msg", "parts", "ids", "done", "results", "left", "deadline",
                 "source", "sids", "rec")

    def __init__(self, account: Any, msg: Message, ids: list, done: Done,
                 deadline: float, source: bytes | None) -> None:
        self.account = account
        self.msg = msg
        self.parts = msg.segments   # ((pdu, body), ...) exactly as they will be sent
        self.ids = ids              # one per billable part
        self.done = done
        self.results: list | None = None if len(self.parts) == 1 else [None] * len(self.parts)
        self.left = len(self.parts)
        self.deadline = deadline
        self.source = source        # rewritten source_addr (prefix mode) or None
        self.sids: list = []        # the ids as text (the ledger's)
        self.rec: Any = None        # the ledger's record, if admitted on its lease


class Gate:
    """checks -> charge -> route -> relay, for every message of one proxyd node.

    Collaborators are constructor arguments; the ones a node may run without are null
    objects (`nulls.py`), so the per-message path has no `is None` branch."""

    def __init__(self, config: Any, policy: Any, ledger: Any, router: Any, receipts: Any,
                 metrics: Any, clock: Any, ids: MessageIds) -> None:
        self.config = config
        self.policy = policy
        self.ledger = ledger
        self.router = router
        self.receipts = receipts
        self.metrics = metrics
        self.clock = clock
        self.ids = ids
        # the per-message calls, looked up once
        self._throttle = policy.throttle
        self._admit_leased = ledger.admit_leased
        self._settle_leased = ledger.settle_leased
        self._records = ledger.keeps_records    # False for the free ledger: no notes made
        self.counters: dict[str, int] = {"submitted": 0, "ok": 0, "refused": 0,
                                         "upstream_error": 0}
        self._throttle_log: dict[str, list] = {}    # account -> [last logged, not logged]
        self._throttled: dict[str, int] = {}        # account -> throttled parts to journal

    def set_config(self, config: Any, policy: Any) -> None:
        """A reload: the new config and the policy built from it."""
        self.config = config
        self.policy = policy
        self._throttle = policy.throttle

    # --- judge ------------------------------------------------------------------------------
    def judge(self, msg: Message, account: Any) -> Refusal | None:
        """The inline checks of one message (rate first, then its size, sender, caller,
        destination, content on the whole text): None when it may be charged and relayed."""
        r = self._throttle(account, msg.parts)
        if r is not None:
            return r
        return self.check(msg, account)

    def check(self, msg: Message, account: Any) -> Refusal | None:
        """`judge` without the rate: size and the policy's pure checks."""
        if msg.parts > account.max_parts:
            return Refusal(_S["ESME_RINVMSGLEN"], "length",
                           "message bills %d parts, over max_parts %d"
                           % (msg.parts, account.max_parts))
        return self.policy.check(msg, account)

    # --- the one function -------------------------------------------------------------------
    def send(self, account: Any, msg: Message, done: Done, ids: list | None = None) -> None:
        """Check, charge, route and relay one message; `ids` are the ids its wire parts
        already have (a long message acknowledged part by part), else new ones."""
        self.counters["submitted"] += 1
        n = msg.parts
        refusal = self._throttle(account, n)    # first: refusals cost tokens too
        if refusal is not None:
            self._refuse(account, msg, refusal, done, ids=ids)
            return
        if n > account.max_parts:
            self._refuse(account, msg, self.check(msg, account), done, ids=ids)
            return
        refusal = self.policy.check(msg, account)
        if refusal is not None:
            self._refuse(account, msg, refusal, done, ids=ids)
            return
        source = None
        if account.sender_mode == "prefix":
            source = self.policy.rewrite_source(msg, account).encode()
        to = msg.destination_addr
        if not self.router.routable(to, account):
            self._refuse(account, msg, NO_ROUTE, done, ids=ids)
            return
        if ids is None:
            ids = [self.ids.next()] if n == 1 else [self.ids.next() for _ in range(n)]
        elif len(ids) < n:
            ids = list(ids) + [self.ids.next() for _ in range(n - len(ids))]
        job = _Job(account, msg, ids, done, self.clock.seconds() + self.config.relay.deadline_s,
                   source)
        # charge: opt-out check and one reservation per billable part, on this node's lease
        # or in one atomic store step batched with the other messages of this reactor turn
        if len(to) != 11 or not to.isdigit():   # (a national mobile number is as it is)
            to = normalise_number(to)
        sids = job.sids = [ids[0].decode()] if n == 1 else [m.decode() for m in ids]
        rec = self._admit_leased(account.system_id, sids, account.price, to, to)
        if rec is not None:
            job.rec = rec
            self._forward(job)      # admitted on this node's lease, now
            return

        def admitted(code: int, balance: int) -> None:
            if code == 0:
                self._forward(job)
            elif code == -1:
                self._refuse(account, msg, NO_BALANCE, done, counted=True)
            elif code == -3:
                self._refuse(account, msg, OPTED_OUT, done, counted=True)
            else:
                self._refuse(account, msg, STORE_DOWN, done, counted=True)

        self.ledger.admit(account.system_id, sids, account.price, to, admitted, to=to)

    def send_held(self, account: Any, msg: Message, done: Done, ids: list) -> None:
        """`send` for a message whose parts are reserved already, one reservation per id (a
        long message kept part by part, `reassembly.py`): judged and routed the same way,
        relayed on those reservations (each part's is committed or refunded by its
        outcome: never charged twice). A refusal gives them back (refunded, note
        "released <reason>") and is not journaled again."""
        self.counters["submitted"] += 1
        refusal = self._throttle(account, msg.parts) or self.check(msg, account)
        if refusal is None and not self.router.routable(msg.destination_addr, account):
            refusal = NO_ROUTE
        if refusal is not None:
            self.refused(account, msg, refusal, counted=True)
            note = "released " + (refusal.category or refusal.reason)
            if refusal.term:        # content: the listed term and variant class (issue 19)
                note += " " + _content_detail(refusal)
            for mid in ids:
                self.ledger.settle(account.system_id, mid.decode(), note, False)
            done(refusal.status, [], refusal, 0)
            return
        source = None
        if account.sender_mode == "prefix":
            source = self.policy.rewrite_source(msg, account).encode()
        job = _Job(account, msg, ids, done, self.clock.seconds() + self.config.relay.deadline_s,
                   source)
        job.sids = [m.decode() for m in ids]
        self._forward(job)

    def _refuse(self, account: Any, msg: Message, refusal: Refusal, done: Done,
                counted: bool = False, ids: list | None = None) -> None:
        self.refused(account, msg, refusal, counted, ids)
        done(refusal.status, [], refusal, 0)

    def refused(self, account: Any, msg: Message, refusal: Refusal, counted: bool = False,
                ids: list | None = None) -> None:
        """Count, journal and log one refused message."""
        self.counters["refused"] += 1
        if not counted and refusal is not STORE_DOWN:
            reason = refusal.category or refusal.reason
            # content: the term and variant class, for the journal record's note
            extra = {"detail": _content_detail(refusal)} if refusal.term else {}
            ledger = self.ledger
            if refusal.reason == "rate" and not ids:
                self._count_throttled(account.system_id, max(1, msg.parts))
            elif ids:   # parts that already have ids (a long message): a record each
                for mid in ids:
                    ledger.count_rejected(account.system_id, reason, mid.decode(),
                                          parts=1, **extra).addErrback(lambda f: None)
            else:
                ledger.count_rejected(account.system_id, reason, "", parts=max(1, msg.parts),
                                      **extra).addErrback(lambda f: None)
        self.metrics.refused(account.system_id, refusal.reason, msg.destination_addr)
        if refusal.reason == "rate" and self._quiet(account.system_id):
            return
        text = refusal.text
        if refusal.term:            # content: which listed term, written how (never replied)
            text = "%s (%s)" % (text, _content_detail(refusal))
        if self.config.log.log_content and msg.text is not None:
            log.info("refused {acct} -> {dest}: {reason}: {text}; content: {content!r}",
                     acct=account.system_id, dest=mask(msg.destination_addr),
                     reason=refusal.reason, text=text, content=msg.text)
        else:
            log.info("refused {acct} -> {dest}: {reason}: {text}", acct=account.system_id,
                     dest=mask(msg.destination_addr), reason=refusal.reason, text=text)

    def _count_throttled(self, acct: str, parts: int) -> None:
        """Refusals over the rate are journaled as one "rejected rate" record per account
        and second carrying all their parts (the counters add up the same): a flood over
        the rate costs the store one record a second, not one per message."""
        pending = self._throttled
        if acct in pending:
            pending[acct] += parts
            return
        pending[acct] = parts
        self.clock.callLater(1.0, self._flush_throttled, acct)

    def _flush_throttled(self, acct: str) -> None:
        parts = self._throttled.pop(acct, 0)
        if parts:
            self.ledger.count_rejected(acct, "rate", "", parts=parts).addErrback(
                lambda f: None)

    def flush_throttled(self) -> None:
        """Journal the throttled refusals not yet written (at shutdown)."""
        for acct in list(self._throttled):
            self._flush_throttled(acct)

    def _quiet(self, acct: str) -> bool:
        """Throttled refusals are logged at most once a second per account (the next line
        tells how many were not): a flood over the rate does not flood the log."""
        now = self.clock.seconds()
        last = self._throttle_log.get(acct)
        if last is not None and now - last[0] < 1.0:
            last[1] += 1
            return True
        if last is not None and last[1]:
            log.info("refused {acct}: {n} more over the account's rate (not logged one by one)",
                     acct=acct, n=last[1])
        self._throttle_log[acct] = [now, 0]
        return False

    # --- route and relay --------------------------------------------------------------------
    def _forward(self, job: _Job) -> None:
        if len(job.parts) == 1:
            self._send_part(job, 0, ())
            return
        for i in range(len(job.parts)):
            self._send_part(job, i, ())

    def _send_part(self, job: _Job, i: int, tried: tuple, link: Any = None) -> None:
        if link is None:
            link = self.router.pick(job.msg.destination_addr, job.account, tried)
        if link is None:
            self._part_done(job, i, None, _S["ESME_RMSGQFUL"], None)
            return
        sent_at = self.clock.seconds()

        def on_outcome(status: int, upstream_id: bytes | None) -> None:
            if status in _RETRYABLE and self.clock.seconds() < job.deadline:
                nxt = self.router.pick(job.msg.destination_addr, job.account, tried + (link,))
                if nxt is not None:
                    self._send_part(job, i, tried + (link,), nxt)
                    return
            self.metrics.upstream_rtt(link.name, self.clock.seconds() - sent_at, status)
            self._part_done(job, i, link, status, upstream_id)

        link.submit_part(job.parts[i], job.source, on_outcome)

    def _settle(self, job: _Job, i: int, note: str, ok: bool) -> None:
        """Settle the billable parts that wire part i carries: itself, or all of them when
        one wire part is billed as several."""
        rec = job.rec
        if len(job.parts) == 1 and len(job.ids) > 1:
            for k in range(len(job.ids)):
                if rec is not None:
                    self.ledger.settle_leased(rec, k, note, ok)
                else:
                    self.ledger.settle(job.account.system_id, job.sids[k], note, ok)
        elif rec is not None:
            self._settle_leased(rec, i, note, ok)
        else:
            self.ledger.settle(job.account.system_id, job.sids[i], note, ok)

    def _part_done(self, job: _Job, i: int, link: Any, status: int,
                   upstream_id: bytes | None) -> None:
        mid = job.ids[i]
        acct = job.account.system_id
        name = link.name if link is not None else "-"
        if status == _OK:
            if self._records:
                # no answer wanted: a failure is logged by the ledger and the record is
                # sent again while the store is away
                self._settle(job, i, "up=%s id=%s" % (
                    name, (upstream_id or b"").decode("latin-1")), True)
            if upstream_id and job.msg.registered_delivery & 0x03:
                pdu = job.parts[i][0]
                self.receipts.remember(name, upstream_id, acct, mid,
                                       job.source or pdu.source_addr, pdu.destination_addr)
        elif self._records:
            self._settle(job, i, "up=%s status=%s" % (name, C.status_name(status)), False)
        nparts = len(job.parts)
        if nparts == 1:             # the usual: one wire part, its outcome is the message's
            if status == _OK:
                self.counters["ok"] += 1
                self.metrics.outcome(acct, name if link is not None else "", status)
                job.done(status, [mid], None, len(job.ids))
            else:
                self.counters["upstream_error"] += 1
                self.metrics.outcome(acct, name if link is not None else "", status)
                job.done(status, [mid], None, 0)
            return
        job.results[i] = status
        job.left -= 1
        if job.left:
            return
        part_ids = job.ids[:nparts]
        ok_ids = [m for m, s in zip(part_ids, job.results) if s == _OK]
        first_err = next((s for s in job.results if s != _OK), _OK)
        if first_err == _OK:
            self.counters["ok"] += 1
        else:
            self.counters["upstream_error"] += 1
        self.metrics.outcome(acct, name if link is not None else "", first_err)
        job.done(first_err, ok_ids if first_err == _OK else part_ids, None, len(ok_ids))


def _content_detail(refusal: Refusal) -> str:
    """"term=T variant=V" of a content refusal (for the journal and the log), else ""."""
    if not refusal.term:
        return ""
    return "term=%s variant=%s" % (refusal.term, refusal.variant or "exact")
