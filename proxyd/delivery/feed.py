"""The feed: this node's consumption of the delivery streams ``dlv:{A}`` of the accounts it
holds a receiver (or transceiver) bind of, to those sessions.

    dlv:{A} (consumer group "proxyd", one consumer per node holding a receiver bind of A)
      ─ XREADGROUP ─ this node's feed of A ─ deliver_sm to a receiver (window per session)
      ─ deliver_sm_resp OK ─ XACK + XDEL;  error / no answer ─ retry with backoff

What a node holds in memory it touches (XCLAIM JUSTID) so no other node takes it; entries a
dead node held, or a node whose receivers all left, are taken over with XAUTOCLAIM once idle
for `claim_idle_s`. The consumer name is stable across restarts of a node, so a restarted
node finds its own pending entries at once.
"""
from __future__ import annotations

import socket
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger

from .text import RECEIPT_ID
from ..smpp import constants as C
from ..smpp.server import CLOSING
from ..store.receipts import RECEIPT, Entry
from .records import InFlight

log = Logger(namespace="proxyd.delivery")

_OK = 0
# entries of an account this node may hold (read, not yet answered) at least, whatever the
# number of its receivers here: enough for a turn's receipts to be read in one go
HOLD_MIN = 256


def consumer_name(cfg: Any) -> str:
    """This node's consumer in the streams' group: stable across its restarts."""
    node = getattr(cfg.relay, "node_id", "") or socket.gethostname()
    listen = cfg.smpp.listen[0] if cfg.smpp.listen else ""
    return "%s/%s" % (node, listen)


def alive(session: Any) -> bool:
    """False for a session that unbound or lost its connection (also when the registry was
    not told, e.g. after a clean unbind)."""
    return session.state != CLOSING and session.transport is not None


class Feed:
    """This node's consumption of one account's stream."""

    __slots__ = ("account", "sessions", "queue", "inflight", "known", "reading",
                 "next_read", "history", "cursor", "rr", "sends")

    def __init__(self, account: str) -> None:
        self.account = account
        self.sessions: dict[Any, int] = {}          # session -> deliveries unanswered
        self.queue: list[Entry] = []                # held, not in flight, in stream order
        self.inflight: dict[str, InFlight] = {}     # entry id -> the send
        self.known: set[str] = set()                # ids in queue or in flight
        self.reading = False
        self.next_read = 0.0
        self.history = True                         # still reading our own pending list
        self.cursor = "0"
        self.rr = 0
        self.sends = 0

    def add(self, entries: list[Entry]) -> int:
        n = 0
        for e in entries:
            if e.id in self.known:
                continue
            self.known.add(e.id)
            self.queue.append(e)
            n += 1
        if n:
            self.queue.sort(key=lambda e: e.sort)
        return n

    def requeue(self, e: Entry) -> None:
        self.queue.append(e)
        self.queue.sort(key=lambda x: x.sort)

    def capacity(self, window: int) -> int:
        return window * len(self.sessions)

    def room(self, window: int) -> int:
        """How many more entries of its account this node may read for this feed now."""
        return max(2 * self.capacity(window), HOLD_MIN) - len(self.queue) - len(self.inflight)

    def pick(self, sessions: list, window: int) -> Any:
        """The least loaded of `sessions` with room in its window (round robin among
        equals), or None."""
        n = len(sessions)
        best = None
        for k in range(n):
            s = sessions[(self.rr + k) % n]
            load = self.sessions[s]
            if load < window and (best is None or load < self.sessions[best]):
                best = s
                if load == 0:
                    break
        self.rr += 1
        return best

    def forget(self, lost: list[str]) -> None:
        """Entries no longer this node's (taken over, or gone from the stream)."""
        self.known.difference_update(lost)
        lost_set = set(lost)
        self.queue = [e for e in self.queue if e.id not in lost_set]


class Feeds:
    """The feeds of this node, one per account it holds a receiver bind of."""

    def __init__(self, rs: Any, clock: Any, consumer: str, counters: dict[str, int],
                 journal: Callable[[str, str, str, str], None], *, window: int,
                 resp_timeout_s: float, max_attempts: int,
                 backoff_max_s: float, poll_s: float) -> None:
        self.rs = rs
        self.clock = clock
        self.consumer = consumer
        self.counters = counters
        self.journal = journal
        self.window = window
        self.resp_timeout_s = resp_timeout_s
        self.max_attempts = max_attempts
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self.feeds: dict[str, Feed] = {}
        self._acks: dict[str, list[str]] = {}
        self._ack_call: Any = None

    # --- receiver binds ---------------------------------------------------------------------
    def session_ready(self, session: Any) -> None:
        if not session.can_receive:
            return
        account = session.account.system_id
        feed = self.feeds.get(account)
        if feed is None:
            feed = self.feeds[account] = Feed(account)
            log.info("consuming deliveries of {acct} as {consumer}", acct=account,
                     consumer=self.consumer)
        feed.sessions.setdefault(session, 0)
        feed.next_read = 0.0
        self.pump(feed)

    def session_gone(self, session: Any) -> None:
        if session.account is None:
            return
        feed = self.feeds.get(session.account.system_id)
        if feed is not None and session in feed.sessions and self._drop_session(feed, session):
            self.pump(feed)

    def _drop_session(self, feed: Feed, session: Any) -> bool:
        """Forget a receiver; its deliveries in flight go back to the queue. False when it
        was the last one here (the feed is gone)."""
        del feed.sessions[session]
        for eid, f in list(feed.inflight.items()):
            if f.session is session:        # not an attempt the client failed: no backoff
                del feed.inflight[eid]
                feed.requeue(f.entry)
        if feed.sessions:
            return True
        # no receiver here any more: what this node holds stays in its pending list, taken
        # back when a receiver binds here again, or by another node once idle
        if self.feeds.get(feed.account) is feed:
            del self.feeds[feed.account]
        if feed.known:
            log.info("no receiver of {acct} left on this node; {n} deliveries stay pending",
                     acct=feed.account, n=len(feed.known))
        return False

    def wake(self, account: str) -> None:
        """Something was added to the account's stream: read it now if it is fed here."""
        feed = self.feeds.get(account)
        if feed is not None:
            feed.next_read = 0.0
            self.pump(feed)

    # --- delivering -------------------------------------------------------------------------
    def pump(self, feed: Feed) -> None:
        if self.feeds.get(feed.account) is not feed:
            return
        for session in [x for x in feed.sessions if not alive(x)]:
            if not self._drop_session(feed, session):
                return
        now = self.clock.seconds()
        window = self.window
        if feed.queue and feed.sessions:
            sessions = list(feed.sessions)
            keep: list[Entry] = []
            queue = feed.queue
            i = 0
            for i, e in enumerate(queue):
                if e.not_before > now:
                    keep.append(e)
                    continue
                session = feed.pick(sessions, window)
                if session is None:
                    keep.extend(queue[i:])
                    break
                self._send(feed, e, session, now)
            feed.queue = keep
        if not feed.reading and now >= feed.next_read:
            room = feed.room(window)
            # in bigger reads, not one per answer: when what is held runs low
            if room > 0 and (len(feed.queue) < feed.capacity(window) or room >= HOLD_MIN // 2):
                self._read(feed, room)

    def _send(self, feed: Feed, e: Entry, session: Any, now: float) -> None:
        feed.sends += 1
        n = feed.sends
        feed.inflight[e.id] = InFlight(e, session, now + self.resp_timeout_s, n)
        feed.sessions[session] += 1

        def on_resp(status: int) -> None:
            self._answered(feed, e, session, n, status)

        session.deliver(e.command_id, e.body, on_resp)

    def _answered(self, feed: Feed, e: Entry, session: Any, n: int, status: int) -> None:
        cur = feed.inflight.get(e.id)
        if cur is None or cur.n != n:
            return      # timed out or requeued already; a late answer changes nothing
        del feed.inflight[e.id]
        if session in feed.sessions:
            feed.sessions[session] -= 1
        if status == _OK:
            feed.known.discard(e.id)
            self.counters["delivered"] += 1
            self._ack(feed.account, e.id)
            if e.kind == RECEIPT:
                m = RECEIPT_ID.search(e.body)
                if m:
                    self.journal(feed.account, m.group(1).decode("latin-1"),
                                 "receipt_delivered", "")
        elif session not in feed.sessions or not alive(session):
            feed.requeue(e)     # the connection went: not the client's refusal
        else:
            self._failed(feed, e, "client answered %s" % C.status_name(status))
        self.pump(feed)

    def _failed(self, feed: Feed, e: Entry, why: str) -> None:
        e.attempts += 1
        if e.attempts >= self.max_attempts:
            self.counters["dropped"] += 1
            feed.known.discard(e.id)
            log.error("delivery {id} to {acct} dropped after {n} attempts: {why}",
                      id=e.id, acct=feed.account, n=e.attempts, why=why)
            self._ack(feed.account, e.id)
            return
        self.counters["retried"] += 1
        delay = min(self.backoff_max_s, 2.0 ** (e.attempts - 1))
        e.not_before = self.clock.seconds() + delay
        log.info("delivery {id} to {acct}: {why}; retry {n} in {d:.0f}s", id=e.id,
                 acct=feed.account, why=why, n=e.attempts, d=delay)
        feed.requeue(e)

    def _ack(self, account: str, eid: str) -> None:
        self._acks.setdefault(account, []).append(eid)
        if self._ack_call is None:
            self._ack_call = self.clock.callLater(0, self.flush_acks)

    def flush_acks(self) -> defer.Deferred:
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        self._ack_call = None
        acks, self._acks = self._acks, {}
        ds = []
        for account, ids in acks.items():
            def failed(f: Any, account: str = account, ids: list = ids) -> None:
                # they stay in this node's pending list; taken again once idle (may repeat)
                log.warn("XACK of {n} deliveries of {acct} failed: {err}", n=len(ids),
                         acct=account, err=f.getErrorMessage())
            ds.append(self.rs.ack(account, ids).addErrback(failed))
        return defer.DeferredList(ds) if ds else defer.succeed(None)

    # --- reading the stream -----------------------------------------------------------------
    def _read(self, feed: Feed, count: int) -> None:
        feed.reading = True
        history = feed.history
        account = feed.account

        def got(result: tuple) -> None:
            feed.reading = False
            entries, gone = result
            if gone:
                self.expired(account, gone)
            if history:
                if entries or gone:
                    feed.cursor = max([e.id for e in entries] + gone,
                                      key=lambda i: tuple(int(x) for x in i.split("-")))
                if len(entries) + len(gone) < count:
                    feed.history = False
            if self.feeds.get(account) is not feed:
                return      # read into our pending list; found again by the next feed
            added = feed.add(entries)
            if not added and not history:
                feed.next_read = self.clock.seconds() + self.poll_s
            self.pump(feed)

        def failed(f: Any) -> None:
            feed.reading = False
            feed.next_read = self.clock.seconds() + 1.0
            log.warn("reading deliveries of {acct} failed: {err}", acct=account,
                     err=f.getErrorMessage())

        d = self.rs.ensure_group(account)
        d.addCallback(lambda _: self.rs.read(account, self.consumer, count, history,
                                             feed.cursor))
        d.addCallbacks(got, failed)

    def read_along(self, account: str) -> tuple[Feed | None, int]:
        """(feed, count) when the store call that writes receipts of `account` may also read
        up to `count` entries of its stream for this node (the feed is then reading until
        `read_along_done` or `read_along_failed`); (feed or None, 0) otherwise."""
        feed = self.feeds.get(account)
        if (feed is not None and feed.sessions and not feed.reading and not feed.history
                and self.rs.has_group(account)):
            count = feed.room(self.window)
            if count > 0:
                feed.reading = True
                return feed, count
        return feed, 0

    def read_along_done(self, account: str, feed: Feed | None, count: int,
                        entries: list[Entry], gone: list[str], err: str | None,
                        wrote: bool) -> None:
        """The answer of a store call that wrote receipts of `account` (`wrote`: some to the
        stream) and, with `count` > 0, read `entries` for `feed`."""
        f = self.feeds.get(account)
        if count:
            feed.reading = False
            if err is not None:
                if "NOGROUP" in err:
                    self.rs.forget_group(account)
                log.warn("reading deliveries of {acct} failed: {err}", acct=account, err=err)
            if gone:
                self.expired(account, gone)
            if f is feed:
                feed.add(entries)
                if len(entries) + len(gone) >= count or err is not None:
                    feed.next_read = 0.0      # more may wait in the stream
        elif f is not None and wrote:
            f.next_read = 0.0
        if f is not None:
            self.pump(f)

    def read_along_failed(self, feed: Feed | None, count: int) -> None:
        if count:
            feed.reading = False
            feed.next_read = self.clock.seconds() + 1.0

    def expired(self, account: str, ids: list[str]) -> None:
        self.counters["expired"] += len(ids)
        log.warn("{n} deliveries of {acct} expired (older than the TTL) before a client "
                 "took them", n=len(ids), acct=account)
        for eid in ids:
            self._ack(account, eid)

    # --- timers -----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Response timeouts, backoffs, polling."""
        for feed in list(self.feeds.values()):
            for eid, f in list(feed.inflight.items()):
                if f.deadline <= now:
                    del feed.inflight[eid]
                    if f.session in feed.sessions:
                        feed.sessions[f.session] -= 1
                    self.counters["timeouts"] += 1
                    self._failed(feed, f.entry, "no deliver_sm_resp within %.0fs"
                                  % self.resp_timeout_s)
            self.pump(feed)


class Keeper:
    """What this node holds of the streams, kept against other nodes: touched (XCLAIM
    JUSTID) so that none takes it, and what dead nodes held taken over (XAUTOCLAIM) once
    idle for `claim_idle_s`."""

    def __init__(self, feeds: Feeds, claim_idle_s: float) -> None:
        self.feeds = feeds
        self.consumer = feeds.consumer
        self.counters = feeds.counters
        self.claim_idle_s = claim_idle_s
        self._last_touch = 0.0
        self._last_claim = 0.0

    def keep(self, now: float) -> None:
        """Touch what this node holds; take over what dead nodes held (both now and then)."""
        if now - self._last_touch >= self.claim_idle_s / 3.0:
            self._last_touch = now
            for feed in list(self.feeds.feeds.values()):
                self._touch(feed)
        if now - self._last_claim >= min(5.0, self.claim_idle_s / 4.0):
            self._last_claim = now
            for feed in list(self.feeds.feeds.values()):
                if not feed.history:
                    self._claim(feed)

    def _touch(self, feed: Feed) -> None:
        ids = list(feed.known)
        if not ids:
            return

        def still(ours: set) -> None:
            lost = [i for i in ids if i not in ours and i in feed.known
                    and i not in feed.inflight]
            if not lost:
                return
            feed.forget(lost)
            log.warn("{n} deliveries of {acct} held here were taken over or expired",
                     n=len(lost), acct=feed.account)

        self.feeds.rs.touch(feed.account, self.consumer, ids).addCallbacks(
            still, lambda f: log.warn("touching deliveries of {acct} failed: {err}",
                                      acct=feed.account, err=f.getErrorMessage()))

    def _claim(self, feed: Feed) -> None:
        room = feed.room(self.feeds.window)
        if room <= 0:
            return

        def got(result: tuple) -> None:
            entries, gone = result
            if gone:
                self.feeds.expired(feed.account, gone)
            if self.feeds.feeds.get(feed.account) is not feed:
                return
            n = feed.add(entries)
            if n:
                self.counters["claimed"] += n
                log.info("took over {n} idle deliveries of {acct}", n=n, acct=feed.account)
                self.feeds.pump(feed)

        d = self.feeds.rs.claim_idle(feed.account, self.consumer, self.claim_idle_s, room)
        d.addCallbacks(got, lambda f: log.warn("claiming deliveries of {acct} failed: {err}",
                                               acct=feed.account, err=f.getErrorMessage()))
