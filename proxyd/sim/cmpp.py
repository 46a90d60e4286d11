"""`twistd proxyd-smsc --protocol cmpp3|cmpp2`: China Mobile's ISMG, as a simulator.

The factory is an `SmscFactory` (counters, receipt queue, receivers, error injection,
recording, the control listener's MO and STATS) whose connections speak CMPP:

* CMPP_CONNECT: Source_Addr must be `--system-id` (Status 2 otherwise) and
  AuthenticatorSource must be MD5(Source_Addr + 9 NULs + `--password` + timestamp) (Status
  3); a client announcing a newer version than the mode's gets Status 4. The answer carries
  AuthenticatorISMG. Any other request before the login closes the connection.
* CMPP_SUBMIT: decoded strictly (a bad one is answered with the decoder's Result); then
  `--throttle-tps` (Result 8), `--fail-every` with `--fail-status` taken as the CMPP Result,
  `--drop-after` and `--latency-ms` as in SMPP mode; accepted ones get a Msg_Id (month, day,
  hour, minute, second, gateway 1001, sequence) and, with Registered_Delivery 1, a status
  report (CMPP_DELIVER) with `--receipt-stat` as Stat (SMPP words, or gateway codes such as
  MB:0011) after `--receipt-delay`.
* MO (`MO <source> <dest> <hex> [msg_fmt] [system_id]` on the control listener): a
  CMPP_DELIVER with Dest_Id <dest> and Src_terminal_Id <source>; the data_coding argument
  is the Msg_Fmt (0 ASCII, 8 UCS2, 15 GBK).
* CMPP_ACTIVE_TEST, CMPP_TERMINATE, CMPP_QUERY (today's counters) and CMPP_CANCEL (always
  Success_Id 1: cancelling is not simulated) are answered.
"""
from __future__ import annotations

import json
import struct
import time
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger

from proxyd.links import core as K
from proxyd.links.cmpp import codec as X
from proxyd.sim.smsc import SmscFactory, Submitted

GATEWAY_ID = 1001


class CmppFactory(SmscFactory):
    """One simulated ISMG (CMPP `version`)."""

    version = X.V3

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._seq16 = 0
        self._id_sec = -1                      # the second of `_id_time`
        self._id_time = 0                      # its month..second and gateway bits

    def buildProtocol(self, addr: Any) -> "CmppSmscProtocol":
        p = CmppSmscProtocol(self)
        p.factory = self
        return p

    def new_msg_id(self) -> int:
        sec = int(self.wallclock())
        if sec != self._id_sec:
            t = time.localtime(sec)
            self._id_sec = sec
            self._id_time = X.msg_id_pack(t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min,
                                          t.tm_sec, GATEWAY_ID, 0)
        self._seq16 = (self._seq16 + 1) & 0xFFFF
        return self._id_time | self._seq16

    def new_id(self) -> bytes:
        return b"%d" % self.new_msg_id()

    def _receipt_body(self, message_id: bytes, f: Submitted, submit_time: float,
                      stat: str) -> bytes:
        fmt = "%y%m%d%H%M"
        report = X.Report(msg_id=int(message_id), stat=stat.encode(),
                          submit_time=time.strftime(fmt, time.localtime(submit_time)).encode(),
                          done_time=time.strftime(fmt, time.localtime(self.wallclock())).encode(),
                          dest_terminal_id=f.dst, smsc_sequence=self._seq16)
        return X.encode_body(X.Deliver(
            msg_id=self.new_msg_id(), dest_id=f.src, service_id=b"", tp_pid=0, tp_udhi=0,
            msg_fmt=0, src_terminal_id=f.dst, src_terminal_type=0, registered_delivery=1,
            msg_content=X.encode_report(report, self.version), link_id=b""), self.version)

    def send_mo(self, source: str | bytes, dest: str | bytes, text_bytes: bytes,
                data_coding: int = 0, system_id: str | None = None, source_ton: int = 1,
                source_npi: int = 1, dest_ton: int = 0, dest_npi: int = 1,
                esm_class: int = 0) -> bool:
        """An MO: a CMPP_DELIVER without Registered_Delivery (`data_coding` is the Msg_Fmt;
        esm_class 0x40 sets TP_udhi)."""
        src = source.encode("latin-1") if isinstance(source, str) else source
        dst = dest.encode("latin-1") if isinstance(dest, str) else dest
        if data_coding not in X.MSG_FMTS:
            raise ValueError("Msg_Fmt %d is not 0, 3, 4, 8 or 15" % data_coding)
        body = X.encode_body(X.Deliver(
            msg_id=self.new_msg_id(), dest_id=dst, service_id=b"", tp_pid=0,
            tp_udhi=1 if esm_class & 0x40 else 0, msg_fmt=data_coding,
            src_terminal_id=src, src_terminal_type=0, registered_delivery=0,
            msg_content=text_bytes, link_id=b""), self.version)
        self.counters["mo"] += 1
        return self.deliver(system_id or "*", [body])


class Cmpp3Factory(CmppFactory):
    version = X.V3


class Cmpp2Factory(CmppFactory):
    version = X.V2


class CmppSmscProtocol(protocol.Protocol):
    """One SP connection to the simulated ISMG."""

    log = Logger()

    def __init__(self, factory: CmppFactory) -> None:
        self.factory = factory
        self.config = factory.config
        self.version = factory.version
        self.framer = K.Framer(X.HEADER_LEN, X.MAX_FRAME)
        self.core = K.LinkCore(K.CoreConfig(), 0.0)     # sequence numbers of our requests
        self.system_id = ""
        self._sid_json = '""'
        self.bound = False
        self.closing = False
        self.submits = 0
        self.peer = "?"
        self._out: list[bytes] = []
        self._reading = False
        self._late: list[bytes] = []
        self._latency = self.config.latency_ms / 1000.0
        v3 = self.version == X.V3
        self._ok = struct.Struct(">IIIQI" if v3 else ">IIIQB").pack    # SUBMIT_RESP, Result 0
        self._ok_len = 12 if v3 else 9

    def connectionMade(self) -> None:
        t = self.transport
        if hasattr(t, "setTcpNoDelay"):
            try:
                t.setTcpNoDelay(True)
            except Exception:  # pragma: no cover
                pass
        peer = t.getPeer()
        self.peer = "%s:%s" % (getattr(peer, "host", peer), getattr(peer, "port", ""))

    def connectionLost(self, reason: Any = None) -> None:
        if self.bound:
            self.bound = False
            self.factory.remove_receiver(self)
            self.log.info("smsc: {peer} CMPP SP {sid} connection closed", peer=self.peer,
                          sid=self.system_id)

    # --- input -------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        f = self.factory
        self._reading = True
        try:
            frames = self.framer.feed(data)
        except K.FramingError as e:
            self.log.warn("smsc: {peer} CMPP framing error: {err}; closing", peer=self.peer,
                          err=str(e))
            frames = []
            self.closing = True
        for data_ in frames:
            if self.closing:
                break
            self._frame(data_)
        self._reading = False
        f.flush()
        if self._late:
            late, self._late = b"".join(self._late), []
            f.reactor.callLater(self._latency, self._write_late, late)
        if self._out:
            out, self._out = b"".join(self._out), []
            self.transport.write(out)
        if self.closing:
            self.transport.loseConnection()

    def _write_late(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def _frame(self, data: bytes) -> None:
        _length, cid, seq = X.HEADER.unpack_from(data)
        if cid == X.SUBMIT and self.bound:
            self._submit(seq, data)             # the hot path: read at fixed offsets
            return
        pdu = X.decode(self.version, cid, seq, data[X.HEADER_LEN:])
        if not self.bound:
            if cid == X.CONNECT:
                self._connect(seq, pdu, data)
            else:
                self.log.info("smsc: {peer} CMPP 0x{cid:08x} before CMPP_CONNECT; closing",
                              peer=self.peer, cid=cid)
                self.closing = True
            return
        if cid == X.DELIVER_RESP or cid == X.ACTIVE_TEST_RESP:
            pass
        elif cid == X.ACTIVE_TEST:
            self._out.append(X.frame(X.ACTIVE_TEST_RESP, seq, b"\0"))
        elif cid == X.TERMINATE:
            self._out.append(X.frame(X.TERMINATE_RESP, seq))
            self.closing = True
        elif cid == X.QUERY and pdu.__class__ is not X.BadPdu:
            c = self.factory.counters
            self._out.append(X.encode(X.QueryResp(
                time=pdu.time, query_type=pdu.query_type, query_code=pdu.query_code,
                mt_tlmsg=c["submits"], mt_tlusr=c["submits"], mt_scs=c["accepted"], mt_wt=0,
                mt_fl=c["failed"] + c["throttled"], mo_scs=c["deliver_sent"],
                mo_wt=c["deliver_queued"], mo_fl=0), seq, self.version))
        elif cid == X.CANCEL:
            self._out.append(X.encode(X.CancelResp(success_id=1), seq, self.version))
        else:
            self.log.info("smsc: {peer} CMPP 0x{cid:08x} not handled ({why})", peer=self.peer,
                          cid=cid, why=getattr(pdu, "message", "not an SP request"))

    def _connect(self, seq: int, pdu: Any, data: bytes) -> None:
        c = self.config
        v = self.version
        if pdu.__class__ is X.BadPdu:
            status = X.C_STRUCTURE
        else:
            status = X.C_OK
            sid = pdu.source_addr.decode("latin-1")
            if c.system_id is not None and sid != c.system_id:
                status = X.C_SOURCE
            elif c.password is not None and pdu.authenticator != X.authenticator_source(
                    pdu.source_addr, c.password.encode(), pdu.timestamp):
                status = X.C_AUTH
            elif pdu.version > v:
                status = X.C_VERSION
        if status:
            self.log.info("smsc: {peer} CMPP_CONNECT refused with status {st}",
                          peer=self.peer, st=status)
            self._out.append(X.encode(X.ConnectResp(status=status, authenticator=b"",
                                                    version=v), seq, v))
            self.closing = True
            return
        self.system_id = sid
        self._sid_json = json.dumps(sid)
        self.bound = True
        secret = (c.password or "").encode()
        self._out.append(X.encode(X.ConnectResp(
            status=0, authenticator=X.authenticator_ismg(0, pdu.authenticator, secret, v),
            version=v), seq, v))
        f = self.factory
        f.counters["binds"] += 1
        self.log.info("smsc: {peer} CMPP SP {sid} connected", peer=self.peer, sid=sid)
        f.add_receiver(self)
        f.flush_pending(self)

    def _submit(self, seq: int, data: bytes) -> None:
        f = self.factory
        v = self.version
        self.submits += 1
        f.counters["submits"] += 1
        c = self.config
        if c.drop_after and self.submits >= c.drop_after:
            f.counters["dropped"] += 1
            self.log.info("smsc: {peer} dropping the connection after {n} submits "
                          "(drop_after)", peer=self.peer, n=self.submits)
            self.closing = True
            return
        answer = self._late if self._latency else self._out
        body = data[X.HEADER_LEN:]
        fields = X.scan_submit(v, body)
        if fields is None:
            bad = X.decode(v, X.SUBMIT, seq, body)
            self.log.info("smsc: {peer} bad CMPP_SUBMIT: {err}", peer=self.peer,
                          err=bad.message)
            f.count_stats(1, 0, 1)
            answer.append(X.encode(X.SubmitResp(msg_id=0, result=bad.error), seq, v))
            return
        st = f.admit(int(f.wallclock()))
        if st:
            f.count_stats(1, 0, 1)
            result = 8 if st == 0x58 else st & (0xFFFFFFFF if v == X.V3 else 0xFF)
            answer.append(X.encode(X.SubmitResp(msg_id=0, result=result), seq, v))
            return
        mid = f.new_msg_id()
        mid_b = b"%d" % mid
        f.counters["accepted"] += 1
        f.count_stats(1, 1, 0)
        if c.record:
            f.record(mid_b, self._sid_json, "cmpp_submit", body)
        reg, src_id, dest, udhi, content = fields
        if c.receipts and reg:
            text = content[1 + content[0]:] if udhi and content else content
            f.schedule_receipt(self.system_id, mid_b, Submitted(
                0, 0, src_id, 0, 0, dest, 1, text[:20]), f.wallclock())
        answer.append(self._ok(X.HEADER_LEN + self._ok_len, X.SUBMIT_RESP, seq, mid, 0))

    # --- output ------------------------------------------------------------------------------
    def send_deliver(self, bodies: list[bytes]) -> None:
        """CMPP_DELIVER bodies (built by the factory), numbered and written at once."""
        nxt = self.core.next_seq
        self.factory.counters["deliver_sent"] += len(bodies)
        data = b"".join(X.frame(X.DELIVER, nxt(), b) for b in bodies)
        if self._reading:
            self._out.append(data)          # after the answers of this read
        elif self.transport is not None:
            self.transport.write(data)
