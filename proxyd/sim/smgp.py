"""`proxyd-smsc --protocol smgp`: China Telecom's SMGW as an SP sees it (SMGP 3.0).

It checks the Login (ClientID against ``--system-id`` and AuthenticatorClient against the
``--password`` shared secret, when given; Status 21 otherwise) and proves the secret back in
AuthenticatorServer; answers Submit with a MsgID per destination; sends a status report
(Deliver, IsReport = 1) for each accepted message whose NeedReport is 1, after
``--receipt-delay``, with the ``--receipt-stat`` cycle; sends injected MO (the control line
``MO <source> <dest> <hex> [data_coding] [client id]``) as Deliver; answers Active_Test and Exit.

Everything else is the SMPP simulator's (`SmscFactory`): counters, the receipt queue, the
receiver registry (a logged-in connection receives the Delivers of its ClientID), recording
(``"id"`` is the MsgID's 20 hex digits, ``"body"`` the Submit body), stats, and the error
injection: ``--fail-every`` answers with ``--fail-status`` read as an SMGP Status (e.g. 1,
system busy), ``--throttle-tps`` with Status 1, ``--drop-after`` closes the connection.
A malformed Submit is answered with the Status its decoding names.
"""
from __future__ import annotations

import hmac
import json
import struct
import time
from typing import Any

from twisted.logger import Logger

from proxyd.links.fixed import BadPdu, DecodeError
from proxyd.links.gwtext import gateway_format
from proxyd.links.smgp import pdu as M
from proxyd.smpp import constants as C
from proxyd.sim.gateway import GatewayServer
from proxyd.sim.smsc import ANY_SYSTEM, SmscFactory, Submitted

GATEWAY_CODE = "010061"         # the simulated SMGW's code (6.2.26)
_RTHROTTLED = C.STATUS["ESME_RTHROTTLED"]
_RESP_OK = struct.Struct(">III10sI")       # a whole Submit_Resp
_ERR = {"DELIVRD": b"000", "ACCEPTD": b"000", "ENROUTE": b"000", "EXPIRED": b"001",
        "UNDELIV": b"004", "DELETED": b"006", "REJECTD": b"005", "UNKNOWN": b"999"}


_MSG_TYPES = (M.MSG_MO, M.MSG_MT, M.MSG_P2P)


def scan_submit(body: bytes) -> tuple | None:
    """(need_report, src_term_id, dest_term_ids, msg_content, tp_udhi) of a Submit body read
    at fixed offsets, or None where `M.decode_body` would find it malformed (the simulator's
    hot path; the full decode then names the error)."""
    n = len(body)
    if n < 105 or body[0] not in _MSG_TYPES or body[1] > 1 or body[2] > 3 or \
            body[27] not in M.MSG_FORMATS:
        return None
    count = body[104]
    q = 105 + 21 * count
    if not 1 <= count <= 100 or q >= n:
        return None
    length = body[q]
    end = q + 1 + length + 8
    if length > 160 or (length > 140 and body[27] != M.FORMAT_ASCII) or end > n:
        return None
    udhi = 0
    if end < n:
        try:
            tlvs = M.CODEC.decode_tlvs(body, end)
        except DecodeError:
            return None
        for tag, value in tlvs:
            if tag == M.TP_UDHI:
                udhi = value[0] & 1
                break
    return (body[1], body[62:83].rstrip(b"\0"),
            tuple(body[p:p + 21].rstrip(b"\0") for p in range(105, q, 21)),
            body[q + 1:q + 1 + length], udhi)


class SmgpFactory(SmscFactory):
    """One simulated SMGW."""

    log = Logger()

    def __init__(self, config: Any = None, reactor: Any = None, **kw: Any) -> None:
        super().__init__(config, reactor=reactor, **kw)
        self._counter = 0
        self._minute = -1
        self._prefix = b""

    def buildProtocol(self, addr: Any) -> "SmgpGateway":
        p = SmgpGateway(self)
        p.factory = self
        return p

    def new_msg_id(self) -> bytes:
        self._counter = n = (self._counter + 1) % 1000000
        now = self.wallclock()
        minute = int(now) // 60
        if minute != self._minute:
            self._minute = minute
            self._prefix = M.make_msg_id(GATEWAY_CODE, int(time.strftime(
                "%m%d%H%M", time.localtime(now))), 0)[:7]
        return self._prefix + bytes.fromhex("%06d" % n)

    def _receipt_body(self, message_id: bytes, f: Submitted, submit_time: float,
                      stat: str) -> bytes:
        fmt = "%y%m%d%H%M"
        if stat not in _ERR:                # a CMPP-style gateway code: undeliverable here
            stat = "UNDELIV"
        content = M.report_content(M.Report(
            message_id, stat.encode(), _ERR.get(stat, b"999"),
            time.strftime(fmt, time.localtime(submit_time)).encode(),
            time.strftime(fmt, time.localtime(self.wallclock())).encode(), text=f.text))
        return M.CODEC.encode_body(M.Deliver(
            0, self.new_msg_id(), 1, M.FORMAT_ASCII, self._recv_time(), f.dst, f.src,
            content, b"", ()))

    def _recv_time(self) -> bytes:
        return time.strftime("%Y%m%d%H%M%S", time.localtime(self.wallclock())).encode()

    def send_mo(self, source: Any, dest: Any, text_bytes: bytes, data_coding: int = 0,
                system_id: str | None = None, **_: Any) -> bool:
        src = source.encode() if isinstance(source, str) else source
        dst = dest.encode() if isinstance(dest, str) else dest
        body = M.CODEC.encode_body(M.Deliver(
            0, self.new_msg_id(), 0, gateway_format(data_coding), self._recv_time(), src, dst,
            text_bytes, b"", ()))
        self.counters["mo"] += 1
        return self.deliver(system_id or ANY_SYSTEM, [body])


class SmgpGateway(GatewayServer):
    """One SP connection to the simulated SMGW."""

    codec = M.CODEC
    who = "smgw"

    def __init__(self, factory: SmgpFactory) -> None:
        super().__init__(factory)
        self.logged_in = False
        self._seq = 0

    def connectionLost(self, reason: Any = None) -> None:
        if self.logged_in:
            self.factory.remove_receiver(self)
            self.logged_in = False

    def frame(self, cid: int, seq: int, body: bytes) -> None:
        if cid == M.SUBMIT and self.logged_in:
            self._submit(seq, body)
        elif cid == M.LOGIN and not self.logged_in:
            self._login(seq, body)
        elif cid == M.ACTIVE_TEST:
            self.write(M.frame(M.ACTIVE_TEST_RESP, seq))
        elif cid == M.EXIT:
            self.write(M.frame(M.EXIT_RESP, seq))
            self.closing = True
        elif cid == M.DELIVER_RESP or cid == M.ACTIVE_TEST_RESP:
            pass
        else:
            self.log.warn("smgw: {peer} request 0x{cid:08X} out of place; closing",
                          peer=self.peer, cid=cid)
            self.closing = True

    def _login(self, seq: int, body: bytes) -> None:
        login = M.decode_body(M.LOGIN, seq, body)
        c = self.config
        if isinstance(login, BadPdu):
            status, auth = login.error, b""
        else:
            status = M.OK
            sid = login.client_id.decode("latin-1")
            secret = (c.password or "").encode()
            if c.system_id is not None and sid != c.system_id:
                status = M.AUTH_ERROR
            elif c.password is not None and not hmac.compare_digest(
                    login.authenticator,
                    M.authenticator_client(login.client_id, secret, login.timestamp)):
                status = M.AUTH_ERROR
            elif login.version > M.VERSION:
                status = M.VERSION_TOO_HIGH
            auth = M.authenticator_server(status, login.authenticator, secret) \
                if status == M.OK else b""
        self.write(M.LoginResp(seq=seq, status=status, authenticator=auth.ljust(16, b"\0"),
                                version=M.VERSION).encode())
        if status != M.OK:
            self.log.info("smgw: {peer} Login refused: {st}", peer=self.peer,
                          st=M.status_name(status))
            self.closing = True
            return
        self.logged_in = True
        self.system_id = sid
        self._sid_json = json.dumps(sid)
        f = self.factory
        f.counters["binds"] += 1
        self.log.info("smgw: {peer} logged in as {sid}", peer=self.peer, sid=sid)
        f.add_receiver(self)
        f.flush_pending(self)

    def _submit(self, seq: int, body: bytes) -> None:
        f = self.factory
        c = self.config
        st = self.admit()
        if st < 0:
            return
        if st:
            st = M.SYSTEM_BUSY if st == _RTHROTTLED else st
            f.count_stats(1, 0, 1)
            self.write(M.SubmitResp(seq=seq, msg_id=b"\0" * 10, status=st).encode())
            return
        sub = scan_submit(body)
        if sub is None:
            bad = M.decode_body(M.SUBMIT, seq, body)
            f.count_stats(1, 0, 1)
            self.log.info("smgw: {peer} bad Submit: {bad}", peer=self.peer, bad=bad)
            self.write(M.SubmitResp(seq=seq, msg_id=b"\0" * 10,
                                    status=getattr(bad, "error", M.BAD_STRUCTURE)).encode())
            return
        need_report, src, dests, content, udhi = sub
        f.count_stats(1, 1, 0)
        first = None
        record = c.record
        report = c.receipts and need_report
        for dest in dests:
            mid = f.new_msg_id()
            first = first or mid
            f.counters["accepted"] += 1
            if record:
                f.record(M.msg_id_text(mid), self._sid_json, "submit", body)
            if report:
                text = content[content[0] + 1:] if udhi and content else content
                f.schedule_receipt(self.system_id, mid, Submitted(
                    0, 0, src, 0, 0, dest, 1, text[:20]), f.wallclock())
        self.write(_RESP_OK.pack(26, M.SUBMIT_RESP, seq, first, 0))

    # --- what SmscFactory.deliver calls ---------------------------------------------------------
    def send_deliver(self, bodies: list[bytes]) -> None:
        out = []
        for b in bodies:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            out.append(M.frame(M.DELIVER, self._seq, b))
        self.factory.counters["deliver_sent"] += len(bodies)
        self.write(b"".join(out))

