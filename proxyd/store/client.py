"""The store connection: a txredisapi connection pool with a timeout on every call.

``Store.connect(target, pool_size, timeout_s, reactor, on_latency=None)`` accepts

* a filesystem path of a unix socket (the embedded server: ``socket_path_for(dir)``),
* ``unix:///path/to/socket[?db=N&password=PW]``,
* ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://...`` (TLS: the server's
  certificate and host name are verified, against ``ca_file`` if given; `proxyd.store.tls`),
* ``sentinel://[[user]:password@]host:port[,host:port...]/service[?db=N]``: the primary of
  `service` as Valkey/Redis Sentinel names it, asked again before every connection, so a
  failover is followed (every connection to the old primary is dropped when it changes).

``replicas_ack`` N > 0: every ordered script call (the ledger's money and journal writes)
is followed, on the same connection, by ``WAIT N timeout``; its answer comes only once N
replicas have the write, else the call fails with StoreUnavailable (and the ledger sends it
again, with its token, so never twice): an acknowledged charge survives the loss of the
primary.

Every call is bounded by ``timeout_s`` and every way of not getting an answer (timeout,
connection refused, connection lost, server loading or read-only) raises the one exception
``StoreUnavailable``; any other error reply raises ``StoreError``. A timed-out call may still
have been executed by the server; the ledger's scripts are idempotent per message id so a
retry is safe.

Lua scripts are registered by name (``register_script``), loaded with SCRIPT LOAD and run with
EVALSHA; a NOSCRIPT reply (the server restarted, or SCRIPT FLUSH) reloads the script and
retries once.

Gotchas of txredisapi 1.6 handled here:
* It uses the global reactor for connecting; `reactor` here only drives timeouts.
* A lazy pool with no live connection queues calls until a connection comes back, for ever;
  calls fail fast instead when the pool is empty, and every call has its own timeout.
* ``convertNumbers`` would turn string replies such as "123" into ints; it is off.
* Reconnection backs off up to ``RedisFactory.maxDelay`` (10 s by default); capped here at
  ``reconnect_max_s`` so a restarted embedded server is used again quickly.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi
from twisted.internet import defer, error as net_error
from twisted.python.failure import Failure

from proxyd.logs import mask_url
from proxyd.store.tls import StoreTLS

__all__ = ["Store", "StoreError", "StoreUnavailable", "parse_target"]


class StoreError(Exception):
    """The store answered with an error (a bug, a bad script, out of memory, ...)."""


class StoreUnavailable(StoreError):
    """The store did not answer in time, or cannot be reached."""


_UNAVAILABLE_REPLIES = ("LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN")
_UNAVAILABLE_ERRORS = (txredisapi.ConnectionError, net_error.ConnectError,
                       net_error.ConnectionLost, net_error.ConnectionDone,
                       net_error.ConnectionClosed, defer.CancelledError, defer.TimeoutError,
                       ConnectionError, OSError)


def parse_sentinel(target: str) -> dict[str, Any]:
    """``sentinel://[[user]:password@]host:port[,host:port...]/service[?db=N]``: the
    password (and user) are the data servers'; the sentinels are asked without one."""
    rest = target[len("sentinel://"):]
    rest, _, query = rest.partition("?")
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        hosts, userinfo = rest, ""
    hosts, _, service = hosts.partition("/")
    service = unquote(service.strip("/"))
    username, _, password = userinfo.partition(":") if ":" in userinfo else ("", "", "")
    sentinels = []
    for h in hosts.split(","):
        host, _, port = h.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("sentinel:// store url: want host:port[,host:port...], got %r"
                             % mask_url(target))
        sentinels.append((host.strip("[]"), int(port)))
    if not service:
        raise ValueError("sentinel:// store url needs the service name: "
                         "sentinel://host:26379,host2:26379/mymaster")
    q = parse_qs(query)
    return {"sentinels": sentinels, "service": service,
            "password": unquote(password) if password else None,
            "username": unquote(username) or None,
            "db": int(q["db"][0]) if "db" in q else None}


def parse_target(target: str) -> dict[str, Any]:
    """Split a store address into connection arguments (see the module docstring)."""
    if target.startswith("sentinel://"):
        return parse_sentinel(target)
    if "://" not in target:
        return {"unix": os.path.abspath(target), "password": None, "username": None,
                "db": None}
    u = urlsplit(target)
    query = parse_qs(u.query)
    password = unquote(u.password) if u.password else None
    username = unquote(u.username) if u.username else None
    if password is None and "password" in query:
        password = query["password"][0]
    db: int | None = None
    if u.scheme == "unix":
        if "db" in query:
            db = int(query["db"][0])
        if not u.path:
            raise ValueError("unix:// store url needs a socket path: %r" % mask_url(target))
        return {"unix": unquote(u.path), "password": password, "username": username or None,
                "db": db}
    if u.scheme not in ("redis", "rediss"):
        raise ValueError("store url must be redis://, rediss:// or unix://, got %r"
                         % mask_url(target))
    path = u.path.strip("/")
    if path:
        db = int(path)
    elif "db" in query:
        db = int(query["db"][0])
    return {"host": u.hostname or "localhost", "port": u.port or 6379,
            "ssl": u.scheme == "rediss", "password": password, "username": username or None,
            "db": db}


class Store:
    """A pool of connections to one Redis-compatible server. Make one with `connect`."""

    def __init__(self, handler: Any, reactor: Any, timeout_s: float, target: str,
                 on_latency: Callable[[float], None] | None = None,
                 tls: StoreTLS | None = None, sentinel: Any = None,
                 replicas_ack: int = 0) -> None:
        self._handler = handler
        self._factory = handler._factory
        self._pin: Any = None
        self.reactor = reactor
        self.timeout_s = timeout_s
        self.target = target
        self.shown = mask_url(target)    # the target as log lines and errors show it
        self.tls = tls                   # rediss://: the verifying connection creator
        self._scripts: dict[str, tuple[str, str]] = {}  # name -> (source, sha1)
        self._on_latency = on_latency   # callable(seconds) per round trip (metrics)
        self._loading: dict[str, defer.Deferred] = {}
        self.sentinel = sentinel         # sentinel://: the txredisapi.Sentinel asked
        self.replicas_ack = replicas_ack
        # WAIT's own timeout: what is left of the call's after a round trip
        self._wait_ms = max(1, int(timeout_s * 1000 * 0.8))

    # -- making and closing ---------------------------------------------------------------

    @classmethod
    def lazy(cls, target: str, pool_size: int = 4, timeout_s: float = 2.0,
             reactor: Any = None, reconnect_max_s: float = 2.0,
             on_latency: Callable[[float], None] | None = None,
             ca_file: str = "", replicas_ack: int = 0) -> "Store":
        """A Store that starts connecting now and keeps reconnecting; until a connection
        is up its calls fail at once with StoreUnavailable. Raises StoreError on a bad
        `target` or `ca_file`. A rediss:// server must show a certificate that chains to
        `ca_file` (PEM; without one, the system's roots) and names the URL's host
        (`proxyd.store.tls`)."""
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        try:
            opts = parse_target(target)
            tls = (StoreTLS(opts["host"], ca_file, mask_url(target))
                   if opts.get("ssl") else None)
        except (ValueError, OSError) as e:
            raise StoreError(str(e)) from None
        common = dict(dbid=opts["db"], poolsize=pool_size, reconnect=True,
                      password=opts["password"], connectTimeout=timeout_s,
                      convertNumbers=False, username=opts["username"])
        sentinel = None
        if "sentinels" in opts:
            sentinel = txredisapi.Sentinel(opts["sentinels"], connectTimeout=timeout_s,
                                           convertNumbers=False)
            sentinel.discovery_timeout = timeout_s
            handler = sentinel.master_for(opts["service"], dbid=opts["db"],
                                          poolsize=pool_size, isLazy=True,
                                          password=opts["password"], convertNumbers=False,
                                          username=opts["username"])
        elif "unix" in opts:
            handler = txredisapi.lazyUnixConnectionPool(path=opts["unix"], **common)
        else:
            handler = txredisapi.lazyConnectionPool(host=opts["host"], port=opts["port"],
                                                    ssl_context_factory=tls or False,
                                                    **common)
        factory = handler._factory
        factory.initialDelay = min(factory.initialDelay, 0.1)
        factory.maxDelay = reconnect_max_s
        store = cls(handler, reactor, timeout_s, target, on_latency, tls, sentinel,
                    replicas_ack)
        # scripts registered by then are loaded with the first connection
        store.whenConnected().addCallback(lambda s: s.load_scripts()).addErrback(
            lambda f: None)
        return store

    def whenConnected(self) -> defer.Deferred:
        """Deferred[Store] that fires once a connection is up (no timeout of its own);
        StoreUnavailable if the server refuses us (bad password or db)."""
        if self.connected:
            return defer.succeed(self)
        ready: defer.Deferred = defer.Deferred()
        reactor = self.reactor

        def first_connection(_: Any) -> None:
            # fired from inside the pool's put(), before it counts the connection
            reactor.callLater(0, lambda: ready.called or ready.callback(self))

        def connect_error(f: Any) -> None:  # auth or SELECT refused
            if not ready.called:
                ready.errback(StoreUnavailable("cannot use the store at %s: %s"
                                               % (self.shown, f.getErrorMessage())))

        if self._factory.deferred is not None:
            self._factory.deferred.addErrback(connect_error)
        # the pool's own deferred waits for all connections; one is enough to start
        self._factory.connectionQueue.peek().addCallback(first_connection)
        return ready

    @classmethod
    def connect(cls, target: str, pool_size: int = 4, timeout_s: float = 2.0,
                reactor: Any = None, reconnect_max_s: float = 2.0,
                on_latency: Callable[[float], None] | None = None,
                ca_file: str = "", replicas_ack: int = 0) -> defer.Deferred:
        """Deferred[Store] once the first connection is up; StoreUnavailable after
        `timeout_s` if the server cannot be reached (the pool is then closed).
        `on_latency(seconds)`, if given, is called after every round trip (metrics)."""
        try:
            store = cls.lazy(target, pool_size, timeout_s, reactor, reconnect_max_s,
                             on_latency, ca_file, replicas_ack)
        except StoreError as e:
            return defer.fail(e)
        ready = store.whenConnected()
        if store.tls is not None:
            # a TLS connection counts as up before its handshake: one answer proves it
            ready.addCallback(lambda s: s.ping().addCallback(lambda _: s))

        def timed_out(f: Any) -> Any:
            refused = store.tls.refusal if store.tls is not None else ""
            if refused:
                f = Failure(StoreUnavailable("cannot connect to the store at %s: TLS "
                                             "certificate refused: %s"
                                             % (store.shown, refused)))
            elif f.check(defer.TimeoutError, defer.CancelledError):
                f = Failure(StoreUnavailable("cannot connect to the store at %s within %.1fs"
                                             % (store.shown, timeout_s)))
            d = store.disconnect()
            d.addBoth(lambda _: f)
            return d

        ready.addTimeout(timeout_s, store.reactor)
        ready.addErrback(timed_out)
        return ready

    def disconnect(self) -> defer.Deferred:
        """Close every connection of the pool (and to the sentinels)."""
        d = self._factory.disconnect()
        if self.sentinel is not None:
            s = self.sentinel.disconnect()
            d = defer.gatherResults([d, s], consumeErrors=True).addErrback(lambda f: None)
        return d

    @property
    def connected(self) -> bool:
        """True if at least one connection of the pool is up."""
        return self._factory.size > 0

    # -- calls ----------------------------------------------------------------------------

    def _guard(self, d: defer.Deferred, what: str) -> defer.Deferred:
        d.addTimeout(self.timeout_s, self.reactor)
        observe = self._on_latency
        if observe is not None:
            t0 = self.reactor.seconds()
            d.addBoth(lambda r: (observe(self.reactor.seconds() - t0), r)[1])
        return d.addErrback(self._translate, what)

    def _translate(self, f: Any, what: str) -> Any:
        if f.check(StoreError):
            return f
        if f.check(defer.TimeoutError, defer.CancelledError, txredisapi.TimeoutError):
            raise StoreUnavailable("%s: no answer from the store in %.1fs"
                                   % (what, self.timeout_s))
        if f.check(txredisapi.ResponseError):
            msg = str(f.value)
            if msg.startswith(_UNAVAILABLE_REPLIES):
                raise StoreUnavailable("%s: %s" % (what, msg))
            raise StoreError("%s: %s" % (what, msg))
        if f.check(*_UNAVAILABLE_ERRORS):
            raise StoreUnavailable("%s: %s" % (what, f.getErrorMessage() or f.type.__name__))
        return f

    def _precheck(self, what: str) -> defer.Deferred | None:
        if self._factory.size == 0:
            return defer.fail(StoreUnavailable("%s: not connected to the store at %s"
                                               % (what, self.shown)))
        return None

    def execute(self, *args: Any) -> defer.Deferred:
        """Run one command (``execute("GET", key)``); Deferred of the reply."""
        what = str(args[0]) if args else "command"
        failed = self._precheck(what)
        if failed is not None:
            return failed
        return self._guard(self._handler.execute_command(*args), what)

    def ping(self) -> defer.Deferred:
        return self.execute("PING")

    # -- scripts --------------------------------------------------------------------------

    def register_script(self, name: str, source: str) -> str:
        """Remember a Lua script under `name`; returns its sha1. Loaded at once if
        connected, else with the first connection, and again whenever NOSCRIPT says so."""
        sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        self._scripts[name] = (source, sha)
        if self.connected:
            self._load(name).addErrback(lambda f: None)
        return sha

    def load_scripts(self) -> defer.Deferred:
        """SCRIPT LOAD every registered script now."""
        return defer.gatherResults([self._load(name) for name in list(self._scripts)],
                                   consumeErrors=True).addErrback(lambda f: f.value.subFailure)

    def _load(self, name: str) -> defer.Deferred:
        """SCRIPT LOAD `name`, one load in flight per script however many callers wait."""
        loading = self._loading.get(name)
        if loading is None:
            loading = self._handler.execute_command("SCRIPT", "LOAD", self._scripts[name][0])
            self._loading[name] = loading

            def done(r: Any) -> Any:
                self._loading.pop(name, None)
                return r
            loading.addBoth(done)
        waiter: defer.Deferred = defer.Deferred()
        loading.addBoth(lambda r: (waiter.callback(r) if not isinstance(r, Failure)
                                   else waiter.errback(r), r)[1])
        loading.addErrback(lambda f: None)  # reported to every waiter instead
        return waiter

    def _pinned(self) -> Any:
        """One live connection of the pool, the same one as long as it lives."""
        conn = self._pin
        if conn is None or not conn.connected:
            live = [c for c in getattr(self._factory, "pool", ()) if c.connected]
            conn = self._pin = live[0] if live else None
        return conn

    def _replicated(self, replies: list, name: str) -> Any:
        reply, acked = replies
        if int(acked) < self.replicas_ack:
            raise StoreUnavailable("%s: written, but %s of %d replicas acknowledged it "
                                   "(replicas_ack)" % (name, acked, self.replicas_ack))
        return reply

    def evalsha(self, name: str, keys: Sequence[Any], args: Sequence[Any],
                ordered: bool = False) -> defer.Deferred:
        """Run the registered script `name`; Deferred of its reply. `ordered`: over one
        connection for all such calls, so that the server runs them in the order they were
        made (txredisapi spreads other calls over the pool at random)."""
        sha = self._scripts[name][1]
        failed = self._precheck(name)
        if failed is not None:
            return failed
        n = len(keys)
        if ordered:
            conn = self._pinned()
            if conn is None:
                return defer.fail(StoreUnavailable("%s: not connected to the store at %s"
                                                   % (name, self.shown)))

            def unknown(f: Any) -> Any:
                # not executed: EVAL on the same connection, so the order still holds (and
                # the server caches the script again)
                if f.check(txredisapi.ResponseError) and str(f.value).startswith("NOSCRIPT"):
                    return conn.execute_command("EVAL", self._scripts[name][0], n, *keys,
                                                *args)
                return f
            d = conn.execute_command("EVALSHA", sha, n, *keys, *args).addErrback(unknown)
            if self.replicas_ack:
                # pipelined on the same connection: waits for this write and every one
                # before it
                w = conn.execute_command("WAIT", self.replicas_ack, self._wait_ms)
                d = defer.gatherResults([d, w], consumeErrors=True)
                d.addCallbacks(self._replicated, lambda f: f.value.subFailure,
                               callbackArgs=(name,))
            return self._guard(d, name)
        d = self._handler.execute_command("EVALSHA", sha, n, *keys, *args)

        def noscript(f: Any) -> Any:
            if f.check(txredisapi.ResponseError) and str(f.value).startswith("NOSCRIPT"):
                # not executed: load it (once for all the callers) and run it again
                return self._load(name).addCallback(
                    lambda _: self._handler.execute_command("EVALSHA", sha, n, *keys, *args))
            return f

        d.addErrback(noscript)
        return self._guard(d, name)
