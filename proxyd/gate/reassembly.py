"""Long messages sent as separate parts (UDH or SAR TLVs), on every path: submit_sm, data_sm
and each destination of submit_multi.

Each part is kept in the store and acknowledged with its own proxyd id; when the last part
arrives (on any node) the whole text is judged once by the gate, then charged and relayed
together. A message still incomplete after `[policy] reassembly_timeout_s` sends nothing;
its outcome is recorded ("incomplete") and, where the client asked for receipts, each part
gets a negative receipt.

Keys (``A`` = account; the reference kind is u8 / u16 for a UDH, sar for the TLVs):

    cc:{A}:<src>:<dst>:<kind><ref>   hash  seq -> "<mid>:<command id>:<hex body>",
                                           t -> first seen (ms), n -> total, c -> data_coding
    ccidx                            zset  those keys scored by first seen (for timeouts)

A part is refused, never answered OK and dropped, when it:
- repeats a seq already kept (PROXYD_RDUPPART),
- says another total than the parts before it (PROXYD_RDUPPART: two messages under one
  reference are never joined),
- has another data_coding than the parts before it (PROXYD_RMIXEDDCS: the whole text is
  judged in one coding, and every part is sent as judged),
- is more than one SMS on the air by itself (ESME_RINVMSGLEN), or belongs to a message of
  more than `max_parts` parts (ESME_RINVNUMMSGS).
"""
from __future__ import annotations

from importlib import resources
from typing import Any, Callable, NamedTuple

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from proxyd.message import Message
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.text.reassembly import join_parts, strip_udh

from .billing import fits_one_part
from .parts import build_message

log = Logger(namespace="proxyd.reassembly")
_S = C.STATUS
INDEX = "ccidx"
Reply = Callable[[int, bytes], None]


def lua(name: str) -> str:
    """A script of `proxyd/store/` (the reassembly script is shared with the MO path)."""
    return resources.files("proxyd.store").joinpath(name).read_text("utf-8")


class Ident(NamedTuple):
    """Where a part belongs: reference kind and number, total, its own seq."""
    kind: str
    ref: int
    total: int
    seq: int


class Kept(NamedTuple):
    """One stored part, as read back."""
    seq: int
    mid: bytes
    pdu: Any


def message_key(account: str, pdu: Any, ident: Ident) -> str:
    return "cc:{%s}:%s:%s:%s%d" % (account, pdu.source_addr.decode("latin-1"),
                                    pdu.destination_addr.decode("latin-1"), ident.kind,
                                    ident.ref)


def _pairs(flat: list) -> dict:
    out = {}
    for i in range(0, len(flat) - 1, 2):
        k = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
        v = flat[i + 1].decode() if isinstance(flat[i + 1], bytes) else str(flat[i + 1])
        out[k] = v
    return out


def kept_parts(fields: dict) -> list[Kept]:
    parts = []
    for k, v in fields.items():
        if not k.isdigit():
            continue
        mid, cid, hexbody = v.split(":", 2)
        body = bytes.fromhex(hexbody)
        parts.append(Kept(int(k), mid.encode(), P.decode_body(int(cid), 0, 0, body)))
    parts.sort(key=lambda x: x.seq)
    return parts


class Reassembly:
    """The store-backed buffer of parts; `gate.send` gets each complete message."""

    def __init__(self, store: Any, gate: Any, receipts: Any, clock: Any,
                 timeout_s: float) -> None:
        self.store = store
        self.gate = gate
        self.receipts = receipts
        self.clock = clock
        self.timeout_s = timeout_s
        store.register_script("concat_add", lua("reassembly.lua"))
        store.register_script("concat_take", lua("reassembly_take.lua"))
        self.completed = 0
        self.expired = 0
        self.sweeper = TimerService(max(0.5, min(5.0, timeout_s / 4)), self.sweep)
        self.sweeper.clock = clock
        self.sweeper.setName("reassembly-sweeper")

    # --- parts --------------------------------------------------------------------------
    def add_part(self, account: Any, pdu: Any, body: bytes, ident: Ident,
                 reply: Reply) -> None:
        acct = account.system_id
        if ident.total > account.max_parts:
            log.info("refused {acct}: long message of {n} parts over max_parts {m}",
                     acct=acct, n=ident.total, m=account.max_parts)
            reply(_S["ESME_RINVNUMMSGS"], b"")
            return
        data = pdu.payload
        udh_len = data[0] + 1 if pdu.esm_class & C.ESM_UDHI and data else 0
        if not fits_one_part(data, udh_len, pdu.data_coding):
            log.info("refused {acct}: a part of a long message longer than one SMS",
                     acct=acct)
            reply(_S["ESME_RINVMSGLEN"], b"")
            return
        mid = self.gate.ids.next()
        hkey = message_key(acct, pdu, ident)
        value = "%s:%d:%s" % (mid.decode(), pdu.command_id, body.hex())
        now_ms = int(self.clock.seconds() * 1000)
        ttl = int(self.timeout_s * 4) + 60
        d = self.store.evalsha("concat_add", [hkey, INDEX],
                               [ident.seq, value, ident.total, now_ms, ttl, pdu.data_coding])

        def stored(r: list) -> None:
            code = int(r[0])
            if code == 0:
                reply(0, mid)
            elif code == 1:
                reply(0, mid)
                self.completed += 1
                self._complete(account, _pairs(r[1]))
            else:
                status, why = {
                    2: (_S["PROXYD_RDUPPART"], "duplicate part %d" % ident.seq),
                    3: (_S["PROXYD_RDUPPART"], "total %d, earlier parts said %s"
                        % (ident.total, _text(r[1]))),
                    4: (_S["PROXYD_RMIXEDDCS"], "data_coding %d, earlier parts %s"
                        % (pdu.data_coding, _text(r[1])))}[code]
                log.info("refused {acct}: long message part: {why}", acct=acct, why=why)
                reply(status, b"")

        def failed(f: Any) -> None:
            log.warn("store error while keeping a part of {acct}: {err}", acct=acct,
                     err=f.getErrorMessage())
            reply(_S["ESME_RSYSERR"], b"")

        d.addCallbacks(stored, failed)

    def _complete(self, account: Any, fields: dict) -> None:
        parts = kept_parts(fields)
        first = parts[0].pdu
        payloads = [(k.seq, strip_udh(k.pdu.esm_class, k.pdu.payload)) for k in parts]
        text = join_parts(payloads, first.data_coding) if self.gate.policy.needs_text \
            else None
        segments = tuple((k.pdu, P.encode(k.pdu)[P.HEADER_LEN:]) for k in parts)
        msg: Message = build_message(account, first, text, segments, len(parts))

        def done(status: int, ok_ids: list, refusal: Any, ok_parts: int) -> None:
            if status == 0:
                return
            why = refusal.reason if refusal is not None else C.status_name(status)
            self._negative(account, parts, why, status, ok_ids if refusal is None else [])

        self.gate.send(account, msg, done, ids=[k.mid for k in parts])

    def _negative(self, account: Any, parts: list[Kept], why: str, status: int,
                  ok_ids: list) -> None:
        """Outcome of a refused/failed/incomplete long message: logged and counted; a
        negative receipt per part that the operator did not take."""
        log.info("long message of {acct} ({n} parts) not sent: {why}",
                 acct=account.system_id, n=len(parts), why=why)
        taken = set(ok_ids)
        stat = "UNDELIV" if why == "incomplete" else "REJECTD"
        for k in parts:
            if k.mid in taken or not k.pdu.registered_delivery & 0x03:
                continue
            self.receipts.own_receipt(account.system_id, k.mid, k.pdu, stat, status)

    # --- timeouts -------------------------------------------------------------------------
    SWEEP_BATCH = 100

    def sweep(self) -> Any:
        """Take the messages incomplete for longer than the timeout, a batch at a time, until
        none is left: a backlog is drained at once, not 100 per timer tick, so that no part
        outlives its hash's TTL and leaves without its journal record and receipt."""
        cutoff = int((self.clock.seconds() - self.timeout_s) * 1000)
        d = self.store.execute("ZRANGEBYSCORE", INDEX, 0, cutoff, "LIMIT", 0,
                               self.SWEEP_BATCH)

        def got(keys: list) -> Any:
            takes = []
            for k in keys or ():
                k = _text(k)
                takes.append(self.store.evalsha("concat_take", [k, INDEX], []).addCallbacks(
                    self._expired, lambda f: None, callbackArgs=(k,)))
            if len(keys or ()) >= self.SWEEP_BATCH:
                # the next batch once this one is taken (taken keys leave the index)
                return defer.gatherResults(takes).addCallback(lambda _: self.sweep())
            return None

        return d.addCallbacks(got, lambda f: log.warn("reassembly sweep failed: {e}",
                                                      e=f.getErrorMessage()))

    def _expired(self, flat: list, key: str) -> None:
        fields = _pairs(flat or [])
        parts = kept_parts(fields)
        if not parts:
            return
        self.expired += 1
        acct = key[4:key.index("}")]
        account = self.gate.config.account(acct)
        if account is None:
            return
        self.gate.ledger.count_rejected(acct, "incomplete").addErrback(lambda f: None)
        self._negative(account, parts, "incomplete", _S["ESME_RDELIVERYFAILURE"], [])


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
