"""GET /report: an account's own reconciliation (issue 8), read-only, as JSON.

    GET /report?username=U&password=P[&date=YYYYMMDD | &from=YYYYMMDD&to=YYYYMMDD]

The same figures and identity checks as ``proxyd-admin report`` (`proxyd.store.journal`),
for the authenticated account only. 200 with the report (``"ok": false`` and the offending
ids when an identity does not hold), 400 bad arguments (a range wider than ``[admin]
report_max_days``, 31 by default), 403 bad credentials, 503 no store.

The reactor is never held by a report: the journal is read from the store in slices (each
slice a round trip, so other work runs between them), and the records, once read, belong to
the report alone and are verified and counted in a thread (`threads.deferToThread`).
`proxyd.http.api.Api` serves it on /report; the node builds it with its authenticator, its
ledger (None without a store: 503) and its clock.
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web import resource, server

from proxyd.store import journal as J
from proxyd.store.ledger import Ledger

__all__ = ["ReportResource", "MAX_DAYS"]

log = Logger()
MAX_DAYS = 31


def _arg(request: Any, name: str) -> str:
    v = request.args.get(name.encode())
    return v[0].decode("utf-8", "replace") if v else ""


def _parse_day(text: str) -> str:
    t = text.replace("-", "")
    datetime.datetime.strptime(t, "%Y%m%d")
    return t


def _span(first: str, last: str, max_days: int = MAX_DAYS) -> list[str]:
    a = datetime.datetime.strptime(first, "%Y%m%d").date()
    b = datetime.datetime.strptime(last, "%Y%m%d").date()
    if b < a:
        raise ValueError("from/to: from must not be after to")
    if (b - a).days >= max_days:
        raise ValueError("from/to: a report covers at most %d days, %s..%s is %d days"
                         % (max_days, first, last, (b - a).days + 1))
    return [(a + datetime.timedelta(days=i)).strftime("%Y%m%d") for i in range((b - a).days + 1)]


@defer.inlineCallbacks
def load_report(ledger: Ledger, account: Any, days: list[str], today: str,
                build: Callable[..., J.Report] = J.build_report) -> Any:
    """Deferred[journal.Report] of an AccountConfig over `days` (oldest first); `build`
    (`journal.build_report`: chain verification and figures) runs in a thread, on records
    nothing else holds."""
    acct = account.system_id
    records, stats, heads = {}, {}, {}
    for d in days:
        records[d] = yield ledger.journal(acct, d)
        stats[d] = yield ledger.stats(acct, d)
        heads[d] = yield ledger.journal_head(acct, d)
    opened = yield ledger.reservations(acct)
    later: set[str] = set()
    nxt = (datetime.datetime.strptime(days[-1], "%Y%m%d").date()
           + datetime.timedelta(days=1)).strftime("%Y%m%d")
    if nxt <= today:
        later = {r.msg_id for r in (yield ledger.journal(acct, nxt))
                 if r.event in ("committed", "refunded")}
    report = yield threads.deferToThread(build, acct, account.price, days, records, stats,
                                         opened, later, heads)
    return report


class ReportResource(resource.Resource):
    """Reports of the accounts `auth` (a `proxyd.auth.Authenticator`) authenticates, read
    from `ledger` (a store's `Ledger`, or None for a node without a store); "today" is the
    day of `clock`; at most `config().admin.report_max_days` days (`MAX_DAYS` without a
    config); `build` makes the report from the records (in a thread)."""

    isLeaf = True

    def __init__(self, auth: Any, ledger: Ledger | None, clock: Any,
                 config: Callable[[], Any] | None = None,
                 build: Callable[..., J.Report] = J.build_report) -> None:
        super().__init__()
        self.auth = auth
        self.ledger = ledger
        self.clock = clock
        self.config = config
        self.build = build

    def max_days(self) -> int:
        return self.config().admin.report_max_days if self.config is not None else MAX_DAYS

    def render_GET(self, request: Any) -> Any:
        user, password = _arg(request, "username"), _arg(request, "password")
        ledger = self.ledger
        try:
            today = ledger.day_of(self.clock.seconds()) if ledger else ""
            date, first, last = _arg(request, "date"), _arg(request, "from"), _arg(request, "to")
            if date and (first or last):
                raise ValueError("give date or from/to, not both")
            if first or last:
                days = _span(_parse_day(first or last), _parse_day(last or first),
                             self.max_days())
            else:
                days = [_parse_day(date) if date else today]
        except ValueError as e:
            return self._write(request, 400, {"error": str(e)})
        if not user:
            return self._write(request, 403, {"error": "authorization failed"})
        if ledger is None:
            return self._write(request, 503, {"error": "no store"})

        def authenticated(result: tuple) -> Any:
            status, account = result
            if status != 0 or account is None:
                return self._write(request, 403, {"error": "authorization failed"})
            return load_report(ledger, account, days, today, self.build).addCallback(
                lambda rep: self._write(request, 200, rep.as_dict()))

        def failed(f: Any) -> None:
            log.warn("report for {user} failed: {err}", user=user, err=f.getErrorMessage())
            self._write(request, 503, {"error": "store unavailable, try again later"})

        peer = getattr(request.getClientAddress(), "host", "") or ""
        self.auth.authenticate(user, password, peer).addCallback(
            authenticated).addErrback(failed)
        return server.NOT_DONE_YET

    @staticmethod
    def _write(request: Any, code: int, body: dict) -> Any:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if (getattr(request, "startedWriting", False) or getattr(request, "finished", False)
                or getattr(request, "_disconnected", False)):     # (the client went away)
            return server.NOT_DONE_YET
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.write(data)
        request.finish()
        return server.NOT_DONE_YET
