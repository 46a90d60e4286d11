"""SMPP requests -> the gate. Every command a bound client may send ends here, in one of:

    submit_sm, data_sm            one Message (or one part of a long one: reassembly)
                                  (a malformed schedule_delivery_time / validity_period:
                                  ESME_RINVSCHED / ESME_RINVEXPIRY at once, nothing charged)
    submit_multi                  one Message per SME destination (each may be a part)
    replace_sm                    its new text judged by the gate as a new message, then
                                  relayed to the link holding the original
    query_sm, cancel_sm           answered from the stored message state / relayed there
    anything else                 ESME_RINVCMDID

Every message-carrying command goes through `Gate.send` (or `Gate.judge` for replace_sm);
there is no other road to an operator link. A session that may not submit (a receiver
bind) is refused ESME_RINVBNDSTS here too, whatever its adapter let through.

Billing: a single PDU is billed as the parts the operator bills for its payload
(`billing.py`): a long message_payload is charged in full and bounded by `max_parts`,
never truncated.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from twisted.logger import Logger

from proxyd.message import Message, Refusal
from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp.times import valid_time
from proxyd.text.codec import decode_text
from proxyd.text.reassembly import concat_ident, message_text

from .billing import billable_parts
from .parts import build_message
from .reassembly import Ident

log = Logger(namespace="proxyd.gate")
_S = C.STATUS
_OK = 0
Reply = Callable[[int, bytes], None]

_STATE_FAIL = {C.QUERY_SM: _S["ESME_RQUERYFAIL"], C.CANCEL_SM: _S["ESME_RCANCELFAIL"],
               C.REPLACE_SM: _S["ESME_RREPLACEFAIL"]}
_FINAL_STATES = frozenset((2, 3, 4, 5, 8))
# replace_sm carries no data_coding (the original's applies, which proxyd does not keep):
# its text is judged in each of these, and it must fit one part in the narrowest (8-bit)
_REPLACE_CODINGS = (0x00, 0x03, 0x08, 0x0F)


class SmppIntake:
    """What the SMPP client sessions call: `submit` (submit_sm) and `other_request`."""

    def __init__(self, gate: Any, reassembly: Any, messages: Any, router: Any,
                 clock: Any) -> None:
        self.gate = gate
        self.reassembly = reassembly
        self.messages = messages        # stored message state (query/cancel/replace)
        self.router = router
        self.clock = clock

    # --- submit_sm and data_sm ------------------------------------------------------------
    def submit(self, session: Any, pdu: Any, body: bytes, reply: Reply) -> None:
        """A client's submit_sm: cut-through, or into reassembly when it is one part of a
        long message. reply(status, message_id)."""
        if not session.can_submit:
            reply(_S["ESME_RINVBNDSTS"], b"")
            return
        if pdu.schedule_delivery_time or pdu.validity_period:
            bad = _bad_times(session.account, pdu)
            if bad:
                reply(bad, b"")
                return
        self.message(session.account, pdu, body, reply)

    def message(self, account: Any, pdu: Any, body: bytes, reply: Reply) -> None:
        """One message-carrying PDU (submit_sm or data_sm) of `account` to the gate."""
        esm = pdu.esm_class
        if esm & C.ESM_UDHI or (pdu.tlvs and pdu.tlv(C.TAG_SAR_MSG_REF_NUM) is not None):
            try:
                key = concat_ident(esm, pdu.payload, dict(pdu.tlvs))
            except ValueError as e:
                log.info("{acct}: malformed concatenation header: {err}",
                         acct=account.system_id, err=str(e))
                reply(_S["ESME_RINVESMCLASS"] if esm & C.ESM_UDHI else
                      _S["ESME_RINVOPTPARAMVAL"], b"")
                return
            if key is not None and key[2] > 1:
                self.reassembly.add_part(account, pdu, body, Ident(*key), reply)
                return
        gate = self.gate
        data = pdu.payload
        udh_len = data[0] + 1 if esm & C.ESM_UDHI and data else 0
        n = 1 if len(data) <= 134 and udh_len == 0 else billable_parts(data, udh_len,
                                                                        pdu.data_coding)
        text = message_text(pdu) if gate.policy.needs_text else None
        msg = build_message(account, pdu, text, ((pdu, body),), n)
        metrics = gate.metrics
        t0 = self.clock.seconds()

        def done(status: int, ids: list, refusal: Refusal | None, ok: int) -> None:
            reply(status, ids[0] if status == _OK else b"")
            metrics.submit_latency(account.system_id, self.clock.seconds() - t0)

        gate.send(account, msg, done)

    # --- the others ------------------------------------------------------------------------
    def other_request(self, session: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        """data_sm, submit_multi, query_sm, cancel_sm, replace_sm; reply(resp_pdu)."""
        cid = pdu.command_id
        resp = P.resp_class(cid)
        if resp is None or cid in (C.DELIVER_SM, C.OUTBIND, C.ALERT_NOTIFICATION) \
                or cid in C.BIND_COMMANDS or cid in (C.UNBIND, C.ENQUIRE_LINK):
            reply((resp or P.GenericNack)(0, _S["ESME_RINVCMDID"]))
            return
        if not session.can_submit:
            reply(resp(0, _S["ESME_RINVBNDSTS"]))
            return
        account = session.account
        if cid == C.DATA_SM:
            self.message(account, pdu, P.encode(pdu)[P.HEADER_LEN:],
                         lambda status, mid: reply(P.DataSmResp(0, status, mid)))
        elif cid == C.SUBMIT_MULTI:
            self._submit_multi(account, pdu, reply)
        elif cid in _STATE_FAIL:
            self._by_stored_state(account, pdu, reply)
        else:
            reply(resp(0, _S["ESME_RINVCMDID"]))

    def _submit_multi(self, account: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        """Each SME destination is its own message (or part of one) through the gate;
        distribution lists are not supported (ESME_RINVDLNAME)."""
        dests = pdu.dest_addresses
        if not dests:
            reply(P.SubmitMultiResp(0, _S["ESME_RINVNUMDESTS"]))
            return
        bad = _bad_times(account, pdu)
        if bad:
            reply(P.SubmitMultiResp(0, bad))
            return
        unsuccess: list = []
        first_id: list = []
        state = [len(dests), False]        # messages without an answer yet, answered

        def finish() -> None:
            if state[1]:
                return
            state[1] = True
            status = _OK if first_id or not unsuccess else unsuccess[0][3]
            reply(P.SubmitMultiResp(0, status, first_id[0] if first_id else b"",
                                    tuple(unsuccess)))

        f = pdu
        for d in dests:
            if d[0] != 1:
                unsuccess.append((0, 0, d[1], _S["ESME_RINVDLNAME"]))
                state[0] -= 1
                continue
            _flag, ton, npi, addr = d
            one = P.SubmitSm(0, 0, f.service_type, f.source_addr_ton, f.source_addr_npi,
                             f.source_addr, ton, npi, addr, f.esm_class, f.protocol_id,
                             f.priority_flag, f.schedule_delivery_time, f.validity_period,
                             f.registered_delivery, f.replace_if_present_flag,
                             f.data_coding, f.sm_default_msg_id, f.short_message, f.tlvs)

            def done(status: int, mid: bytes, ton: int = ton, npi: int = npi,
                     addr: bytes = addr) -> None:
                if status == _OK:
                    if not first_id:
                        first_id.append(mid)
                else:
                    unsuccess.append((ton, npi, addr, status))
                state[0] -= 1
                if state[0] == 0:
                    finish()

            self.message(account, one, P.encode(one)[P.HEADER_LEN:], done)
        if state[0] == 0:
            finish()

    # --- query_sm, cancel_sm, replace_sm ---------------------------------------------------
    def _by_stored_state(self, account: Any, pdu: Any, reply: Callable[[Any], None]) -> None:
        """query_sm: query_sm_resp from the stored state of one of the bound account's own
        messages (kept for parts that asked for a receipt), else ESME_RQUERYFAIL.
        cancel_sm / replace_sm: relayed, with the operator's id, to the link holding the
        message when it is bound; else ESME_RCANCELFAIL / ESME_RREPLACEFAIL (logged).
        replace_sm's new text is judged first (see `_judge_replace`)."""
        cid = pdu.command_id
        fail = _STATE_FAIL[cid]
        resp = P.resp_class(cid)
        messages = self.messages
        mid = pdu.message_id.decode("latin-1")
        acct = account.system_id
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
                if cid == C.REPLACE_SM:
                    refusal = self._judge_replace(account, pdu, rec)
                    if refusal is not None:
                        reply(resp(0, refusal.status))
                        return
                self._relay_to_holder(acct, pdu, rec, reply, resp, fail, what)

        def failed(f: Any) -> None:
            log.warn("{acct}: {what} {mid}: store error {err}", acct=acct, what=what,
                     mid=mid, err=f.getErrorMessage())
            reply(resp(0, fail if cid == C.QUERY_SM else _S["ESME_RSYSERR"]))

        messages.get(acct, mid).addCallbacks(found, failed)

    def _judge_replace(self, account: Any, pdu: Any, rec: Any) -> Refusal | None:
        """replace_sm is judged as a new message by the gate's checks: sender and caller
        (its source_addr), destination (the original's), rate and content. It carries no
        data_coding, so its text is judged under every coding it could be read in, and a
        text longer than one part in the narrowest (140 octets) is refused with
        ESME_RREPLACEFAIL: a replacement is never charged more than the original's one
        part."""
        gate = self.gate
        data = pdu.short_message
        if len(data) > 140:
            log.info("{acct}: replace_sm refused: new text of {n} octets is more than one "
                     "part", acct=account.system_id, n=len(data))
            return Refusal(_S["ESME_RREPLACEFAIL"], "length", "replacement longer than "
                           "one part")
        dest = rec.destination
        if not dest:
            log.info("{acct}: replace_sm refused: the original's destination is not kept",
                     acct=account.system_id)
            return Refusal(_S["ESME_RREPLACEFAIL"], "replace", "original not judgeable")
        judge = gate.judge      # rate and checks; then the checks alone: one token in all
        for dc in _REPLACE_CODINGS if gate.policy.needs_text else (0,):
            text = decode_text(data, dc) if gate.policy.needs_text else None
            msg = Message(account.system_id, pdu.source_addr.decode("latin-1"), dest,
                          pdu.source_addr_ton, pdu.source_addr_npi, 0, 0, 0, dc,
                          pdu.registered_delivery, text, 1, "smpp", ((pdu, b""),))
            refusal = judge(msg, account)
            judge = gate.check
            if refusal is not None:
                gate.refused(account, msg, refusal)
                return refusal
        return None

    def _relay_to_holder(self, acct: str, pdu: Any, rec: Any, reply: Callable[[Any], None],
                         resp: Any, fail: int, what: str) -> None:
        mid = pdu.message_id.decode("latin-1")
        link = next((u for u in self.router.upstreams
                     if u.name == rec.upstream), None)
        if rec.state in _FINAL_STATES or link is None or not link.available \
                or not rec.upstream_id:
            why = ("message already final" if rec.state in _FINAL_STATES else
                   "upstream %s %s" % (rec.upstream or "?", "not bound" if link is not None
                                       else "unknown"))
            log.info("{acct}: {what} {mid} refused: {why}", acct=acct, what=what, mid=mid,
                     why=why)
            reply(resp(0, fail))
            return
        # SMPP 3.4 gives cancel_sm and replace_sm no optional parameters: none is relayed
        # (a message_payload riding on a cancel_sm would reach the operator unjudged)
        body = P.encode(pdu._replace(seq=0, message_id=rec.upstream_id.encode("latin-1"),
                                     tlvs=()))[P.HEADER_LEN:]
        messages = self.messages

        def on_resp(status: int, _id: Any) -> None:
            if status in (_S["ESME_RINVCMDID"], _S["ESME_RSYSERR"], _S["ESME_RMSGQFUL"]):
                log.info("{acct}: {what} {mid} refused: upstream {up} answered {st}",
                         acct=acct, what=what, mid=mid, up=link.name,
                         st=C.status_name(status))
                status = fail
            elif status == _OK and pdu.command_id == C.CANCEL_SM:
                rec.state = 4                   # DELETED
                rec.final_ms = int(self.clock.seconds() * 1000)
                messages.set_state(acct, mid, rec).addErrback(lambda f: None)
            reply(resp(0, status))

        link.submit(pdu.command_id, body, on_resp)


def _bad_times(account: Any, pdu: Any) -> int:
    """ESME_RINVSCHED / ESME_RINVEXPIRY for a malformed schedule_delivery_time /
    validity_period (SMPP 3.4 section 7.1), else 0: refused before anything is charged."""
    if not valid_time(pdu.schedule_delivery_time):      # (no log line: the status says it)
        return _S["ESME_RINVSCHED"]
    if not valid_time(pdu.validity_period):
        return _S["ESME_RINVEXPIRY"]
    return 0


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
