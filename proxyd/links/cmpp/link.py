"""The CMPP 3.0 / 2.0 upstream link: an SP's long connection to China Mobile's ISMG.

`Cmpp3Link` / `Cmpp2Link` are `proxyd.links.link.Link` services (connections, backoff, wait
queue, rate); each connection is a `CmppConnection` over the sans-IO `LinkCore`:

* login: CMPP_CONNECT with Source_Addr = `system_id` (the SP_Id), AuthenticatorSource from
  `password` (the shared secret) and the local time; the answer's Status must be 0 and its
  AuthenticatorISMG must match, else the connection closes (and is retried with backoff);
* keepalive: CMPP_ACTIVE_TEST after `enquire_link_s` idle (C, 180 s by default), sent again
  after `response_timeout_s` (T) unanswered, `keepalive_tries` (N) times, then reconnect;
  the gateway's CMPP_ACTIVE_TEST is answered;
* a judged SMPP part becomes one CMPP_SUBMIT (`submit_from_part`): Src_Id the sender (the
  account's service code or an extension of it), Msg_src / Service_Id / FeeType / FeeCode /
  Fee_UserType from the config, Pk_total / Pk_number and TP_udhi from the part's UDH (or
  its SAR TLVs, turned into a UDH), Msg_Fmt from data_coding (GSM and Latin-1 text as ASCII
  when it is ASCII, else UCS2);
* the CMPP_SUBMIT_RESP's Msg_Id (decimal) is the operator id proxyd keeps in its receipt map;
  its Result is mapped by `status.submit_status`;
* CMPP_DELIVER: a status report becomes a deliver_sm receipt (Appendix B text, TLVs
  receipted_message_id and message_state), an MO a deliver_sm, handed to `on_deliver(link,
  pdu, ack)`; `ack(status)` answers the CMPP_DELIVER_RESP once the delivery side stored it;
  with `window` Delivers unanswered the connection stops reading until answers catch up;
* cancel_sm relayed by the gate becomes CMPP_CANCEL; replace_sm is refused (no such PDU);
* stopping sends CMPP_TERMINATE and closes on its answer (or after `response_timeout_s`).
"""
from __future__ import annotations

import struct
import time
from typing import Any

from twisted.logger import Logger

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.text.codec import decode_text
from proxyd.text.gsm import GSM_BASIC
from proxyd.text.udh import concat_udh, parse_concat, split_udh

from .. import core as K
from ..link import GatewayConnection, Link, OnResp
from . import codec as X
from .status import deliver_result, report_state, result_name, submit_status

log = Logger(namespace="proxyd.upstream")
_S = C.STATUS
_RSYSERR = _S["ESME_RSYSERR"]

_HEADER = X.HEADER.unpack_from

CONNECT_STATUS = {1: "message structure error", 2: "invalid source address (SP_Id)",
                  3: "authentication failed", 4: "version too high"}

# data_coding -> Msg_Fmt when the bytes go as they are
_FMT_SAME = {8: 8, 15: 15, 2: 4, 4: 4, 1: 0}
# Msg_Fmt -> data_coding of the deliver_sm handed to clients
FMT_DC = {0: 1, 3: 4, 4: 4, 8: 8, 15: 15}


# octets that are the same character in GSM 03.38 (unpacked) and in ASCII: text made of
# these alone goes as Msg_Fmt 0 without decoding (the common case, checked at C speed)
_GSM_IS_ASCII = bytes(b for b in range(0x80) if GSM_BASIC[b] == chr(b))
_ASCII = bytes(range(0x80))


class PartRefused(ValueError):
    """The part cannot be carried by CMPP; `status` is the SMPP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _content(pdu: Any) -> tuple[int, int, int, int, bytes]:
    """(msg_fmt, tp_udhi, pk_total, pk_number, msg_content) of a judged SMPP part."""
    payload = pdu.payload
    dc = pdu.data_coding
    udh = b""
    total = number = 1
    if pdu.esm_class & C.ESM_UDHI:
        try:
            udh, payload = split_udh(payload)
            concat = parse_concat(udh)
        except ValueError as e:
            raise PartRefused(_S["ESME_RINVESMCLASS"], "UDH: %s" % e) from None
        if concat is not None:
            total, number = concat[1], concat[2]
    elif pdu.tlvs:
        ref = pdu.tlv(C.TAG_SAR_MSG_REF_NUM)
        tot = pdu.tlv(C.TAG_SAR_TOTAL_SEGMENTS)
        seq = pdu.tlv(C.TAG_SAR_SEGMENT_SEQNUM)
        if ref and tot and seq:
            r, total, number = int.from_bytes(ref, "big"), tot[0], seq[0]
            try:
                udh = concat_udh(r, total, number, ref16=r > 0xFF)
            except ValueError as e:
                raise PartRefused(_S["ESME_RINVOPTPARAMVAL"], "SAR: %s" % e) from None
    fmt = _FMT_SAME.get(dc)
    if fmt is not None:
        text = payload
    elif (dc == 0 and not payload.translate(None, _GSM_IS_ASCII)) or \
            (dc == 3 and not payload.translate(None, _ASCII)):
        fmt, text = 0, payload
    else:
        s = decode_text(payload, dc)
        if s is None:
            fmt, text = 4, payload
        elif s.isascii():
            fmt, text = 0, s.encode("ascii")
        else:
            fmt, text = 8, s.encode("utf-16-be")
    content = udh + text
    limit = 159 if fmt == 0 else 140          # the spec: ASCII < 160 octets, else <= 140
    if len(content) > limit:
        raise PartRefused(_S["ESME_RINVMSGLEN"], "Msg_Content of %d octets over CMPP's %d"
                          % (len(content), limit))
    return fmt, 1 if udh else 0, total, number, content


def submit_from_part(cfg: Any, pdu: Any, source: bytes | None) -> Any:
    """The CMPP_SUBMIT of one judged SMPP part (raises PartRefused)."""
    fmt, udhi, total, number, content = _content(pdu)
    src = source if source is not None else pdu.source_addr
    dest = pdu.destination_addr
    if len(src) > 21:
        raise PartRefused(_S["ESME_RINVSRCADR"], "Src_Id over 21 octets")
    if not dest or len(dest) > 21:
        raise PartRefused(_S["ESME_RINVDSTADR"], "Dest_terminal_Id empty or over 21 octets")
    sp = (cfg.msg_src or cfg.sp_id or cfg.system_id).encode()
    validity = getattr(pdu, "validity_period", b"")
    at = getattr(pdu, "schedule_delivery_time", b"")
    return X.Submit(
        msg_id=0, pk_total=total, pk_number=number,
        registered_delivery=1 if pdu.registered_delivery & 3 else 0,
        msg_level=getattr(pdu, "priority_flag", 0) & 0xFF,
        service_id=cfg.service_id.encode(), fee_user_type=cfg.fee_user_type,
        fee_terminal_id=b"", fee_terminal_type=0, tp_pid=getattr(pdu, "protocol_id", 0),
        tp_udhi=udhi, msg_fmt=fmt, msg_src=sp,
        fee_type=(cfg.fee_type or "01").encode(), fee_code=(cfg.fee_code or "0").encode(),
        valid_time=validity[:17], at_time=at[:17], src_id=src,
        dest_terminal_ids=(dest,), dest_terminal_type=0, msg_content=content, link_id=b"")


def _pad(v: bytes, n: int) -> bytes:
    return v.ljust(n, b"\0")


_NO_TIMES = b"\0" * 34              # ValId_Time and At_Time both empty


class SubmitEncoder:
    """`submit_from_part` + `codec.encode_body` for the hot path: the same octets, with the
    fields fixed by the config encoded once (tests hold the two equal)."""

    __slots__ = ("term", "static1", "static2", "dest_type", "tail")

    def __init__(self, cfg: Any, version: int) -> None:
        v3 = version == X.V3
        self.term = 32 if v3 else 21
        sp = (cfg.msg_src or cfg.sp_id or cfg.system_id).encode()
        self.static1 = (_pad(cfg.service_id.encode(), 10) + bytes((cfg.fee_user_type,))
                        + b"\0" * self.term + (b"\0" if v3 else b""))
        self.static2 = (_pad(sp, 6) + _pad((cfg.fee_type or "01").encode(), 2)
                        + _pad((cfg.fee_code or "0").encode(), 6))
        self.dest_type = b"\0" if v3 else b""
        self.tail = b"\0" * (20 if v3 else 8)

    def encode(self, pdu: Any, source: bytes | None) -> bytes:
        """The CMPP_SUBMIT body of one judged SMPP part (raises PartRefused)."""
        fmt, udhi, total, number, content = _content(pdu)
        src = source if source is not None else pdu.source_addr
        dest = pdu.destination_addr
        if len(src) > 21:
            raise PartRefused(_S["ESME_RINVSRCADR"], "Src_Id over 21 octets")
        if not dest or len(dest) > 21:
            raise PartRefused(_S["ESME_RINVDSTADR"], "Dest_terminal_Id empty or over 21 octets")
        validity = getattr(pdu, "validity_period", b"")
        at = getattr(pdu, "schedule_delivery_time", b"")
        times = (validity[:17].ljust(17, b"\0") + at[:17].ljust(17, b"\0")
                 if validity or at else _NO_TIMES)
        return b"".join((
            b"\0\0\0\0\0\0\0\0",
            bytes((total, number, 1 if pdu.registered_delivery & 3 else 0,
                   getattr(pdu, "priority_flag", 0) & 0xFF)),
            self.static1, bytes((getattr(pdu, "protocol_id", 0), udhi, fmt)), self.static2,
            times, src.ljust(21, b"\0"), b"\x01", dest.ljust(self.term, b"\0"),
            self.dest_type, bytes((len(content),)), content, self.tail))


def _addr(a: bytes) -> bytes:
    """An address as an SMPP deliver_sm carries it (at most 20 octets): a longer one (a
    CMPP 3.0 pseudo-code of up to 32) is left out of a receipt rather than cut."""
    return a if len(a) <= 20 else b""


def receipt_pdu(deliver: Any, report: Any) -> Any:
    """A CMPP status report as the deliver_sm receipt the delivery side takes."""
    state, word, err = report_state(report.stat)
    mid = b"%d" % report.msg_id
    text = b"id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:" % (
        mid, b"001" if state == 2 else b"000", report.submit_time, report.done_time,
        word.encode(), err.encode("latin-1"))
    return P.DeliverSm(
        seq=0, status=0, service_type=b"",
        source_addr_ton=0, source_addr_npi=1, source_addr=_addr(report.dest_terminal_id),
        dest_addr_ton=0, dest_addr_npi=1, destination_addr=_addr(deliver.dest_id),
        esm_class=C.ESM_DELIVERY_RECEIPT, data_coding=0, short_message=text,
        tlvs=((C.TAG_RECEIPTED_MESSAGE_ID, mid + b"\0"),
              (C.TAG_MESSAGE_STATE, bytes((state,)))))


def mo_pdu(deliver: Any) -> Any:
    """A CMPP MO (Deliver without Registered_Delivery) as a deliver_sm; None when an
    address does not fit SMPP's 20 octets (never cut: a cut number would opt out or
    answer someone else)."""
    if len(deliver.src_terminal_id) > 20 or len(deliver.dest_id) > 20:
        return None
    return P.DeliverSm(
        seq=0, status=0, service_type=b"",
        source_addr_ton=0, source_addr_npi=1, source_addr=deliver.src_terminal_id,
        dest_addr_ton=0, dest_addr_npi=1, destination_addr=deliver.dest_id,
        esm_class=C.ESM_UDHI if deliver.tp_udhi else 0, protocol_id=deliver.tp_pid,
        data_coding=FMT_DC.get(deliver.msg_fmt, 4), short_message=deliver.msg_content)


class CmppConnection(GatewayConnection):
    """One CMPP long connection (the SP side)."""

    header_len = X.HEADER_LEN
    max_frame_len = X.MAX_FRAME

    def __init__(self, link: "CmppLink") -> None:
        super().__init__(link)
        self.version = link.version
        v3 = self.version == X.V3
        self._resp = struct.Struct(">QI" if v3 else ">QB").unpack_from
        self._resp_len = X.HEADER_LEN + (12 if v3 else 9)
        self._login_seq = -1
        self._auth = b""
        self._unacked = 0                   # the gateway's Delivers not yet answered
        self._paused = False

    # --- GatewayConnection ----------------------------------------------------------------
    def send_login(self, now: float) -> None:
        cfg = self.link.cfg
        t = time.localtime(now)
        ts = X.timestamp(t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
        sp = cfg.system_id.encode()
        self._auth = X.authenticator_source(sp, cfg.password.encode(), ts)
        seq = self._login_seq = self.core.next_seq()
        self.send(X.encode(X.Connect(source_addr=sp, authenticator=self._auth,
                                     version=self.version, timestamp=ts), seq, self.version))

    def frame(self, command_id: int, seq: Any, body: bytes) -> bytes:
        return X.HEADER.pack(X.HEADER_LEN + len(body), command_id, seq) + body

    def keepalive_frame(self, seq: Any) -> bytes:
        return X.frame(X.ACTIVE_TEST, seq)

    def logout_frame(self, seq: Any) -> bytes:
        return X.frame(X.TERMINATE, seq)

    def handle_frame(self, data: bytes, now: float) -> None:
        _length, cid, seq = _HEADER(data)
        if cid == X.SUBMIT_RESP and len(data) == self._resp_len:     # the hot path
            msg_id, result = self._resp(data, X.HEADER_LEN)
            if result == 0:
                self.answered(seq, 0, b"%d" % msg_id)
            else:
                self._refused(seq, result)
            return
        pdu = X.decode(self.version, cid, seq, data[X.HEADER_LEN:])
        if self.core.state == K.LOGIN and cid != X.CONNECT_RESP:
            # nothing the gateway says counts before it accepted the login
            self.login_refused("%s before the CMPP_CONNECT_RESP"
                               % X.COMMAND_NAMES.get(cid, "0x%08x" % cid))
            return
        if cid == X.SUBMIT_RESP:
            if pdu.__class__ is X.BadPdu:
                log.warn("upstream {name}: bad CMPP_SUBMIT_RESP: {err}", name=self.link.name,
                         err=pdu.message)
                self.answered(seq, _RSYSERR, None)
            elif pdu.result == 0:
                self.answered(seq, 0, b"%d" % pdu.msg_id)
            else:
                self._refused(seq, pdu.result)
        elif cid == X.DELIVER:
            self._deliver(seq, data, pdu)
        elif cid == X.ACTIVE_TEST:
            self.send(X.frame(X.ACTIVE_TEST_RESP, seq, b"\0"))
        elif cid == X.ACTIVE_TEST_RESP:
            pass                                    # core.received() did the work
        elif cid == X.CONNECT_RESP:
            self._connect_resp(seq, pdu, now)
        elif cid == X.TERMINATE:
            self.send(X.frame(X.TERMINATE_RESP, seq))
            log.info("upstream {name}: the gateway terminated the connection",
                     name=self.link.name)
            self.close()
        elif cid == X.TERMINATE_RESP:
            self.close()
        elif cid == X.CANCEL_RESP:
            ok = pdu.__class__ is not X.BadPdu and pdu.success_id == 0
            self.answered(seq, 0 if ok else _S["ESME_RCANCELFAIL"], None)
        elif cid & X.RESP_BIT:
            self.answered(seq, 0 if pdu.__class__ is not X.BadPdu else _RSYSERR, None)
        else:
            log.warn("upstream {name}: unexpected CMPP command 0x{cid:08x} ignored",
                     name=self.link.name, cid=cid)

    # --- frames -----------------------------------------------------------------------------
    def _refused(self, seq: int, result: int) -> None:
        if result != 8:         # flow control comes in bursts: the status says it
            log.info("upstream {name}: CMPP_SUBMIT refused: {r}", name=self.link.name,
                     r=result_name(result))
        self.answered(seq, submit_status(result), None)

    def _connect_resp(self, seq: int, pdu: Any, now: float) -> None:
        if seq != self._login_seq or self.core.state != K.LOGIN:
            return
        if pdu.__class__ is X.BadPdu:
            self.login_refused("bad CMPP_CONNECT_RESP: %s" % pdu.message)
        elif pdu.status != 0:
            self.login_refused("status %d (%s)" % (pdu.status, CONNECT_STATUS.get(
                pdu.status, "other error")))
        elif pdu.authenticator != X.authenticator_ismg(
                0, self._auth, self.link.cfg.password.encode(), self.version):
            self.login_refused("AuthenticatorISMG does not match: not the configured "
                               "gateway, or another shared secret")
        else:
            self.logged_in(now)

    def _deliver(self, seq: int, data: bytes, pdu: Any) -> None:
        version = self.version
        if pdu.__class__ is X.BadPdu:
            body = data[X.HEADER_LEN:]
            mid = int.from_bytes(body[:8], "big") if len(body) >= 8 else 0
            log.warn("upstream {name}: bad CMPP_DELIVER refused: {err}", name=self.link.name,
                     err=pdu.message)
            self.send(X.encode(X.DeliverResp(msg_id=mid, result=pdu.error), seq, version))
            return
        if pdu.registered_delivery:
            report = X.decode_report(version, pdu.msg_content)
            out = receipt_pdu(pdu, report)
        else:
            out = mo_pdu(pdu)
            if out is None:
                log.warn("upstream {name}: CMPP MO refused (Result 1): an address over 20 "
                         "octets", name=self.link.name)
                self.send(X.encode(X.DeliverResp(msg_id=pdu.msg_id, result=X.R_STRUCTURE),
                                   seq, version))
                return
        mid = pdu.msg_id
        self._unacked += 1
        if self._unacked >= self.core.cfg.window and not self._paused and \
                self.transport is not None:
            # the gateway's window is ours too (W): stop reading until answers catch up
            self._paused = True
            self.transport.pauseProducing()
        done = [False]

        def ack(status: int) -> None:
            if done[0]:
                return
            done[0] = True
            self._unacked -= 1
            self.send(X.encode(X.DeliverResp(msg_id=mid, result=deliver_result(status)),
                               seq, version))
            if self._paused and self._unacked < self.core.cfg.window and \
                    self.transport is not None:
                self._paused = False
                self.transport.resumeProducing()

        self.link.on_deliver(self.link, out, ack)


class CmppLink(Link):
    """One CMPP upstream account (see the module docstring)."""

    connection_class = CmppConnection
    version = X.V3
    protocol_name = "cmpp3"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.encoder = SubmitEncoder(self.cfg, self.version)

    def submit_part(self, part: tuple, source: bytes | None, on_outcome: OnResp) -> None:
        pdu, _body = part
        try:
            body = self.encoder.encode(pdu, source)
        except PartRefused as e:
            log.warn("upstream {name}: part refused for CMPP: {why}", name=self.name,
                     why=str(e))
            on_outcome(e.status, None)
            return
        except ValueError as e:
            log.warn("upstream {name}: part refused for CMPP: {why}", name=self.name,
                     why=str(e))
            on_outcome(_S["ESME_RSUBMITFAIL"], None)
            return
        Link.submit(self, X.SUBMIT, body, on_outcome)

    def submit(self, command_id: int, body: bytes, on_resp: OnResp) -> None:
        """The SMPP requests the gate relays to the link holding a message: cancel_sm
        becomes CMPP_CANCEL of the operator's Msg_Id (Success_Id 1: ESME_RCANCELFAIL);
        CMPP has no replace, so replace_sm (and anything else) is ESME_RINVCMDID, which the
        gate answers with ESME_RREPLACEFAIL / ESME_RCANCELFAIL. (A CMPP request of our own
        goes through `Link.submit`.)"""
        if command_id == C.CANCEL_SM:
            pdu = P.decode_body(C.CANCEL_SM, 0, 0, body)
            mid = getattr(pdu, "message_id", b"")
            if mid.isdigit() and int(mid) < 1 << 64:
                Link.submit(self, X.CANCEL, int(mid).to_bytes(8, "big"), on_resp)
                return
        on_resp(_S["ESME_RINVCMDID"], None)


class Cmpp3Link(CmppLink):
    version = X.V3
    protocol_name = "cmpp3"


class Cmpp2Link(CmppLink):
    version = X.V2
    protocol_name = "cmpp2"
