"""HTTP delivery reports: Kannel's dlr-url and Jasmin's dlr-url, called until they answer.

Building the request is pure (`build_request(settings, facts)`); `DlrCaller` takes due
callbacks from the store (``hcb:{A}``, see proxyd.store.messages), calls them through
`proxyd.http.callclient.CallbackClient` (checked targets, no redirects, one deadline, a body
of at most 64 KiB; slots bounded per node and per account), and retries with exponential backoff until the receiver
answers 2xx (Jasmin mode also accepts a body starting with ``ACK/Jasmin``, whatever the code).
A URL that cannot be called (malformed, or a refused target: see
proxyd.http.targets) is dropped at once (``dlr_refused`` and ``dlr_failed``). After
`max_attempts` the callback is dropped, logged at error level and counted
(``dlr_failed``). Callbacks are leased while in flight: a node that dies leaves them to any
other node once the lease passes, so a receiver may (rarely) see a callback twice, never none.

Facts (what a callback knows, a JSON object stored with it)::

    ev     "smsc" (the operator took the part: Kannel 8 / Jasmin level 1) or "final"
           (a receipt, the operator's or proxyd's own: Kannel 1/2/4 / Jasmin level 2)
    mid    proxyd's message id          smsc_id   the operator's id ("" if none)
    up     upstream name                state     SMPP message_state (1..8)
    stat   Appendix B stat (DELIVRD...) err       3-digit error
    sub, dlvrd, subdate, donedate, text: the Appendix B fields (as received)
    reply  the receipt's text as received (Kannel %A), or "ACK/" for "smsc", or
           "NACK/<status>/<name>" for an "smsc" refusal (status != 0: the operator refused
           the message; mid is "" unless a part had been given an id)
    status SMPP status of an "smsc" event (0 accepted: Kannel 8; else Kannel 16, Jasmin
           level 1 with message_status the status name, e.g. ESME_RSUBMITFAIL)
    t      unix time of the report      to, from  the message's destination and source
    dc     data_coding of the message

Kannel placeholders (values URL-encoded; unknown ones are left as they are):

    %d  report type: 1 delivered, 2 failed (UNDELIV, REJECTD, EXPIRED, DELETED, UNKNOWN),
        4 buffered (ENROUTE, ACCEPTD), 8 SMSC accepted, 16 SMSC rejected; called only when
        this bit is in the dlr-mask
    %p  the handset's number (as in Kannel, a report comes from the original receiver;
        from the dlr settings when the report has none, e.g. proxyd's own EXPIRED)
    %P  the original sender (service code)
    %T  unix timestamp of the report     %t  the same as "YYYY-MM-DD HH:MM" (UTC)
    %A  the SMSC's reply: the receipt text, or "ACK/" for an SMSC acceptance
    %F  the operator's (foreign) message id    %I  proxyd's (internal) message id
    %n  the sendsms user (account)        %i  the smsc-id (upstream name)
    %c  coding: 0 GSM 7-bit, 1 8-bit, 2 UCS-2
    %k  the keyword: the first word of the report's text (as in Kannel, where the report's
        text is the SMSC reply)

Jasmin (dlr-level 1 SMSC, 2 terminal, 3 both; dlr-method GET or POST form): level 1 with
``id, message_status (ESME_ROK), level=1, connector``; level 2 with ``id, id_smsc,
message_status (the stat: DELIVRD, UNDELIV, ...), level=2, connector, subdate, donedate,
sub, dlvrd, err, text``.

The same queue carries MO for an account's `mo_url` (settings ``{"api": "mo", "url":
template, "acct": ...}``, facts as `proxyd.http.mo.mo_values` reads them): one GET to
`proxyd.http.mo.mo_url`, any 2xx is success, retried like a receipt.
"""
from __future__ import annotations

import time
from typing import Any, Callable
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .callclient import Refused
from .targets import BadUrl, shown

log = Logger(namespace="proxyd.http.dlr")

KANNEL, JASMIN = "kannel", "jasmin"
# not a receipt: an MO for an account's mo_url (proxyd.http.mo), GET, any 2xx is success
MO = "mo"
# not a receipt: an account's low-balance notice (proxyd.lowbalance), GET, any 2xx
NOTIFY = "notify"


def kind_of(settings: dict | None) -> str:
    """What a queued callback is, for the counters: "dlr" (a receipt, Kannel or Jasmin),
    "mo" (an account's mo_url) or "notify" (a low-balance notice)."""
    api = (settings or {}).get("api")
    return api if api in (MO, NOTIFY) else "dlr"

# Kannel dlr types (gw/dlr.h)
DLR_SUCCESS, DLR_FAIL, DLR_BUFFERED, DLR_SMSC_SUCCESS, DLR_SMSC_FAIL = 1, 2, 4, 8, 16


class Request:
    """One HTTP call to make: method, url, and a form body for POST."""

    __slots__ = ("method", "url", "body")

    def __init__(self, method: str, url: str, body: bytes | None = None) -> None:
        self.method = method
        self.url = url
        self.body = body

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.method, self.url, self.body) == (
            other.method, other.url, other.body)

    def __repr__(self) -> str:
        return "Request(%s %s %r)" % (self.method, self.url, self.body)


def kannel_type(facts: dict) -> int:
    if facts.get("ev") == "smsc":
        return DLR_SMSC_SUCCESS if not facts.get("status") else DLR_SMSC_FAIL
    state = int(facts.get("state", 7))
    if state == 2:
        return DLR_SUCCESS
    if state in (1, 6):
        return DLR_BUFFERED
    return DLR_FAIL


def _coding(dc: int) -> str:
    if dc == 8:
        return "2"
    if dc in (4, 2) or dc & 0xF4 == 0xF4:
        return "1"
    return "0"


def kannel_values(settings: dict, facts: dict) -> dict[str, str]:
    t = int(facts.get("t", 0))
    reply = facts.get("reply", "")
    return {
        "d": str(kannel_type(facts)),
        "p": facts.get("to") or settings.get("to", ""),
        "P": facts.get("from", ""),
        "T": str(t),
        "t": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)),
        "A": reply,
        "F": facts.get("smsc_id", ""),
        "I": facts.get("mid", ""),
        "n": settings.get("acct", ""),
        "i": facts.get("up", ""),
        "c": _coding(int(facts.get("dc", 0))),
        "k": reply.split(" ", 1)[0] if reply else "",
    }


def kannel_url(template: str, values: dict[str, str]) -> str:
    """Replace %X escape codes by their URL-encoded values; unknown codes stay."""
    out = []
    i = 0
    n = len(template)
    while i < n:
        c = template[i]
        if c == "%" and i + 1 < n and template[i + 1] in values:
            out.append(quote(values[template[i + 1]], safe=""))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def jasmin_fields(settings: dict, facts: dict) -> list[tuple[str, str]]:
    if facts.get("ev") == "smsc":
        status = facts.get("status_name") or "ESME_ROK"
        return [("id", facts.get("mid", "")), ("message_status", status), ("level", "1"),
                ("connector", facts.get("up", ""))]
    return [("id", facts.get("mid", "")), ("id_smsc", facts.get("smsc_id", "")),
            ("message_status", facts.get("stat", "")), ("level", "2"),
            ("connector", facts.get("up", "")), ("subdate", facts.get("subdate", "")),
            ("donedate", facts.get("donedate", "")), ("sub", facts.get("sub", "")),
            ("dlvrd", facts.get("dlvrd", "")), ("err", facts.get("err", "")),
            ("text", facts.get("text", ""))]


def build_request(settings: dict, facts: dict) -> Request | None:
    """The call for one report, or None when the client did not ask for this kind."""
    url = settings.get("url") or ""
    if not url:
        return None
    if settings.get("api") == MO:
        from .mo import mo_url
        return Request("GET", mo_url(url, facts))
    if settings.get("api") == NOTIFY:
        from ..lowbalance import notify_url
        return Request("GET", notify_url(url, facts, settings.get("acct", "")))
    if settings.get("api") == JASMIN:
        level = int(settings.get("level", 1))
        want = 1 if facts.get("ev") == "smsc" else 2
        if not level & want:          # 1: SMSC only, 2: terminal only, 3: both
            return None
        form = urlencode(jasmin_fields(settings, facts))
        if (settings.get("method") or "POST").upper() == "GET":
            return Request("GET", url + ("&" if "?" in url else "?") + form)
        return Request("POST", url, form.encode("ascii"))
    values = kannel_values(settings, facts)
    if not int(settings.get("mask", 0)) & int(values["d"]):
        return None
    return Request("GET", kannel_url(url, values))


def accepted(settings: dict, code: int, body: bytes) -> bool:
    if 200 <= code < 300:
        return True
    return settings.get("api") == JASMIN and body.lstrip().startswith(b"ACK/Jasmin")


class DlrCaller:
    """Takes due callbacks of every account from the store and calls them (see above).

    `client` makes one call (`proxyd.http.callclient.CallbackClient`: target checks, one
    deadline, a capped body). Slots: at most `concurrency` calls in flight on the node and
    at most `per_account` of one account, so one slow receiver cannot hold every slot. A
    slot is taken before anything can fail and given back on every path (answer, failure,
    deadline, an exception while building the request)."""

    def __init__(self, messages: Any, clock: Any, accounts: Callable[[], list[str]],
                 client: Any, concurrency: int = 20, per_account: int = 5,
                 max_attempts: int = 12, backoff_s: float = 1.0,
                 backoff_max_s: float = 300.0, poll_s: float = 1.0, lease_s: float = 60.0,
                 timeout_s: float = 10.0,
                 expand: Callable[[dict], dict] | None = None,
                 on_notice: Callable[[str, dict], None] = lambda account, facts: None
                 ) -> None:
        self.messages = messages
        self.expand = expand
        self.on_notice = on_notice
        self.clock = clock
        self.accounts = accounts
        self.client = client
        self.concurrency = concurrency
        self.per_account = max(1, min(per_account, concurrency))
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self.lease_s = max(lease_s, timeout_s * 2)
        self.inflight = 0
        self.inflight_of: dict[str, int] = {}
        self._claiming: set[str] = set()
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self.counters: dict[str, int] = dict.fromkeys(
            ("dlr_called", "dlr_ok", "dlr_retried", "dlr_failed", "dlr_skipped",
             "dlr_refused"), 0)
        # (kind, result) -> count: kind "dlr", "mo" or "notify" (`kind_of`), result "ok",
        # "retried" or "failed" (dropped or given up), for /metrics
        self.results: dict[tuple[str, str], int] = {}

    def _count(self, kind: str, result: str) -> None:
        key = (kind, result)
        self.results[key] = self.results.get(key, 0) + 1

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.poll_s, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        for account in self.accounts():
            self.kick(account)

    def _take(self, account: str, n: int) -> None:
        self.inflight += n
        self.inflight_of[account] = self.inflight_of.get(account, 0) + n

    def _give(self, account: str, n: int) -> None:
        self.inflight -= n
        left = self.inflight_of.get(account, 0) - n
        if left > 0:
            self.inflight_of[account] = left
        else:
            self.inflight_of.pop(account, None)

    def kick(self, account: str) -> None:
        """Take what is due for this account now (bounded by the free slots of the node and
        of the account)."""
        room = min(self.concurrency - self.inflight,
                   self.per_account - self.inflight_of.get(account, 0))
        if room <= 0 or account in self._claiming:
            return
        self._claiming.add(account)
        self._take(account, room)           # reserved until the claim answers

        def got(items: list) -> None:
            self._claiming.discard(account)
            self._give(account, room)
            for cb_id, settings, facts, attempts in items[:room]:
                self._call(account, cb_id, settings, facts, attempts)

        def failed(f: Any) -> None:
            self._claiming.discard(account)
            self._give(account, room)
            log.warn("taking HTTP receipts of {acct} failed: {err}", acct=account,
                     err=f.getErrorMessage())

        defer.maybeDeferred(self.messages.claim, account, self.lease_s, room).addCallbacks(
            got, failed)

    def _call(self, account: str, cb_id: str, settings: dict | None, facts: dict | None,
              attempts: int) -> None:
        self._take(account, 1)
        released = []

        def release() -> None:
            if not released:
                released.append(True)
                self._give(account, 1)

        kind = kind_of(settings)
        try:
            if kind == NOTIFY and attempts == 0 and facts is not None:
                self.on_notice(account, facts)      # once per notice: its first claim
            if self.expand is not None and facts is not None and settings is not None:
                try:
                    facts = self.expand(facts)
                except Exception:
                    log.failure("HTTP receipt {id} of {acct}: unreadable facts",
                                id=cb_id, acct=account)
                    settings = facts = None
            req = build_request(settings, facts) if settings is not None else None
            if req is None:
                release()
                if settings is None:
                    log.warn("unreadable HTTP receipt {id} of {acct}; dropped", id=cb_id,
                             acct=account)
                self.counters["dlr_skipped"] += 1
                self._finish(account, cb_id)
                return
            self.counters["dlr_called"] += 1
            d = self.client.call(req)
        except Exception as e:
            release()
            log.failure("HTTP receipt {id} of {acct}: not called", id=cb_id, acct=account)
            self._drop(account, cb_id, "", "%s: %s" % (type(e).__name__, e), kind)
            return

        def done(result: tuple) -> None:
            release()
            code, body = result
            if accepted(settings, code, body):
                self.counters["dlr_ok"] += 1
                self._count(kind, "ok")
                self._finish(account, cb_id)
            else:
                self._retry(account, cb_id, req, attempts, "HTTP %d" % code, kind)

        def failed(f: Any) -> None:
            release()
            why = f.getErrorMessage() or f.type.__name__
            if f.check(BadUrl, Refused):
                self.counters["dlr_refused"] += 1
                self._drop(account, cb_id, req.url, why, kind)
            else:
                self._retry(account, cb_id, req, attempts, why, kind)

        d.addCallbacks(done, failed).addErrback(
            lambda f: (release(), log.failure("HTTP receipt {id} of {acct}", f, id=cb_id,
                                              acct=account)))

    def _drop(self, account: str, cb_id: str, url: str, why: str, kind: str = "dlr") -> None:
        """A callback that can never be made (a malformed URL, a refused target): dropped at
        once, logged at error level and counted, never retried."""
        self.counters["dlr_failed"] += 1
        self._count(kind, "failed")
        log.error("HTTP receipt {id} of {acct} to {url} dropped: {why}", id=cb_id,
                  acct=account, url=shown(url), why=why)
        self._finish(account, cb_id)

    def _finish(self, account: str, cb_id: str) -> None:
        self.messages.callback_done(account, cb_id).addErrback(
            lambda f: log.warn("HTTP receipt {id} of {acct} answered but not cleared: "
                               "{err} (it may be called again)", id=cb_id, acct=account,
                               err=f.getErrorMessage()))

    def _retry(self, account: str, cb_id: str, req: Request, attempts: int,
               why: str, kind: str = "dlr") -> None:
        n = attempts + 1
        if n >= self.max_attempts:
            self.counters["dlr_failed"] += 1
            self._count(kind, "failed")
            log.error("HTTP receipt {id} of {acct} to {url} given up after {n} attempts: "
                      "{why}", id=cb_id, acct=account, url=shown(req.url), n=n,
                      why=why)
            self._finish(account, cb_id)
            return
        self.counters["dlr_retried"] += 1
        self._count(kind, "retried")
        delay = min(self.backoff_max_s, self.backoff_s * 2.0 ** attempts)
        due = int((self.clock.seconds() + delay) * 1000)
        log.info("HTTP receipt {id} of {acct}: {why}; retry {n} in {d:.0f}s", id=cb_id,
                 acct=account, why=why, n=n, d=delay)
        self.messages.callback_retry(account, cb_id, due).addErrback(
            lambda f: log.warn("rescheduling HTTP receipt {id} failed: {err} (retried when "
                               "its lease ends)", id=cb_id, err=f.getErrorMessage()))
