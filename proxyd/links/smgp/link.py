"""The SMGP 3.0 upstream link: proxyd as an SP logged in to China Telecom's gateway (SMGW).

One `SmgpLink` is one `[[upstream]] protocol = "smgp"`: `binds` long connections (4.2.1),
each logged in with LoginMode 2 (send and receive), so MT submits and the gateway's Deliver
(status reports and MO) share the connection. The window (W, default 16), the response
timeout, Active_Test when idle (C = `enquire_link_s`, default 180 s; T = `response_timeout_s`;
N = `keepalive_tries`) and reconnecting with backoff are the shared link machinery's
(`proxyd.links.link`); this module is the wire format and the translation:

* a judged part becomes a Submit: MsgType 6 (MT), NeedReport from registered_delivery,
  ServiceID / FeeType / FeeCode from the config, SrcTermID the sender (the account's service
  code, possibly extended), one DestTermID, the content per `gwtext.gateway_content` with
  TP_udhi / PkTotal / PkNumber for a part of a long message, MsgSrc (`sp_id`) and
  ChargeUserType (`fee_user_type`) as TLVs;
* the gateway's Submit_Resp status becomes an SMPP status (`SUBMIT_STATUS`); its MsgID,
  as 20 hex digits, is the operator id the receipt map keeps;
* a Deliver with IsReport = 1 becomes an SMPP receipt for that id, its ``stat`` kept and its
  ``err`` the gateway's code; other Delivers are MO. The Deliver_Resp is sent when the
  delivery side has stored it (status 1, system busy, when it could not: the gateway retries).

Login: AuthenticatorClient = MD5(ClientID + 7 NULs + secret + timestamp); the gateway's
AuthenticatorServer is checked, and a Login_Resp that does not prove the secret is refused.
"""
from __future__ import annotations

import hmac
import struct
from typing import Any

from twisted.logger import Logger

from ...smpp import constants as C
from .. import core as K
from .. import gwtext as T
from ..fixed import BadPdu
from ..inflow import Inflow
from ..link import GatewayConnection, Link
from . import pdu as M

log = Logger(namespace="proxyd.upstream")
_S = C.STATUS
_HDR = struct.Struct(">III")
_I = struct.Struct(">I")

# Submit_Resp Status -> SMPP command_status for the client (and the gate: ESME_RMSGQFUL and
# ESME_RTHROTTLED may be tried on another link)
SUBMIT_STATUS = {
    M.OK: 0,
    M.SYSTEM_BUSY: _S["ESME_RMSGQFUL"],
    M.TOO_MANY_CONNECTIONS: _S["ESME_RMSGQFUL"],
    M.SP_DAILY_LIMIT: _S["ESME_RTHROTTLED"],
    M.BAD_MSG_LENGTH: _S["ESME_RINVMSGLEN"],
    M.BAD_PRIORITY: _S["ESME_RINVPRTFLG"],
    M.BAD_VALID_TIME: _S["ESME_RINVEXPIRY"],
    M.BAD_AT_TIME: _S["ESME_RINVSCHED"],
    M.EXPIRED: _S["ESME_RINVEXPIRY"],
    M.BAD_SRC_TERM_ID: _S["ESME_RINVSRCADR"],
    M.BAD_DEST_TERM_ID: _S["ESME_RINVDSTADR"],
    M.BAD_SERVICE_ID: _S["ESME_RINVSERTYP"],
}
_SUBMITFAIL = _S["ESME_RSUBMITFAIL"]
_UDHI = M.tlv1(M.TP_UDHI, 1)


def submit_status(status: int) -> int:
    """The SMPP status of a Submit_Resp Status (ESME_RSUBMITFAIL for the rest)."""
    return SUBMIT_STATUS.get(status, _SUBMITFAIL)


def _pad(v: str, n: int) -> bytes:
    return v.encode("utf-8")[:n]


class SmgpConnection(GatewayConnection):
    """One logged-in SMGP connection (see the module docstring)."""

    header_len = M.HEADER_LEN
    max_frame_len = 4096

    def __init__(self, link: "SmgpLink") -> None:
        super().__init__(link)
        self._auth = b""
        self.inflow = Inflow(self, link.cfg.window)

    def send_login(self, now: float) -> None:
        cfg = self.link.cfg
        ts = M.timestamp(now)
        cid = _pad(cfg.system_id, 8)
        self._auth = M.authenticator_client(cid, cfg.password.encode("utf-8"), ts)
        self.send(M.Login(seq=self.core.next_seq(), client_id=cid, authenticator=self._auth,
                          login_mode=M.MODE_TRANSMIT, timestamp=ts,
                          version=M.VERSION).encode())

    def frame(self, command_id: int, seq: Any, body: bytes) -> bytes:
        return _HDR.pack(12 + len(body), command_id, seq) + body

    def keepalive_frame(self, seq: Any) -> bytes:
        return _HDR.pack(12, M.ACTIVE_TEST, seq)

    def logout_frame(self, seq: Any) -> bytes:
        return _HDR.pack(12, M.EXIT, seq)

    def handle_frame(self, data: bytes, now: float) -> None:
        _length, cid, seq = _HDR.unpack_from(data, 0)
        if cid == M.SUBMIT_RESP and len(data) == 26:
            status = _I.unpack_from(data, 22)[0]
            self.answered(seq, submit_status(status),
                          data[12:22].hex().encode() if status == 0 else None)
            if status:
                log.info("upstream {name}: Submit refused: {st}", name=self.link.name,
                         st=M.status_name(status))
            return
        if self.core.state == K.LOGIN:
            # nothing counts before the gateway has proved the secret
            if cid == M.LOGIN_RESP:
                self._login_resp(M.decode_body(cid, seq, data[12:]), now)
            else:
                self.login_refused("0x%08X before the Login_Resp" % cid)
            return
        if cid == M.DELIVER:
            self._deliver(seq, data[12:], now)
        elif cid == M.ACTIVE_TEST:
            self.send(_HDR.pack(12, M.ACTIVE_TEST_RESP, seq))
        elif cid == M.ACTIVE_TEST_RESP:
            pass                                    # the core saw the line alive
        elif cid == M.EXIT:
            self.send(_HDR.pack(12, M.EXIT_RESP, seq))
            self.close()
        elif cid == M.EXIT_RESP:
            self.close()
        elif cid == M.SUBMIT_RESP:
            log.warn("upstream {name}: malformed Submit_Resp ({n} octets); its request is "
                     "left to time out", name=self.link.name, n=len(data))
        elif not cid & M.RESP:
            log.warn("upstream {name}: request 0x{cid:08X} not handled", name=self.link.name,
                     cid=cid)

    def _login_resp(self, r: Any, now: float) -> None:
        if isinstance(r, BadPdu):
            self.login_refused("malformed Login_Resp: %s" % r.message)
            return
        if r.status != M.OK:
            self.login_refused(M.status_name(r.status))
            return
        want = M.authenticator_server(0, self._auth, self.link.cfg.password.encode("utf-8"))
        if not hmac.compare_digest(r.authenticator, want):
            self.login_refused("AuthenticatorServer does not prove the shared secret")
            return
        self.logged_in(now)

    def _deliver(self, seq: int, body: bytes, now: float) -> None:
        d = M.decode_body(M.DELIVER, seq, body)
        if isinstance(d, BadPdu):
            log.warn("upstream {name}: malformed Deliver: {why}", name=self.link.name,
                     why=d.message)
            self.send(M.DeliverResp(seq=seq, msg_id=body[:10].ljust(10, b"\0"),
                                    status=d.error).encode())
            return
        msg_id = d.msg_id
        if d.is_report:
            r = M.parse_report(d.msg_content)
            if r is None:
                log.warn("upstream {name}: status report without id/stat; acknowledged and "
                         "dropped", name=self.link.name)
                self.send(M.DeliverResp(seq=seq, msg_id=msg_id, status=M.OK).encode())
                return
            pdu = T.receipt_pdu(M.msg_id_text(r.msg_id), d.src_term_id, d.dest_term_id,
                                r.stat, r.err, now, r.submit_date, r.done_date, r.text)
        else:
            if len(d.src_term_id) > 20 or len(d.dest_term_id) > 20:
                log.warn("upstream {name}: MO refused (Status 46): an address over SMPP's 20 "
                         "octets", name=self.link.name)
                self.send(M.DeliverResp(seq=seq, msg_id=msg_id,
                                        status=M.BAD_SRC_TERM_ID).encode())
                return
            udhi = d.tlv(M.TP_UDHI, b"\0") or b"\0"
            pid = d.tlv(M.TP_PID, b"\0") or b"\0"
            pdu = T.mo_pdu(d.src_term_id, d.dest_term_id, d.msg_format, udhi[0] & 1,
                           d.msg_content, pid[0])

        def answer(status: int) -> None:
            self.send(M.DeliverResp(seq=seq, msg_id=msg_id,
                                    status=M.OK if status == 0 else M.SYSTEM_BUSY).encode())

        self.link.on_deliver(self.link, pdu, self.inflow.ack(answer))


class SmgpLink(Link):
    """`[[upstream]] protocol = "smgp"`."""

    connection_class = SmgpConnection
    protocol_name = "smgp"

    def __init__(self, cfg: Any, reactor: Any, on_deliver: Any, queue_wait_s: float = 0.5,
                 queue_max: int = 10000) -> None:
        super().__init__(cfg, reactor, on_deliver, queue_wait_s=queue_wait_s,
                         queue_max=queue_max)
        self._service_id = _pad(cfg.service_id, 10)
        self._fee_type = _pad(cfg.fee_type or "00", 2)
        self._fee_code = _pad(cfg.fee_code, 6)
        tlvs = M.tlv1(M.CHARGE_USER_TYPE, getattr(cfg, "fee_user_type", 2))
        if getattr(cfg, "sp_id", ""):
            tlvs += struct.pack(">HH", M.MSG_SRC, 8) + _pad(cfg.sp_id, 8).ljust(8, b"\0")
        self._tlvs = tlvs

    def submit_part(self, part: tuple, source: bytes | None, on_outcome: Any) -> None:
        pdu, _body = part
        src = source if source is not None else pdu.source_addr
        dest = pdu.destination_addr
        try:
            c = T.part_content(pdu, src, dest)
        except T.ContentError as e:
            log.info("upstream {name}: part not sent: {why}", name=self.name, why=str(e))
            on_outcome(e.status, None)
            return
        tlvs = self._tlvs
        if c.udhi:
            tlvs += _UDHI
        if c.pk_total > 1:
            tlvs += M.tlv1(M.PK_TOTAL, c.pk_total) + M.tlv1(M.PK_NUMBER, c.pk_number)
        pid = getattr(pdu, "protocol_id", 0)
        if pid:
            tlvs += M.tlv1(M.TP_PID, pid)
        body = M.submit_body(
            1 if pdu.registered_delivery & 3 else 0, min(getattr(pdu, "priority_flag", 0), 3),
            self._service_id, self._fee_type, self._fee_code, c.fmt,
            getattr(pdu, "validity_period", b""), getattr(pdu, "schedule_delivery_time", b""),
            src, dest, c.data, tlvs)
        self.submit(M.SUBMIT, body, on_outcome)
