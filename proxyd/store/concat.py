"""Reassembly of concatenated messages sent as separate submit_sm (UDH or SAR TLVs).

Each part is stored in the store and acknowledged with its own proxyd id; when the last part
arrives (on any node) the whole text is judged once, then charged and relayed together
through `Relay.send`. A message still incomplete after `[policy] reassembly_timeout_s`
sends nothing; its outcome is recorded ("incomplete") and, where the client asked for
receipts, each part gets a negative receipt (through the delivery path when present).

Keys (``A`` = account):

    cc:{A}:<src>:<dst>:<ref>:<total>   hash   seq -> "<mid>:<hex body>", "t" -> first seen (ms)
    ccidx                              zset   those keys scored by first seen (for timeouts)
"""
from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.text.reassembly import join_parts

log = Logger(namespace="proxyd.concat")

# KEYS[1] message hash, KEYS[2] index; ARGV: seq, value, total, now_ms, ttl_s
# -> {0, n} stored (n parts so far) | {1, flat hash} complete (hash deleted) | {2, n} duplicate
ADD_PART = """
local added = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HSETNX', KEYS[1], 't', ARGV[4]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
local n = redis.call('HLEN', KEYS[1]) - 1
if n >= tonumber(ARGV[3]) then
  local all = redis.call('HGETALL', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return {1, all}
end
if added == 0 then return {2, n} end
return {0, n}
"""

# KEYS[1] message hash, KEYS[2] index -> flat hash (deleted) or {} if already taken
TAKE = """
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return all
"""

INDEX = "ccidx"


def message_key(account: str, pdu: Any, ref: int, total: int) -> str:
    return "cc:{%s}:%s:%s:%d:%d" % (account, pdu.source_addr.decode("latin-1"),
                                     pdu.destination_addr.decode("latin-1"), ref, total)


def _pairs(flat: list) -> dict:
    out = {}
    for i in range(0, len(flat) - 1, 2):
        k = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
        v = flat[i + 1].decode() if isinstance(flat[i + 1], bytes) else str(flat[i + 1])
        out[k] = v
    return out


class Reassembly(service.Service):
    name = "reassembly"

    def __init__(self, node: Any, store: Any) -> None:
        self.node = node
        self.store = store
        self.reactor = node.reactor
        self.timeout_s = node.cfg.policy.reassembly_timeout_s
        store.register_script("concat_add", ADD_PART)
        store.register_script("concat_take", TAKE)
        self._loop: LoopingCall | None = None
        self.completed = 0
        self.expired = 0

    # --- parts --------------------------------------------------------------------------
    def add_part(self, relay: Any, account: Any, pdu: Any, body: bytes,
                 key: tuple[int, int, int], reply: Any) -> None:
        ref, total, seq = key
        acct = account.system_id
        if total > account.max_parts:
            log.info("refused {acct}: concatenated message of {n} parts over max_parts {m}",
                     acct=acct, n=total, m=account.max_parts)
            reply(C.STATUS["ESME_RINVNUMMSGS"], b"")
            return
        mid = relay.ids.next()
        hkey = message_key(acct, pdu, ref, total)
        value = mid.decode() + ":" + body.hex()
        now_ms = int(self.reactor.seconds() * 1000)
        ttl = int(self.timeout_s * 4) + 60
        d = self.store.evalsha("concat_add", [hkey, INDEX],
                               [seq, value, total, now_ms, ttl])

        def stored(r: list) -> None:
            code = int(r[0])
            reply(0, mid)
            if code == 1:
                self._complete(relay, account, _pairs(r[1]))

        def failed(f: Any) -> None:
            log.warn("store error while keeping a part of {acct}: {err}", acct=acct,
                     err=f.getErrorMessage())
            reply(C.STATUS["ESME_RSYSERR"], b"")

        d.addCallbacks(stored, failed)

    def _parts(self, fields: dict) -> list[tuple[int, bytes, Any, bytes]]:
        parts = []
        for k, v in fields.items():
            if k == "t":
                continue
            mid, _, hexbody = v.partition(":")
            body = bytes.fromhex(hexbody)
            pdu = P.decode_body(C.SUBMIT_SM, 0, 0, body)
            parts.append((int(k), mid.encode(), pdu, body))
        parts.sort(key=lambda x: x[0])
        return parts

    def _complete(self, relay: Any, account: Any, fields: dict) -> None:
        from proxyd.relay import build_message
        from proxyd.text.reassembly import strip_udh
        parts = self._parts(fields)
        self.completed += 1
        first = parts[0][2]
        payloads = []
        for seq, _mid, pdu, _body in parts:
            data = pdu.short_message or pdu.tlv(C.TAG_MESSAGE_PAYLOAD, b"")
            payloads.append((seq, strip_udh(pdu.esm_class, data)))
        text = join_parts(payloads, first.data_coding)
        msg = build_message(account, first, text, parts=len(parts))
        ids = [mid for _s, mid, _p, _b in parts]

        def done(status: int, ok_ids: list, refusal: Any, ok_parts: int) -> None:
            if status == 0:
                return
            why = refusal.reason if refusal is not None else C.status_name(status)
            self._negative(account, parts, why, status, ok_ids if refusal is None else [])

        relay.send(account, msg, [(p, b) for _s, _m, p, b in parts], done, ids=ids)

    def _negative(self, account: Any, parts: list, why: str, status: int,
                  ok_ids: list) -> None:
        """Outcome of a refused/failed/incomplete long message: logged and counted; a
        negative receipt per part that the operator did not take, when receipts exist."""
        log.info("long message of {acct} ({n} parts) not sent: {why}",
                 acct=account.system_id, n=len(parts), why=why)
        delivery = getattr(self.node, "delivery", None)
        if delivery is None or not hasattr(delivery, "own_receipt"):
            return
        taken = set(ok_ids)
        for _seq, mid, pdu, _body in parts:
            if mid in taken or not pdu.registered_delivery & 0x03:
                continue
            stat = "UNDELIV" if why == "incomplete" else "REJECTD"
            delivery.own_receipt(account.system_id, mid, pdu, stat, status)

    # --- timeouts -------------------------------------------------------------------------
    def startService(self) -> None:
        service.Service.startService(self)
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = self.reactor
        self._loop.start(max(0.5, min(5.0, self.timeout_s / 4)), now=False)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def sweep(self) -> Any:
        cutoff = int((self.reactor.seconds() - self.timeout_s) * 1000)
        d = self.store.execute("ZRANGEBYSCORE", INDEX, 0, cutoff, "LIMIT", 0, 100)

        def got(keys: list) -> None:
            for k in keys or ():
                k = k.decode() if isinstance(k, bytes) else k
                self.store.evalsha("concat_take", [k, INDEX], []).addCallbacks(
                    self._expired, lambda f: None, callbackArgs=(k,))

        return d.addCallbacks(got, lambda f: log.warn("reassembly sweep failed: {e}",
                                                      e=f.getErrorMessage()))

    def _expired(self, flat: list, key: str) -> None:
        fields = _pairs(flat or [])
        if len(fields) <= 1:
            return
        self.expired += 1
        acct = key[4:key.index("}")]
        account = self.node.cfg.account(acct)
        if account is None:
            return
        if self.node.ledger is not None:
            self.node.ledger.count_rejected(acct, "incomplete").addErrback(lambda f: None)
        self._negative(account, self._parts(fields), "incomplete",
                       C.STATUS["ESME_RDELIVERYFAILURE"], [])
