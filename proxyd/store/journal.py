"""The message journal: one hash-chained record per event, per account and day.

The records are written by the ledger's Lua scripts (`proxyd.store.ledger`), in the same
atomic step as the money or state they record. This module knows their format and reads them:
decoding, chain verification, trace, the reconciliation report. Everything here is a pure
function of the records (plus the day's counters and the open reservations) so that the
synchronous admin tool and the Twisted HTTP report compute the same figures.

Stream ``journal:{A}:D`` (A = account, D = YYYYMMDD local time). Each stream entry holds the
records written by one Lua call (one or many: the relay's calls carry the records of a few
milliseconds of traffic), in two fields only (cheap for the server)::

    d   record [\n record ...]
        record = ts|event|n|amount|balance_after|<len>:msg_id|<len>:note
    h   sha1hex(prev_h .. enc(account) .. d)

(numbers in decimal, event a lower-case word, msg_id and note prefixed by their length in
bytes so any byte may appear in them, which also makes each record self-delimiting;
``enc(s) = <byte length>:s,``) with ``prev_h`` the h of the previous entry of the same
account and day ("" for the first) and ``jhead:{A}`` (hash D -> h) the head of each day's
chain, so deleting the last entries of a day is noticed too. ts is ms since the epoch; n is
the number of parts the record is about (1 for per-part events, the parts of the message for
a rejection). One XADD and one hash per call instead of per record: the journal costs the
server a third of what it did.

Events and what they do to the balance (``DELTA``):

    reserved     -amount  a part was reserved (charged provisionally) before relaying;
                          note "to=NUMBER" (the normalised destination) when known
    committed       0     the upstream accepted the part; note "up=NAME id=UPSTREAM_ID"
    refunded     +amount  the upstream refused it, or its outcome never came (note
                          "outcome unknown", by the sweeper), or it was a part of a long
                          message reserved whole with its first part and never relayed:
                          note "released incomplete" (its other parts never came) or
                          "released <reason>" (refused once whole); the report counts
                          those parts as refused for that reason
    rejected        0     refused before charging; note = reason (optout, content, ...)
                          and "to=NUMBER" when known, n = parts
    topup        +amount  adjust  +amount (signed)  refund_all  -amount
    any other       0     state events without money: received, relayed, receipt (note
                          "STATE ERR", e.g. "DELIVRD 000"), receipt_delivered,
                          negative_receipt, ...; written with `Ledger.journal_event`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["Record", "decode", "encode", "chain_hash", "verify", "Break", "DELTA",
           "MONEY_EVENTS", "Report", "build_report", "trace", "records_from_stream",
           "FINAL_DELIVERED", "UNKNOWN_OUTCOME"]

UNKNOWN_OUTCOME = "outcome unknown"
# the note of a long message's reservations given back before it was relayed: it never
# completed ("released incomplete"), or the gate refused it once whole ("released <reason>")
RELEASED = "released "
FIELDS = ("ts", "event", "msg_id", "n", "amount", "balance_after", "note")
MONEY_EVENTS = {"reserved": "reserve", "committed": "commit", "refunded": "refund",
                "topup": "topup", "adjust": "adjust", "refund_all": "refund_all"}
FINAL_DELIVERED = ("DELIVRD",)
FINAL_UNDELIVERED = ("UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN")


def _enc(s: bytes) -> bytes:
    return b"%d:%s," % (len(s), s)


def encode(ts: int, event: str, msg_id: str, n: int, amount: int, balance_after: int,
           note: str) -> str:
    """The `d` field of a record (what the Lua scripts write)."""
    return "%d|%s|%d|%d|%d|%d:%s|%d:%s" % (ts, event, n, amount, balance_after,
                                           len(msg_id.encode("utf-8")), msg_id,
                                           len(note.encode("utf-8")), note)


def chain_hash(prev: str, account: str, d: str) -> str:
    return hashlib.sha1(prev.encode() + _enc(account.encode("utf-8"))
                        + d.encode("utf-8")).hexdigest()


@dataclass
class Record:
    id: str                 # stream entry id
    ts: int
    event: str
    msg_id: str
    n: int
    amount: int
    balance_after: int
    note: str
    h: str                  # the hash of the whole stream entry
    d: str                  # this record's text (the entry's d is its records joined by \n)
    account: str = ""
    day: str = ""
    sub: int = 0            # position in its stream entry

    @property
    def delta(self) -> int:
        return DELTA.get(self.event, _zero)(self.amount)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "account": self.account, "day": self.day, "ts": self.ts,
                "event": self.event, "msg_id": self.msg_id, "n": self.n,
                "amount": self.amount, "balance_after": self.balance_after,
                "note": self.note, "h": self.h, "sub": self.sub}


def _zero(a: int) -> int:
    return 0


DELTA = {"reserved": lambda a: -a, "refunded": lambda a: a, "topup": lambda a: a,
         "adjust": lambda a: a, "refund_all": lambda a: -a}


class DecodeError(ValueError):
    pass


def decode(d: str) -> list[str]:
    """The 7 fields (ts, event, msg_id, n, amount, balance_after, note) of a record's `d`;
    DecodeError if it is not well formed."""
    b = d.encode("utf-8")
    head = b.split(b"|", 5)
    if len(head) != 6:
        raise DecodeError("too few fields")
    ts, event, n, amount, bal, rest = head
    for x in (ts, n, amount, bal):
        if not x.lstrip(b"-").isdigit():
            raise DecodeError("not a number: %r" % x)
    strings = []
    for last in (False, True):
        colon = rest.find(b":")
        if colon < 0 or not rest[:colon].isdigit():
            raise DecodeError("bad length")
        end = colon + 1 + int(rest[:colon])
        if end > len(rest) or (not last and rest[end:end + 1] != b"|") or (
                last and end != len(rest)):
            raise DecodeError("bad field length")
        strings.append(rest[colon + 1:end].decode("utf-8"))
        rest = rest[end + 1:]
    return [ts.decode(), event.decode(), strings[0], n.decode(), amount.decode(),
            bal.decode(), strings[1]]


def split_entry(d: str) -> list[str]:
    """The records of one stream entry's `d`, in order; DecodeError if it is not a
    sequence of well-formed records separated by newlines."""
    if "\n" not in d:
        return [d]
    b = d.encode("utf-8")
    out, pos, end = [], 0, len(b)
    while True:
        p = pos
        for _ in range(5):
            p = b.find(b"|", p) + 1
            if not p:
                raise DecodeError("too few fields")
        for last in (False, True):
            c = b.find(b":", p)
            if c < 0 or not b[p:c].isdigit():
                raise DecodeError("bad length")
            p = c + 1 + int(b[p:c])
            if not last:
                if b[p:p + 1] != b"|":
                    raise DecodeError("bad field length")
                p += 1
        if p > end:
            raise DecodeError("bad field length")
        out.append(b[pos:p].decode("utf-8"))
        if p == end:
            return out
        if b[p:p + 1] != b"\n":
            raise DecodeError("records not separated by a newline")
        pos = p + 1


def _fields(flat: Any) -> dict[str, str]:
    if isinstance(flat, Mapping):
        items = list(flat.items())
    else:
        flat = flat or []
        items = [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
    return {(k.decode() if isinstance(k, bytes) else str(k)):
            (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for k, v in items}


def records_from_stream(reply: Any, account: str = "", day: str = "",
                        reverse: bool = False) -> list[Record]:
    """XRANGE reply ([[id, [f, v, ...] or {f: v}], ...]) -> Records, each entry's in
    order (`reverse`: in reverse order, for an XREVRANGE reply). An entry that does not
    decode is kept as one record with event "?" (verify names it)."""
    out = []
    for item in reply or []:
        entry_id = item[0].decode() if isinstance(item[0], bytes) else str(item[0])
        f = _fields(item[1])
        d, h = f.get("d", ""), f.get("h", "")
        try:
            recs = []
            for i, rd in enumerate(split_entry(d)):
                ts, event, msg_id, n, amount, bal, note = decode(rd)
                recs.append(Record(entry_id, int(ts), event, msg_id, int(n), int(amount),
                                   int(bal), note, h, rd, account, day, i))
        except (DecodeError, ValueError):
            recs = [Record(entry_id, 0, "?", "", 0, 0, 0, "", h, d, account, day)]
        if reverse:
            recs.reverse()
        out += recs
    return out


@dataclass
class Break:
    """Where a day's chain breaks."""
    index: int              # position in the day (0-based); len(records) for a missing tail
    entry_id: str
    msg_id: str
    reason: str

    def __str__(self) -> str:
        return "record %d (stream id %s%s): %s" % (
            self.index + 1, self.entry_id or "-",
            ", msg %s" % self.msg_id if self.msg_id else "", self.reason)


def verify(account: str, records: Sequence[Record], head: str | None) -> Break | None:
    """Check one day of one account: every record's hash, and the last one against the
    day's head in ``jhead`` (None: no head stored). None if the chain is intact."""
    prev = ""
    i, total = 0, len(records)
    while i < total:
        r = records[i]
        j = i + 1      # the records of one stream entry are checked together
        while j < total and records[j].id == r.id:
            j += 1
        if r.event == "?":
            return Break(i, r.id, "", "the record is malformed (edited by hand?)")
        d = r.d if j == i + 1 else "\n".join([x.d for x in records[i:j]])
        if chain_hash(prev, account, d) != r.h:
            if i and chain_hash("", account, d) == r.h:
                why = "its content is intact but it does not follow the record before it"
            else:
                why = ("hash mismatch: this record was edited, or the one before it was "
                       "deleted or edited")
            return Break(i, r.id, r.msg_id, why)
        prev = r.h
        i = j
    if (head or "") != prev:
        if head and not records:
            return Break(0, "", "", "the day's head says there were records, none are left")
        return Break(len(records), records[-1].id if records else "", "",
                     "the chain ends before the day's head: the last record(s) after this "
                     "one were deleted, or the head was altered")
    return None


# --- trace ----------------------------------------------------------------------------------

def trace(records: Iterable[Record], msg_ids: set[str] | None = None) -> list[Record]:
    """The records of the given msg ids (all if None), in time order."""
    sel = [r for r in records if msg_ids is None or r.msg_id in msg_ids]
    sel.sort(key=lambda r: (r.ts, _id_key(r.id), r.sub))
    return sel


def _id_key(entry_id: str) -> tuple[int, int]:
    a, _, b = entry_id.partition("-")
    try:
        return int(a), int(b or 0)
    except ValueError:
        return 0, 0


# --- reconciliation -------------------------------------------------------------------------

@dataclass
class Report:
    account: str
    days: list[str]
    price: int
    submitted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    relayed: int = 0                # reserved parts whose outcome came in the period
    accepted: int = 0               # committed by the upstream
    upstream_refused: int = 0       # refunded after an upstream error (or no route)
    unknown_outcome: int = 0        # refunded by the sweeper: no answer ever came
    released: int = 0               # long messages' parts given back, never relayed
                                    # (also in `refused`, by reason)
    pending: int = 0                # reserved in the period, not settled in it
    carried_in: int = 0             # settled in the period, reserved before it
    delivered: int = 0
    undelivered: int = 0
    charged: int = 0
    refunded: int = 0               # amount given back for parts
    reserved_amount: int = 0
    topups: int = 0
    adjustments: int = 0
    refund_all: int = 0
    balance_start: int | None = None
    balance_end: int | None = None
    records: int = 0
    failures: list[str] = field(default_factory=list)
    offending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account, "from": self.days[0] if self.days else None,
            "to": self.days[-1] if self.days else None, "price": self.price,
            "parts": {"submitted": self.submitted, "refused": sum(self.refused.values()),
                      "refused_by_reason": dict(sorted(self.refused.items())),
                      "relayed": self.relayed, "accepted_by_upstream": self.accepted,
                      "refused_by_upstream": self.upstream_refused,
                      "outcome_unknown": self.unknown_outcome,
                      "released_unrelayed": self.released, "pending": self.pending,
                      "carried_in": self.carried_in, "delivered": self.delivered,
                      "undelivered": self.undelivered},
            "amounts": {"charged": self.charged, "refunded": self.refunded,
                        "reserved": self.reserved_amount, "topups": self.topups,
                        "adjustments": self.adjustments, "refund_all": self.refund_all,
                        "balance_start": self.balance_start,
                        "balance_end": self.balance_end},
            "identities": self.identities(), "ok": self.ok, "failures": self.failures,
            "offending_ids": self.offending,
        }

    def identities(self) -> list[dict[str, Any]]:
        refused = sum(self.refused.values())
        out = [
            {"name": "submitted = refused + relayed + pending",
             "left": self.submitted, "right": refused + self.relayed - self.carried_in
             + self.pending, "detail": "%d = %d + (%d - %d carried in) + %d" % (
                 self.submitted, refused, self.relayed, self.carried_in, self.pending)},
            {"name": "charged = price x accepted by upstream",
             "left": self.charged, "right": self.price * self.accepted,
             "detail": "%d = %d x %d" % (self.charged, self.price, self.accepted)},
        ]
        if self.balance_start is not None and self.balance_end is not None:
            right = (self.balance_start + self.topups + self.adjustments - self.refund_all
                     - self.reserved_amount + self.refunded)
            out.append({"name": "balance start + top-ups + adjustments - refund_all "
                                "- reserved + refunds = balance end",
                        "left": self.balance_end, "right": right,
                        "detail": "%d + %d + %d - %d - %d + %d = %d (end %d; reserved = "
                                  "charged %d + refunded + pending)" % (
                                      self.balance_start, self.topups, self.adjustments,
                                      self.refund_all, self.reserved_amount, self.refunded,
                                      right, self.balance_end, self.charged)})
        for i in out:
            i["holds"] = i["left"] == i["right"]
        return out


def _receipt_state(note: str) -> str:
    return note.split(" ", 1)[0].upper()


def build_report(account: str, price: int, days: Sequence[str],
                 records_by_day: Mapping[str, Sequence[Record]],
                 stats_by_day: Mapping[str, Mapping[str, int]],
                 open_reservations: Mapping[str, int],
                 later_settled: set[str] = frozenset(),  # type: ignore[assignment]
                 heads: Mapping[str, str | None] | None = None) -> Report:
    """The figures of `days` (oldest first) and the checks of issue 8.

    `open_reservations`: the account's open reservations now (msg_id -> amount);
    `later_settled`: ids settled after the period (so a part still pending at its end is
    explained); `heads`: the day's chain heads, to verify the chain as part of the report."""
    rep = Report(account, list(days), price)
    reserved: dict[str, Record] = {}
    settled: dict[str, Record] = {}
    prev_bal: int | None = None
    bad: list[str] = []

    def fail(msg: str, ids: Iterable[str] = ()) -> None:
        rep.failures.append(msg)
        for i in ids:
            if i and i not in rep.offending:
                rep.offending.append(i)

    for day in days:
        recs = records_by_day.get(day, [])
        if heads is not None:
            brk = verify(account, recs, heads.get(day))
            if brk is not None:
                fail("journal %s broken at %s" % (day, brk), [brk.msg_id])
        counted: dict[str, int] = {}

        def cnt(k: str, v: int) -> None:
            counted[k] = counted.get(k, 0) + v
        for r in recs:
            rep.records += 1
            if r.event == "?":
                continue
            if prev_bal is None:
                rep.balance_start = r.balance_after - r.delta
            elif r.balance_after != prev_bal + r.delta:
                fail("balance jumps at %s %s (%s): %d + %d != %d" % (
                    day, r.id, r.event, prev_bal, r.delta, r.balance_after), [r.msg_id])
            prev_bal = r.balance_after
            e = r.event
            if e == "reserved":
                if r.msg_id in reserved:
                    fail("%s reserved twice" % r.msg_id, [r.msg_id])
                reserved[r.msg_id] = r
                rep.submitted += 1
                rep.reserved_amount += r.amount
                cnt("submitted", 1)
                cnt("reserved", 1)
            elif e in ("committed", "refunded"):
                if r.msg_id in settled:
                    fail("%s settled twice" % r.msg_id, [r.msg_id])
                settled[r.msg_id] = r
                held_back = e == "refunded" and r.note.startswith(RELEASED)
                if held_back and r.msg_id in reserved:
                    # a part reserved with its long message and given back unrelayed: a
                    # refusal of the message (its reason after "released "), not a relay
                    why = r.note[len(RELEASED):].split(" ", 1)[0] or "released"
                    rep.refused[why] = rep.refused.get(why, 0) + 1
                    rep.released += 1
                else:
                    rep.relayed += 1
                if r.msg_id not in reserved:
                    rep.carried_in += 1
                elif r.amount != reserved[r.msg_id].amount:
                    fail("%s settled for %d, reserved %d" % (
                        r.msg_id, r.amount, reserved[r.msg_id].amount), [r.msg_id])
                if e == "committed":
                    rep.accepted += 1
                    rep.charged += r.amount
                    cnt("committed", 1)
                    cnt("charged", r.amount)
                    if r.amount != price:
                        bad.append(r.msg_id)
                else:
                    rep.refunded += r.amount
                    if r.note == UNKNOWN_OUTCOME:
                        rep.unknown_outcome += 1
                    elif held_back:
                        if r.msg_id not in reserved:
                            rep.released += 1
                    else:
                        rep.upstream_refused += 1
                    cnt("refunded", 1)
                    cnt("refunded_amount", r.amount)
            elif e == "rejected":
                reason = r.note.split(" ", 1)[0]
                rep.submitted += r.n
                rep.refused[reason] = rep.refused.get(reason, 0) + r.n
                cnt("submitted", r.n)
                cnt("rejected:" + reason, r.n)
            elif e == "topup":
                rep.topups += r.amount
                cnt("topup", r.amount)
            elif e == "adjust":
                rep.adjustments += r.amount
                cnt("adjust", r.amount)
            elif e == "refund_all":
                rep.refund_all += r.amount
                cnt("refund_all", r.amount)
            elif e == "receipt":
                st = _receipt_state(r.note)
                if st in FINAL_DELIVERED:
                    rep.delivered += 1
                elif st in FINAL_UNDELIVERED:
                    rep.undelivered += 1
        stats = {k: int(v) for k, v in (stats_by_day.get(day) or {}).items()}
        keys = set(stats) | set(counted)
        diff = sorted(k for k in keys if stats.get(k, 0) != counted.get(k, 0))
        if diff:
            fail("%s: daily counters disagree with the journal: %s" % (day, ", ".join(
                "%s counter %d journal %d" % (k, stats.get(k, 0), counted.get(k, 0))
                for k in diff)))
    rep.balance_end = prev_bal
    for mid, r in reserved.items():
        if mid in settled:
            continue
        if mid in open_reservations or mid in later_settled:
            rep.pending += 1
        else:
            fail("%s reserved and never settled, and not open" % mid, [mid])
            rep.pending += 1
    for ident in rep.identities():
        if not ident["holds"]:
            ids = bad if ident["name"].startswith("charged") else []
            fail("identity does not hold: %s: %s" % (ident["name"], ident["detail"]), ids)
    return rep


def format_report(rep: Report) -> str:
    d = rep.as_dict()
    p, a = d["parts"], d["amounts"]
    lines = ["account %s  %s .. %s  price %d" % (rep.account, d["from"], d["to"], rep.price),
             "parts submitted        %d" % p["submitted"],
             "  refused              %d" % p["refused"]]
    for k, v in p["refused_by_reason"].items():
        lines.append("    %-20s %d" % (k, v))
    lines += ["  relayed              %d" % p["relayed"],
              "    accepted by upstream %d" % p["accepted_by_upstream"],
              "    refused by upstream  %d" % p["refused_by_upstream"],
              "    outcome unknown      %d" % p["outcome_unknown"],
              "    released unrelayed   %d" % p["released_unrelayed"],
              "    carried in           %d" % p["carried_in"],
              "  pending              %d" % p["pending"],
              "delivered              %d" % p["delivered"],
              "undelivered            %d" % p["undelivered"],
              "charged                %d" % a["charged"],
              "refunded               %d" % a["refunded"],
              "top-ups                %d" % a["topups"],
              "adjustments            %d" % a["adjustments"],
              "refund_all             %d" % a["refund_all"],
              "balance start          %s" % a["balance_start"],
              "balance end            %s" % a["balance_end"],
              "identities:"]
    for i in d["identities"]:
        lines.append("  [%s] %s: %s" % ("ok" if i["holds"] else "FAIL", i["name"],
                                        i["detail"]))
    for f in rep.failures:
        lines.append("FAIL " + f)
    if rep.offending:
        lines.append("offending ids: " + " ".join(rep.offending))
    return "\n".join(lines)
