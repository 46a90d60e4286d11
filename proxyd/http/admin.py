"""The admin site (`[admin] listen`): the status page, /metrics for Prometheus, /health for
load balancers.

    GET /          200, the status page (HTML, `proxyd.http.status`)
    GET /metrics   200, Prometheus text format (`proxyd.metrics`, `proxyd.monitor`); the
                   accounts' state is read from the store first when the last read is
                   older than `proxyd.monitor.CACHE_S` (asynchronously, within a deadline)
    GET /health    200 "ok" when at least one upstream is bound and the store answers PING
                   within HEALTH_TIMEOUT_S (or `[store] url = "none"`); otherwise 503 with
                   one line naming the first problem found
    anything else  404 (other methods on those paths: 405)

With `[admin] token` set, every request (whatever its path) must carry
``Authorization: Bearer <token>``; without it, or with another token, the answer is 401
(compared in constant time). The token is required when a listener is not on loopback
(`proxyd.config`); keep this listener on a private interface anyway: it tells whoever may
ask about accounts and traffic. Requests are not access-logged (a scraper every few
seconds would flood the log).
"""
from __future__ import annotations

import hmac
from typing import Any, Callable, Sequence

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

HEALTH_TIMEOUT_S = 1.0
log = Logger(namespace="proxyd.http.admin")


class AdminResource(resource.Resource):
    """/metrics from `metrics` (and `monitor`'s collector); /health from `upstreams` (the
    node's live list of upstream links), `config` (() -> the current Config) and `store`
    (None until connected, and with `[store] url = "none"`); `clock` times the store's
    PING. / (the status page) from all of these and `binds` (sessions by account)."""

    isLeaf = True

    def __init__(self, config: Callable[[], Any], metrics: Any, upstreams: Sequence[Any],
                 store: Any, clock: Any, timeout_s: float = HEALTH_TIMEOUT_S,
                 monitor: Any = None, binds: dict | None = None) -> None:
        super().__init__()
        self.monitor = monitor
        self.binds = binds if binds is not None else {}
        self.config = config
        self.metrics = metrics
        self.upstreams = upstreams
        self.store = store
        self.clock = clock
        self.timeout_s = timeout_s

    def render_GET(self, request: Any) -> Any:
        path = request.path
        if path == b"/metrics":
            return self._after_read(request, self._metrics)
        if path == b"/" and self.monitor is not None:
            return self._after_read(request, self._status)
        return self._health(request)

    def render(self, request: Any) -> Any:
        token = self.config().admin.token
        if token and not bearer_matches(request.getHeader(b"authorization"), token):
            request.setHeader(b"www-authenticate", b'Bearer realm="proxyd-admin"')
            return _text(request, 401, "unauthorized")
        if request.path not in (b"/metrics", b"/health") and not (
                request.path == b"/" and self.monitor is not None):
            return _text(request, 404, "not found")
        return super().render(request)

    def _after_read(self, request: Any, render: Any) -> Any:
        """`render(request)` once the monitor's store read is fresh (at once if it is)."""
        if self.monitor is None:
            return render(request)
        d = self.monitor.fresh()
        if d.called:
            return render(request)
        finished: list = []
        request.notifyFinish().addBoth(finished.append)

        def answer(_: Any) -> None:
            if finished:
                return
            try:
                body = render(request)
            except Exception:
                log.failure("admin page {path} failed", path=request.path)
                body = _text(request, 500, "internal error")
            request.write(body)
            request.finish()
        d.addCallback(answer)
        return server.NOT_DONE_YET

    # --- / (the status page) ------------------------------------------------------------------
    def _status(self, request: Any) -> bytes:
        from . import status
        view = status.gather(self.config, self.metrics, self.monitor, self.upstreams,
                             self.binds, self.clock)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; style-src 'unsafe-inline'; img-src data:")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return status.render(view)

    # --- /metrics ---------------------------------------------------------------------------
    def _metrics(self, request: Any) -> bytes:
        body = self.metrics.exposition()
        request.setResponseCode(200)
        request.setHeader(b"content-type", self.metrics.content_type.encode())
        request.setHeader(b"cache-control", b"no-store")
        return body

    # --- /health ----------------------------------------------------------------------------
    def _health(self, request: Any) -> Any:
        if not any(u.available for u in self.upstreams):
            return _text(request, 503, "no upstream bound")
        if self.config().store.url == "none":
            return _text(request, 200, "ok")
        store = self.store
        if store is None:
            return _text(request, 503, "store not connected")
        finished = []
        request.notifyFinish().addBoth(finished.append)
        self.check_store(store).addCallback(self._answer, request, finished)
        return server.NOT_DONE_YET

    def check_store(self, store: Any) -> defer.Deferred:
        """Deferred[str]: "" when the store answered PING in time, else why not. Never
        errbacks; the PING itself is left to finish (or time out) in the store client."""
        clock = self.clock
        metrics = self.metrics
        out: defer.Deferred = defer.Deferred()
        t0 = clock.seconds()

        def timed_out() -> None:
            if not out.called:
                out.callback("store: no answer to PING in %gs" % self.timeout_s)

        timer = clock.callLater(self.timeout_s, timed_out)

        def answered(reply: Any) -> None:
            metrics.store_latency(clock.seconds() - t0)
            if timer.active():
                timer.cancel()
            if not out.called:
                out.callback("")

        def failed(f: Any) -> None:
            if timer.active():
                timer.cancel()
            if not out.called:
                msg = " ".join((f.getErrorMessage() or f.type.__name__).split())
                out.callback("store: %s" % msg)

        try:
            d = store.ping()
        except Exception:  # noqa: BLE001 - a broken client is an unhealthy store
            failed(_failure())
        else:
            d.addCallbacks(answered, failed)
        return out

    @staticmethod
    def _answer(problem: str, request: Any, finished: list) -> None:
        if finished:      # the client went away
            return
        request.write(_text(request, 503 if problem else 200, problem or "ok"))
        request.finish()


def bearer_matches(header: bytes | None, token: str) -> bool:
    """True if an Authorization header value is ``Bearer <token>`` (the scheme in any
    case); the tokens are compared in constant time."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), token.encode("utf-8"))


def _failure() -> Any:
    from twisted.python.failure import Failure
    return Failure()


def _text(request: Any, code: int, line: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return (line + "\n").encode()


class AdminSite(server.Site):
    noisy = False
    displayTracebacks = False

    def log(self, request: Any) -> None:
        pass


def make_admin_site(config: Callable[[], Any], metrics: Any, upstreams: Sequence[Any],
                    store: Any, clock: Any, monitor: Any = None,
                    binds: dict | None = None) -> server.Site:
    """The site for `[admin] listen` endpoints (see `AdminResource`); without `monitor`
    (proxyd.monitor.Monitor) there is no status page (404) and /metrics has only what
    `metrics` has. `binds`: the bound sessions by account (proxyd.accounts.Registry)."""
    return AdminSite(AdminResource(config, metrics, upstreams, store, clock,
                                   monitor=monitor, binds=binds))
