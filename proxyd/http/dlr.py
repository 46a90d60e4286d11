"""HTTP delivery reports: Kannel's dlr-url and Jasmin's dlr-url, called until they answer.

Building the request is pure (`build_request(settings, facts)`); `DlrCaller` takes due
callbacks from the store (``hcb:{A}``, see proxyd.store.messages), calls them with treq
(bounded concurrency, a timeout), and retries with exponential backoff until the receiver
answers 2xx (Jasmin mode also accepts a body starting with ``ACK/Jasmin``, whatever the code).
After `max_attempts` the callback is dropped, logged at error level and counted
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

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from proxyd.logs import mask_url

log = Logger(namespace="proxyd.http.dlr")

KANNEL, JASMIN = "kannel", "jasmin"
# not a receipt: an MO for an account's mo_url (proxyd.http.mo), GET, any 2xx is success
MO = "mo"

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
    """Takes due callbacks of every account from the store and calls them (see above)."""

    def __init__(self, messages: Any, clock: Any, accounts: Callable[[], list[str]],
                 concurrency: int = 20, timeout_s: float = 10.0, max_attempts: int = 12,
                 backoff_s: float = 1.0, backoff_max_s: float = 300.0,
                 poll_s: float = 1.0, lease_s: float = 60.0, http: Any = None,
                 expand: Callable[[dict], dict] | None = None) -> None:
        self.messages = messages
        self.expand = expand
        self.clock = clock
        self.accounts = accounts
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self.lease_s = max(lease_s, timeout_s * 2)
        self._http = http
        self.inflight = 0
        self._claiming: set[str] = set()
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self.counters: dict[str, int] = dict.fromkeys(
            ("dlr_called", "dlr_ok", "dlr_retried", "dlr_failed", "dlr_skipped"), 0)

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.poll_s, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        for account in self.accounts():
            self.kick(account)

    def kick(self, account: str) -> None:
        """Take what is due for this account now (bounded by the free call slots)."""
        room = self.concurrency - self.inflight
        if room <= 0 or account in self._claiming:
            return
        self._claiming.add(account)
        self.inflight += room           # reserved until the claim answers

        def got(items: list) -> None:
            self._claiming.discard(account)
            self.inflight -= room
            for cb_id, settings, facts, attempts in items:
                if self.expand is not None and facts is not None:
                    try:
                        facts = self.expand(facts)
                    except Exception:
                        log.failure("HTTP receipt {id} of {acct}: unreadable facts",
                                    id=cb_id, acct=account)
                        settings = facts = None
                self._call(account, cb_id, settings, facts, attempts)

        def failed(f: Any) -> None:
            self._claiming.discard(account)
            self.inflight -= room
            log.warn("taking HTTP receipts of {acct} failed: {err}", acct=account,
                     err=f.getErrorMessage())

        self.messages.claim(account, self.lease_s, room).addCallbacks(got, failed)

    def _treq(self) -> Any:
        if self._http is None:
            import treq
            self._http = treq
        return self._http

    def _call(self, account: str, cb_id: str, settings: dict | None, facts: dict | None,
              attempts: int) -> None:
        req = build_request(settings, facts) if settings is not None else None
        if req is None:
            if settings is None:
                log.warn("unreadable HTTP receipt {id} of {acct}; dropped", id=cb_id,
                         acct=account)
            self.counters["dlr_skipped"] += 1
            self._finish(account, cb_id)
            return
        self.inflight += 1
        self.counters["dlr_called"] += 1
        headers = {b"User-Agent": [b"proxyd"]}
        if req.body is not None:
            headers[b"Content-Type"] = [b"application/x-www-form-urlencoded"]
        http = self._treq()
        d = http.request(req.method, req.url, data=req.body, headers=headers,
                         timeout=self.timeout_s)

        def answered(resp: Any) -> Any:
            return http.content(resp).addCallback(lambda body: (resp.code, body))

        def done(result: tuple) -> None:
            self.inflight -= 1
            code, body = result
            if accepted(settings, code, body):
                self.counters["dlr_ok"] += 1
                self._finish(account, cb_id)
            else:
                self._retry(account, cb_id, req, attempts, "HTTP %d" % code)

        def failed(f: Any) -> None:
            self.inflight -= 1
            self._retry(account, cb_id, req, attempts, f.getErrorMessage() or
                        f.type.__name__)

        d.addCallback(answered).addCallbacks(done, failed)

    def _finish(self, account: str, cb_id: str) -> None:
        self.messages.callback_done(account, cb_id).addErrback(
            lambda f: log.warn("HTTP receipt {id} of {acct} answered but not cleared: "
                               "{err} (it may be called again)", id=cb_id, acct=account,
                               err=f.getErrorMessage()))

    def _retry(self, account: str, cb_id: str, req: Request, attempts: int,
               why: str) -> None:
        n = attempts + 1
        if n >= self.max_attempts:
            self.counters["dlr_failed"] += 1
            log.error("HTTP receipt {id} of {acct} to {url} given up after {n} attempts: "
                      "{why}", id=cb_id, acct=account, n=n, why=why,
                      url=mask_url(req.url.split("?", 1)[0]))
            self._finish(account, cb_id)
            return
        self.counters["dlr_retried"] += 1
        delay = min(self.backoff_max_s, self.backoff_s * 2.0 ** attempts)
        due = int((self.clock.seconds() + delay) * 1000)
        log.info("HTTP receipt {id} of {acct}: {why}; retry {n} in {d:.0f}s", id=cb_id,
                 acct=account, why=why, n=n, d=delay)
        self.messages.callback_retry(account, cb_id, due).addErrback(
            lambda f: log.warn("rescheduling HTTP receipt {id} failed: {err} (retried when "
                               "its lease ends)", id=cb_id, err=f.getErrorMessage()))
