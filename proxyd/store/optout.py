"""Per-account opt-out sets: numbers that replied "T"/"TD"/"退订" and may not be sent to.

    optout:{A}       set       normalised numbers (see proxyd.policy.optout.normalise_number)
    proxyd:optout    channel   every change, published in the same step as the change:
                               "<account>\\x1f<+|->\\x1f<number>"

Every writer in proxyd (MO unsubscribe replies, ``proxyd-admin optout add|remove``) changes
the set and publishes the change atomically (`CHANGE_SCRIPT`, or MULTI in the admin). That
lets each node keep an in-memory copy (`OptOutMirror`): an account's set is loaded on first
use, after the node has subscribed to the channel, and kept current from the channel. While
the subscription is down, or while a set is loading, lookups go to the store as before. A
tool that writes `optout:{A}` directly must publish the same message, or nodes that already
hold that account's set will not see the change until their subscription reconnects.
"""
from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger

from proxyd.policy.optout import normalise_number

log = Logger(namespace="proxyd.store")

CHANNEL = "proxyd:optout"

# KEYS[1] optout:{A}; ARGV: account, '+' | '-', number -> 1 if the set changed
CHANGE_SCRIPT = r"""
local n
if ARGV[2] == '+' then n = redis.call('SADD', KEYS[1], ARGV[3])
else n = redis.call('SREM', KEYS[1], ARGV[3]) end
redis.call('PUBLISH', '""" + CHANNEL + r"""', ARGV[1] .. '\31' .. ARGV[2] .. '\31' .. ARGV[3])
return n
"""


def optout_key(account: str) -> str:
    return "optout:{%s}" % account


def change_message(account: str, op: str, number: str) -> str:
    return "%s\x1f%s\x1f%s" % (account, op, number)


class OptOut:
    """Lookups and changes of the opt-out sets; lookups answered from `mirror` when it
    holds the account's set."""

    def __init__(self, store: Any, mirror: "OptOutMirror | None" = None) -> None:
        self.store = store
        self.mirror = mirror
        store.register_script("optout_change", CHANGE_SCRIPT)

    def check(self, account: str, number: str) -> defer.Deferred:
        """Deferred[bool]: True if the number opted out of this account's messages."""
        number = normalise_number(number)
        if self.mirror is not None:
            known = self.mirror.opted(account, number)
            if known is not None:
                return defer.succeed(known)
        return self.store.execute("SISMEMBER", optout_key(account),
                                  number).addCallback(lambda r: int(r) == 1)

    def _change(self, account: str, op: str, number: str) -> defer.Deferred:
        return self.store.evalsha("optout_change", [optout_key(account)],
                                  [account, op, normalise_number(number)])

    def add(self, account: str, number: str) -> defer.Deferred:
        return self._change(account, "+", number)

    def remove(self, account: str, number: str) -> defer.Deferred:
        return self._change(account, "-", number)


class _Subscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.mirror._message(message)


class _SubscriberFactory(txredisapi.RedisFactory):
    protocol = _Subscriber
    mirror: "OptOutMirror"

    def addConnection(self, conn: Any) -> None:
        if self.disconnectCalled or not conn.connected:
            if self.disconnectCalled:
                conn.transport.loseConnection()
            return
        conn.whenDisconnected().addCallback(lambda _: self.mirror._lost())
        self.mirror._connected(conn)


class OptOutMirror:
    """This node's copy of the opt-out sets it uses, current through `CHANNEL`.

    `opted(account, number)` answers True/False from memory, or None when it cannot (not
    subscribed, or the account's set not loaded yet: loading it starts then)."""

    def __init__(self, store: Any, target: str, reactor: Any = None,
                 reconnect_max_s: float = 2.0, tls: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.store = store
        self.target = target
        self.reactor = reactor
        self.reconnect_max_s = reconnect_max_s
        self.tls = tls          # rediss://: the verifying connection creator (store.tls)
        self.live = False
        self.sets: dict[str, set] = {}
        self._loading: dict[str, list] = {}   # account -> changes seen while loading
        self._factory: Any = None

    def start(self) -> None:
        from .client import parse_target
        opts = parse_target(self.target)
        f = _SubscriberFactory(self.target, opts["db"], 1, True, txredisapi.ConnectionHandler,
                               "utf-8", opts["password"], None, False, opts["username"])
        f.mirror = self
        f.initialDelay = min(f.initialDelay, 0.1)
        f.maxDelay = self.reconnect_max_s
        if "unix" in opts:
            endpoint = UNIXClientEndpoint(self.reactor, opts["unix"], timeout=5)
        elif "sentinels" in opts:
            # the primary the sentinels name, asked before every connection (a failover)
            f.sentinel_manager = getattr(self.store, "sentinel", None) or \
                txredisapi.Sentinel(opts["sentinels"], convertNumbers=False)
            f.service_name = opts["service"]
            f.is_master = True
            endpoint = txredisapi._SentinelEndpoint(f)
        else:
            if opts["ssl"] and self.tls is None:
                raise ValueError("rediss:// opt-out subscription without a verifying TLS "
                                 "creator (pass tls=store.tls)")
            endpoint = txredisapi._makeEndpoint(opts["host"], opts["port"], 5,
                                                self.tls if opts["ssl"] else None)
        self._factory = f
        f.startConnecting(endpoint)

    def stop(self) -> defer.Deferred:
        self.live = False
        f, self._factory = self._factory, None
        if f is None:
            return defer.succeed(None)
        return f.disconnect()

    # -- the subscription -----------------------------------------------------------------

    def _connected(self, conn: Any) -> None:
        def subscribed(_: Any) -> None:
            # sets are loaded afresh from now on: changes missed while away are in them
            self.sets.clear()
            self._loading.clear()
            self.live = True
            log.info("opt-out lists: kept in memory, current through {ch}", ch=CHANNEL)

        conn.subscribe(CHANNEL).addCallbacks(subscribed, lambda f: log.warn(
            "opt-out lists: cannot subscribe to {ch}: {err}", ch=CHANNEL,
            err=f.getErrorMessage()))

    def _lost(self) -> None:
        if self.live:
            log.warn("opt-out lists: subscription lost; looked up in the store until it is "
                     "back")
        self.live = False
        self.sets.clear()
        self._loading.clear()

    def _message(self, message: Any) -> None:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        try:
            account, op, number = message.split("\x1f")
        except ValueError:
            log.warn("opt-out lists: malformed change on {ch}: {m!r}", ch=CHANNEL, m=message)
            return
        s = self.sets.get(account)
        if s is not None:
            if op == "+":
                s.add(number)
            else:
                s.discard(number)
        elif account in self._loading:
            self._loading[account].append((op, number))

    # -- lookups --------------------------------------------------------------------------

    def opted(self, account: str, number: str) -> bool | None:
        s = self.sets.get(account)
        if s is not None:
            return number in s
        if self.live and account not in self._loading:
            self._load(account)
        return None

    def _load(self, account: str) -> None:
        self._loading[account] = []

        def loaded(members: Any) -> None:
            changes = self._loading.pop(account, None)
            if changes is None or not self.live:    # the subscription went meanwhile
                return
            s = {m.decode() if isinstance(m, bytes) else m for m in members}
            # changes published after SMEMBERS ran are applied on top, in their order;
            # ones published before it are already in it (applying them again in order
            # ends in the same state)
            for op, number in changes:
                if op == "+":
                    s.add(number)
                else:
                    s.discard(number)
            self.sets[account] = s
            log.info("opt-out list of {acct}: {n} numbers in memory", acct=account, n=len(s))

        def failed(f: Any) -> None:
            self._loading.pop(account, None)
            log.warn("opt-out list of {acct} not loaded: {err}", acct=account,
                     err=f.getErrorMessage())

        self.store.execute("SMEMBERS", optout_key(account)).addCallbacks(loaded, failed)
