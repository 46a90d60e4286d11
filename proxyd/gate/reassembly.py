"""Long messages sent as separate parts (UDH or SAR TLVs), on every path: submit_sm, data_sm
and each destination of submit_multi (SMPP and HTTP alike).

Each part is kept in the store and acknowledged with its own proxyd id; when the last part
arrives (on any node) the whole text is judged once by the gate, then relayed. A message
still incomplete after `[policy] reassembly_timeout_s` sends nothing; its outcome is
recorded ("incomplete") and, where the client asked for receipts, each part gets a
negative receipt.

Paid for before it is kept: the first part of a message is accepted only if the account's
free balance covers the WHOLE message (total parts x price). It reserves every part then
(the ledger's ordinary per-part reservations, under the ids the parts will have), in the
same atomic step that keeps it (``proxyd/store/ledger/hold.lua``). The completed message is
relayed on those reservations (`Gate.send_held`: each part committed or refunded by its
outcome; a refusal refunds them with the note "released <reason>": never charged twice);
an incomplete one is refunded when it expires, with the note "released incomplete".

Bounded: an account keeps at most `max_pending_parts` parts and `max_pending_bytes` octets
of incomplete messages (the account's own values, else `[policy]`'s); beyond, a part is
refused with ESME_RMSGQFUL. Only what the relay needs of a part is kept: the PDU's fields
and the TLVs in `KEEP_TLVS` (the SAR ones, message_payload, the ports), never the others.

Keys (``A`` = account; the reference kind is u8 / u16 for a UDH, sar for the TLVs):

    cc:{A}:<src>:<dst>:<kind><ref>   hash  seq -> "<command id>:<base64 body>",
                                           t -> first seen (ms), n -> total, c -> data_coding,
                                           i -> the ids of the parts (by seq, ',' between)
    ccidx                            zset  those keys scored by first seen (for timeouts)
    ccpend:{A}                       hash  p -> parts kept, b -> octets kept (the caps)

A part is refused, never answered OK and dropped, when it:
- repeats a seq already kept (PROXYD_RDUPPART),
- says another total than the parts before it (PROXYD_RDUPPART: two messages under one
  reference are never joined),
- has another data_coding than the parts before it (PROXYD_RMIXEDDCS: the whole text is
  judged in one coding, and every part is sent as judged),
- is more than one SMS on the air by itself (ESME_RINVMSGLEN), or belongs to a message of
  more than `max_parts` parts (ESME_RINVNUMMSGS),
- would take the account over its pending caps (ESME_RMSGQFUL),
- is the first of a message the balance does not cover (PROXYD_RNOBALANCE) or whose
  destination opted out (ESME_RINVDSTADR),
- cannot be kept because the store is full (ESME_RSYSERR: maxmemory with noeviction; what
  was kept before stays).
"""
from __future__ import annotations

import base64
from importlib import resources
from typing import Any, Callable, NamedTuple

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from proxyd.logs import mask
from proxyd.message import Message
from proxyd.policy.optout import normalise_number
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.text.reassembly import join_parts, strip_udh

from .billing import fits_one_part
from .parts import build_message

log = Logger(namespace="proxyd.reassembly")
_S = C.STATUS
INDEX = "ccidx"
Reply = Callable[[int, bytes], None]
# the TLVs of a part that are kept (and relayed): concatenation, the payload, the ports
KEEP_TLVS = frozenset((C.TAG_SAR_MSG_REF_NUM, C.TAG_SAR_TOTAL_SEGMENTS,
                       C.TAG_SAR_SEGMENT_SEQNUM, C.TAG_MESSAGE_PAYLOAD,
                       0x020A, 0x020B))     # source_port, destination_port
# a first part the free balance cannot cover while leases could: asked again this often
HOLD_RETRY_S = 0.25
HOLD_TRIES = 8
QUIET_S = 10.0      # refusals over the caps / on a full store: one log line per account


def lua(name: str) -> str:
    """A script of `proxyd/store/`."""
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


def pending_key(account: str) -> str:
    return "ccpend:{%s}" % account


def slim_value(pdu: Any) -> str:
    """What is kept of a part: its command id and its body re-encoded with only the
    `KEEP_TLVS` (base64)."""
    tlvs = tuple(t for t in pdu.tlvs if t[0] in KEEP_TLVS) if pdu.tlvs else ()
    body = P.encode(pdu._replace(seq=0, tlvs=tlvs))[P.HEADER_LEN:]
    return "%d:%s" % (pdu.command_id, base64.b64encode(body).decode("ascii"))


def _pairs(flat: list) -> dict:
    out = {}
    for i in range(0, len(flat) - 1, 2):
        k = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
        v = flat[i + 1].decode() if isinstance(flat[i + 1], bytes) else str(flat[i + 1])
        out[k] = v
    return out


def kept_parts(fields: dict) -> list[Kept]:
    ids = fields.get("i", "").split(",")
    parts = []
    for k, v in fields.items():
        if not k.isdigit():
            continue
        seq = int(k)
        cid, b64 = v.split(":", 1)
        mid = ids[seq - 1].encode() if 0 < seq <= len(ids) else b""
        parts.append(Kept(seq, mid, P.decode_body(int(cid), 0, 0, base64.b64decode(b64))))
    parts.sort(key=lambda x: x.seq)
    return parts


class Quiet:
    """At most one log line per account and `interval_s` about one kind of refusal (the
    next one says how many were not logged)."""

    def __init__(self, clock: Any, interval_s: float = QUIET_S) -> None:
        self.clock = clock
        self.interval_s = interval_s
        self.last: dict[str, list] = {}     # account -> [logged at, not logged since]

    def __call__(self, acct: str) -> int | None:
        """None: do not log now; else how many were not logged before this one."""
        now = self.clock.seconds()
        last = self.last.get(acct)
        if last is not None and now - last[0] < self.interval_s:
            last[1] += 1
            return None
        self.last[acct] = [now, 0]
        return last[1] if last is not None else 0


class Reassembly:
    """The store-backed buffer of parts; `gate.send_held` gets each complete message."""

    def __init__(self, store: Any, gate: Any, receipts: Any, clock: Any,
                 timeout_s: float) -> None:
        self.store = store
        self.gate = gate
        self.receipts = receipts
        self.clock = clock
        self.timeout_s = timeout_s
        store.register_script("concat_take", lua("reassembly_take.lua"))
        self.completed = 0
        self.expired = 0
        self.refused_full = 0       # parts refused: the store was full
        self.refused_caps = 0       # parts refused: over the account's pending caps
        self._quiet_caps = Quiet(clock)
        self._quiet_full = Quiet(clock)
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
        to = pdu.destination_addr.decode("latin-1")
        if len(to) != 11 or not to.isdigit():   # (as the gate checks it)
            to = normalise_number(to)
        ids = ",".join([self.gate.ids.next().decode() for _ in range(ident.total)])
        self._hold(account, pdu, ident, message_key(acct, pdu, ident), slim_value(pdu), to,
                   ids, reply, 1)

    def _hold(self, account: Any, pdu: Any, ident: Ident, hkey: str, value: str, to: str,
              ids: str, reply: Reply, tries: int) -> None:
        acct = account.system_id
        policy = self.gate.config.policy
        now = self.clock.seconds()
        ttl = int(self.timeout_s * 4) + 60
        # the reservations are timed when the message is due: the ledger's sweeper does not
        # take them for "outcome unknown" while it may still complete and be relayed
        due_ms = int((now + self.timeout_s + self.gate.config.relay.deadline_s) * 1000)
        d = self.gate.ledger.hold_part(
            acct, [hkey, INDEX, pending_key(acct)], ident.seq, value, ident.total, ttl,
            pdu.data_coding, account.price, to, to,
            account.max_pending_parts or policy.max_pending_parts,
            account.max_pending_bytes or policy.max_pending_bytes, due_ms,
            1 if tries >= HOLD_TRIES else 0, ids)

        def stored(r: list) -> None:
            code = int(r[0])
            if code == 0:
                reply(0, _text(r[1]).split(",")[ident.seq - 1].encode())
            elif code == 1:
                fields = _pairs(r[1])
                reply(0, fields["i"].split(",")[ident.seq - 1].encode())
                self.completed += 1
                self._complete(account, fields)
            elif code == 5:
                self.refused_caps += 1
                skipped = self._quiet_caps(acct)
                if skipped is not None:
                    log.info("refused {acct}: a part of a long message over the pending "
                             "caps ({kept} parts:octets kept; {n} more refused, not logged)",
                             acct=acct, kept=_text(r[1]), n=skipped)
                reply(_S["ESME_RMSGQFUL"], b"")
            elif code == 7:
                # the free balance is short while leases hold the rest: ours goes back now,
                # the other nodes' when idle; asked again meanwhile
                self.gate.ledger.give_back_lease(acct)
                self.clock.callLater(HOLD_RETRY_S, self._hold, account, pdu, ident, hkey,
                                     value, to, ids, reply, tries + 1)
            else:
                status, why = {
                    2: (_S["PROXYD_RDUPPART"], "duplicate part %d" % ident.seq),
                    3: (_S["PROXYD_RDUPPART"], "total %d, earlier parts said %s"
                        % (ident.total, _text(r[1]))),
                    4: (_S["PROXYD_RMIXEDDCS"], "data_coding %d, earlier parts %s"
                        % (pdu.data_coding, _text(r[1]))),
                    6: (_S["ESME_RINVDSTADR"], "recipient has opted out"),
                    8: (_S["PROXYD_RNOBALANCE"], "balance %s does not cover %d parts"
                        % (_text(r[1]), ident.total))}[code]
                log.info("refused {acct} -> {dest}: long message part: {why}", acct=acct,
                         dest=mask(to), why=why)
                reply(status, b"")

        def failed(f: Any) -> None:
            err = f.getErrorMessage()
            if "OOM" in err:
                self.refused_full += 1
                skipped = self._quiet_full(acct)
                if skipped is not None:
                    log.error("store full (maxmemory reached, nothing is evicted): a part of "
                              "{acct} refused ESME_RSYSERR ({n} more refused, not logged); "
                              "what was kept before is intact", acct=acct, n=skipped)
            else:
                log.warn("store error while keeping a part of {acct}: {err}", acct=acct,
                         err=err)
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

        self.gate.send_held(account, msg, done, [k.mid for k in parts])

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
                acct = k[4:k.index("}")] if k.startswith("cc:{") and "}" in k else ""
                takes.append(self.store.evalsha(
                    "concat_take", [k, INDEX, pending_key(acct)], []).addCallbacks(
                    self._expired, lambda f: None, callbackArgs=(k,)))
            if len(keys or ()) >= self.SWEEP_BATCH:
                # the next batch once this one is taken (taken keys leave the index)
                return defer.gatherResults(takes).addCallback(lambda _: self.sweep())
            return None

        return d.addCallbacks(got, lambda f: log.warn("reassembly sweep failed: {e}",
                                                      e=f.getErrorMessage()))

    def _expired(self, flat: list, key: str) -> None:
        fields = _pairs(flat or [])
        if "i" not in fields:
            return
        self.expired += 1
        acct = key[4:key.index("}")]
        # the whole message's reservations go back: the journal's record of it
        ledger = self.gate.ledger
        for mid in fields["i"].split(","):
            ledger.settle(acct, mid, "released incomplete", False)
        account = self.gate.config.account(acct)
        parts = kept_parts(fields)
        if account is None or not parts:
            return
        self._negative(account, parts, "incomplete", _S["ESME_RDELIVERYFAILURE"], [])


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
