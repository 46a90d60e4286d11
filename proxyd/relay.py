"""The one path every message takes: checks -> charge -> route -> upstream -> outcome.

    SMPP submit_sm ─┐                                  ┌─ commit (OK) / refund (error)
    HTTP sendsms  ──┼─ policy ─ opt-out + reserve ─ route ─ upstream(s) ─┤
    concat parts ───┘   (pure)   (store, pipelined)   (failover)   └─ reply to the client

Cut-through: a single-part submit_sm is forwarded as the client's own body under a new
header (re-encoded only when a field is rewritten: prefix-mode sender, upstream TON/NPI),
and the client's submit_sm_resp waits for the operator's. The id the client gets is proxyd's
own (`MessageIds`); the receipt map ties it to (upstream, upstream id).

Failover: a part that no upstream took (not bound, window full, ESME_RTHROTTLED or
ESME_RMSGQFUL from the operator) is tried on the next eligible upstream until
`[relay] deadline_s`. A part whose fate is unknown (timeout, connection lost after it was
written) is never retried elsewhere: that could send it twice. It is refunded and answered
ESME_RSYSERR, so the account is never charged for what the operator may not have taken.

Plain callbacks, not a Deferred chain per message: `send(...)` ends in exactly one `done(...)`.
"""
from __future__ import annotations

import os
import re
import socket
import time
import zlib
from collections import deque
from typing import Any, Callable

from twisted.logger import Logger

from .message import Message, Refusal
from .policy.optout import normalise_number
from .smpp import constants as C
from .smpp import pdu as P
from .text.codec import decode_text
from .text.reassembly import concat_key

log = Logger(namespace="proxyd.relay")
_S = C.STATUS
_OK = 0
_RETRYABLE = frozenset((_S["ESME_RTHROTTLED"], _S["ESME_RMSGQFUL"]))
Reply = Callable[..., None]
# done(status, ids, refusal, ok_parts): ids are proxyd ids of the parts the operator took
Done = Callable[[int, list, "Refusal | None", int], None]

NO_BALANCE = Refusal(_S["PROXYD_RNOBALANCE"], "balance", "insufficient prepaid balance")
STORE_DOWN = Refusal(_S["ESME_RSYSERR"], "store", "store unavailable, try again later")
NO_ROUTE = Refusal(_S["ESME_RINVDSTADR"], "route", "no route for this destination")
NO_CAPACITY = Refusal(_S["ESME_RMSGQFUL"], "capacity", "no upstream capacity now")
OPTED_OUT = Refusal(_S["ESME_RINVDSTADR"], "optout", "recipient has opted out")


_PRIVACY = {"mask": True}     # [log] mask_numbers, set by configure_logging at (re)load


def configure_logging(log_cfg: Any) -> None:
    """Apply `[log] mask_numbers` to every log line that shows a number."""
    _PRIVACY["mask"] = bool(log_cfg.mask_numbers)


def mask(number: str) -> str:
    """138****5678: numbers in logs keep their first 3 and last 4 digits (unless
    `[log] mask_numbers = false`)."""
    if not _PRIVACY["mask"]:
        return number
    if len(number) <= 7:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


class MessageIds:
    """proxyd message ids: node tag + start time + counter, hex; unique across restarts
    (the start time moves on) and nodes (the node tag), 25 characters."""

    def __init__(self, node_id: str = "") -> None:
        node = node_id or "%s-%d" % (socket.gethostname(), os.getpid())
        tag = zlib.crc32(node.encode()) & 0xFFFFFF
        start = int(time.time() * 1000) & 0xFFFFFFFFFFF
        self._prefix = "%06x%011x" % (tag, start)
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        return ("%s%08x" % (self._prefix, self._n)).encode()


_ID_RE = re.compile(rb"id:(\S+)")


def normalise_upstream_id(mid: bytes | str) -> list[str]:
    """The keys under which an operator id may be looked up: as given (lower case, no
    leading zeros), and its decimal<->hex twin, so receipts match whatever form they use."""
    s = mid.decode("latin-1") if isinstance(mid, bytes) else mid
    s = s.strip().lower()
    keys = [s.lstrip("0") or "0"]
    if s.isdigit():
        keys.append(format(int(s), "x"))
    else:
        try:
            keys.append(str(int(s, 16)).lstrip("0") or "0")
        except ValueError:
            pass
    return keys


def message_text(pdu: Any) -> str | None:
    """The decoded text of a submit_sm/deliver_sm/data_sm (UDH stripped, message_payload
    used when short_message is empty); None for binary data codings."""
    data = getattr(pdu, "short_message", b"")
    if not data:
        data = pdu.tlv(C.TAG_MESSAGE_PAYLOAD, b"")
    if pdu.esm_class & C.ESM_UDHI and data:
        n = data[0] + 1
        data = data[n:]
    return decode_text(data, pdu.data_coding)


def build_message(account: Any, pdu: Any, text: str | None, parts: int = 1,
                  channel: str = "smpp") -> Message:
    return Message(account.system_id, pdu.source_addr.decode("latin-1"),
                   pdu.destination_addr.decode("latin-1"), pdu.source_addr_ton,
                   pdu.source_addr_npi, pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.esm_class,
                   pdu.data_coding, pdu.registered_delivery, text, parts, channel)


class _Job:
    """One message in flight: its parts, their ids, and what came back."""

    __slots__ = ("account", "msg", "parts", "ids", "done", "results", "left", "deadline",
                 "source", "sids", "rec")

    def __init__(self, account: Any, msg: Message, parts: list, ids: list, done: Done,
                 deadline: float, source: bytes | None) -> None:
        self.account = account
        self.msg = msg
        self.parts = parts          # [(pdu, body)]
        self.ids = ids
        self.done = done
        self.results: list = [None] * len(parts)
        self.left = len(parts)
        self.deadline = deadline
        self.source = source        # rewritten source_addr (prefix mode) or None
        self.sids: list | None = None  # the ids as text (the ledger's), once charged
        self.rec: list | None = None   # the ledger's record, if admitted on its lease


class Relay:
    """Submit path and delivery path (receipts, MO) of one proxyd node."""

    def __init__(self, config: Any, router: Any, registry: Any, clock: Any,
                 ids: MessageIds | None = None, policy: Any = None, ledger: Any = None,
                 optout: Any = None, concat: Any = None, receipts: Any = None,
                 metrics: Any = None) -> None:
        self.config = config
        self.router = router
        self.registry = registry
        self.clock = clock
        self.ids = ids or MessageIds(config.relay.node_id)
        self.policy = policy
        self.ledger = ledger
        self.optout = optout
        self.concat = concat
        self.receipts = receipts
        self.metrics = metrics
        # in-memory receipt map and delivery queues, used when no store is configured
        self.receipt_map: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.pending: dict[str, deque] = {}
        registry.on_ready.append(self._flush_pending)
        self.counters: dict[str, int] = {"submitted": 0, "ok": 0, "refused": 0,
                                         "upstream_error": 0}

    def set_config(self, config: Any, policy: Any = None) -> None:
        self.config = config
        if policy is not None:
            self.policy = policy

    # --- SMPP entry ------------------------------------------------------------------------
    def submit(self, session: Any, pdu: Any, body: bytes, reply: Reply) -> None:
        """A client's submit_sm: cut-through, or into reassembly when it is one part of a
        concatenated message."""
        account = session.account
        esm = pdu.esm_class
        if esm & C.ESM_UDHI or (pdu.tlvs and pdu.tlv(C.TAG_SAR_MSG_REF_NUM) is not None):
            try:
                key = concat_key(esm, pdu.short_message, dict(pdu.tlvs))
            except ValueError as e:
                log.info("{acct}: malformed concatenation header: {err}",
                         acct=account.system_id, err=str(e))
                reply(_S["ESME_RINVESMCLASS"] if esm & C.ESM_UDHI else
                      _S["ESME_RINVOPTPARAMVAL"], b"")
                return
            if key is not None and key[1] > 1:
                if self.concat is None:
                    log.info("{acct}: concatenated part refused: no store for reassembly",
                             acct=account.system_id)
                    reply(_S["ESME_RSYSERR"], b"")
                    return
                self.concat.add_part(self, account, pdu, body, key, reply)
                return
        text = message_text(pdu) if self.policy is not None else None
        msg = build_message(account, pdu, text)
        metrics = self.metrics
        t0 = self.clock.seconds() if metrics is not None else 0.0

        def done(status: int, ids: list, refusal: Refusal | None, ok: int) -> None:
            reply(status, ids[0] if status == _OK else b"")
            if metrics is not None:
                metrics.submit_latency(account.system_id, self.clock.seconds() - t0)

        self.send(account, msg, [(pdu, body)], done)

    # --- the core --------------------------------------------------------------------------
    def send(self, account: Any, msg: Message, parts: list, done: Done,
             ids: list | None = None) -> None:
        """Check, charge and relay one message of len(parts) parts: [(pdu, body)]."""
        self.counters["submitted"] += 1
        source = None
        if self.policy is not None:
            refusal = self.policy.check(msg, account)
            if refusal is not None:
                self._refuse(account, msg, refusal, done, ids=ids)
                return
            if account.sender_mode == "prefix":
                source = self.policy.rewrite_source(msg, account).encode()
        if not self.router.routable(msg.destination_addr, account):
            self._refuse(account, msg, NO_ROUTE, done, ids=ids)
            return
        if ids is None:
            ids = [self.ids.next() for _ in parts]
        job = _Job(account, msg, parts, ids, done,
                   self.clock.seconds() + self.config.relay.deadline_s, source)
        if self.ledger is None:
            if self.optout is not None:
                self.optout.check(account.system_id, msg.destination_addr).addCallbacks(
                    lambda out: self._refuse(account, msg, OPTED_OUT, done) if out
                    else self._forward(job),
                    lambda f: self._refuse(account, msg, STORE_DOWN, done))
            else:
                self._forward(job)
            return
        self._reserve(job)

    def _reserve(self, job: _Job) -> None:
        """Opt-out check and one reservation per part, in one atomic store step that is
        batched with the other messages of this reactor turn."""
        account = job.account
        to = job.msg.destination_addr
        if len(to) != 11 or not to.isdigit():   # (a national mobile number is as it is)
            to = normalise_number(to)
        number = to if self.optout is not None else ""
        ids = job.ids
        sids = job.sids = [ids[0].decode()] if len(ids) == 1 else [m.decode() for m in ids]
        rec = self.ledger.admit_leased(account.system_id, sids, account.price, number, to)
        if rec is not None:
            job.rec = rec
            self._forward(job)      # admitted on this node's lease, now
            return

        def admitted(code: int, balance: int) -> None:
            if code == 0:
                self._forward(job)
            elif code == -1:
                self._refuse(account, job.msg, NO_BALANCE, job.done, counted=True)
            elif code == -3:
                self._refuse(account, job.msg, OPTED_OUT, job.done, counted=True)
            else:
                self._refuse(account, job.msg, STORE_DOWN, job.done, counted=True)

        self.ledger.admit(account.system_id, sids, account.price, number, admitted, to=to)

    def _refuse(self, account: Any, msg: Message, refusal: Refusal, done: Done,
                counted: bool = False, ids: list | None = None) -> None:
        self.counters["refused"] += 1
        if self.ledger is not None and not counted and refusal is not STORE_DOWN:
            reason = refusal.category or refusal.reason
            if ids:     # parts that already have ids (a long message): a record each
                for mid in ids:
                    self.ledger.count_rejected(account.system_id, reason, mid.decode(),
                                               parts=1).addErrback(lambda f: None)
            else:
                self.ledger.count_rejected(account.system_id, reason, "",
                                           parts=max(1, msg.parts)).addErrback(lambda f: None)
        if self.metrics is not None:
            self.metrics.refused(account.system_id, refusal.reason)
        if self.config.log.log_content and msg.text is not None:
            log.info("refused {acct} -> {dest}: {reason}: {text}; content: {content!r}",
                     acct=account.system_id, dest=mask(msg.destination_addr),
                     reason=refusal.reason, text=refusal.text, content=msg.text)
        else:
            log.info("refused {acct} -> {dest}: {reason}: {text}", acct=account.system_id,
                     dest=mask(msg.destination_addr), reason=refusal.reason, text=refusal.text)
        done(refusal.status, [], refusal, 0)

    def _body_for(self, up: Any, job: _Job, pdu: Any, body: bytes) -> bytes:
        cfg = up.cfg
        changes: dict[str, Any] = {}
        if job.source is not None and job.source != pdu.source_addr:
            changes["source_addr"] = job.source
        if cfg.source_addr_ton >= 0 and cfg.source_addr_ton != pdu.source_addr_ton:
            changes["source_addr_ton"] = cfg.source_addr_ton
        if cfg.source_addr_npi >= 0 and cfg.source_addr_npi != pdu.source_addr_npi:
            changes["source_addr_npi"] = cfg.source_addr_npi
        if not changes:
            return body
        return P.encode(pdu._replace(**changes))[P.HEADER_LEN:]

    def _forward(self, job: _Job) -> None:
        for i in range(len(job.parts)):
            self._send_part(job, i, ())

    def _send_part(self, job: _Job, i: int, tried: tuple, up: Any = None) -> None:
        pdu, body = job.parts[i]
        if up is None:
            up = self.router.pick(job.msg.destination_addr, job.account, tried)
        if up is None:
            self._part_done(job, i, None, _S["ESME_RMSGQFUL"], None)
            return
        sent_at = self.clock.seconds()

        def on_resp(status: int, upstream_id: bytes | None) -> None:
            if status in _RETRYABLE and self.clock.seconds() < job.deadline:
                nxt = self.router.pick(job.msg.destination_addr, job.account, tried + (up,))
                if nxt is not None:
                    self._send_part(job, i, tried + (up,), nxt)
                    return
            if self.metrics is not None:
                self.metrics.upstream_rtt(up.name, self.clock.seconds() - sent_at, status)
            self._part_done(job, i, up, status, upstream_id)

        up.submit(pdu.command_id, self._body_for(up, job, pdu, body), on_resp)

    def _part_done(self, job: _Job, i: int, up: Any, status: int,
                   upstream_id: bytes | None) -> None:
        job.results[i] = status
        mid = job.ids[i]
        acct = job.account.system_id
        if status == _OK:
            if self.ledger is not None:
                # no answer wanted: a failure is logged by the ledger and the record is
                # sent again while the store is away
                note = "up=%s id=%s" % (up.name, (upstream_id or b"").decode("latin-1"))
                if job.rec is not None:
                    self.ledger.settle_leased(job.rec, i, note, True)
                else:
                    self.ledger.settle(acct, job.sids[i] if job.sids else mid.decode(), note,
                                       True)
            if upstream_id and job.msg.registered_delivery & 0x03:
                pdu = job.parts[i][0]
                self.remember(up.name, upstream_id, acct, mid, job.source or pdu.source_addr,
                              pdu.destination_addr)
        elif self.ledger is not None:
            note = "up=%s status=%s" % (up.name if up is not None else "-",
                                        C.status_name(status))
            if job.rec is not None:
                self.ledger.settle_leased(job.rec, i, note, False)
            else:
                self.ledger.settle(acct, job.sids[i] if job.sids else mid.decode(), note,
                                   False)
        job.left -= 1
        if job.left:
            return
        ok_ids = [m for m, s in zip(job.ids, job.results) if s == _OK]
        first_err = next((s for s in job.results if s != _OK), _OK)
        if first_err == _OK:
            self.counters["ok"] += 1
        else:
            self.counters["upstream_error"] += 1
        if self.metrics is not None:
            self.metrics.outcome(acct, up.name if up is not None else "", first_err)
        job.done(first_err, ok_ids if first_err == _OK else job.ids, None, len(ok_ids))

    def other_request(self, session: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        """data_sm (relayed like a submit), submit_multi (one message per destination);
        query_sm, cancel_sm, replace_sm: answered from the stored message state (see
        `_by_stored_state`)."""
        cid = pdu.command_id
        if cid == C.DATA_SM:
            self._data_sm(session, pdu, reply)
            return
        if cid == C.SUBMIT_MULTI:
            self._submit_multi(session, pdu, reply)
            return
        if cid in _STATE_FAIL:      # query_sm, cancel_sm, replace_sm: from stored state
            self._by_stored_state(session, pdu, reply)
            return
        reply(P.resp_class(cid)(0, _S["ESME_RINVCMDID"]))

    def _data_sm(self, session: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        account = session.account
        text = message_text(pdu) if self.policy is not None else None
        msg = build_message(account, pdu, text)
        body = P.encode(pdu)[P.HEADER_LEN:]

        def done(status: int, ids: list, refusal: Refusal | None, ok: int) -> None:
            reply(P.DataSmResp(0, status, ids[0] if status == _OK else b""))

        self.send(account, msg, [(pdu, body)], done)

    def _submit_multi(self, session: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        """Each SME destination is its own message through the whole path (checks, charge,
        route); distribution lists are not supported (ESME_RINVDLNAME)."""
        account = session.account
        dests = pdu.dest_addresses
        if not dests:
            reply(P.SubmitMultiResp(0, _S["ESME_RINVNUMDESTS"]))
            return
        unsuccess: list = []
        first_id: list = []
        state = {"left": len(dests), "sent": False}
        fields = dict(zip(P.SubmitMulti._fields, pdu))

        def finish() -> None:
            if state["sent"]:
                return
            state["sent"] = True
            status = _OK if first_id or not unsuccess else unsuccess[0][3]
            reply(P.SubmitMultiResp(0, status, first_id[0] if first_id else b"",
                                    tuple(unsuccess)))

        for d in dests:
            if d[0] != 1:
                unsuccess.append((0, 0, d[1], _S["ESME_RINVDLNAME"]))
                state["left"] -= 1
                continue
            _flag, ton, npi, addr = d
            one = P.SubmitSm(0, 0, fields["service_type"], fields["source_addr_ton"],
                             fields["source_addr_npi"], fields["source_addr"], ton, npi, addr,
                             fields["esm_class"], fields["protocol_id"],
                             fields["priority_flag"], fields["schedule_delivery_time"],
                             fields["validity_period"], fields["registered_delivery"],
                             fields["replace_if_present_flag"], fields["data_coding"],
                             fields["sm_default_msg_id"], fields["short_message"],
                             fields["tlvs"])
            text = message_text(one) if self.policy is not None else None

            def done(status: int, ids: list, refusal: Any, ok: int, ton: int = ton,
                     npi: int = npi, addr: bytes = addr) -> None:
                if status == _OK:
                    if not first_id:
                        first_id.append(ids[0])
                else:
                    unsuccess.append((ton, npi, addr, status))
                state["left"] -= 1
                if state["left"] == 0:
                    finish()

            self.send(account, build_message(account, one, text),
                      [(one, P.encode(one)[P.HEADER_LEN:])], done)
        if state["left"] == 0:
            finish()

    # --- receipts and MO -------------------------------------------------------------------
    def remember(self, upstream: str, upstream_id: bytes, account: str, mid: bytes,
                 source: bytes = b"", destination: bytes = b"") -> None:
        if self.receipts is not None:
            self.receipts.remember(upstream, normalise_upstream_id(upstream_id)[0], account,
                                   mid, source, destination)
        else:
            self.receipt_map[(upstream, normalise_upstream_id(upstream_id)[0])] = (account,
                                                                                   mid)

    def _lookup(self, upstream: str, upstream_id: bytes) -> tuple[str, bytes] | None:
        for k in normalise_upstream_id(upstream_id):
            hit = self.receipt_map.get((upstream, k))
            if hit is not None:
                return hit
        return None

    def on_deliver(self, upstream: Any, pdu: Any, ack: Callable[[int], None]) -> None:
        """A deliver_sm/data_sm from an operator: a receipt or an MO."""
        if self.receipts is not None:
            self.receipts.on_deliver(upstream, pdu, ack)
            return
        if pdu.esm_class & C.ESM_RECEIPT_MASK:
            rid = pdu.tlv(C.TAG_RECEIPTED_MESSAGE_ID)
            if rid is not None:
                rid = rid.rstrip(b"\0")
            elif pdu.command_id == C.DELIVER_SM:
                m = _ID_RE.search(pdu.short_message)
                rid = m.group(1) if m else None
            hit = self._lookup(upstream.name, rid) if rid else None
            if hit is None:
                log.info("receipt from {up} for unknown id {rid}", up=upstream.name,
                         rid=rid)
                ack(_OK)   # nobody to give it to; acknowledged so the operator stops resending
                return
            account, mid = hit
            out = rewrite_receipt(pdu, mid)
        else:
            account = self._mo_account(pdu.destination_addr.decode("latin-1"))
            if account is None:
                log.info("MO from {up} to an unknown service code", up=upstream.name)
                ack(_OK)
                return
            out = pdu
        body = P.encode(out)[P.HEADER_LEN:]
        self.pending.setdefault(account, deque()).append((out.command_id, body))
        ack(_OK)
        self._flush(account)

    def _mo_account(self, dest: str) -> str | None:
        best, best_len = None, 0
        for a in self.config.accounts:
            for code in a.service_codes:
                if dest.startswith(code) and len(code) > best_len:
                    best, best_len = a.system_id, len(code)
        return best

    def _flush_pending(self, session: Any) -> None:
        if session.can_receive and self.receipts is None:
            self._flush(session.account.system_id)

    def _flush(self, account: str) -> None:
        q = self.pending.get(account)
        if not q:
            return
        receivers = self.registry.receivers(account)
        if not receivers:
            return
        i = 0
        while q:
            cid, body = q.popleft()
            session = receivers[i % len(receivers)]
            i += 1

            def on_resp(status: int, cid: int = cid, body: bytes = body) -> None:
                if status != _OK:
                    log.info("client refused a delivery ({status}); kept for retry",
                             status=C.status_name(status))
                    self.pending.setdefault(account, deque()).append((cid, body))
                    self.clock.callLater(5.0, self._flush, account)

            session.deliver(cid, body, on_resp)


    # --- query_sm, cancel_sm, replace_sm (issue 6) ------------------------------------------
    def _by_stored_state(self, session: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        """query_sm: query_sm_resp from the stored state of one of the bound account's own
        messages (proxyd.store.messages; kept for parts that asked for a receipt), else
        ESME_RQUERYFAIL. cancel_sm / replace_sm: relayed, with the operator's id, to the
        upstream holding the message when it is bound; else ESME_RCANCELFAIL /
        ESME_RREPLACEFAIL (logged)."""
        cid = pdu.command_id
        fail = _STATE_FAIL[cid]
        resp = P.resp_class(cid)
        messages = getattr(self.receipts, "messages", None)
        mid = pdu.message_id.decode("latin-1")
        acct = session.account.system_id
        what = C.COMMAND_NAMES.get(cid, "request")
        if messages is None or not mid:
            log.info("{acct}: {what} {mid} refused: no stored message state", acct=acct,
                     what=what, mid=mid)
            reply(resp(0, fail))
            return

        def found(rec: Any) -> None:
            if rec is None:
                log.info("{acct}: {what} for unknown message {mid}", acct=acct, what=what,
                         mid=mid)
                reply(resp(0, fail))
            elif cid == C.QUERY_SM:
                reply(P.QuerySmResp(0, _OK, pdu.message_id, _smpp_time(rec.final_ms),
                                    rec.state, _error_code(rec.err)))
            else:
                self._relay_to_holder(acct, pdu, rec, reply, resp, fail, what, messages)

        def failed(f: Any) -> None:
            log.warn("{acct}: {what} {mid}: store error {err}", acct=acct, what=what,
                     mid=mid, err=f.getErrorMessage())
            reply(resp(0, fail if cid == C.QUERY_SM else _S["ESME_RSYSERR"]))

        messages.get(acct, mid).addCallbacks(found, failed)

    def _relay_to_holder(self, acct: str, pdu: Any, rec: Any, reply: Callable[[Any], None],
                         resp: Any, fail: int, what: str, messages: Any) -> None:
        mid = pdu.message_id.decode("latin-1")
        up = next((u for u in getattr(self.router, "upstreams", ())
                   if u.name == rec.upstream), None)
        if rec.state in _FINAL_STATES or up is None or not up.available \
                or not rec.upstream_id:
            why = ("message already final" if rec.state in _FINAL_STATES else
                   "upstream %s %s" % (rec.upstream or "?", "not bound" if up is not None
                                       else "unknown"))
            log.info("{acct}: {what} {mid} refused: {why}", acct=acct, what=what, mid=mid,
                     why=why)
            reply(resp(0, fail))
            return
        body = P.encode(pdu._replace(seq=0, message_id=rec.upstream_id.encode("latin-1"))
                        )[P.HEADER_LEN:]

        def on_resp(status: int, _id: Any) -> None:
            if status in (_S["ESME_RINVCMDID"], _S["ESME_RSYSERR"], _S["ESME_RMSGQFUL"]):
                log.info("{acct}: {what} {mid} refused: upstream {up} answered {st}",
                         acct=acct, what=what, mid=mid, up=up.name,
                         st=C.status_name(status))
                status = fail
            elif status == _OK and pdu.command_id == C.CANCEL_SM:
                rec.state = 4                   # DELETED
                rec.final_ms = int(self.clock.seconds() * 1000)
                messages.set_state(acct, mid, rec).addErrback(lambda f: None)
            reply(resp(0, status))

        up.submit(pdu.command_id, body, on_resp)


_STATE_FAIL = {C.QUERY_SM: _S["ESME_RQUERYFAIL"], C.CANCEL_SM: _S["ESME_RCANCELFAIL"],
               C.REPLACE_SM: _S["ESME_RREPLACEFAIL"]}
_FINAL_STATES = frozenset((2, 3, 4, 5, 8))


def _smpp_time(ms: int) -> bytes:
    """SMPP absolute time (UTC) of a unix time in ms; b"" for none."""
    if not ms:
        return b""
    return time.strftime("%y%m%d%H%M%S", time.gmtime(ms / 1000.0)).encode() + b"000+"


def _error_code(err: str) -> int:
    """query_sm_resp error_code (one octet) from a receipt's 3-digit err: beyond 255 (e.g.
    proxyd's own 400/401/408) it is 255."""
    try:
        n = int(err or 0)
    except ValueError:
        return 0
    return n if 0 <= n <= 255 else 255


def rewrite_receipt(pdu: Any, mid: bytes) -> Any:
    """The operator's receipt with proxyd's id in the receipted_message_id TLV and the
    Appendix B text; everything else kept."""
    tlvs = tuple((t, mid + b"\0") if t == C.TAG_RECEIPTED_MESSAGE_ID else (t, v)
                 for t, v in pdu.tlvs)
    changes: dict[str, Any] = {"tlvs": tlvs}
    if pdu.command_id == C.DELIVER_SM:
        changes["short_message"] = _ID_RE.sub(b"id:" + mid, pdu.short_message, 1)
    return pdu._replace(**changes)
