"""The legacy HTTP API: Kannel's /cgi-bin/sendsms and Jasmin's /send, /balance, /rate.

    GET|POST /cgi-bin/sendsms   Kannel smsbox: 202 "0: Accepted for delivery", ...
    GET|POST /send              Jasmin: 200 Success "<id>" / Error "<text>"
    GET      /balance           Jasmin: {"balance": <fen>, "sms_count": "ND"}
    GET      /rate              Jasmin: {"unit_rate": <fen per part>, "submit_sm_count": n}

Every message goes through `Gate.send` (policy, opt-out, ledger, routing, upstream) like an
SMPP one; one Message per recipient. The reply is written when the gate's `done` fires
(after the operator took every part, or with the reason it did not), so a 202/200 means the
message is at the operator. A request whose client went away is simply not answered.

Request size: the request line (GET parameters) and the body (POST form) are each limited to
`[http] max_request_bytes`; beyond, 413 and the connection is closed. No access log (URLs
carry passwords and text); one log line per refused request, numbers masked.

Hostile peers: connections are capped (`[http] max_connections`, `max_connections_per_address`;
past a cap the connection is closed before anything is read), and each request must arrive
whole (request line, headers and body) within `[http] header_timeout_s` of its first byte,
however slowly the bytes trickle in (slowloris); else the connection is dropped. The idle
timer between requests stays Twisted's. Lines about these peers are rate-limited per address
(`QuietLog`), and so are the refusals of requests not authenticated (bad credentials, or
refused before the check): `http_quiet_log` makes the one log the site and the `Api` share.
"""
from __future__ import annotations

import json
import random
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import http, resource, server

from proxyd.conns import Caps, QuietLog
from proxyd.gate import build_message
from proxyd.logs import mask
from proxyd.smpp import pdu as P
from proxyd.text.split import TooManyParts
from proxyd.text.udh import parse_concat, split_udh

from . import params as PR
from . import replies as R

log = Logger(namespace="proxyd.http")

_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"


# --- transport: size limits, no access log ---------------------------------------------------

class _Channel(http.HTTPChannel):
    """HTTPChannel answering 413 (and closing) when the request line or body is too big."""

    _refused = False
    _admitted = False
    _host = ""
    _header_call: Any = None                         # the running request's deadline

    def connectionMade(self) -> None:
        site = self.site
        peer = self.transport.getPeer()
        host = self._host = str(getattr(peer, "host", "?"))
        cfg = site.cfg
        refused = site.caps.admit(host, cfg.max_connections, cfg.max_connections_per_address)
        if refused:
            self._refused = True
            site.quiet(host, "HTTP connection from {host} refused: {cap} reached", host=host,
                       cap=refused)
            self.transport.abortConnection()
            return
        self._admitted = True
        limit = cfg.max_request_bytes
        self.MAX_LENGTH = limit + 64                 # request line: method, target, version
        self.totalHeadersSize = limit + 16384
        super().connectionMade()
        self._start_header_timer()

    def connectionLost(self, reason: Any = None) -> None:
        self._stop_header_timer()
        if self._admitted:
            self._admitted = False
            self.site.caps.release(self._host)
            super().connectionLost(reason)

    # a request (line, headers, body) must arrive whole within header_timeout_s of its start
    def _start_header_timer(self) -> None:
        self._header_call = self.callLater(self.site.cfg.header_timeout_s, self._header_timeout)

    def _stop_header_timer(self) -> None:
        call = self._header_call
        if call is not None:
            self._header_call = None
            if call.active():
                call.cancel()

    def _header_timeout(self) -> None:
        self._header_call = None
        if self._refused or self.transport is None:
            return
        self._refused = True
        self.site.quiet(self._host, "HTTP request from {host} not whole within {s}s; closing",
                        host=self._host, s=self.site.cfg.header_timeout_s)
        self.transport.abortConnection()

    def timeoutConnection(self) -> None:
        # Twisted's idle timer between requests; its own INFO line per connection is left
        # out (a peer could open many), the close is normal for keep-alive
        log.debug("HTTP connection from {host} idle; closing", host=self._host)
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def allContentReceived(self) -> None:
        self._stop_header_timer()
        super().allContentReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._too_large()

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        if self.length is not None and self.length > self.site.max_request_bytes:
            self._too_large()

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            if self._header_call is None and data and not self._handlingRequest:
                self._start_header_timer()         # the first byte of the next request
            super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def _too_large(self) -> None:
        if self._refused:
            return
        self._refused = True
        body = b"Request too large"
        self.transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\n"
                             b"Content-Type: text/plain; charset=utf-8\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))
        self.transport.loseConnection()


class _Request(server.Request):
    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        channel = self.channel
        if channel is not None and self._received > channel.site.max_request_bytes:
            channel._too_large()
            return
        super().handleContentChunk(data)


def http_quiet_log(clock: Any, refusal_interval_s: float = 60.0) -> QuietLog:
    """The log of lines about HTTP peers not authenticated: refused connections, slow
    requests, failed logins (one per address per interval, the rest counted)."""
    return QuietLog(log, clock, refusal_interval_s,
                    what="lines about HTTP peers refused, too slow or not authenticated")


class _LogAll:
    """A `QuietLog` that keeps every line (an `Api` built without one: unit tests)."""

    def __call__(self, key: str, fmt: str, **kw: Any) -> bool:
        log.info(fmt, **kw)
        return True


class _Site(server.Site):
    noisy = False
    protocol = _Channel
    requestFactory = _Request

    def __init__(self, root: resource.Resource, cfg: Any, clock: Any,
                 refusal_interval_s: float = 60.0, quiet: QuietLog | None = None) -> None:
        super().__init__(root, timeout=120, reactor=clock)
        self.cfg = cfg
        self.max_request_bytes = cfg.max_request_bytes
        self.caps = Caps()
        self.quiet = quiet or http_quiet_log(clock, refusal_interval_s)
        self._flusher = LoopingCall(self.quiet.flush)
        self._flusher.clock = clock

    def startFactory(self) -> None:
        super().startFactory()
        if not self._flusher.running:
            self._flusher.start(self.quiet.interval_s, now=False)

    def stopFactory(self) -> None:
        if self._flusher.running:
            self._flusher.stop()
        super().stopFactory()

    def log(self, request: Any) -> None:     # no access log: URLs hold passwords and text
        pass


def make_site(api: "Api", cfg: Any, clock: Any, refusal_interval_s: float = 60.0,
              quiet: QuietLog | None = None) -> server.Site:
    """The site for `[http] listen` endpoints (`cfg`: the `[http]` section), serving `api`;
    `quiet`: the `http_quiet_log` it shares with `api` (flushed by the site's timer)."""
    return _Site(api, cfg, clock, refusal_interval_s, quiet)


# --- replies --------------------------------------------------------------------------------

def _write(request: Any, status: int, body: str | bytes, ctype: bytes = _TEXT,
           headers: tuple = ()) -> None:
    if request.channel is None or request.finished:     # the client went away
        return
    if isinstance(body, str):
        body = body.encode("utf-8")
    request.setResponseCode(status)
    request.setHeader(b"content-type", ctype)
    request.setHeader(b"content-length", b"%d" % len(body))
    for k, v in headers:
        request.setHeader(k, v)
    request.write(body)
    request.finish()


def _never_hang(request: Any, f: Any, *args: Any) -> None:
    """Run a handler called back after authentication: an unexpected error answers 500
    (it would otherwise end in the Deferred and leave the request unanswered)."""
    try:
        f(*args)
    except Exception:
        log.failure("HTTP request failed")
        _write(request, 500, "Internal error")


class _Fanout:
    """One request's messages in flight (one per recipient) and their outcomes."""
    __slots__ = ("api", "request", "account", "sub", "recipients", "outcomes", "left",
                 "parts")

    def __init__(self, api: "Api", request: Any, account: Any, sub: PR.Submission,
                 parts: int) -> None:
        self.api = api
        self.request = request
        self.account = account
        self.sub = sub
        self.recipients = sub.recipients
        self.outcomes: list = [None] * len(sub.recipients)
        self.left = len(sub.recipients)
        self.parts = parts

    def done(self, i: int, outcome: R.Outcome) -> None:
        self.outcomes[i] = outcome
        self.left -= 1
        if self.left == 0:
            self.api._answer(self)


def peer_host(request: Any) -> str:
    """The client's IP address (what the authentication throttle counts failures of)."""
    return getattr(request.getClientAddress(), "host", "") or ""


# --- the resource ---------------------------------------------------------------------------

class Api(resource.Resource):
    """The routes above. `auth` (a `proxyd.auth.Authenticator`) authenticates; `gate` takes
    each message, `intake` the parts of a long one sent as separate parts (with a UDH);
    `receipts` is told which accepted messages want an HTTP delivery report; `ledger`
    answers /balance, `router` /rate, `report` (a `ReportResource`) /report. `quiet` (an
    `http_quiet_log`, shared with the site) takes the refusals of peers not authenticated;
    `callback_allow`: the `[http] callback_allow` prefixes (a dlr-url to a non-public
    address not named by one is refused at submit)."""

    isLeaf = True

    def __init__(self, auth: Any, intake: Any, gate: Any, receipts: Any, ledger: Any,
                 router: Any, report: resource.Resource, max_receivers: int = 100,
                 quiet: QuietLog | None = None, callback_allow: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.callback_allow = tuple(callback_allow)
        self.max_receivers = max_receivers      # Kannel `to`: receivers per request
        self.quiet: Any = quiet or _LogAll()
        self.auth = auth
        self.intake = intake
        self.gate = gate
        self.receipts = receipts
        self.ledger = ledger
        self.router = router
        self._ref = random.randrange(256)
        self._routes = {
            b"/cgi-bin/sendsms": (self._kannel, (b"GET", b"POST")),
            b"/send": (self._jasmin, (b"GET", b"POST")),
            b"/balance": (self._balance, (b"GET",)),
            b"/rate": (self._rate, (b"GET",)),
            b"/report": (self._report, (b"GET",)),
        }
        self._report_resource = report

    def render(self, request: Any) -> Any:
        route = self._routes.get(request.path)
        if route is None:
            _write(request, 404, "Not Found")
            return server.NOT_DONE_YET
        handler, methods = route
        if request.method not in methods:
            request.setHeader(b"allow", b", ".join(methods))
            _write(request, 405, "Method Not Allowed")
            return server.NOT_DONE_YET
        try:
            handler(request)
        except Exception:
            log.failure("HTTP request failed")
            _write(request, 500, "Internal error")
        return server.NOT_DONE_YET

    def _report(self, request: Any) -> None:
        """GET /report: the account's own reconciliation figures (JSON, authenticated)."""
        result = self._report_resource.render_GET(request)
        if result is not server.NOT_DONE_YET:
            request.write(result)
            request.finish()

    # --- shared ------------------------------------------------------------------------------
    def _next_ref(self) -> int:
        self._ref = (self._ref + 1) & 0xFF
        return self._ref

    def _refused(self, api: str, who: str, dest: str, status: int, why: str) -> None:
        log.info("http {api} refused {acct} -> {dest}: {status} {why}", api=api, acct=who,
                 dest=mask(dest) if dest else "-", status=status, why=why)

    def _refused_peer(self, request: Any, api: str, who: str, status: int, why: str) -> None:
        """A request refused before its peer authenticated (bad credentials, or refused
        before the check): at most one line per address per [log] refusal_interval_s."""
        host = peer_host(request)
        self.quiet(host, "http {api} refused {acct} from {host}: {status} {why}", api=api,
                   acct=who[:32], host=host, status=status, why=why)

    def _authenticate(self, request: Any, user: str, password: str, ok: Any,
                      fail: Any) -> None:
        def checked(result: tuple) -> None:
            status, account = result
            if status != 0 or account is None:
                fail(403)
            else:
                ok(account)

        def error(f: Any) -> None:
            log.warn("authentication error: {err}", err=f.getErrorMessage())
            fail(503)

        self.auth.authenticate(user, password, peer_host(request)).addCallbacks(checked,
                                                                                error)

    # --- Kannel ------------------------------------------------------------------------------
    def _kannel(self, request: Any) -> None:
        try:        # first of all: no authentication or per-receiver work for a huge `to`
            PR.check_receivers(request.args, self.max_receivers)
        except PR.Invalid as e:
            self._refused_peer(request, "kannel", "-", e.status, e.text)
            _write(request, e.status, e.text, _TEXT)
            return
        creds = PR.kannel_credentials(request.args)

        def fail(status: int) -> None:
            who = creds[0] if creds else "-"
            if status == 403:
                self._refused_peer(request, "kannel", who, 403, "authorization failed")
                _write(request, 403, PR.K_AUTH_FAILED, _HTML)
            else:
                _write(request, 503, R.K_TEMPORAL, _HTML)

        if creds is None:
            fail(403)
            return
        self._authenticate(request, creds[0], creds[1],
                           lambda acct: self._kannel_send(request, acct), fail)

    def _kannel_send(self, request: Any, account: Any) -> None:
        _never_hang(request, self._kannel_send_, request, account)

    def _kannel_send_(self, request: Any, account: Any) -> None:
        try:
            sub = PR.parse_kannel(request.args, self.callback_allow)
            if not sub.source and not account.service_codes:
                raise PR.Invalid(400, PR.K_NO_SENDER)
            enc = PR.build_payloads(sub, account.max_parts, self._next_ref())
        except PR.Invalid as e:
            self._refused("kannel", account.system_id, "", e.status, e.text)
            _write(request, e.status, e.text, _HTML)
            return
        except TooManyParts as e:
            text = "Message too long: %d parts, at most %d allowed, rejected" % (
                e.parts_needed, e.max_parts or 0)
            self._refused("kannel", account.system_id, "", 400, "too many parts")
            _write(request, 400, text, _HTML)
            return
        self._send(request, account, sub, enc)

    # --- Jasmin ------------------------------------------------------------------------------
    def _jasmin(self, request: Any) -> None:
        try:
            sub = PR.parse_jasmin(request.args, self.callback_allow)
        except PR.Invalid as e:
            self._refused_peer(request, "jasmin", "-", e.status, e.text)
            _write(request, e.status, R.jasmin_error(e.text))
            return

        def fail(status: int) -> None:
            if status == 403:
                self._refused_peer(request, "jasmin", sub.username, 403,
                                   "authentication failure")
                _write(request, 403, R.jasmin_error(
                    "Authentication failure for username:%s" % sub.username))
            else:
                _write(request, 503, R.jasmin_error(
                    "Service temporarily unavailable, try again later"))

        self._authenticate(request, sub.username, sub.password,
                           lambda acct: self._jasmin_send(request, acct, sub), fail)

    def _jasmin_send(self, request: Any, account: Any, sub: PR.Submission) -> None:
        _never_hang(request, self._jasmin_send_, request, account, sub)

    def _jasmin_send_(self, request: Any, account: Any, sub: PR.Submission) -> None:
        try:
            enc = PR.build_payloads(sub, account.max_parts, self._next_ref())
        except PR.Invalid as e:
            self._refused("jasmin", account.system_id, "", e.status, e.text)
            _write(request, e.status, R.jasmin_error(e.text))
            return
        except TooManyParts as e:
            self._refused("jasmin", account.system_id, "", 400, "too many parts")
            _write(request, 400, R.jasmin_error(
                "Content too long: %d parts, at most %d allowed" % (e.parts_needed,
                                                                   e.max_parts or 0)))
            return
        self._send(request, account, sub, enc)

    # --- through the gate --------------------------------------------------------------------
    def _send(self, request: Any, account: Any, sub: PR.Submission, enc: PR.Encoded) -> None:
        source = sub.source
        if not source and account.sender_mode != "prefix" and account.service_codes:
            source = account.service_codes[0]   # (prefix mode: "" is the code itself)
        fan = _Fanout(self, request, account, sub, len(enc.payloads))
        concat = False
        if sub.udh:
            try:
                c = parse_concat(split_udh(sub.udh)[0])
                concat = c is not None and c[1] > 1
            except ValueError:
                concat = False
        rd = sub.dlr.registered_delivery if sub.dlr is not None else 0
        for i, dest in enumerate(sub.recipients):
            parts = self._parts(source, dest, sub, enc, rd)
            if parts is None:
                from proxyd.policy.optout import BAD_DESTINATION
                fan.done(i, R.Refused(BAD_DESTINATION))
                continue
            if concat:
                def reply(status: int, mid: bytes, i: int = i) -> None:
                    fan.done(i, R.outcome_from_status(status, mid))
                pdu, body = parts[0]
                self.intake.message(account, pdu, body, reply)
                continue
            msg = build_message(account, parts[0][0], enc.text, tuple(parts), len(parts),
                                "http")

            def done(status: int, ids: list, refusal: Any, ok: int, i: int = i,
                     n: int = len(parts)) -> None:
                if status == 0:
                    fan.done(i, R.Accepted(tuple(ids)))
                elif refusal is not None:
                    fan.done(i, R.Refused(refusal))
                else:
                    fan.done(i, R.Failed(status, ok, n))
            self.gate.send(account, msg, done)

    @staticmethod
    def _parts(source: str, dest: str, sub: PR.Submission, enc: PR.Encoded,
               rd: int) -> list | None:
        number, ton = (dest[1:], 1) if dest[:1] == "+" else (dest, 0)
        if not number or len(number) > 20 or len(source) > 20:
            return None
        base = P.SubmitSm(
            seq=0, source_addr_ton=0, source_addr_npi=1, source_addr=source.encode("latin-1"),
            dest_addr_ton=ton, dest_addr_npi=1, destination_addr=number.encode("latin-1"),
            esm_class=enc.esm_class, priority_flag=sub.priority,
            schedule_delivery_time=sub.deferred, validity_period=sub.validity,
            registered_delivery=rd, data_coding=enc.data_coding)
        out = []
        for payload in enc.payloads:
            pdu = base._replace(short_message=payload)
            out.append((pdu, P.encode(pdu)[P.HEADER_LEN:]))
        return out

    def _answer(self, fan: _Fanout) -> None:
        sub = fan.sub
        account = fan.account
        hook = self.receipts.expect_http_dlr
        for dest, o in zip(fan.recipients, fan.outcomes):
            if type(o) is R.Accepted:
                if sub.dlr is not None:
                    hook(account.system_id, dest, o.ids, sub.dlr)
            elif type(o) is R.Failed:
                self._refused(sub.api, account.system_id, dest, o.status,
                              "operator error after %d of %d parts" % (o.ok_parts, o.parts))
                if sub.dlr is not None:
                    # the SMSC-failure report (Kannel dlr-mask 16, Jasmin level 1)
                    hook(account.system_id, dest, (), sub.dlr, status=o.status)
        ids = " ".join(b",".join(o.ids).decode() for o in fan.outcomes
                       if type(o) is R.Accepted)
        headers = ((b"x-proxyd-message-id", ids.encode()),) if ids else ()
        if sub.api == PR.KANNEL:
            if len(fan.recipients) == 1:
                status, text = R.kannel_reply(fan.outcomes[0])
            else:
                status, text = R.kannel_multi(fan.recipients, fan.outcomes)
            _write(fan.request, status, text, _HTML, headers)
        else:
            status, text = R.jasmin_reply(fan.outcomes[0])
            _write(fan.request, status, text, _TEXT, headers)

    # --- Jasmin /balance and /rate -----------------------------------------------------------
    def _json_query(self, request: Any, mandatory: tuple, then: Any) -> None:
        try:
            got = PR.parse_jasmin_query(request.args, mandatory)
        except PR.Invalid as e:
            self._refused_peer(request, "jasmin", "-", e.status, e.text)
            _write(request, e.status, json.dumps(e.text), _JSON)
            return
        user = got[b"username"].decode("utf-8", "replace")

        def fail(status: int) -> None:
            if status == 403:
                self._refused_peer(request, "jasmin", user, 403, "authentication failure")
                _write(request, 403, json.dumps("Authentication failure for username:%s"
                                                % user), _JSON)
            else:
                _write(request, 503, json.dumps("Service temporarily unavailable"), _JSON)

        self._authenticate(request, user, got[b"password"].decode("utf-8", "replace"),
                           lambda acct: then(request, acct, got), fail)

    def _balance(self, request: Any) -> None:
        self._json_query(request, (b"username", b"password"), self._balance_of)

    def _balance_of(self, request: Any, account: Any, got: dict) -> None:
        ledger = self.ledger

        def ok(balance: int) -> None:
            _write(request, 200, json.dumps({"balance": int(balance), "sms_count": "ND"}),
                   _JSON)

        def err(f: Any) -> None:
            log.warn("balance of {acct}: store error {err}", acct=account.system_id,
                     err=f.getErrorMessage())
            _write(request, 503, json.dumps("Balance unavailable, try again later"), _JSON)

        defer.maybeDeferred(ledger.balance, account.system_id).addCallbacks(ok, err)

    def _rate(self, request: Any) -> None:
        self._json_query(request, (b"username", b"password", b"to"), self._rate_of)

    def _rate_of(self, request: Any, account: Any, got: dict) -> None:
        try:
            text, data, dc = PR.jasmin_rate_content(got)
            if text == "" and data is None:
                count = 1
            else:
                count = len(PR.encode(text, data, dc, b"", None, 255, 0).payloads)
        except PR.Invalid as e:
            _write(request, e.status, json.dumps(e.text), _JSON)
            return
        except TooManyParts as e:
            _write(request, 400, json.dumps("Content too long: %d parts" % e.parts_needed),
                   _JSON)
            return
        dest = got[b"to"].decode("ascii").lstrip("+")
        if not self.router.routable(dest, account):
            _write(request, 412, json.dumps("No route found"), _JSON)
            return
        _write(request, 200, json.dumps({"unit_rate": account.price,
                                         "submit_sm_count": count}), _JSON)
