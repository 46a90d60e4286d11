"""The SGIP 1.2 upstream link: proxyd as an SP of China Unicom's gateway (SMG).

SGIP runs both ways (3.7.2): the SP connects to the SMG to send (Bind with LoginType 1, then
Submit), and the SMG connects to the SP to deliver MO (Deliver) and status reports (Report),
with Bind LoginType 2. One `SgipLink` (`[[upstream]] protocol = "sgip"`) is both:

* `binds` client connections to `connect`, kept up and reconnected with backoff by the shared
  link machinery (`proxyd.links.link`), window 16 by default (the SMG allows 32 unanswered
  commands). SGIP has no keepalive: a connection idle for `enquire_link_s` is closed with an
  Unbind, as the specification asks of a client that has nothing more to send, and a new one
  is opened at once so the link stays available (the SMG itself drops idle connections);
* a listener on `sp_listen` where the SMG connects back. The SMG's Bind must carry LoginType 2
  and `sp_login` / `sp_password` (by default the upstream's `system_id` / `password`);
  anything else before a Bind, a refused Bind, or a malformed command closes the connection
  (3.7.2.4.2). Connections are capped (`MAX_SP_CONNECTIONS`), an unbound one lives at most
  `response_timeout_s`, an idle bound one `IDLE_S`.

Each Submit's 12-octet sequence number (the node id `node_id`, MMDDHHMMSS, a counter) is the
operator id of the part: the SMG's Report names the Submit by it. A Report becomes an SMPP
receipt (State 0 DELIVRD, 1 ENROUTE, 2 UNDELIV; ``err:`` the SGIP ErrorCode), a Deliver an MO;
each is answered once the delivery side stored it (Result 11, node busy, when it could not).
Handset numbers come without SGIP's "86" (as clients send them); they go out with it.
"""
from __future__ import annotations

import hmac
import random
import struct
from typing import Any

from twisted.application import service
from twisted.internet import endpoints, protocol
from twisted.logger import Logger

from ...smpp import constants as C
from .. import core as K
from .. import gwtext as T
from ..fixed import BadPdu, FramingError, UnknownPdu
from ..inflow import Inflow
from ..link import GatewayConnection, Link
from . import pdu as G

log = Logger(namespace="proxyd.upstream")
_S = C.STATUS
_HDR = struct.Struct(">IIIII")
_RESULT = struct.Struct(">B8s")

MAX_SP_CONNECTIONS = 32     # connections the SMG may hold open to sp_listen at once
IDLE_S = 120.0              # a bound SMG connection silent this long is closed

SUBMIT_RESULT = {
    G.OK: 0,
    G.NODE_BUSY: _S["ESME_RMSGQFUL"],
    G.TOO_MANY_CONNECTIONS: _S["ESME_RMSGQFUL"],
    G.SMSC_QUEUE_FULL: _S["ESME_RMSGQFUL"],
    G.UNREACHABLE: _S["ESME_RMSGQFUL"],
    G.BAD_NUMBER: _S["ESME_RINVDSTADR"],
    G.UNKNOWN_USER: _S["ESME_RINVDSTADR"],
    G.BAD_LENGTH: _S["ESME_RINVMSGLEN"],
    G.BAD_CHARGE_NUMBER: _S["ESME_RSUBMITFAIL"],
}
_SUBMITFAIL = _S["ESME_RSUBMITFAIL"]

REPORT_STAT = {G.STATE_DELIVERED: b"DELIVRD", G.STATE_WAITING: b"ENROUTE",
               G.STATE_FAILED: b"UNDELIV"}


def submit_status(result: int) -> int:
    """The SMPP status of a Submit_Resp Result (ESME_RSUBMITFAIL for the rest)."""
    return SUBMIT_RESULT.get(result, _SUBMITFAIL)


def _pad(v: str, n: int) -> bytes:
    return v.encode("utf-8")[:n]


def _result(cid: int, seq: Any, result: int) -> bytes:
    return _HDR.pack(29, cid, *seq) + _RESULT.pack(result, b"")


class _Stamp:
    """MMDDHHMMSS of the current second, computed once per second."""

    __slots__ = ("sec", "value")

    def __init__(self) -> None:
        self.sec = -1
        self.value = 0

    def __call__(self, now: float) -> int:
        s = int(now)
        if s != self.sec:
            self.sec = s
            self.value = G.stamp(now)
        return self.value


def inbound(link: "SgipLink", pdu: Any, reply: Any, now: float, inflow: Inflow) -> bool:
    """A Deliver or Report from the SMG (on either kind of connection) to the delivery side;
    `reply(data)` sends its answer, counted in `inflow`. False if `pdu` is neither."""
    cid = pdu.command_id
    if cid == G.REPORT:
        if pdu.report_type != 0:
            reply(_result(G.REPORT_RESP, pdu.seq, G.OK))     # about an MO we forwarded: none
            return True
        op_id = G.seq_text(G.report_submit_seq(pdu))
        event = T.receipt_pdu(op_id, T.national(pdu.user_number), b"", REPORT_STAT[pdu.state],
                              b"%03d" % pdu.error_code, now)
        resp = G.REPORT_RESP
    elif cid == G.DELIVER:
        if len(T.national(pdu.user_number)) > 20 or len(pdu.sp_number) > 20:
            log.warn("upstream {name}: MO refused (Result 6): an address over SMPP's 20 octets",
                     name=link.name)
            reply(_result(G.DELIVER_RESP, pdu.seq, G.BAD_NUMBER))
            return True
        event = T.mo_pdu(T.national(pdu.user_number), pdu.sp_number, pdu.message_coding,
                         pdu.tp_udhi, pdu.message_content, pdu.tp_pid)
        resp = G.DELIVER_RESP
    else:
        return False
    seq = pdu.seq

    def answer(status: int) -> None:
        reply(_result(resp, seq, G.OK if status == 0 else G.NODE_BUSY))

    link.on_deliver(link, event, inflow.ack(answer))
    return True


class SgipConnection(GatewayConnection):
    """One SP -> SMG connection (LoginType 1): Submit, and their answers."""

    header_len = G.HEADER_LEN
    max_frame_len = 4096

    def __init__(self, link: "SgipLink") -> None:
        super().__init__(link)
        self._stamp = link.stamp
        self._node = link.cfg.node_id
        self.inflow = Inflow(self, link.cfg.window)

    def request(self, command_id: int, body: bytes, on_resp: Any) -> None:
        # the counter is the link's, not the connection's: a Submit's sequence number is
        # its operator id, unique across the link's connections (3.4)
        seq = self.link.next_counter()
        self.core.request(seq, on_resp, self.link.clock.seconds())
        self.send(self.frame(command_id, seq, body))

    def send_login(self, now: float) -> None:
        cfg = self.link.cfg
        self.send(G.Bind(seq=(self._node, self._stamp(now), self.link.next_counter()),
                         login_type=G.LOGIN_SP_TO_SMG, login_name=_pad(cfg.system_id, 16),
                         login_password=_pad(cfg.password, 16)).encode())

    def frame(self, command_id: int, seq: Any, body: bytes) -> bytes:
        return _HDR.pack(20 + len(body), command_id, self._node,
                         self._stamp(self.link.clock.seconds()), seq) + body

    def keepalive_frame(self, seq: Any) -> bytes | None:
        return None                     # see tick: SGIP closes an idle connection instead

    def logout_frame(self, seq: Any) -> bytes:
        return self.frame(G.UNBIND, self.link.next_counter(), b"")

    def tick(self, now: float) -> None:
        core = self.core
        if core.state == K.BOUND and not core.pending and core.cfg.keepalive_s and \
                now - core.last_rx >= core.cfg.keepalive_s:
            log.info("upstream {name}: idle; unbinding (SGIP has no keepalive)",
                     name=self.link.name)
            self.unbind()
            return
        super().tick(now)

    def handle_frame(self, data: bytes, now: float) -> None:
        _length, cid, node, stamp, counter = _HDR.unpack_from(data, 0)
        if cid == G.SUBMIT_RESP and len(data) == 29:
            result = data[20]
            self.answered(counter, submit_status(result),
                          G.seq_text((node, stamp, counter)) if result == 0 else None)
            if result:
                log.info("upstream {name}: Submit refused: {r}", name=self.link.name,
                         r=G.result_name(result))
            return
        pdu = G.decode_body(cid, (node, stamp, counter), data[20:])
        if isinstance(pdu, (BadPdu, UnknownPdu)):
            log.warn("upstream {name}: {what}; closing (3.7.2.4.2)", name=self.link.name,
                     what=pdu)
            self.close()
            return
        if self.core.state == K.LOGIN:
            if cid != G.BIND_RESP:
                self.login_refused("0x%08X before the Bind_Resp" % cid)
            elif pdu.result == G.OK:
                self.logged_in(now)
            else:
                self.login_refused(G.result_name(pdu.result))
        elif cid == G.UNBIND:
            self.send(G.UnbindResp(seq=pdu.seq).encode())
            self.close()
        elif cid == G.UNBIND_RESP:
            self.close()
        elif inbound(self.link, pdu, self.send, now, self.inflow):
            pass
        elif cid & G.RESP:
            pass                                    # an answer nobody waits for: dropped
        else:
            self.send(_result(cid | G.RESP, pdu.seq, G.NOT_SUPPORTED))


class SpReceiver(protocol.Protocol):
    """One SMG -> SP connection on `sp_listen` (LoginType 2): Deliver, Report, UserRpt."""

    def __init__(self, factory: "SpFactory") -> None:
        self.factory = factory
        self.link = factory.link
        self.framer = G.CODEC.framer()
        self.bound = False
        self.closing = False
        self.peer = "?"
        self._timer: Any = None
        self._out: list[bytes] | None = None
        self.inflow = Inflow(self, self.link.cfg.window)

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = "%s:%s" % (getattr(peer, "host", peer), getattr(peer, "port", ""))
        self.factory.open.add(self)
        if len(self.factory.open) > MAX_SP_CONNECTIONS:
            log.warn("upstream {name}: sp_listen: over {n} connections; {peer} closed",
                     name=self.link.name, n=MAX_SP_CONNECTIONS, peer=self.peer)
            self.close()
            return
        self._arm(self.link.cfg.response_timeout_s)

    def _arm(self, seconds: float) -> None:
        clock = self.link.clock
        if self._timer is not None and self._timer.active():
            self._timer.reset(seconds)
        else:
            self._timer = clock.callLater(seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        log.info("upstream {name}: sp_listen: {peer} {what}; closed", name=self.link.name,
                 peer=self.peer, what="idle" if self.bound else "did not bind in time")
        self.close()

    def send(self, data: bytes) -> None:
        if self._out is not None:
            self._out.append(data)
        elif self.transport is not None and not self.closing:
            self.transport.write(data)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self._out:
            self.transport.write(b"".join(self._out))
            self._out.clear()
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.open.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.closing = True

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self._out = out = []
        try:
            try:
                frames = self.framer.feed(data)
            except FramingError as e:
                log.warn("upstream {name}: sp_listen: {peer} framing error {err}; closing",
                         name=self.link.name, peer=self.peer, err=str(e))
                frames = list(e.frames)
                self.closing = True
            now = self.link.clock.seconds()
            for cid, seq, body in frames:
                self._frame(cid, seq, body, now)
                if self.closing:
                    break
            if self.bound and not self.closing:
                self._arm(IDLE_S)
        finally:
            self._out = None
            if out and self.transport is not None:
                self.transport.write(b"".join(out))
            if self.closing:
                self.transport.loseConnection()

    def _frame(self, cid: int, seq: Any, body: bytes, now: float) -> None:
        pdu = G.decode_body(cid, seq, body)
        name = self.link.name
        if isinstance(pdu, UnknownPdu):
            log.warn("upstream {name}: sp_listen: {peer} sent unknown command 0x{cid:08X}; "
                     "closing", name=name, peer=self.peer, cid=cid)
            self.closing = True
            return
        if isinstance(pdu, BadPdu):
            log.warn("upstream {name}: sp_listen: {peer} malformed {what}; closing",
                     name=name, peer=self.peer, what=pdu)
            if not cid & G.RESP:
                self.send(_result(cid | G.RESP, seq, pdu.error))
            self.closing = True
            return
        if not self.bound:
            if cid != G.BIND:
                log.warn("upstream {name}: sp_listen: {peer} sent 0x{cid:08X} before a Bind; "
                         "closing", name=name, peer=self.peer, cid=cid)
                self.closing = True
                return
            result = self.factory.check_bind(pdu)
            self.send(_result(G.BIND_RESP, seq, result))
            if result != G.OK:
                log.warn("upstream {name}: sp_listen: {peer} Bind refused: {r}", name=name,
                         peer=self.peer, r=G.result_name(result))
                self.closing = True
                return
            self.bound = True
            return
        if cid == G.BIND:
            self.send(_result(G.BIND_RESP, seq, G.DUPLICATE_LOGIN))
        elif cid == G.UNBIND:
            self.send(G.UnbindResp(seq=seq).encode())
            self.closing = True
        elif cid == G.USERRPT:
            log.info("upstream {name}: UserRpt: {user} condition {c}", name=name,
                     user=pdu.user_number[-4:].decode("latin-1"), c=pdu.user_condition)
            self.send(_result(G.USERRPT_RESP, seq, G.OK))
        elif inbound(self.link, pdu, self.send, now, self.inflow):
            pass
        elif cid & G.RESP:
            pass
        else:                           # e.g. a Submit: the SP does not take those
            self.send(_result(cid | G.RESP, seq, G.NOT_SUPPORTED))


class SpFactory(protocol.ServerFactory):
    noisy = False

    def __init__(self, link: "SgipLink") -> None:
        self.link = link
        cfg = link.cfg
        self.login = _pad(getattr(cfg, "sp_login", "") or cfg.system_id, 16)
        self.password = _pad(getattr(cfg, "sp_password", "") or cfg.password, 16)
        self.open: set[SpReceiver] = set()

    def check_bind(self, bind: Any) -> int:
        if bind.login_type != G.LOGIN_SMG_TO_SP:
            return G.BAD_LOGIN_TYPE
        ok_name = hmac.compare_digest(bind.login_name, self.login)
        ok_pass = hmac.compare_digest(bind.login_password, self.password)
        return G.OK if ok_name and ok_pass else G.BAD_LOGIN

    def buildProtocol(self, addr: Any) -> SpReceiver:
        return SpReceiver(self)


class SpListener(service.Service):
    """The `sp_listen` port. A port still held (by the link this one replaces on a reload)
    is tried again every second until it is free."""

    RETRY_S = 1.0

    def __init__(self, description: str, factory: SpFactory, reactor: Any) -> None:
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: Any = None
        self._retry: Any = None

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        self._retry = None
        if not self.running:
            return
        d = endpoints.serverFromString(self.reactor, self.description).listen(self.factory)
        name = self.factory.link.name

        def listening(port: Any) -> None:
            if not self.running:
                port.stopListening()
                return
            self.port = port
            log.info("upstream {name}: sp_listen on {addr}", name=name, addr=port.getHost())

        def failed(f: Any) -> None:
            log.warn("upstream {name}: sp_listen {desc}: {err}; trying again", name=name,
                     desc=self.description, err=f.getErrorMessage())
            if self.running:
                self._retry = self.reactor.callLater(self.RETRY_S, self._listen)
        d.addCallbacks(listening, failed)

    def stopService(self) -> Any:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        port, self.port = self.port, None
        for p in list(self.factory.open):
            p.close()
        return port.stopListening() if port is not None else None


class SgipLink(Link):
    """`[[upstream]] protocol = "sgip"`: the Submit connections and the `sp_listen` side."""

    connection_class = SgipConnection
    protocol_name = "sgip"

    def __init__(self, cfg: Any, reactor: Any, on_deliver: Any, queue_wait_s: float = 0.5,
                 queue_max: int = 10000) -> None:
        super().__init__(cfg, reactor, on_deliver, queue_wait_s=queue_wait_s,
                         queue_max=queue_max)
        self.stamp = _Stamp()
        # sequence counter of this link (all its connections); a random start keeps the
        # ids of several proxyd nodes with the same node_id apart
        self._counter = random.randrange(1 << 32)
        self.sp_factory = SpFactory(self)
        SpListener(cfg.sp_listen, self.sp_factory, reactor).setServiceParent(self)
        self._corp_id = b"%05d" % (cfg.node_id % 100000) if not getattr(cfg, "sp_id", "") \
            else _pad(cfg.sp_id, 5)
        self._service_type = _pad(cfg.service_id, 10)
        self._fee_type = int(cfg.fee_type or "0")
        self._fee_value = _pad(cfg.fee_code, 6)
        # who pays (fee_user_type): 2, the SP: ChargeNumber all zeros; 0, the recipient: empty
        self._charge = b"0" * 21 if getattr(cfg, "fee_user_type", 2) == 2 else b""

    def next_counter(self) -> int:
        n = self._counter = (self._counter + 1) & 0xFFFFFFFF
        return n

    def submit_part(self, part: tuple, source: bytes | None, on_outcome: Any) -> None:
        pdu, _body = part
        src = source if source is not None else pdu.source_addr
        user = T.with_86(pdu.destination_addr)
        try:
            c = T.part_content(pdu, src, user)
        except T.ContentError as e:
            log.info("upstream {name}: part not sent: {why}", name=self.name, why=str(e))
            on_outcome(e.status, None)
            return
        reg = pdu.registered_delivery & 3
        body = G.submit_body(
            src, self._charge, user, self._corp_id, self._service_type, self._fee_type,
            self._fee_value, min(getattr(pdu, "priority_flag", 0), 9),
            _sgip_time(pdu, "validity_period"), _sgip_time(pdu, "schedule_delivery_time"),
            1 if reg == 1 else 0 if reg == 2 else 2, getattr(pdu, "protocol_id", 0), c.udhi,
            c.fmt, c.data)
        self.submit(G.SUBMIT, body, on_outcome)


def _sgip_time(pdu: Any, name: str) -> bytes:
    """SMPP absolute time "YYMMDDhhmmsstnnp" is SGIP's format; relative times are left
    to the SMSC's default (empty)."""
    v = getattr(pdu, name, b"")
    return v if v and len(v) == 16 and not v.endswith(b"R") else b""
