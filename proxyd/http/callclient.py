"""The HTTP client of callbacks (dlr-url, mo_url): one call, tamed.

`CallbackClient.call(request)` returns a Deferred firing ``(code, body)`` or failing:

* `BadUrl` / `Refused` (proxyd.http.targets): the URL cannot or may not be called; permanent,
  the caller drops the callback instead of retrying it.
* anything else (refused connection, DNS failure, deadline, body too large, ...): one failed
  attempt, retried by the caller.

What a call does:

1. parse the URL (`targets.parse_url`);
2. resolve the host, unless it is written as an address, with the reactor's resolver
   (`reactor.nameResolver`: getaddrinfo in a thread, never on the reactor thread);
3. unless the URL starts with one of the `[http] callback_allow` prefixes, check *every*
   resolved address (`targets.public`): one loopback, private, link-local, multicast,
   unspecified or other non-global address refuses the call;
4. connect to a checked address itself (the first; the next ones only when connecting
   fails, up to four) (an endpoint pinned to that address: the
   name is not resolved a second time, so DNS rebinding between check and connect does
   nothing), with the URL's host in the Host header and, for https, in SNI and the
   certificate check;
5. send ``Accept-Encoding: identity``; no redirect is followed (a 3xx is an answer like any
   other, not 2xx: a failed attempt), no body is decompressed (no ContentDecoderAgent);
6. read at most `max_body` octets (64 KiB) of the answer: more, and the connection is
   closed and the call fails;
7. one deadline (`timeout_s`) covers all of it, resolution, connect, request and the whole
   body: when it passes, whatever step is running is cancelled (the connection aborted).
"""
from __future__ import annotations

import ipaddress
import socket
from io import BytesIO
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from .targets import (BadUrl, Target, allowed_by, literal_address, parse_url, private_literal,
                      public)

__all__ = ["CallbackClient", "Refused", "BadUrl", "TooLarge", "Deadline", "MAX_BODY"]

MAX_BODY = 65536


class Refused(Exception):
    """The target may not be called (a non-global address without a callback_allow prefix)."""


class Deadline(Exception):
    """The call's deadline passed before the whole answer came; the call was cancelled."""


class TooLarge(Exception):
    """The answer's body is over the limit; the connection was closed."""


Resolve = Callable[[str, int], "defer.Deferred[list[str]]"]


def reactor_resolver(reactor: Any) -> Resolve:
    """Addresses of a host name through the reactor's resolver (getaddrinfo in a thread)."""

    def resolve(host: str, port: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        found: list[str] = []

        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                found.append(address.host)

            def resolutionComplete(self) -> None:
                if d.called:                     # cancelled by the deadline meanwhile
                    return
                if found:
                    d.callback(found)
                else:
                    d.errback(socket.gaierror("%s: no address" % host))

        reactor.nameResolver.resolveHostName(Receiver(), host, port)
        return d

    return resolve


class _Pinned:
    """An endpoint factory that connects to one checked address, whatever the URI says."""

    def __init__(self, reactor: Any, address: str, target: Target, timeout_s: float,
                 tls: Callable[[str], Any] | None) -> None:
        self.reactor = reactor
        self.address = address
        self.target = target
        self.timeout_s = timeout_s
        self.tls = tls

    def endpointForURI(self, uri: Any) -> Any:
        kind = TCP6ClientEndpoint if ":" in self.address else TCP4ClientEndpoint
        ep = kind(self.reactor, self.address, self.target.port, timeout=self.timeout_s)
        if self.target.scheme == "https":
            return wrapClientTLS(self.tls(self.target.host), ep)
        return ep


def _tls_options(host: str) -> Any:
    from twisted.internet.ssl import optionsForClientTLS
    return optionsForClientTLS(host)


class _Capped(Protocol):
    """Collects a body of at most `limit` octets into `d`."""

    def __init__(self, d: defer.Deferred, limit: int) -> None:
        self.d = d
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        if self.d.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()
            self.d.errback(TooLarge("answer over %d octets" % self.limit))
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Any) -> None:
        if self.d.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.d.callback(b"".join(self.chunks))
        else:
            self.d.errback(reason)


class CallbackClient:
    """Calls callback URLs (see the module docstring). `allow`: the callback_allow prefixes;
    `resolve`: host, port -> Deferred of addresses (default: the reactor's resolver);
    `tls`: host -> client TLS options (default: optionsForClientTLS, verified)."""

    def __init__(self, reactor: Any, allow: tuple[str, ...] = (), timeout_s: float = 10.0,
                 max_body: int = MAX_BODY, resolve: Resolve | None = None,
                 tls: Callable[[str], Any] | None = None) -> None:
        self.reactor = reactor
        self.allow = tuple(allow)
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.resolve = resolve or reactor_resolver(reactor)
        self.tls = tls or _tls_options

    def check(self, url: str) -> Target:
        """The target of a URL (BadUrl when malformed); Refused when it is written as a
        non-global address and no prefix allows it (names are checked once resolved)."""
        target = parse_url(url)
        if private_literal(target, self.allow):
            raise Refused("%s is not a public address" % target.host)
        return target

    def call(self, request: Any) -> defer.Deferred:
        """One call of a `proxyd.http.dlr.Request`, under one deadline."""
        try:
            target = self.check(request.url)
        except (BadUrl, Refused) as e:
            return defer.fail(e)
        d = self._addresses(target)
        d.addCallback(self._send, target, request)
        d.addCallback(self._read)
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()                 # whatever step runs: resolution, connect, body

        timer = self.reactor.callLater(self.timeout_s, expire)

        def settle(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if expired and isinstance(result, Failure):
                return Failure(Deadline("no whole answer within %gs" % self.timeout_s))
            return result

        return d.addBoth(settle)

    def _addresses(self, target: Target) -> defer.Deferred:
        a = literal_address(target.host)
        if a is not None:
            return defer.succeed([str(a)])
        d = defer.maybeDeferred(self.resolve, target.host, target.port)
        if allowed_by(target, self.allow):
            return d

        def checked(addresses: list[str]) -> list[str]:
            bad = [x for x in addresses if not public(x)]
            if bad or not addresses:
                raise Refused("%s resolves to %s, not a public address"
                              % (target.host, ", ".join(bad) or "nothing"))
            return addresses

        return d.addCallback(checked)

    def _send(self, addresses: list[str], target: Target, request: Any) -> defer.Deferred:
        """Connect to the checked addresses in turn (the next one only when the connection
        could not be made: nothing was sent) and send the request."""
        d = self._send_to(addresses[0], target, request)
        for address in addresses[1:4]:
            d.addErrback(self._next, address, target, request)
        return d

    def _next(self, f: Failure, address: str, target: Target, request: Any) -> Any:
        f.trap(ConnectError)
        return self._send_to(address, target, request)

    def _send_to(self, address: str, target: Target, request: Any) -> defer.Deferred:
        address = str(ipaddress.ip_address(address.split("%", 1)[0]))
        agent = Agent.usingEndpointFactory(
            self.reactor, _Pinned(self.reactor, address, target, self.timeout_s, self.tls))
        headers = Headers({b"User-Agent": [b"proxyd"], b"Accept-Encoding": [b"identity"]})
        body = None
        if request.body is not None:
            headers.addRawHeader(b"Content-Type", b"application/x-www-form-urlencoded")
            body = FileBodyProducer(BytesIO(request.body))
        return agent.request(request.method.encode("ascii"), target.url.encode("ascii"),
                             headers, body)

    def _read(self, response: Any) -> defer.Deferred:
        length = response.length
        if isinstance(length, int) and length > self.max_body:
            response.deliverBody(_Discard())
            return defer.fail(TooLarge("answer of %d octets, over %d" % (length,
                                                                        self.max_body)))
        protocol: list[_Capped] = []

        def cancel(d: defer.Deferred) -> None:
            if protocol and protocol[0].transport is not None:
                protocol[0].transport.stopProducing()

        d: defer.Deferred = defer.Deferred(cancel)
        protocol.append(_Capped(d, self.max_body))
        response.deliverBody(protocol[0])
        return d.addCallback(lambda body: (response.code, body))


class _Discard(Protocol):
    """Takes a body that will not be read: the connection is closed at once."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()
