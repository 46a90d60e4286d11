"""`proxyd-smsc --protocol sgip`: China Unicom's SMG as an SP sees it (SGIP 1.2).

The SP binds here (LoginType 1; LoginName / LoginPassword checked against ``--system-id`` /
``--password`` when given, Result 1 otherwise) and sends Submit; each is answered with a
Result (``--fail-every`` / ``--fail-status`` read as an SGIP error code, ``--throttle-tps``
with 11, node busy; a malformed Submit with the code its decoding names).

Reports and MO go the SGIP way: the simulator connects to the SP's listener
(``--sp-connect``, an endpoint string), binds with LoginType 2 and ``--sp-login`` /
``--sp-password`` (default: ``--system-id`` / ``--password``), sends the Reports (after
``--receipt-delay``, states from the ``--receipt-stat`` cycle, as the Submit's ReportFlag
asks: 1 always, 0 only failures) and the injected MO (control line ``MO <source> <dest> <hex>
[data_coding]``) as Deliver, up to 16 unanswered, and unbinds once everything is answered and
a second has passed. Without ``--sp-connect`` they wait in the queue (counted as queued).

Counters, recording (``"id"``: the Submit's sequence number as 30 digits), stats and the
receipt queue are the SMPP simulator's (`SmscFactory`).
"""
from __future__ import annotations

import hmac
import json
import struct
from collections import deque
from typing import Any

from twisted.internet import endpoints, protocol
from twisted.logger import Logger

from proxyd.links import gwtext as T
from proxyd.links.fixed import BadPdu, FramingError
from proxyd.links.sgip import pdu as G
from proxyd.smpp import constants as C
from proxyd.sim.gateway import GatewayServer
from proxyd.sim.smsc import SmscFactory, Submitted

SMG_NODE = 1075501              # 1AAAAX: area 0755, number 1
WINDOW = 16
LINGER_S = 1.0                  # idle time before the connect-back connection unbinds
_RTHROTTLED = C.STATUS["ESME_RTHROTTLED"]
_RESULT = struct.Struct(">IIIIIB8s")       # a whole response with Result and Reserve
# receipt stat -> (Report State, ErrorCode)
REPORT = {"DELIVRD": (0, 0), "ACCEPTD": (1, 0), "ENROUTE": (1, 0), "EXPIRED": (2, 25),
          "UNDELIV": (2, 29), "DELETED": (2, 32), "REJECTD": (2, 24), "UNKNOWN": (2, 32)}


def scan_submit(body: bytes) -> tuple | None:
    """(report_flag, sp_number, user_numbers, message_content, tp_udhi) of a Submit body read
    at fixed offsets, or None where `G.decode_body` would find it malformed (the simulator's
    hot path; the full decode then names the error)."""
    n = len(body)
    if n < 43:
        return None
    count = body[42]
    r = 43 + 21 * count
    if not 1 <= count <= 100 or r + 72 > n:
        return None
    if body[r + 15] > 4 or body[r + 28] > 1 or body[r + 29] > 3 or body[r + 30] > 9 or \
            body[r + 63] > 3 or body[r + 65] > 1:
        return None
    length = int.from_bytes(body[r + 68:r + 72], "big")
    if length > 160 or r + 72 + length + 8 != n:
        return None
    return (body[r + 63], body[:21].rstrip(b"\0"),
            tuple(body[p:p + 21].rstrip(b"\0") for p in range(43, r, 21)),
            body[r + 72:r + 72 + length], body[r + 65])


class SgipFactory(SmscFactory):
    """One simulated SMG: the SP's binds, and the connection back to the SP."""

    log = Logger()

    def __init__(self, config: Any = None, reactor: Any = None, **kw: Any) -> None:
        super().__init__(config, reactor=reactor, **kw)
        c = self.config
        self.seqs = G.Sequencer(SMG_NODE)
        self.sp_connect = getattr(c, "sp_connect", None)
        self.sp_login = (getattr(c, "sp_login", None) or c.system_id or "").encode()
        self.sp_password = (getattr(c, "sp_password", None) or c.password or "").encode()
        self.outbox: deque[tuple[int, bytes]] = deque()
        self.client: SmgClient | None = None
        self._connecting = False
        self._retry: Any = None

    def buildProtocol(self, addr: Any) -> "SgipGateway":
        p = SgipGateway(self)
        p.factory = self
        return p

    def next_seq(self) -> tuple:
        return self.seqs.next(self.wallclock())

    # --- reports and MO ---------------------------------------------------------------------
    def _receipt_body(self, message_id: bytes, f: Submitted, submit_time: float,
                      stat: str) -> Any:
        state, err = REPORT.get(stat, (2, 32))
        if f.registered_delivery == 0 and state == 0:
            return None                     # ReportFlag 0: only failures are reported
        node, stamp, counter = (int(message_id[i:i + 10]) for i in (0, 10, 20))
        return G.REPORT, G.CODEC.encode_body(G.Report(
            (0, 0, 0), node, stamp, counter, 0, f.dst, state, err, b""))

    def send_mo(self, source: Any, dest: Any, text_bytes: bytes, data_coding: int = 0,
                system_id: str | None = None, **_: Any) -> bool:
        src = source.encode() if isinstance(source, str) else source
        dst = dest.encode() if isinstance(dest, str) else dest
        self.counters["mo"] += 1
        return self.deliver("", [(G.DELIVER, G.CODEC.encode_body(G.Deliver(
            (0, 0, 0), T.with_86(src), dst, 0, 0, T.gateway_format(data_coding), text_bytes,
            b"")))])

    def deliver(self, system_id: str, bodies: list) -> bool:
        items = [b for b in bodies if b is not None]
        if not items:
            return True
        self.outbox.extend(items)
        self.counters["deliver_queued"] += len(items)
        self._connect()
        if self.client is not None:
            self.client.pump()
        return self.client is not None

    def _connect(self) -> None:
        if self.client is not None or self._connecting or not self.sp_connect:
            return
        if self._retry is not None and self._retry.active():
            return
        self._connecting = True
        ep = endpoints.clientFromString(self.reactor, self.sp_connect)
        d = ep.connect(_ClientFactory(self))

        def failed(f: Any) -> None:
            self._connecting = False
            self.log.warn("smg: cannot connect to the SP at {ep}: {err}; again in 1 s",
                          ep=self.sp_connect, err=f.getErrorMessage())
            self._retry = self.reactor.callLater(1.0, self._connect)
        d.addErrback(failed)

    def client_ready(self, c: "SmgClient") -> None:
        self._connecting = False
        self.client = c

    def client_gone(self, c: "SmgClient", retry_s: float) -> None:
        self._connecting = False
        if self.client is c:
            self.client = None
        if self.outbox and (self._retry is None or not self._retry.active()):
            self._retry = self.reactor.callLater(retry_s, self._connect)

    def stopFactory(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        super().stopFactory()


class _ClientFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, smg: SgipFactory) -> None:
        self.smg = smg

    def buildProtocol(self, addr: Any) -> "SmgClient":
        return SmgClient(self.smg)


class SmgClient(protocol.Protocol):
    """The simulated SMG's connection to the SP (LoginType 2): Report and Deliver."""

    log = Logger()

    def __init__(self, smg: SgipFactory) -> None:
        self.smg = smg
        self.framer = G.CODEC.framer()
        self.bound = False
        self.pending: dict[int, tuple[int, bytes]] = {}   # counter -> what it carried
        self._linger: Any = None
        self._unbinding = False

    def connectionMade(self) -> None:
        s = self.smg
        self.transport.write(G.Bind(seq=s.next_seq(), login_type=G.LOGIN_SMG_TO_SP,
                                    login_name=s.sp_login[:16],
                                    login_password=s.sp_password[:16]).encode())

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except FramingError:
            self.transport.loseConnection()
            return
        for cid, seq, body in frames:
            if cid == G.BIND_RESP:
                result = body[0] if body else G.BAD_PARAMETER
                if result != G.OK:
                    self.log.warn("smg: the SP refused our Bind: {r}", r=G.result_name(result))
                    self.transport.loseConnection()
                    return
                self.bound = True
                self.smg.client_ready(self)
                self.pump()
            elif cid in (G.REPORT_RESP, G.DELIVER_RESP):
                item = self.pending.pop(seq[2], None)
                if item is not None:
                    result = body[0] if body else G.BAD_PARAMETER
                    if result != G.OK:            # the SP could not take it: send it again
                        self.smg.outbox.append(item)
                        self.smg.counters["deliver_queued"] += 1
                self.pump()
            elif cid == G.UNBIND_RESP:
                self.transport.loseConnection()
            elif cid == G.UNBIND:
                self.transport.write(G.UnbindResp(seq=seq).encode())
                self.transport.loseConnection()

    def pump(self) -> None:
        s = self.smg
        if not self.bound or self._unbinding:
            return
        out = []
        while s.outbox and len(self.pending) < WINDOW:
            cid, body = s.outbox.popleft()
            s.counters["deliver_queued"] -= 1
            s.counters["deliver_sent"] += 1
            seq = s.next_seq()
            self.pending[seq[2]] = (cid, body)
            out.append(G.frame(cid, seq, body))
        if out:
            self.transport.write(b"".join(out))
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = s.reactor.callLater(LINGER_S, self._idle)

    def _idle(self) -> None:
        self._linger = None
        if self.pending or self.smg.outbox:
            self._linger = self.smg.reactor.callLater(LINGER_S, self._idle)
            return
        self._unbinding = True
        self.transport.write(G.Unbind(seq=self.smg.next_seq()).encode())

    def connectionLost(self, reason: Any = None) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        s = self.smg
        for item in self.pending.values():        # unanswered: send again later
            s.outbox.appendleft(item)
            s.counters["deliver_queued"] += 1
        self.pending.clear()
        s.client_gone(self, 0.2 if self.bound else 2.0)


class SgipGateway(GatewayServer):
    """One SP connection to the simulated SMG (LoginType 1): Bind, Submit, Unbind."""

    codec = G.CODEC
    who = "smg"

    def __init__(self, factory: SgipFactory) -> None:
        super().__init__(factory)
        self.bound = False

    def _result(self, cid: int, seq: Any, result: int) -> None:
        self.write(_RESULT.pack(29, cid, seq[0], seq[1], seq[2], result, b""))

    def frame(self, cid: int, seq: Any, body: bytes) -> None:
        if cid == G.SUBMIT and self.bound:
            self._submit(seq, body)
        elif cid == G.BIND and not self.bound:
            self._bind(seq, body)
        elif cid == G.UNBIND:
            self.write(G.UnbindResp(seq=seq).encode())
            self.closing = True
        else:
            self.log.warn("smg: {peer} command 0x{cid:08X} out of place; closing",
                          peer=self.peer, cid=cid)
            self.closing = True

    def _bind(self, seq: Any, body: bytes) -> None:
        b = G.decode_body(G.BIND, seq, body)
        c = self.config
        if isinstance(b, BadPdu):
            result = b.error
        elif b.login_type != G.LOGIN_SP_TO_SMG:
            result = G.BAD_LOGIN_TYPE
        elif (c.system_id is not None and b.login_name != c.system_id.encode()) or (
                c.password is not None and not hmac.compare_digest(
                    b.login_password, c.password.encode())):
            result = G.BAD_LOGIN
        else:
            result = G.OK
        self._result(G.BIND_RESP, seq, result)
        if result != G.OK:
            self.log.info("smg: {peer} Bind refused: {r}", peer=self.peer,
                          r=G.result_name(result))
            self.closing = True
            return
        self.bound = True
        self.system_id = b.login_name.decode("latin-1")
        self._sid_json = json.dumps(self.system_id)
        self.factory.counters["binds"] += 1

    def _submit(self, seq: Any, body: bytes) -> None:
        f = self.factory
        c = self.config
        st = self.admit()
        if st < 0:
            return
        if st:
            f.count_stats(1, 0, 1)
            self._result(G.SUBMIT_RESP, seq, G.NODE_BUSY if st == _RTHROTTLED else st & 0xFF)
            return
        sub = scan_submit(body)
        if sub is None:
            bad = G.decode_body(G.SUBMIT, seq, body)
            f.count_stats(1, 0, 1)
            self.log.info("smg: {peer} bad Submit: {bad}", peer=self.peer, bad=bad)
            self._result(G.SUBMIT_RESP, seq, getattr(bad, "error", G.BAD_PARAMETER))
            return
        report_flag, sp_number, users, content, udhi = sub
        f.count_stats(1, 1, 0)
        f.counters["accepted"] += 1
        report = c.receipts and report_flag != 2
        mid = G.seq_text(seq) if c.record or report else b""
        if c.record:
            f.record(mid, self._sid_json, "submit", body)
        if report:
            text = content[content[0] + 1:] if udhi and content else content
            for user in users:
                f.schedule_receipt(self.system_id, mid, Submitted(
                    0, 0, sp_number, 0, 0, user, 0 if report_flag == 0 else 1,
                    text[:20]), f.wallclock())
        self._result(G.SUBMIT_RESP, seq, G.OK)

    def connectionLost(self, reason: Any = None) -> None:
        self.bound = False
