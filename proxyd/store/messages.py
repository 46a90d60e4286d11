"""Per-message state (for query_sm, cancel_sm, replace_sm), HTTP receipt settings, and the
durable queue of HTTP receipt callbacks.

Key layout (``A`` = account system_id, ``mid`` = proxyd's message id; every key of an
account carries the hash tag ``{A}``, so the scripts below touch one slot only)::

    msg:{A}:<mid>   string  "state|final_ms|err|upstream|upstream_id|submit_ms", TTL = the
                            receipt TTL. state is the SMPP message_state (1 ENROUTE,
                            2 DELIVERED, 3 EXPIRED, 4 DELETED, 5 UNDELIVERABLE, 6 ACCEPTED,
                            7 UNKNOWN, 8 REJECTED). Written (SET NX) when the operator takes a
                            part with registered_delivery, before its receipt map entry, and
                            updated by every receipt (a final state is never replaced by an
                            intermediate one) and by proxyd's own receipts (which create it).
    dlr:{A}:<mid>   string  the HTTP receipt settings of an HTTP-submitted part (JSON:
                            api, url, mask, level, method, acct, to, from), TTL = receipt TTL.
                            A receipt for such a part goes to its URL *instead of* the SMPP
                            delivery stream (see proxyd.delivery).
    hcb:{A}         zset    pending HTTP callbacks: callback id scored by when it is due (ms).
                            Taken with a lease (score moved to now + lease), so a node that
                            dies mid-call leaves it to another node once the lease passes.
    hcbd:{A}        hash    callback id -> "<settings json>\\n<facts json>"; "<id>#n" ->
                            attempts so far. Deleted with the zset member once answered 2xx or
                            given up.
    enr:{A}         zset    only with ``[delivery] expire_after_s`` > 0: mids of parts the
                            operator took with registered_delivery and no receipt yet, scored
                            by when proxyd gives up waiting (ms). Added by the script that
                            writes the ENROUTE state (only when it created it), removed by
                            every receipt, popped by EXPIRE_LUA (proxyd.delivery then sends
                            its own EXPIRED receipt for those still ENROUTE).
"""
from __future__ import annotations

from importlib import resources

import json
import time
from typing import Any, Sequence

from twisted.internet import defer

__all__ = ["MessageStore", "Record", "STATE", "STATE_NAMES", "FINAL", "msg_key", "dlr_key",
           "cb_key", "cbdata_key", "enr_key"]

# Appendix B stat -> SMPP message_state (5.2.28)
STATE = {"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5,
         "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}
STATE_NAMES = {v: k for k, v in STATE.items()}
FINAL = frozenset((2, 3, 4, 5, 8))


def msg_key(account: str, mid: str) -> str:
    return "msg:{%s}:%s" % (account, mid)


def dlr_key(account: str, mid: str) -> str:
    return "dlr:{%s}:%s" % (account, mid)


def cb_key(account: str) -> str:
    return "hcb:{%s}" % account


def cbdata_key(account: str) -> str:
    return "hcbd:{%s}" % account


def enr_key(account: str) -> str:
    return "enr:{%s}" % account


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


# KEYS[1] enr:{A}, then msg:/dlr: keys of one account; ARGV[1] ttl_s, ARGV[2] due_ms of the
# expiry (0 = expiry off), ARGV[2+i] value of KEYS[1+i]. msg: keys with NX (a receipt may
# have written the state already) and, when expiry is on and the state was created here,
# the mid added to enr:{A}; dlr: keys plainly.
RECORD_LUA = """
local due = tonumber(ARGV[2])
for i = 2, #KEYS do
  if string.sub(KEYS[i], 1, 4) == 'msg:' then
    local ok = redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1], 'NX')
    if ok and due > 0 then
      local mid = string.match(KEYS[i], '^msg:{[^}]*}:(.*)$')
      if mid then redis.call('ZADD', KEYS[1], due, mid) end
    end
  else
    redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
  end
end
return #KEYS - 1
"""

# KEYS[1] enr:{A}; ARGV now_ms, count, msg key prefix ("msg:{A}:"): pops the due mids and
# returns those whose state is still ENROUTE (1); the others had their receipt already.
EXPIRE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, mid in ipairs(due) do
  redis.call('ZREM', KEYS[1], mid)
  local cur = redis.call('GET', ARGV[3] .. mid)
  if cur and string.match(cur, '^([^|]*)') == '1' then
    out[#out + 1] = mid
    out[#out + 1] = cur
  end
end
return out
"""

# The receipts of one account and reactor turn (the operator's, rewritten, or proxyd's own),
# each: the state record updated (a final state is not overwritten by a non-final one),
# then queued as an HTTP callback (dlr: settings exist) or put on the account's stream;
# then (optionally) this node's read of the account's
# stream, in the same atomic step:
# KEYS[1] dlv stream, KEYS[2] hcb, KEYS[3] hcbd, KEYS[4] enr (the part's mid is removed
#      from it: its receipt came), then per receipt i: KEYS[3+2i] msg, KEYS[4+2i] dlr
# ARGV[1] ttl_s, [2] minid, [3] now_ms (also the done time), [4] group, [5] consumer
#      ('' = no read), [6] count, [7] kind, then one per receipt (few arguments: txredisapi
#      encodes each one in Python): "state|err|upstream|upstream id|command id|callback
#      id|mid|body hex"
# -> one string, lines: the entry id per receipt ('' = queued as an HTTP callback), joined
#    by ','; the ids read that this call wrote, joined by ','; then the entries read that
#    others wrote, "id c b k" a line (or "!error" when the read failed). One bulk reply:
#    txredisapi's pure-Python reader pays a pause/resume of the connection (two epoll_ctl)
#    for every bulk element of a pipelined reply.
# An HTTP callback keeps the facts it can be rebuilt from ({"ev":"final", mid, up, smsc_id,
# t, c, hex}); proxyd.delivery.expand_facts turns them into the full facts when it is taken.
RECEIPTS_LUA = """
local function final(s) return s == 2 or s == 3 or s == 4 or s == 5 or s == 8 end
local n = (#KEYS - 4) / 2
local now = tonumber(ARGV[3])
local ids, mine = {}, {}
for i = 1, n do
  local r = {}
  for p in string.gmatch(ARGV[7 + i] .. '|', '([^|]*)|') do r[#r + 1] = p end
  local st = tonumber(r[1])
  local up, uid, sub = r[3], r[4], ''
  local mk, dk = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  redis.call('ZREM', KEYS[4], r[7])
  local keep = false
  local cur = redis.call('GET', mk)
  if cur then
    local f = {}
    for p in string.gmatch(cur .. '|', '([^|]*)|') do f[#f + 1] = p end
    keep = final(tonumber(f[1]) or 0) and not final(st)
    if f[4] and f[4] ~= '' then up = f[4] end
    if f[5] and f[5] ~= '' then uid = f[5] end
    sub = f[6] or ''
  end
  if not keep then
    local fin = ''
    if final(st) then fin = ARGV[3] end
    redis.call('SET', mk, st .. '|' .. fin .. '|' .. r[2] .. '|' .. up .. '|' .. uid
               .. '|' .. sub, 'EX', ARGV[1])
  end
  local dlr = redis.call('GET', dk)
  if dlr then
    local facts = cjson.encode({ev = 'final', mid = r[7], up = r[3], smsc_id = r[4],
                                t = math.floor(now / 1000), c = tonumber(r[5]), hex = r[8]})
    redis.call('HSET', KEYS[3], r[6], dlr .. '\\n' .. facts)
    redis.call('ZADD', KEYS[2], now, r[6])
    ids[i] = ''
  else
    local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', 'c', r[5],
                          'b', r[8], 'k', ARGV[7])
    ids[i] = id
    mine[id] = true
  end
end
local own, other = {}, {}
if ARGV[5] ~= '' then
  local r = redis.pcall('XREADGROUP', 'GROUP', ARGV[4], ARGV[5], 'COUNT', ARGV[6],
                        'STREAMS', KEYS[1], '>')
  if type(r) == 'table' and r.err then
    return table.concat(ids, ',') .. '\\n\\n!' .. r.err
  end
  if r and r[1] then
    for _, e in ipairs(r[1][2]) do
      if mine[e[1]] then
        own[#own + 1] = e[1]
      else
        local c, b, k = nil, nil, 'm'
        local f = e[2] or {}
        for j = 1, #f - 1, 2 do
          if f[j] == 'c' then c = f[j + 1] elseif f[j] == 'b' then b = f[j + 1]
          elseif f[j] == 'k' then k = f[j + 1] end
        end
        if c and b then
          other[#other + 1] = e[1] .. ' ' .. c .. ' ' .. b .. ' ' .. k
        else
          other[#other + 1] = e[1]
        end
      end
    end
  end
end
return table.concat(ids, ',') .. '\\n' .. table.concat(own, ',') .. '\\n'
       .. table.concat(other, '\\n')
"""

# KEYS hcb, hcbd; ARGV now_ms, lease_ms, count -> {id, payload, attempts, ...} now leased
CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(ids) do
  local p = redis.call('HGET', KEYS[2], id)
  if p then
    redis.call('ZADD', KEYS[1], lease, id)
    out[#out + 1] = id
    out[#out + 1] = p
    out[#out + 1] = redis.call('HGET', KEYS[2], id .. '#n') or '0'
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# KEYS hcb, hcbd; ARGV id, payload: queue one callback due now (SMSC-level receipts)
ADD_LUA = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

def mo_parts_key(account: str, source: str, dest: str, ref: int, total: int) -> str:
    return "mocc:{%s}:%s:%s:%d:%d" % (account, source, dest, ref, total)


class Record:
    """The stored state of one message."""

    __slots__ = ("state", "final_ms", "err", "upstream", "upstream_id", "submit_ms",
                 "source", "destination")

    def __init__(self, state: int, final_ms: int, err: str, upstream: str,
                 upstream_id: str, submit_ms: int, source: str = "",
                 destination: str = "") -> None:
        self.state = state
        self.final_ms = final_ms
        self.err = err
        self.upstream = upstream
        self.upstream_id = upstream_id
        self.submit_ms = submit_ms
        self.source = source            # kept until the first receipt rewrites the record
        self.destination = destination

    @classmethod
    def parse(cls, value: Any) -> "Record | None":
        f = _s(value).split("|")
        if len(f) < 6:
            return None
        try:
            return cls(int(f[0]), int(f[1] or 0), f[2], f[3], f[4], int(f[5] or 0),
                       *f[6:8])
        except ValueError:
            return None

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "Record(%s, %s@%s)" % (STATE_NAMES.get(self.state), self.upstream_id,
                                      self.upstream)


def record_value(state: int, upstream: str, upstream_id: str, submit_ms: int,
                 source: str = "", destination: str = "") -> str:
    """The state record; source and destination (kept until the first receipt rewrites the
    record) let an EXPIRED own receipt carry the addresses of the submit."""
    return "%d||000|%s|%s|%d|%s|%s" % (state, upstream, upstream_id, submit_ms,
                                        source.replace("|", ""), destination.replace("|", ""))


def _reassembly_lua() -> str:
    return resources.files("proxyd.store").joinpath("reassembly.lua").read_text("utf-8")


class MessageStore:
    """The keys above over a `proxyd.store.client.Store`."""

    def __init__(self, store: Any, ttl_s: float, clock: Any = None) -> None:
        self.store = store
        self.ttl_s = float(ttl_s)
        self.clock = clock
        for name, src in (("msg_record", RECORD_LUA), ("msg_receipts", RECEIPTS_LUA),
                          ("hcb_claim", CLAIM_LUA),
                          ("hcb_add", ADD_LUA), ("mo_part", _reassembly_lua()),
                          ("msg_expire", EXPIRE_LUA)):
            store.register_script(name, src)

    def now_ms(self) -> int:
        t = self.clock.seconds() if self.clock is not None else time.time()
        return int(t * 1000)

    # --- state ------------------------------------------------------------------------------
    def record(self, account: str, items: Sequence[tuple[str, str]],
               due_ms: int = 0) -> defer.Deferred:
        """One round trip for many (key, value) of one account (msg: and dlr: keys); with
        `due_ms` > 0, the mid of every state created is added to enr:{A} with that score."""
        return self.store.evalsha("msg_record", [enr_key(account)] + [k for k, _ in items],
                                  [max(1, int(self.ttl_s)), int(due_ms)]
                                  + [v for _, v in items])

    def take_expired(self, account: str, count: int) -> defer.Deferred:
        """Deferred[[(mid, source, destination)]]: the parts of `account` whose expiry is
        due and that are still ENROUTE, taken off enr:{A} (one node gets each), with the
        addresses they were submitted with (empty if not recorded)."""
        d = self.store.evalsha("msg_expire", [enr_key(account)],
                               [self.now_ms(), max(1, count), "msg:{%s}:" % account])

        def parse(r: Any) -> list[tuple[str, str, str]]:
            flat = list(r or ())
            out = []
            for i in range(0, len(flat) - 1, 2):
                f = _s(flat[i + 1]).split("|")
                out.append((_s(flat[i]), f[6] if len(f) > 7 else "",
                            f[7] if len(f) > 7 else ""))
            return out
        return d.addCallback(parse)

    def get(self, account: str, mid: str) -> defer.Deferred:
        """Deferred[Record | None]."""
        d = self.store.execute("GET", msg_key(account, mid))
        return d.addCallback(lambda v: None if v is None else Record.parse(v))

    def set_state(self, account: str, mid: str, rec: Record) -> defer.Deferred:
        value = "%d|%s|%s|%s|%s|%d" % (rec.state, rec.final_ms or "", rec.err, rec.upstream,
                                       rec.upstream_id, rec.submit_ms)
        return self.store.execute("SET", msg_key(account, mid), value, "KEEPTTL")

    def receipts(self, account: str, keys: list, args: list, group: str = "",
                 consumer: str = "", count: int = 0, kind: str = "r") -> defer.Deferred:
        """Many receipts of one account in one call (RECEIPTS_LUA): `keys` holds the msg:
        and dlr: key of each receipt, `args` one string per receipt, in order. With a
        `consumer`, the account's stream is then read for it (at most `count` entries).
        Deferred[(entry ids, own ids read, [Entry] others wrote, ids unreadable, read
        error or None)]."""
        from proxyd.store.receipts import stream_key
        head_k = [stream_key(account), cb_key(account), cbdata_key(account),
                  enr_key(account)]
        head_a = [max(1, int(self.ttl_s)), max(0, self.now_ms() - int(self.ttl_s * 1000)),
                  self.now_ms(), group, consumer, max(1, count), kind]
        d = self.store.evalsha("msg_receipts", head_k + keys, head_a + args)

        def parse(reply: Any) -> tuple:
            from proxyd.store.receipts import lines_entries
            ids, own, rest = _s(reply).split("\n", 2)
            err = rest[1:] if rest.startswith("!") else None
            entries, gone = ([], []) if err is not None else lines_entries(rest)
            return ids.split(","), own.split(",") if own else [], entries, gone, err
        return d.addCallback(parse)

    # --- HTTP callbacks ---------------------------------------------------------------------
    def add_callback(self, account: str, cb_id: str, settings_json: str,
                     facts: dict) -> defer.Deferred:
        payload = settings_json + "\n" + json.dumps(facts, separators=(",", ":"))
        return self.store.evalsha("hcb_add", [cb_key(account), cbdata_key(account)],
                                  [cb_id, payload, self.now_ms()])

    def add_mo_part(self, account: str, parts_key: str, seq: int, payload: bytes,
                    total: int, ttl_s: int, cb_id: str, settings_json: str,
                    facts: dict, data_coding: int = 0) -> defer.Deferred:
        """One part of a concatenated MO for a mo_url (the reassembly script of
        `proxyd/store/reassembly.lua`); `facts`
        must not hold "hexparts". Deferred[(code, n or "seq:hex,...")]: 0 stored,
        2 duplicate, 3 conflicting total, 4 another data_coding, 1 complete (the parts
        taken and the callback `cb_id` queued)."""
        prefix = settings_json + "\n" + json.dumps(facts, separators=(",", ":"))[:-1]
        d = self.store.evalsha("mo_part", [parts_key, cb_key(account), cbdata_key(account)],
                               [seq, payload.hex(), total, self.now_ms(), max(1, int(ttl_s)),
                                data_coding, cb_id, prefix])
        return d.addCallback(lambda r: (int(r[0]), _s(r[1]) if int(r[0]) == 1 else int(r[1])))

    def claim(self, account: str, lease_s: float, count: int) -> defer.Deferred:
        """Deferred[[(id, settings dict, facts dict, attempts)]], leased for `lease_s`."""
        d = self.store.evalsha("hcb_claim", [cb_key(account), cbdata_key(account)],
                               [self.now_ms(), int(lease_s * 1000), max(1, count)])

        def parse(flat: Any) -> list:
            out = []
            flat = list(flat or ())
            for i in range(0, len(flat) - 2, 3):
                settings, _, facts = _s(flat[i + 1]).partition("\n")
                try:
                    out.append((_s(flat[i]), json.loads(settings), json.loads(facts),
                                int(_s(flat[i + 2]))))
                except ValueError:
                    out.append((_s(flat[i]), None, None, 0))
            return out
        return d.addCallback(parse)

    def callback_done(self, account: str, cb_id: str) -> defer.Deferred:
        d1 = self.store.execute("ZREM", cb_key(account), cb_id)
        d2 = self.store.execute("HDEL", cbdata_key(account), cb_id, cb_id + "#n")
        return defer.gatherResults([d1, d2], consumeErrors=True)

    def callback_retry(self, account: str, cb_id: str, due_ms: int) -> defer.Deferred:
        d1 = self.store.execute("HINCRBY", cbdata_key(account), cb_id + "#n", 1)
        d2 = self.store.execute("ZADD", cb_key(account), due_ms, cb_id)
        return defer.gatherResults([d1, d2], consumeErrors=True)

    def pending_callbacks(self, account: str) -> defer.Deferred:
        return self.store.execute("ZCARD", cb_key(account)).addCallback(int)
