"""What the simulated operator gateways of the fixed-layout protocols (SGIP, SMGP) share: one
SP connection that cuts frames with the protocol's codec, hands each to `frame(cid, seq,
body)`, collects the answers of one read and writes them at once (after ``--latency-ms``
when set), recorded submits flushed first; a framing error or `closing` ends the
connection after the answers already made."""
from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger

from proxyd.links.fixed import FramingError


class GatewayServer(protocol.Protocol):
    """One SP connection; subclasses implement `frame`."""

    log = Logger()
    codec: Any = None           # the protocol's `proxyd.links.fixed.Codec`
    who = "gateway"             # in log lines

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.config = factory.config
        self.framer = self.codec.framer(factory.config.max_pdu_bytes)
        self.closing = False
        self.submits = 0
        self.system_id = ""
        self._sid_json = '""'
        self._out: list[bytes] | None = None
        self.peer = "?"

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = "%s:%s" % (getattr(peer, "host", peer), getattr(peer, "port", ""))

    def write(self, data: bytes) -> None:
        """An answer (collected while a read is handled), or a request of the gateway's."""
        if self._out is not None:
            self._out.append(data)
        else:
            self.factory.flush()
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self._out = out = []
        try:
            try:
                frames = self.framer.feed(data)
            except FramingError as e:
                self.log.warn("{who}: {peer} framing error: {err}; closing", who=self.who,
                              peer=self.peer, err=str(e))
                frames = e.frames
                self.closing = True
            for cid, seq, body in frames:
                self.frame(cid, seq, body)
                if self.closing:
                    break
        finally:
            self._out = None
            self.factory.flush()                # recorded before answered
            if out:
                latency = self.config.latency_ms / 1000.0
                if latency and not self.closing:
                    self.factory.reactor.callLater(latency, self._late, b"".join(out))
                else:
                    self.transport.write(b"".join(out))
            if self.closing:
                self.transport.loseConnection()

    def _late(self, data: bytes) -> None:
        if self.transport is not None and self.transport.connected:
            self.transport.write(data)

    def admit(self) -> int:
        """Counts a submit; its injected error (SmscFactory.admit), or -1 to drop the
        connection (``--drop-after``), else 0."""
        f = self.factory
        f.counters["submits"] += 1
        self.submits += 1
        drop = self.config.drop_after
        if drop and self.submits >= drop:
            f.counters["dropped"] += 1
            self.closing = True
            return -1
        return f.admit(int(f.wallclock()))

    def frame(self, cid: int, seq: Any, body: bytes) -> None:
        raise NotImplementedError
