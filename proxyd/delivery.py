"""Receipts and MO: from the operator's deliver_sm to the owning account's receiver binds.

    upstream deliver_sm/data_sm
      receipt ─ receipt map (rmap:{U}:<id>, retried ~2 s) ─ rewrite id ─┐
      MO ────── service code -> account (longest prefix) ─ [opt-out] ───┴─ XADD dlv:{A}
                                                                          └─ ack the operator
    dlv:{A} (consumer group "proxyd", one consumer per node holding a receiver bind of A)
      ─ XREADGROUP ─ this node's feed of A ─ deliver_sm to a receiver (window per session)
      ─ deliver_sm_resp OK ─ XACK + XDEL;  error / no answer ─ retry with backoff

The operator's deliver_sm is acknowledged only once the delivery is in the stream (or with
ESME_RX_T_APPN when the store failed, so the operator retries). A receipt whose id is not in
the map after the retries is acknowledged, logged and counted: nobody can take it.

A node consumes an account's stream only while it holds a receiver (or transceiver) bind of
that account. What it holds in memory it touches (XCLAIM JUSTID) so no other node takes it;
entries a dead node held, or a node whose receivers all left, are taken over with XAUTOCLAIM
once idle for `claim_idle_s`. The consumer name is stable across restarts of a node, so a
restarted node finds its own pending entries at once.

One LoopingCall drives every timer of the node: lookup retries, response timeouts, backoff,
polling of the streams, touch and claim.

Message state and HTTP receipts (keys in proxyd.store.messages): `remember` collects, per
reactor turn, the state records (``msg:{A}:<mid>``, ENROUTE) and HTTP receipt settings
(``dlr:{A}:<mid>``) of each account into one script call, and writes the receipt map entries
of the turn (one script per upstream) only once those are stored: a receipt found in the map
always finds its message's state and settings. Every receipt, the operator's or proxyd's own,
is stored by one script in the account's slot that updates the state and then either queues
an HTTP callback (the part was submitted over HTTP with a dlr-url: the report goes to the URL
*instead of* the SMPP delivery stream, so an HTTP client's reports never pile up for a
receiver bind that may never come) or appends it to ``dlv:{A}``.

proxyd's own receipts (`own_receipt`): a deliver_sm in the Appendix B format, esm_class
0x04, receipted_message_id and message_state TLVs, for parts proxyd acknowledged but did not
get to the operator (a long message refused once complete, incomplete, or refused by the
operator after the parts were acknowledged). The ``err:`` field:

    400  content refused (PROXYD_RCONTENT)
    401  insufficient balance (PROXYD_RNOBALANCE)
    408  incomplete: the other parts of a long message never came (reassembly timeout)
    409  expired (stat EXPIRED): ``[delivery] expire_after_s`` > 0 and the operator's
         receipt of a part relayed with registered_delivery did not come within that time
    nnn  otherwise the SMPP status of the refusal in decimal, modulo 1000, e.g. 011 bad or
         opted-out destination (ESME_RINVDSTADR), 020 no upstream capacity (ESME_RMSGQFUL),
         008 system error / outcome unknown (ESME_RSYSERR), 088 throttled

Expiry (``[delivery] expire_after_s``, 0 = off, the default): the script that writes a
part's ENROUTE state also puts its mid in ``enr:{A}`` scored by when the wait ends; every
receipt takes it off. Once a second the ticker pops the due mids of each account
(`MessageStore.take_expired`, atomic: one node gets each) and sends proxyd's own EXPIRED
receipt (err 409) for those still ENROUTE, by `own_receipt` (receiver binds or the dlr-url);
their state becomes EXPIRED. A real receipt that comes later is still relayed (a final
state replaces EXPIRED): late but true beats silent, and the client sees the last word.
The relay does not hand the submit_sm to `remember`, so the EXPIRED receipt carries no
addresses (an HTTP report takes the number from its dlr settings).
"""
from __future__ import annotations

import json
import re
import socket
import time
import uuid
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .policy.optout import is_unsubscribe
from .gate.ids import normalise_upstream_id
from .gate.memory import RECEIPT_ID as _ID_RE, rewrite_receipt
from .gate.parts import message_text
from .logs import mask
from .smpp import constants as C
from .smpp import pdu as P
from .smpp.server import CLOSING
from .store.messages import (STATE, STATE_NAMES, MessageStore, dlr_key, mo_parts_key,
                             msg_key, record_value)
from .store.receipts import DEFAULT_TTL_S, GROUP, MO, RECEIPT, Entry, ReceiptStore
from .text.reassembly import concat_key, join_parts, strip_udh

log = Logger(namespace="proxyd.delivery")

_OK = 0
_RX_T_APPN = C.STATUS["ESME_RX_T_APPN"]
# delays between the lookups of a receipt whose id is not mapped (yet): ~2 s in all
LOOKUP_RETRIES = (0.2, 0.3, 0.5, 1.0)
# a store failure while keeping one of proxyd's own receipts: tried again after these delays
OWN_RETRIES = (1.0, 2.0, 4.0, 8.0)
_S = C.STATUS
_FIELDS = re.compile(rb"(sub|dlvrd|submit date|done date|stat|err):(\S*)", re.I)
_TEXT = re.compile(rb"text:(.*)$", re.I | re.S)
_STAT = re.compile(rb"stat:(\S*)", re.I)
_ERR = re.compile(rb"err:(\S*)", re.I)
# how often due expiries are looked for, and at most how many per account and call
EXPIRE_EVERY_S = 1.0
EXPIRE_BATCH = 500
# the status behind the err 409 of an EXPIRED own receipt (see own_err)
EXPIRED_STATUS = 409
# entries of an account this node may hold (read, not yet answered) at least, whatever the
# number of its receivers here: enough for a turn's receipts to be read in one go
HOLD_MIN = 256


def own_err(stat: str, status: int) -> str:
    """The 3-digit ``err:`` of proxyd's own receipts (see the module docstring)."""
    if status == _S["PROXYD_RCONTENT"]:
        return "400"
    if status == _S["PROXYD_RNOBALANCE"]:
        return "401"
    if status == _S["ESME_RDELIVERYFAILURE"]:
        return "408"
    if stat == "EXPIRED":
        return "409"
    return "%03d" % (status % 1000)


def parse_receipt(pdu: Any) -> dict:
    """The Appendix B fields of a receipt (as str), with its state from the message_state
    TLV or the stat text."""
    text = getattr(pdu, "short_message", b"") or pdu.tlv(C.TAG_MESSAGE_PAYLOAD, b"") or b""
    f = {k.lower().decode().replace(" ", ""): v.decode("latin-1")
         for k, v in _FIELDS.findall(text)}
    m = _TEXT.search(text)
    tlv = pdu.tlv(C.TAG_MESSAGE_STATE)
    state = tlv[0] if tlv else STATE.get(f.get("stat", "").upper(), 7)
    stat = f.get("stat", "").upper() or STATE_NAMES.get(state, "UNKNOWN")
    return {"state": state, "stat": stat, "err": f.get("err", "") or "000",
            "sub": f.get("sub", ""), "dlvrd": f.get("dlvrd", ""),
            "subdate": f.get("submitdate", ""), "donedate": f.get("donedate", ""),
            "text": m.group(1).decode("latin-1") if m else "",
            "reply": text.decode("latin-1")}


def receipt_state(pdu: Any) -> tuple[int, str]:
    """(message_state, err) of a receipt, as `parse_receipt` finds them (cheaper: the
    stored state needs no more)."""
    tlv = pdu.tlv(C.TAG_MESSAGE_STATE)
    text = getattr(pdu, "short_message", b"") or pdu.tlv(C.TAG_MESSAGE_PAYLOAD, b"") or b""
    if tlv:
        state = tlv[0]
    else:
        stat = _STAT.findall(text)
        state = STATE.get(stat[-1].decode("latin-1").upper(), 7) if stat else 7
    err = _ERR.findall(text)
    return state, (err[-1].decode("latin-1") if err else "") or "000"


def expand_facts(facts: dict) -> dict:
    """The facts of an HTTP receipt callback (see proxyd.http.dlr) from what the receipt
    script keeps ({"ev": "final", mid, up, smsc_id, t, c: command id, hex: PDU body});
    facts already complete are returned as they are."""
    if facts is not None and facts.get("ev") == "mo":
        return mo_facts(facts)
    if facts is None or "hex" not in facts:
        return facts
    out = P.decode_body(int(facts["c"]), 0, 0, bytes.fromhex(facts["hex"]))
    full = dict(parse_receipt(out), ev=facts.get("ev", "final"), mid=facts.get("mid", ""),
                up=facts.get("up", ""), smsc_id=facts.get("smsc_id", ""),
                t=int(facts.get("t", 0)), to=out.source_addr.decode("latin-1"),
                dc=getattr(out, "data_coding", 0))
    full["from"] = out.destination_addr.decode("latin-1")
    return full


def mo_facts(facts: dict) -> dict:
    """The facts of an MO for a mo_url (proxyd.http.mo) from what is queued: from, to, dc,
    upstream, id, ts and "hexparts" ("seq:hex,...", payloads without UDH), joined in seq
    order and decoded (text "" for a binary coding)."""
    parts = []
    for item in (facts.get("hexparts") or "").split(","):
        if item:
            seq, _, hx = item.partition(":")
            parts.append((int(seq), bytes.fromhex(hx)))
    parts.sort(key=lambda p: p[0])
    dc = int(facts.get("dc", 0))
    try:
        text = join_parts(parts, dc)
    except ValueError:
        text = None
    out = dict(facts)
    out.pop("hexparts", None)
    out["raw"] = b"".join(p for _, p in parts)
    out["text"] = text or ""
    return out


def _opt(cfg: Any, section: str, name: str, default: Any) -> Any:
    """An optional config value (`[delivery]` keys may not exist in the schema yet)."""
    return getattr(getattr(cfg, section, None), name, default)


def _alive(session: Any) -> bool:
    """False for a session that unbound or lost its connection (also when the registry was
    not told, e.g. after a clean unbind)."""
    return session.state != CLOSING and session.transport is not None


class _Feed:
    """This node's consumption of one account's stream."""

    __slots__ = ("account", "sessions", "queue", "inflight", "known", "reading",
                 "next_read", "history", "cursor", "rr", "sends")

    def __init__(self, account: str) -> None:
        self.account = account
        self.sessions: dict[Any, int] = {}          # session -> deliveries unanswered
        self.queue: list[Entry] = []                # held, not in flight, in stream order
        self.inflight: dict[str, tuple] = {}        # id -> (entry, session, deadline, n)
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


class Delivery(service.Service):
    """Receipts and MO of one node (see the module docstring)."""

    name = "delivery"

    def __init__(self, node: Any, window: int | None = None,
                 resp_timeout_s: float | None = None, ttl_s: float | None = None,
                 claim_idle_s: float | None = None, tick_s: float = 0.1,
                 poll_s: float = 0.25, max_attempts: int | None = None,
                 consumer: str | None = None) -> None:
        cfg = node.cfg
        self.node = node
        self.clock = node.reactor
        self.window = window or _opt(cfg, "delivery", "window", 10)
        self.resp_timeout_s = resp_timeout_s or _opt(cfg, "delivery", "resp_timeout_s", 30.0)
        self.claim_idle_s = claim_idle_s or _opt(cfg, "delivery", "claim_idle_s", 60.0)
        self.max_attempts = max_attempts or _opt(cfg, "delivery", "max_attempts", 50)
        self.backoff_max_s = _opt(cfg, "delivery", "backoff_max_s", 60.0)
        self.expire_after_s = float(_opt(cfg, "delivery", "expire_after_s", 0.0) or 0.0)
        self._last_expire = 0.0
        self._expiring: set[str] = set()            # accounts with a take in flight
        ttl = ttl_s or _opt(cfg, "store", "receipt_ttl_s", None) or \
            _opt(cfg, "delivery", "ttl_s", DEFAULT_TTL_S)
        self.rs = ReceiptStore(node.store, ttl, clock=self.clock)
        self.messages = MessageStore(node.store, ttl, clock=self.clock)
        from .http.dlr import DlrCaller
        self.dlr = DlrCaller(self.messages, self.clock, self._accounts,
                             concurrency=_opt(cfg, "delivery", "dlr_concurrency", 20),
                             timeout_s=_opt(cfg, "delivery", "dlr_timeout_s", 10.0),
                             max_attempts=_opt(cfg, "delivery", "dlr_max_attempts", 12),
                             backoff_s=_opt(cfg, "delivery", "dlr_backoff_s", 1.0),
                             expand=expand_facts)
        self._records: dict[str, list] = {}         # account -> [(key, value)] this turn
        self._maps: dict[str, list] = {}            # account -> [(upstream, id, mid)]
        self._record_call: Any = None
        self.tick_s = tick_s
        self.poll_s = poll_s
        self.consumer = consumer or self._consumer_name(cfg)
        self.feeds: dict[str, _Feed] = {}
        self._retries: list[tuple] = []             # (due, upstream, keys, pdu, ack, tries)
        self._lk: dict[str, list] = {}              # upstream -> receipts to look up
        self._lk_busy: set[str] = set()             # upstreams with a lookup in flight
        self._rb: dict[str, list] = {}              # account -> receipts to store
        self._rb_busy: set[str] = set()             # accounts with a store call in flight
        self._turn_call: Any = None
        self._writes: set = set()                   # store writes in flight (waited on stop)
        self._cb_prefix = uuid.uuid4().hex[:6]      # callback ids: mid:<node><counter>
        self._cb_n = 0
        self._acks: dict[str, list[str]] = {}
        self._ack_call: Any = None
        self._last_touch = 0.0
        self._last_claim = 0.0
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self.clock
        self.counters: dict[str, int] = dict.fromkeys((
            "receipts", "receipts_unknown", "mo", "mo_unrouted", "optouts", "enqueued",
            "store_errors", "delivered", "retried", "timeouts", "dropped", "expired",
            "claimed", "own_receipts", "http_receipts", "record_errors", "expired_own"), 0)

    @staticmethod
    def _consumer_name(cfg: Any) -> str:
        node = getattr(cfg.relay, "node_id", "") or socket.gethostname()
        listen = cfg.smpp.listen[0] if cfg.smpp.listen else ""
        return "%s/%s" % (node, listen)

    # --- service ----------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        if not self._ticker.running:
            self._ticker.start(self.tick_s, now=False)
        self.dlr.start()

    def stopService(self) -> Any:
        super().stopService()
        if self._ticker.running:
            self._ticker.stop()
        self.dlr.stop()
        self._flush_records()
        writes = list(self._writes)
        for due, up, keys, pdu, ack, tries in self._retries:
            ack(_RX_T_APPN)     # not stored: the operator sends it again
        self._retries = []
        if self._turn_call is not None and self._turn_call.active():
            self._turn_call.cancel()
        self._turn_call = None
        lk, self._lk = self._lk, {}
        rb, self._rb = self._rb, {}
        for items in lk.values():
            for _keys, _pdu, ack, _tries in items:
                ack(_RX_T_APPN)
        for items in rb.values():
            for item in items:
                item[8](_RX_T_APPN)
        return defer.gatherResults([self._flush_acks()] + writes, consumeErrors=True)

    def _track(self, d: defer.Deferred) -> defer.Deferred:
        """Keep a write in flight until it is answered: stopping waits for it (the store
        is closed only after this service stopped)."""
        self._writes.add(d)

        def done(r: Any) -> Any:
            self._writes.discard(d)
            return r
        d.addBoth(done)
        return d

    def _journal(self, account: str, mid: str, event: str, note: str) -> None:
        """A state event of a message in the journal (batched per turn by the ledger);
        a failure is logged, never raised."""
        ledger = getattr(self.node, "ledger", None)
        if ledger is None or not mid:
            return
        try:
            d = ledger.journal_event(account, mid, event, note)
        except Exception as e:      # pragma: no cover - defensive
            log.warn("journal {ev} of {mid} failed: {err}", ev=event, mid=mid, err=e)
            return
        d.addErrback(lambda f: log.warn("journal {ev} of {mid} of {acct} not written: {err}",
                                        ev=event, mid=mid, acct=account,
                                        err=f.getErrorMessage()))

    # --- from the relay ---------------------------------------------------------------------
    def _accounts(self) -> list[str]:
        return [a.system_id for a in self.node.cfg.accounts]

    def remember(self, upstream: str, upstream_id: str, account: str, mid: bytes,
                 source: bytes = b"", destination: bytes = b"") -> None:
        """The operator took a part that asked for a receipt: its state (ENROUTE) and its
        receipt map entry, written with the others of this reactor turn."""
        m = mid.decode("latin-1")
        self._records.setdefault(account, []).append(
            (msg_key(account, m), record_value(1, upstream, upstream_id,
                                               self.messages.now_ms(),
                                               source.decode("latin-1"),
                                               destination.decode("latin-1"))))
        self._maps.setdefault(account, []).append((upstream, upstream_id, mid))
        self._schedule_records()

    def _schedule_records(self) -> None:
        if self._record_call is None:
            self._record_call = self.clock.callLater(0, self._flush_records)

    def _flush_records(self) -> None:
        """One script per account for the states and HTTP settings of this turn; the map
        entries of parts with HTTP settings are written once those are stored (a receipt
        that finds them finds the settings), the others at once (no wait: an SMPP receipt
        needs no settings, and its script creates the state if the record is late)."""
        if self._record_call is not None and self._record_call.active():
            self._record_call.cancel()
        self._record_call = None
        records, self._records = self._records, {}
        maps, self._maps = self._maps, {}
        now_maps: dict[str, list] = {}
        for account in set(records) | set(maps):
            items = records.get(account)
            http = {k for k, _v in items or () if k.startswith("dlr:")}
            later: list = []
            for upstream, upstream_id, mid in maps.get(account, ()):
                entry = (upstream_id, account, mid)
                if http and dlr_key(account, mid.decode("latin-1")) in http:
                    later.append((upstream, entry))
                else:
                    now_maps.setdefault(upstream, []).append(entry)
            if not items:
                continue

            def failed(f: Any, account: str = account, n: int = len(items)) -> None:
                self.counters["record_errors"] += 1
                log.warn("state of {n} messages of {acct} not stored: {err}; query_sm and "
                         "HTTP receipts will not know them", n=n, acct=account,
                         err=f.getErrorMessage())

            def mapped(_: Any, later: list = later) -> Any:
                return self._write_maps(later)

            due = (self.messages.now_ms() + int(self.expire_after_s * 1000)
                   if self.expire_after_s > 0 else 0)
            self._track(self.messages.record(account, items, due).addErrback(failed)
                        .addCallback(mapped))
        for upstream, entries in now_maps.items():
            self._track(self.rs.remember_many(upstream, entries))

    def _write_maps(self, entries: list) -> Any:
        by_up: dict[str, list] = {}
        for upstream, entry in entries:
            by_up.setdefault(upstream, []).append(entry)
        ds = [self.rs.remember_many(upstream, items) for upstream, items in by_up.items()]
        return defer.gatherResults(ds, consumeErrors=True) if ds else None

    def expect_http_dlr(self, account_id: str, number: str, part_ids: Any,
                        settings: Any, status: int = 0) -> None:
        """An HTTP-submitted message with dlr settings was answered (called by
        proxyd.http.api). Taken by the operator (`status` 0): keep the settings per part, so
        its receipts go to the URL, and queue the SMSC-level report (Kannel mask 8, Jasmin
        level 1) now. Refused by the operator (`status` its SMPP status, `part_ids` the parts
        it took, often none): one SMSC-failure report (Kannel mask 16 with %d = 16, Jasmin
        level 1 with message_status the status name) for the message, with the first id
        given (``""`` when none was)."""
        if not getattr(settings, "url", ""):
            return
        sj = json.dumps({"api": settings.api, "url": settings.url, "mask": settings.mask,
                         "level": settings.level, "method": settings.method,
                         "acct": account_id, "to": number}, separators=(",", ":"))
        if status:
            want = (settings.mask & 0x10) if settings.api == "kannel" else (settings.level & 1)
            if not want:
                return
            ids = [mid.decode("latin-1") if isinstance(mid, bytes) else str(mid)
                   for mid in part_ids or ()]
            m = ids[0] if ids else ""
            facts = {"ev": "smsc", "mid": m, "up": "", "smsc_id": "", "to": number,
                     "reply": "NACK/%d/%s" % (status, C.status_name(status)),
                     "t": int(self.clock.seconds()), "status": status,
                     "status_name": C.status_name(status)}
            cb_id = "%s:%s" % (m or "nack", uuid.uuid4().hex[:12])
            self.messages.add_callback(account_id, cb_id, sj, facts).addCallbacks(
                lambda _: self.dlr.kick(account_id),
                lambda f: log.warn("SMSC-failure HTTP receipt for {acct} not stored: {err}",
                                   acct=account_id, err=f.getErrorMessage()))
            return
        final = settings.registered_delivery & 0x03
        smsc = (settings.mask & 0x08) if settings.api == "kannel" else (settings.level & 1)
        pending = {mid: (up, uid) for up, uid, mid in self._maps.get(account_id, ())}
        now = self.clock.seconds()
        for mid in part_ids:
            m = mid.decode("latin-1") if isinstance(mid, bytes) else str(mid)
            if final:
                self._records.setdefault(account_id, []).append((dlr_key(account_id, m), sj))
                self._schedule_records()
            if smsc:
                up, uid = pending.get(mid if isinstance(mid, bytes) else m.encode(), ("", ""))
                facts = {"ev": "smsc", "mid": m, "up": up, "smsc_id": uid, "to": number,
                         "reply": "ACK/", "t": int(now), "status": 0,
                         "status_name": "ESME_ROK"}
                cb_id = "%s:%s" % (m, uuid.uuid4().hex[:12])
                self.messages.add_callback(account_id, cb_id, sj, facts).addCallbacks(
                    lambda _: self.dlr.kick(account_id),
                    lambda f, m=m: log.warn("SMSC-level HTTP receipt of {mid} not stored: "
                                            "{err}", mid=m, err=f.getErrorMessage()))

    def on_deliver(self, upstream: Any, pdu: Any, ack: Callable[[int], None]) -> None:
        """A deliver_sm/data_sm from an operator: a receipt or an MO."""
        if pdu.esm_class & C.ESM_RECEIPT_MASK:
            self.counters["receipts"] += 1
            rid = pdu.tlv(C.TAG_RECEIPTED_MESSAGE_ID)
            if rid is not None:
                rid = rid.rstrip(b"\0")
            if not rid and pdu.command_id == C.DELIVER_SM:
                m = _ID_RE.search(pdu.short_message)
                rid = m.group(1) if m else None
            if not rid:
                self.counters["receipts_unknown"] += 1
                log.warn("receipt from {up} without a message id; acknowledged and dropped",
                         up=upstream.name)
                ack(_OK)
                return
            self._lookup(upstream.name, normalise_upstream_id(rid), pdu, ack, 0)
            return
        self._mo(upstream, pdu, ack)

    # --- the receipts of a turn -------------------------------------------------------------
    #
    # Receipts are gathered per reactor turn: one MGET per upstream for their map entries
    # (the keys share the upstream's hash tag), then one script per account (RECEIPTS_LUA,
    # the account's hash tag) that stores the state of every part and appends each receipt
    # to the account's stream (or queues its HTTP callback) and, when this node is consuming
    # the account, reads the stream for it in the same step: what this node just wrote
    # comes back as ids only. Each step has at most one call in flight per upstream /
    # account; what arrives meanwhile goes with the next call. The operator's deliver_sm are
    # acknowledged when the account's call returns. Two calls, not one, so that the keys of
    # each stay in one hash slot (Redis Cluster).

    def _schedule_turn(self) -> None:
        if self._turn_call is None:
            self._turn_call = self.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._turn_call = None
        for up in list(self._lk):
            if up not in self._lk_busy:
                self._lookup_batch(up)
        for account in list(self._rb):
            if account not in self._rb_busy:
                self._store_batch(account)

    def _lookup(self, up: str, keys: list, pdu: Any, ack: Callable[[int], None],
                tries: int) -> None:
        self._lk.setdefault(up, []).append((keys, pdu, ack, tries))
        self._schedule_turn()

    def _lookup_batch(self, up: str) -> None:
        items = self._lk.pop(up, None)
        if not items:
            return
        self._lk_busy.add(up)

        def found(hits: list) -> None:
            self._lk_busy.discard(up)
            now = self.clock.seconds()
            for (keys, pdu, ack, tries), hit in zip(items, hits):
                if hit is None:
                    if tries < len(LOOKUP_RETRIES):
                        self._retries.append((now + LOOKUP_RETRIES[tries], up, keys, pdu,
                                              ack, tries + 1))
                        continue
                    self.counters["receipts_unknown"] += 1
                    log.warn("receipt from {up} for unknown id {rid}; acknowledged and "
                             "dropped", up=up, rid=keys[0])
                    ack(_OK)
                    continue
                account, mid = hit
                out = rewrite_receipt(pdu, mid)
                self._receipt(account, mid, out, receipt_state(out), ack, up, keys[0])
            if up in self._lk:
                self._lookup_batch(up)

        def failed(f: Any) -> None:
            self._lk_busy.discard(up)
            self.counters["store_errors"] += len(items)
            log.warn("receipt lookup for {n} receipts of {up} ({rid}...) failed: {err}; "
                     "operator asked to retry", n=len(items), up=up, rid=items[0][0][0],
                     err=f.getErrorMessage())
            for _keys, _pdu, ack, _tries in items:
                ack(_RX_T_APPN)
            if up in self._lk:
                self._schedule_turn()

        self._track(self.rs.lookup_many(up, [it[0] for it in items]).addCallbacks(found,
                                                                                  failed))

    def _receipt(self, account: str, mid: bytes, out: Any, state_err: tuple,
                 ack: Callable[[int], None], upstream: str = "", upstream_id: str = "",
                 kind: str = "receipt") -> None:
        """Store one receipt with the others of this turn for the account: message state,
        then the HTTP callback or the SMPP stream; `ack(status)` once stored (or not)."""
        self._cb_n += 1
        m = mid.decode("latin-1")
        self._rb.setdefault(account, []).append(
            (m, state_err[0], state_err[1], upstream, upstream_id, out.command_id,
             P.encode(out)[P.HEADER_LEN:], "%s:%s%x" % (m, self._cb_prefix, self._cb_n),
             ack, kind))
        self._schedule_turn()

    def _store_batch(self, account: str) -> None:
        items = self._rb.pop(account, None)
        if not items:
            return
        self._rb_busy.add(account)
        keys: list = []
        args: list = []
        for m, state, err, up, uid, cid, body, cb_id, _ack, _kind in items:
            keys.append(msg_key(account, m))
            keys.append(dlr_key(account, m))
            args.append("%d|%s|%s|%s|%d|%s|%s|%s" % (state, err.replace("|", ""), up, uid,
                                                     cid, cb_id, m, body.hex()))
        feed = self.feeds.get(account)
        count = 0
        if (feed is not None and feed.sessions and not feed.reading and not feed.history
                and self.rs.has_group(account)):
            count = self._room(feed)
            if count > 0:
                feed.reading = True
            else:
                count = 0
        d = self.messages.receipts(account, keys, args, GROUP,
                                   self.consumer if count else "", count, RECEIPT)

        def stored(result: tuple) -> None:
            self._rb_busy.discard(account)
            ids, own, other, gone, err = result
            http = 0
            by_id: dict = {}
            for item, eid in zip(items, ids):
                item[8](_OK)
                # the journal (issue 8): the operator's receipt with "STAT ERR", proxyd's
                # own as negative_receipt; batched per turn by the ledger
                self._journal(account, item[0],
                              "receipt" if item[9] == "receipt" else "negative_receipt",
                              "%s %s" % (STATE_NAMES.get(item[1], "UNKNOWN"), item[2]))
                if eid:
                    by_id[eid] = item
                else:
                    http += 1
            self.counters["enqueued"] += len(by_id)
            if http:
                self.counters["http_receipts"] += http
                self.dlr.kick(account)
            f = self.feeds.get(account)
            if count:
                feed.reading = False
                if err is not None:
                    if "NOGROUP" in err:
                        self.rs.forget_group(account)
                    log.warn("reading deliveries of {acct} failed: {err}", acct=account,
                             err=err)
                entries = [Entry(eid, by_id[eid][5], by_id[eid][6], RECEIPT) for eid in own]
                entries += other
                if gone:
                    self._expired(account, gone)
                if f is feed:
                    feed.add(entries)
                    if len(entries) + len(gone) >= count or err is not None:
                        feed.next_read = 0.0      # more may wait in the stream
            elif f is not None and by_id:
                f.next_read = 0.0
            if f is not None:
                self._pump(f)
            if account in self._rb:
                self._store_batch(account)

        def failed(fl: Any) -> None:
            self._rb_busy.discard(account)
            if count:
                feed.reading = False
                feed.next_read = self.clock.seconds() + 1.0
            self.counters["store_errors"] += len(items)
            log.warn("{n} receipts for {acct} ({kind} {mid}...) not stored: {err}",
                     n=len(items), kind=items[0][9], mid=items[0][0], acct=account,
                     err=fl.getErrorMessage())
            for item in items:
                item[8](_RX_T_APPN)
            if account in self._rb:
                self._schedule_turn()

        self._track(d.addCallbacks(stored, failed))

    def own_receipt(self, account_id: str, mid: bytes, submit_pdu: Any, stat: str,
                    status: int, _try: int = 0) -> None:
        """proxyd's own receipt for a part it acknowledged but did not get to the operator
        (see the module docstring), delivered like an operator's."""
        state = STATE.get(stat, 7)
        err = own_err(stat, status)
        date = time.strftime("%y%m%d%H%M", time.localtime(self.clock.seconds())).encode()
        data = submit_pdu.short_message or submit_pdu.tlv(C.TAG_MESSAGE_PAYLOAD, b"") or b""
        if submit_pdu.esm_class & C.ESM_UDHI and data:
            data = data[data[0] + 1:]
        sm = (b"id:%s sub:001 dlvrd:000 submit date:%s done date:%s stat:%s err:%s text:%s"
              % (mid, date, date, stat.encode(), err.encode(), data[:20]))
        pdu = P.DeliverSm(
            seq=0, source_addr_ton=submit_pdu.dest_addr_ton,
            source_addr_npi=submit_pdu.dest_addr_npi,
            source_addr=submit_pdu.destination_addr,
            dest_addr_ton=submit_pdu.source_addr_ton,
            dest_addr_npi=submit_pdu.source_addr_npi, destination_addr=submit_pdu.source_addr,
            esm_class=C.ESM_DELIVERY_RECEIPT, data_coding=submit_pdu.data_coding,
            short_message=sm, tlvs=((C.TAG_RECEIPTED_MESSAGE_ID, mid + b"\0"),
                                    (C.TAG_MESSAGE_STATE, bytes((state,)))))
        def ack(st: int) -> None:
            if st == _OK:
                self.counters["own_receipts"] += 1
                log.info("own receipt {mid} of {acct}: stat:{stat} err:{err}",
                         mid=mid.decode("latin-1"), acct=account_id, stat=stat, err=err)
            elif _try < len(OWN_RETRIES):
                self.clock.callLater(OWN_RETRIES[_try], self.own_receipt, account_id, mid,
                                     submit_pdu, stat, status, _try + 1)
            else:
                log.error("own receipt {mid} of {acct} (stat:{stat}) lost: the store kept "
                          "failing", mid=mid.decode("latin-1"), acct=account_id, stat=stat)

        self._receipt(account_id, mid, pdu, (state, err), ack, kind="own receipt")

    def _mo(self, upstream: Any, pdu: Any, ack: Callable[[int], None]) -> None:
        self.counters["mo"] += 1
        dest = pdu.destination_addr.decode("latin-1")
        source = pdu.source_addr.decode("latin-1")
        account = self._mo_account(dest)
        if account is None:
            self.counters["mo_unrouted"] += 1
            log.warn("MO from {up} {src} -> {dest}: no account has this service code; "
                     "acknowledged and dropped", up=upstream.name, src=mask(source), dest=dest)
            ack(_OK)
            return
        url = self._mo_url_of(account)
        if url:
            self._mo_http(account, url, upstream, pdu, ack)
            return
        try:
            text = message_text(pdu)
        except Exception:       # a malformed UDH: not a text, so not an unsubscribe word
            text = None
        words = self.node.cfg.policy.unsubscribe_words
        if text and source and is_unsubscribe(text, words):
            from .store.optout import OptOut

            def added(_: Any) -> None:
                self.counters["optouts"] += 1
                log.info("{src} opted out of {acct} (MO reply)", src=mask(source),
                         acct=account)
                self._enqueue(account, pdu, MO, ack)

            def failed(f: Any) -> None:
                self.counters["store_errors"] += 1
                log.warn("opt-out of {src} for {acct} not stored: {err}; operator asked to "
                         "retry", src=mask(source), acct=account, err=f.getErrorMessage())
                ack(_RX_T_APPN)

            (getattr(self.node, "optout", None) or OptOut(self.node.store)).add(
                account, source).addCallbacks(added, failed)
            return
        self._enqueue(account, pdu, MO, ack)

    # --- MO to an account's mo_url ----------------------------------------------------------
    #
    # An MO for an account with a `mo_url` goes to the HTTP callback queue (the same durable,
    # retried queue as HTTP receipts, api "mo"), not to the SMPP stream. A part of a
    # concatenated MO (UDH or SAR) is kept in ``mocc:{A}:...`` (MO_PART_LUA) and acknowledged
    # once kept; the script that stores the last part queues the one callback of the whole
    # message in the same step. The unsubscribe word is looked for in the whole text, after.

    def _mo_url_of(self, account: str) -> str:
        for a in self.node.cfg.accounts:
            if a.system_id == account:
                return getattr(a, "mo_url", "") or ""
        return ""

    def _mo_http(self, account: str, url: str, upstream: Any, pdu: Any,
                 ack: Callable[[int], None]) -> None:
        source = pdu.source_addr.decode("latin-1")
        dest = pdu.destination_addr.decode("latin-1")
        data = getattr(pdu, "short_message", b"") or pdu.tlv(C.TAG_MESSAGE_PAYLOAD, b"") or b""
        try:
            key = concat_key(pdu.esm_class, data, dict(pdu.tlvs))
            payload = strip_udh(pdu.esm_class, data)
        except ValueError:      # a malformed UDH or SAR: passed as it is, one message
            key, payload = None, data
        self._cb_n += 1
        mid = "mo%s%x" % (self._cb_prefix, self._cb_n)
        cb_id = "%s:%s" % (mid, uuid.uuid4().hex[:8])
        facts = {"ev": "mo", "from": source, "to": dest, "dc": pdu.data_coding,
                 "upstream": upstream.name, "id": mid, "ts": int(self.clock.seconds())}
        sj = json.dumps({"api": "mo", "url": url, "acct": account}, separators=(",", ":"))

        def failed(f: Any) -> None:
            self.counters["store_errors"] += 1
            log.warn("MO for {acct} (mo_url) not stored: {err}; operator asked to retry",
                     acct=account, err=f.getErrorMessage())
            ack(_RX_T_APPN)

        if key is None or key[1] <= 1:
            whole = dict(facts, hexparts="1:" + payload.hex())

            def single_queued(_: Any) -> None:
                self.counters["enqueued"] += 1
                self.dlr.kick(account)
                ack(_OK)

            def queue_single(_: Any = None) -> None:
                self.messages.add_callback(account, cb_id, sj, whole).addCallbacks(
                    single_queued, failed)

            self._mo_optout(account, source, mo_facts(whole)["text"], queue_single, failed)
            return
        ref, total, seq = key
        pkey = mo_parts_key(account, source, dest, ref, total)
        ttl = int(_opt(self.node.cfg, "policy", "reassembly_timeout_s", 60.0) * 4) + 60

        def kept(r: tuple) -> None:
            code, what = r
            if code != 1:
                ack(_OK)
                return
            self.counters["enqueued"] += 1
            self.dlr.kick(account)
            text = mo_facts({"hexparts": what, "dc": pdu.data_coding})["text"]

            def optout_failed(f: Any) -> None:
                # the whole MO is queued already: asking the operator for the last part
                # again would start a new message; the opt-out is logged as lost
                log.error("opt-out of {src} for {acct} (long MO) not stored: {err}",
                          src=mask(source), acct=account, err=f.getErrorMessage())
                ack(_OK)
            self._mo_optout(account, source, text, lambda _=None: ack(_OK), optout_failed)

        self.messages.add_mo_part(account, pkey, seq, payload, total, ttl, cb_id, sj,
                                  facts).addCallbacks(kept, failed)

    def _mo_optout(self, account: str, source: str, text: str | None,
                   then: Callable, failed: Callable) -> None:
        """Add `source` to the account's opt-out set when `text` is an unsubscribe word,
        then `then()`; `failed(failure)` when the store failed."""
        words = self.node.cfg.policy.unsubscribe_words
        if not (text and source and is_unsubscribe(text, words)):
            then()
            return
        from .store.optout import OptOut

        def added(_: Any) -> None:
            self.counters["optouts"] += 1
            log.info("{src} opted out of {acct} (MO reply)", src=mask(source), acct=account)
            then()

        (getattr(self.node, "optout", None) or OptOut(self.node.store)).add(
            account, source).addCallbacks(added, failed)

    def _mo_account(self, dest: str) -> str | None:
        best, best_len = None, 0
        for a in self.node.cfg.accounts:
            for code in a.service_codes:
                if len(code) > best_len and dest.startswith(code):
                    best, best_len = a.system_id, len(code)
        return best

    def _enqueue(self, account: str, pdu: Any, kind: str, ack: Callable[[int], None]) -> None:
        body = P.encode(pdu)[P.HEADER_LEN:]

        def stored(_: Any) -> None:
            self.counters["enqueued"] += 1
            ack(_OK)
            feed = self.feeds.get(account)
            if feed is not None:
                feed.next_read = 0.0
                self._pump(feed)

        def failed(f: Any) -> None:
            self.counters["store_errors"] += 1
            log.warn("{kind} for {acct} not stored: {err}; operator asked to retry",
                     kind="receipt" if kind == RECEIPT else "MO", acct=account,
                     err=f.getErrorMessage())
            ack(_RX_T_APPN)

        self.rs.enqueue(account, pdu.command_id, body, kind).addCallbacks(stored, failed)

    # --- receiver binds ---------------------------------------------------------------------
    def session_ready(self, session: Any) -> None:
        if not session.can_receive:
            return
        account = session.account.system_id
        feed = self.feeds.get(account)
        if feed is None:
            feed = self.feeds[account] = _Feed(account)
            log.info("consuming deliveries of {acct} as {consumer}", acct=account,
                     consumer=self.consumer)
        feed.sessions.setdefault(session, 0)
        feed.next_read = 0.0
        self._pump(feed)

    def session_gone(self, session: Any) -> None:
        if session.account is None:
            return
        feed = self.feeds.get(session.account.system_id)
        if feed is not None and session in feed.sessions and self._drop_session(feed, session):
            self._pump(feed)

    def _drop_session(self, feed: _Feed, session: Any) -> bool:
        """Forget a receiver; its deliveries in flight go back to the queue. False when it
        was the last one here (the feed is gone)."""
        del feed.sessions[session]
        for eid, (e, s, _, _) in list(feed.inflight.items()):
            if s is session:        # not an attempt the client failed: no backoff
                del feed.inflight[eid]
                feed.requeue(e)
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

    # --- delivering -------------------------------------------------------------------------
    def _pump(self, feed: _Feed) -> None:
        if self.feeds.get(feed.account) is not feed:
            return
        for session in [x for x in feed.sessions if not _alive(x)]:
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
                session = self._pick(feed, sessions, window)
                if session is None:
                    keep.extend(queue[i:])
                    break
                self._send(feed, e, session, now)
            feed.queue = keep
        if not feed.reading and now >= feed.next_read:
            room = self._room(feed)
            # in bigger reads, not one per answer: when what is held runs low
            if room > 0 and (len(feed.queue) < feed.capacity(window) or room >= HOLD_MIN // 2):
                self._read(feed, room)

    def _room(self, feed: _Feed) -> int:
        """How many more entries of its account this node may read for `feed` now."""
        return (max(2 * feed.capacity(self.window), HOLD_MIN) - len(feed.queue)
                - len(feed.inflight))

    def _pick(self, feed: _Feed, sessions: list, window: int) -> Any:
        n = len(sessions)
        best = None
        for k in range(n):
            s = sessions[(feed.rr + k) % n]
            load = feed.sessions[s]
            if load < window and (best is None or load < feed.sessions[best]):
                best = s
                if load == 0:
                    break
        feed.rr += 1
        return best

    def _send(self, feed: _Feed, e: Entry, session: Any, now: float) -> None:
        feed.sends += 1
        n = feed.sends
        feed.inflight[e.id] = (e, session, now + self.resp_timeout_s, n)
        feed.sessions[session] += 1

        def on_resp(status: int) -> None:
            self._answered(feed, e, session, n, status)

        session.deliver(e.command_id, e.body, on_resp)

    def _answered(self, feed: _Feed, e: Entry, session: Any, n: int, status: int) -> None:
        cur = feed.inflight.get(e.id)
        if cur is None or cur[3] != n:
            return      # timed out or requeued already; a late answer changes nothing
        del feed.inflight[e.id]
        if session in feed.sessions:
            feed.sessions[session] -= 1
        if status == _OK:
            feed.known.discard(e.id)
            self.counters["delivered"] += 1
            self._ack(feed.account, e.id)
            if e.kind == RECEIPT:
                m = _ID_RE.search(e.body)
                if m:
                    self._journal(feed.account, m.group(1).decode("latin-1"),
                                  "receipt_delivered", "")
        elif session not in feed.sessions or not _alive(session):
            feed.requeue(e)     # the connection went: not the client's refusal
        else:
            self._failed(feed, e, "client answered %s" % C.status_name(status))
        self._pump(feed)

    def _failed(self, feed: _Feed, e: Entry, why: str) -> None:
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
            self._ack_call = self.clock.callLater(0, self._flush_acks)

    def _flush_acks(self) -> defer.Deferred:
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
    def _read(self, feed: _Feed, count: int) -> None:
        feed.reading = True
        history = feed.history
        account = feed.account

        def got(result: tuple) -> None:
            feed.reading = False
            entries, gone = result
            if gone:
                self._expired(account, gone)
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
            self._pump(feed)

        def failed(f: Any) -> None:
            feed.reading = False
            feed.next_read = self.clock.seconds() + 1.0
            log.warn("reading deliveries of {acct} failed: {err}", acct=account,
                     err=f.getErrorMessage())

        d = self.rs.ensure_group(account)
        d.addCallback(lambda _: self.rs.read(account, self.consumer, count, history,
                                             feed.cursor))
        d.addCallbacks(got, failed)

    def _expired(self, account: str, ids: list[str]) -> None:
        self.counters["expired"] += len(ids)
        log.warn("{n} deliveries of {acct} expired (older than the TTL) before a client "
                 "took them", n=len(ids), acct=account)
        for eid in ids:
            self._ack(account, eid)

    # --- timers -----------------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.clock.seconds()
        if self._retries:
            due = [r for r in self._retries if r[0] <= now]
            if due:
                self._retries = [r for r in self._retries if r[0] > now]
                for _, up, keys, pdu, ack, tries in due:
                    self._lookup(up, keys, pdu, ack, tries)
        for feed in list(self.feeds.values()):
            for eid, (e, session, deadline, _) in list(feed.inflight.items()):
                if deadline <= now:
                    del feed.inflight[eid]
                    if session in feed.sessions:
                        feed.sessions[session] -= 1
                    self.counters["timeouts"] += 1
                    self._failed(feed, e, "no deliver_sm_resp within %.0fs"
                                 % self.resp_timeout_s)
            self._pump(feed)
        if self.expire_after_s > 0 and now - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = now
            for account in self._accounts():
                if account not in self._expiring:
                    self._expire(account)
        if now - self._last_touch >= self.claim_idle_s / 3.0:
            self._last_touch = now
            for feed in list(self.feeds.values()):
                self._touch(feed)
        if now - self._last_claim >= min(5.0, self.claim_idle_s / 4.0):
            self._last_claim = now
            for feed in list(self.feeds.values()):
                if not feed.history:
                    self._claim(feed)

    def _expire(self, account: str) -> None:
        """proxyd's own EXPIRED receipt for the parts of `account` whose wait is over."""
        self._expiring.add(account)

        def got(mids: list) -> None:
            self._expiring.discard(account)
            if not mids:
                return
            self.counters["expired_own"] += len(mids)
            log.info("{n} parts of {acct} got no receipt within {s}s: EXPIRED", n=len(mids),
                     acct=account, s=self.expire_after_s)
            for m, src, dst in mids:
                # the addresses the part was submitted with (own_receipt swaps them)
                submit = P.SubmitSm(seq=0, source_addr=src.encode("latin-1")[:20],
                                    destination_addr=dst.encode("latin-1")[:20])
                self.own_receipt(account, m.encode("latin-1"), submit, "EXPIRED",
                                 EXPIRED_STATUS)
            if len(mids) >= EXPIRE_BATCH:
                self._expire(account)

        def failed(f: Any) -> None:
            self._expiring.discard(account)
            log.warn("looking for expired parts of {acct} failed: {err}", acct=account,
                     err=f.getErrorMessage())

        self._track(self.messages.take_expired(account, EXPIRE_BATCH).addCallbacks(got,
                                                                                  failed))

    def _touch(self, feed: _Feed) -> None:
        ids = list(feed.known)
        if not ids:
            return

        def still(ours: set) -> None:
            lost = [i for i in ids if i not in ours and i in feed.known
                    and i not in feed.inflight]
            if not lost:
                return
            feed.known.difference_update(lost)
            lost_set = set(lost)
            feed.queue = [e for e in feed.queue if e.id not in lost_set]
            log.warn("{n} deliveries of {acct} held here were taken over or expired",
                     n=len(lost), acct=feed.account)

        self.rs.touch(feed.account, self.consumer, ids).addCallbacks(
            still, lambda f: log.warn("touching deliveries of {acct} failed: {err}",
                                      acct=feed.account, err=f.getErrorMessage()))

    def _claim(self, feed: _Feed) -> None:
        room = self._room(feed)
        if room <= 0:
            return

        def got(result: tuple) -> None:
            entries, gone = result
            if gone:
                self._expired(feed.account, gone)
            if self.feeds.get(feed.account) is not feed:
                return
            n = feed.add(entries)
            if n:
                self.counters["claimed"] += n
                log.info("took over {n} idle deliveries of {acct}", n=n, acct=feed.account)
                self._pump(feed)

        self.rs.claim_idle(feed.account, self.consumer, self.claim_idle_s, room).addCallbacks(
            got, lambda f: log.warn("claiming deliveries of {acct} failed: {err}",
                                    acct=feed.account, err=f.getErrorMessage()))
