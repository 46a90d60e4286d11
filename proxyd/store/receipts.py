"""The receipt map and the per-account durable delivery queues.

Key layout (``U`` = upstream name, ``A`` = account system_id)::

    rmap:{U}:<id>   string   "A|proxyd_mid" for an upstream message id in its normalised form
                             (``proxyd.delivery.text.normalise_upstream_id(...)[0]``); TTL ``ttl_s``
                             (72 h by default). Keyed per upstream (and hash-tagged by it, so
                             one MGET can ask for every form of an id in Redis Cluster).
    dlv:{A}         stream   deliveries waiting for a receiver bind of A: fields
                             ``c`` command id (deliver_sm / data_sm, decimal), ``b`` the PDU
                             body (hex: no binary through txredisapi's utf-8 decoding), ``k``
                             "r" receipt / "m" MO. Entries older than ``ttl_s`` are trimmed
                             by each XADD (MINID ~), acknowledged or not.

One consumer group (``GROUP`` = "proxyd") per stream, created at id 0 (MKSTREAM), so entries
written before any receiver was ever bound are delivered too. Every node holding a receiver
bind of A is a consumer of ``dlv:{A}`` under a name stable across its restarts; it reads new
entries with XREADGROUP ">", its own pending ones with "0" when it starts consuming, touches
(XCLAIM JUSTID) the entries it holds so no other node takes them, and takes over entries left
idle by a node that died (XAUTOCLAIM). A delivery the client answered OK is XACKed and XDELed.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from twisted.internet import defer
from twisted.logger import Logger

from proxyd.store.client import StoreError

__all__ = ["ReceiptStore", "Entry", "GROUP", "DEFAULT_TTL_S", "rmap_key", "stream_key"]

log = Logger(namespace="proxyd.store.receipts")

GROUP = "proxyd"
DEFAULT_TTL_S = 72 * 3600.0
RECEIPT, MO = "r", "m"


# KEYS[1] stream; ARGV group, consumer, ids...: reset the idle time of the ids that are in
# this consumer's pending list, atomically (a plain XCLAIM would take them from anyone)
TOUCH_LUA = """
local ours = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if p[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    ours[#ours + 1] = ARGV[i]
  end
end
return ours
"""


# KEYS rmap keys of one upstream; ARGV[1] ttl_s, ARGV[1+i] value of KEYS[i]
REMEMBER_LUA = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


# KEYS[1] stream; ARGV group, the ids joined by ',' (one argument: cheaper to send):
# delivered, out of the pending list and the stream
ACK_LUA = """
local ids = {}
for id in string.gmatch(ARGV[2], '[^,]+') do ids[#ids + 1] = id end
local n = 0
for i = 1, #ids, 500 do
  local last = math.min(#ids, i + 499)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, i, last))
  n = n + redis.call('XDEL', KEYS[1], unpack(ids, i, last))
end
return n
"""


# KEYS the rmap keys of several receipts of one upstream (every form of each id); ARGV the
# number of forms of each receipt -> one string: per receipt the first value found, or '',
# joined by '\n' (one bulk reply, see proxyd.store.messages.RECEIPTS_LUA)
LOOKUP_LUA = """
local out = {}
local k = 1
for i = 1, #ARGV do
  local hit = ''
  for j = 1, tonumber(ARGV[i]) do
    if hit == '' then
      local v = redis.call('GET', KEYS[k])
      if v then hit = v end
    end
    k = k + 1
  end
  out[i] = hit
end
return table.concat(out, '\\n')
"""


# KEYS[1] stream; ARGV group, consumer, count, start (">" new entries, or an id: this
# consumer's pending ones after it) -> one string, an entry a line: "id c b k", or "id"
# alone for an entry deleted meanwhile (one bulk reply, not seven per entry: see
# proxyd.store.messages.RECEIPTS_LUA)
READ_LUA = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], ARGV[4])
local out = {}
if r and r[1] then
  for _, e in ipairs(r[1][2]) do
    local f = e[2]
    local c, b, k = nil, nil, 'm'
    if f then
      for j = 1, #f - 1, 2 do
        if f[j] == 'c' then c = f[j + 1] elseif f[j] == 'b' then b = f[j + 1]
        elseif f[j] == 'k' then k = f[j + 1] end
      end
    end
    if c and b then
      out[#out + 1] = e[1] .. ' ' .. c .. ' ' .. b .. ' ' .. k
    else
      out[#out + 1] = e[1]
    end
  end
end
return table.concat(out, '\\n')
"""


def lines_entries(text: str) -> tuple[list[Entry], list[str]]:
    """READ_LUA's reply -> (entries, ids of deleted/unreadable entries)."""
    good: list[Entry] = []
    gone: list[str] = []
    for line in text.split("\n") if text else ():
        f = line.split(" ")
        if len(f) != 4:
            gone.append(f[0])
            continue
        try:
            good.append(Entry(f[0], int(f[1]), bytes.fromhex(f[2]), f[3]))
        except ValueError:
            log.warn("unreadable delivery entry {id}; dropped", id=f[0])
            gone.append(f[0])
    return good, gone


def rmap_key(upstream: str, upstream_id: str) -> str:
    return "rmap:{%s}:%s" % (upstream, upstream_id)


def stream_key(account: str) -> str:
    return "dlv:{%s}" % account


def _s(v: Any) -> str:
    return v.decode("latin-1") if isinstance(v, bytes) else str(v)


class Entry:
    """One stream entry: what to send to a client, and where it stands on this node."""

    __slots__ = ("id", "command_id", "body", "kind", "attempts", "not_before", "sort")

    def __init__(self, entry_id: str, command_id: int, body: bytes, kind: str) -> None:
        self.id = entry_id
        self.command_id = command_id
        self.body = body
        self.kind = kind
        self.attempts = 0
        self.not_before = 0.0
        ms, _, seq = entry_id.partition("-")
        self.sort = (int(ms), int(seq or 0))

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "Entry(%s, 0x%x, %s)" % (self.id, self.command_id, self.kind)


def _entries(raw: Any) -> tuple[list[Entry], list[str]]:
    """[[id, [f, v, ...]], ...] -> (entries, ids of deleted/unreadable entries)."""
    good: list[Entry] = []
    gone: list[str] = []
    for item in raw or ():
        eid = _s(item[0])
        fields = item[1]
        if not fields:
            gone.append(eid)
            continue
        d = {_s(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
        try:
            good.append(Entry(eid, int(_s(d["c"])), bytes.fromhex(_s(d["b"])),
                              _s(d.get("k", MO))))
        except (KeyError, ValueError):
            log.warn("unreadable delivery entry {id}; dropped", id=eid)
            gone.append(eid)
    return good, gone


class ReceiptStore:
    """Receipt map and delivery streams over a `proxyd.store.client.Store`."""

    def __init__(self, store: Any, ttl_s: float = DEFAULT_TTL_S, clock: Any = None) -> None:
        self.store = store
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self.map_write_errors = 0
        self._groups: set[str] = set()
        self._registered = False

    def _now_ms(self) -> int:
        t = self.clock.seconds() if self.clock is not None else time.time()
        return int(t * 1000)

    # --- receipt map ------------------------------------------------------------------------
    def remember(self, upstream: str, upstream_id: str, account: str,
                 mid: bytes) -> defer.Deferred:
        """Map (upstream, upstream id) to (account, proxyd id); failures are logged and
        counted here (the Deferred never fails: wait on it, or not). Calls made in one
        reactor turn go out together on the pool's connections (pipelined)."""
        value = "%s|%s" % (account, mid.decode("latin-1"))
        d = self.store.execute("SET", rmap_key(upstream, upstream_id), value, "EX",
                               max(1, int(self.ttl_s)))
        return d.addErrback(self._map_failed, upstream, upstream_id)

    def remember_many(self, upstream: str,
                      items: Sequence[tuple[str, str, bytes]]) -> defer.Deferred:
        """`remember` for many (upstream id, account, mid) of one upstream: one script call
        (the keys share the upstream's hash tag)."""
        if len(items) == 1:
            uid, account, mid = items[0]
            return self.remember(upstream, uid, account, mid)
        self._register()
        keys = [rmap_key(upstream, uid) for uid, _a, _m in items]
        args = [max(1, int(self.ttl_s))] + ["%s|%s" % (a, m.decode("latin-1"))
                                            for _u, a, m in items]
        d = self.store.evalsha("rmap_set", keys, args)
        return d.addErrback(self._map_failed, upstream, "%s (+%d more)" % (
            items[0][0], len(items) - 1))

    def _map_failed(self, f: Any, upstream: str, upstream_id: str) -> None:
        self.map_write_errors += 1
        log.warn("receipt map write for {up}:{id} failed: {err}; its receipt will be "
                 "unknown", up=upstream, id=upstream_id, err=f.getErrorMessage())

    def lookup(self, upstream: str, keys: Sequence[str]) -> defer.Deferred:
        """Deferred[(account, mid: bytes) | None] for the first of `keys` (the forms of an
        upstream id) that is mapped."""
        d = self.store.execute("MGET", *[rmap_key(upstream, k) for k in keys])

        def found(values: Any) -> tuple[str, bytes] | None:
            for v in values or ():
                if v is None:
                    continue
                account, sep, mid = _s(v).partition("|")
                if sep:
                    return account, mid.encode("latin-1")
            return None
        return d.addCallback(found)

    def lookup_many(self, upstream: str, forms: Sequence[Sequence[str]]) -> defer.Deferred:
        """`lookup` for many receipts of one upstream in one call (LOOKUP_LUA; the keys
        share the upstream's hash tag): Deferred[[(account, mid: bytes) | None per
        receipt]]."""
        self._register()
        keys = [rmap_key(upstream, k) for ks in forms for k in ks]
        d = self.store.evalsha("rmap_get", keys, [len(ks) for ks in forms])

        def found(reply: Any) -> list:
            out: list = []
            for v in _s(reply or "").split("\n"):
                account, sep, mid = v.partition("|")
                out.append((account, mid.encode("latin-1")) if sep else None)
            return out
        return d.addCallback(found)

    # --- delivery streams -------------------------------------------------------------------
    def enqueue(self, account: str, command_id: int, body: bytes, kind: str) -> defer.Deferred:
        """Deferred[entry id] once the delivery is in the account's stream (durable as the
        server's append-only file is)."""
        minid = max(0, self._now_ms() - int(self.ttl_s * 1000))
        return self.store.execute("XADD", stream_key(account), "MINID", "~", minid, "*",
                                  "c", command_id, "b", body.hex(), "k", kind
                                  ).addCallback(_s)

    def ensure_group(self, account: str) -> defer.Deferred:
        if account in self._groups:
            return defer.succeed(None)

        def busy(f: Any) -> None:
            if f.check(StoreError) and "BUSYGROUP" in f.getErrorMessage():
                return None
            return f

        def made(_: Any) -> None:
            self._groups.add(account)

        d = self.store.execute("XGROUP", "CREATE", stream_key(account), GROUP, "0",
                               "MKSTREAM")
        return d.addErrback(busy).addCallback(made)

    def has_group(self, account: str) -> bool:
        """True once this store made (or found) the account's consumer group."""
        return account in self._groups

    def forget_group(self, account: str) -> None:
        """The group is gone (NOGROUP): `ensure_group` makes it again."""
        self._groups.discard(account)

    def read(self, account: str, consumer: str, count: int, history: bool = False,
             after: str = "0") -> defer.Deferred:
        """Deferred[(entries, gone ids)]: new entries for `consumer` (">"), or with
        `history` the ones it already holds (its pending entries list) after id `after`."""
        self._register()
        d = self.store.evalsha("dlv_read", [stream_key(account)],
                               [GROUP, consumer, max(1, count), after if history else ">"])

        def parse(reply: Any) -> tuple[list[Entry], list[str]]:
            return lines_entries(_s(reply or ""))

        def nogroup(f: Any) -> Any:
            if f.check(StoreError) and "NOGROUP" in f.getErrorMessage():
                self._groups.discard(account)   # the stream was deleted: make it again
            return f
        return d.addCallbacks(parse, nogroup)

    def claim_idle(self, account: str, consumer: str, min_idle_s: float,
                   count: int) -> defer.Deferred:
        """Deferred[(entries, gone ids)]: pending entries of any consumer idle for longer
        than `min_idle_s` (a node that died, a client that never answered), now ours."""
        d = self.store.execute("XAUTOCLAIM", stream_key(account), GROUP, consumer,
                               int(min_idle_s * 1000), "0-0", "COUNT", max(1, count))

        def parse(reply: Any) -> tuple[list[Entry], list[str]]:
            if not reply or len(reply) < 2:
                return [], []
            good, gone = _entries(reply[1])
            if len(reply) > 2 and reply[2]:
                gone.extend(_s(x) for x in reply[2])
            return good, gone
        return d.addCallback(parse)

    def touch(self, account: str, consumer: str, ids: Sequence[str]) -> defer.Deferred:
        """Reset the idle time of entries this consumer still holds (never taking one from
        another consumer); Deferred[set of ids still ours] (an id missing was taken over by
        another node, or acknowledged, or trimmed)."""
        if not ids:
            return defer.succeed(set())
        self._register()
        d = self.store.evalsha("dlv_touch", [stream_key(account)], [GROUP, consumer, *ids])
        return d.addCallback(lambda reply: {_s(x) for x in reply or ()})

    def _register(self) -> None:
        if not self._registered:
            self.store.register_script("dlv_touch", TOUCH_LUA)
            self.store.register_script("rmap_set", REMEMBER_LUA)
            self.store.register_script("dlv_ack", ACK_LUA)
            self.store.register_script("rmap_get", LOOKUP_LUA)
            self.store.register_script("dlv_read", READ_LUA)
            self._registered = True

    def ack(self, account: str, ids: Sequence[str]) -> defer.Deferred:
        """Delivered: out of the pending list and out of the stream."""
        self._register()
        return self.store.evalsha("dlv_ack", [stream_key(account)], [GROUP, ",".join(ids)])

    def backlog(self, account: str) -> defer.Deferred:
        """Deferred[int]: entries in the account's stream (delivered ones are deleted)."""
        return self.store.execute("XLEN", stream_key(account)).addCallback(int)
