"""The operations of the ``batch`` script as named records, with their wire form beside them.

One call of ``batch.lua`` carries the operations of one account, packed into one string
(ARGV[5]): fields separated by \\x1f; a group's parts separated by \\x1e, and a part's fields
by \\x1d. A text field never holds a separator (`field` makes them spaces). The script
answers one result per operation, joined by ','.

    record        wire                               answer
    Admit         a|f|v price number to n id*n       "code:balance"
    Leased        l price node to n id*n             "" | "-1:balance"
    Group         g price node k parts               "" | "-1:id id ..."
    LeaseChange   L node price want ttl release      "granted:free balance"
    Settle        c|r|C|R id note                    amount | -1 (c, r); "" | -1 (C, R)
    Reject        x reason id parts                  today's count for that reason
    Event         e event id note                    0

``batch.lua`` says what each does. The hot path packs with the ``pack_*`` functions (no
record made per message); `parse_ops` reads a packed call back into records, with the same
checks the script makes, and `Queued` / `LeasedMessage` are what the batcher keeps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

SEP = "\x1f"        # between the fields of the packed operations of a call
PART_SEP = "\x1e"   # between the parts of a group
PFIELD_SEP = "\x1d"  # between the fields of a part
SEPS = str.maketrans("\x1d\x1e\x1f", "   ")

# what the batcher does with an operation's answer (`Queued.kind`)
ADMIT, RESERVE, SETTLE, COUNT, EVENT, LEASED, LEASE = range(7)


class BadBatch(ValueError):
    """A packed call that the script would refuse (or that is not one)."""


def field(s: str) -> str:
    """A text field of a packed operation (no separator can occur in it)."""
    return s if s.isprintable() else s.translate(SEPS)


# --- the operations -----------------------------------------------------------------------

class Admit(NamedTuple):
    """An opt-out check of `number` ('' = none) and one reservation of `price` per id, all
    or nothing. op 'a' (may answer -4: ask again), 'f' (final: never -4), 'v' (a refusal
    is neither counted nor journaled: `Ledger.reserve`)."""
    op: str
    price: int
    number: str
    to: str
    ids: Sequence[str]

    def pack(self) -> str:
        return pack_admit(self.op, self.price, self.number, self.to, self.ids)


def pack_admit(op: str, price: int, number: str, to: str, ids: Sequence[str]) -> str:
    return "%s\x1f%d\x1f%s\x1f%s\x1f%d\x1f%s" % (op, price, number, to, len(ids),
                                                 SEP.join(ids))


def final_admit(packed: str) -> str:
    """A packed 'a' as 'f': the last try of an admit that answered -4."""
    return "f" + packed[1:]


class Leased(NamedTuple):
    """The reservations of a message the node admitted on its lease (fresh ids)."""
    price: int
    node: str
    to: str
    ids: Sequence[str]

    def pack(self) -> str:
        return pack_leased(self.price, self.node, self.to, self.ids)


def pack_leased(price: int, node: str, to: str, ids: Sequence[str]) -> str:
    return "l\x1f%d\x1f%s\x1f%s\x1f%d\x1f%s" % (price, node, to, len(ids), SEP.join(ids))


class GroupPart(NamedTuple):
    """One part admitted on the lease whose outcome came before its reservation was
    written: reserved and at once committed (`commit`) or refunded."""
    msg_id: str
    to: str
    commit: bool
    note: str

    def pack(self) -> str:
        return pack_part(self.msg_id, self.to, self.commit, self.note)


def pack_part(msg_id: str, to: str, commit: bool, note: str) -> str:
    """`to` and `note` must be fields already (`field`); msg_id is the node's own."""
    return "%s\x1d%s\x1d%s\x1d%s" % (msg_id, to, "C" if commit else "R", note)


def parse_part(packed: str) -> GroupPart:
    f = packed.split(PFIELD_SEP, 3)
    if len(f) != 4 or f[2] not in ("C", "R") or PART_SEP in packed:
        raise BadBatch("bad group part %r: want id\\x1dto\\x1dC|R\\x1dnote" % (packed,))
    return GroupPart(f[0], f[1], f[2] == "C", f[3])


class Group(NamedTuple):
    """Parts admitted on the lease, each reserved and settled in one step."""
    price: int
    node: str
    parts: Sequence[GroupPart]

    def pack(self) -> str:
        return pack_group(self.price, self.node, [p.pack() for p in self.parts])


def pack_group(price: int, node: str, packed_parts: Sequence[str]) -> str:
    return "g\x1f%d\x1f%s\x1f%d\x1f%s" % (price, node, len(packed_parts),
                                          PART_SEP.join(packed_parts))


class LeaseChange(NamedTuple):
    """Give `release` of the node's lease back, then take up to `want` (at most half the
    free balance, in multiples of `price`) for `ttl_ms`."""
    node: str
    price: int
    want: int
    ttl_ms: int
    release: int

    def pack(self) -> str:
        return pack_lease(self.node, self.price, self.want, self.ttl_ms, self.release)


def pack_lease(node: str, price: int, want: int, ttl_ms: int, release: int) -> str:
    return "L\x1f%s\x1f%d\x1f%d\x1f%d\x1f%d" % (node, price, want, ttl_ms, release)


class Settle(NamedTuple):
    """Commit (c, C) or refund (r, R) an open reservation; C and R answer "" or -1."""
    op: str
    msg_id: str
    note: str

    def pack(self) -> str:
        return pack_settle(self.op, self.msg_id, self.note)


def pack_settle(op: str, msg_id: str, note: str) -> str:
    return "%s\x1f%s\x1f%s" % (op, msg_id, note)


def settle_op(commit: bool, answered: bool) -> str:
    return ("c" if commit else "r") if answered else ("C" if commit else "R")


class Reject(NamedTuple):
    """A message refused before charging, `parts` parts, counted and journaled."""
    reason: str
    msg_id: str
    parts: int

    def pack(self) -> str:
        return pack_reject(self.reason, self.msg_id, self.parts)


def pack_reject(reason: str, msg_id: str, parts: int) -> str:
    return "x\x1f%s\x1f%s\x1f%d" % (reason, msg_id, parts)


class Event(NamedTuple):
    """A state event of a message (no money), journaled."""
    event: str
    msg_id: str
    note: str

    def pack(self) -> str:
        return pack_event(self.event, self.msg_id, self.note)


def pack_event(event: str, msg_id: str, note: str) -> str:
    return "e\x1f%s\x1f%s\x1f%s" % (event, msg_id, note)


Op = Admit | Leased | Group | LeaseChange | Settle | Reject | Event


def pack_ops(ops: Sequence[Op]) -> str:
    """ARGV[5] of a batch call."""
    return SEP.join([op.pack() for op in ops])


def _int(f: list[str], j: int, what: str, i: int) -> int:
    try:
        return int(f[j])
    except (IndexError, ValueError):
        raise BadBatch("bad %s operation at field %d" % (what, i + 1)) from None


def parse_ops(packed: str) -> list[Op]:
    """The records of a packed call (ARGV[5]), checked as ``batch.lua`` checks them.
    Raises BadBatch saying where it is wrong."""
    f = packed.split(SEP)
    out: list[Op] = []
    i = 0
    while i < len(f):
        op = f[i]
        if op in ("a", "f", "v", "l"):
            price, n = _int(f, i + 1, "admit", i), _int(f, i + 4, "admit", i)
            if n < 1 or i + 5 + n > len(f):
                raise BadBatch("bad admit operation at field %d" % (i + 1))
            ids = f[i + 5:i + 5 + n]
            out.append(Leased(price, f[i + 2], f[i + 3], ids) if op == "l"
                       else Admit(op, price, f[i + 2], f[i + 3], ids))
            i += 5 + n
        elif op == "g":
            price, k = _int(f, i + 1, "group", i), _int(f, i + 3, "group", i)
            if k < 1 or i + 4 >= len(f):
                raise BadBatch("bad group operation at field %d" % (i + 1))
            parts = [parse_part(p) for p in f[i + 4].split(PART_SEP)]
            if len(parts) != k:
                raise BadBatch("group at field %d: %d parts, not %d" % (i + 1, len(parts), k))
            out.append(Group(price, f[i + 2], parts))
            i += 5
        elif op == "L":
            nums = [_int(f, j, "lease", i) for j in range(i + 2, i + 6)]
            out.append(LeaseChange(f[i + 1], *nums))
            i += 6
        elif op in ("c", "r", "C", "R"):
            if i + 3 > len(f):
                raise BadBatch("truncated settle operation at field %d" % (i + 1))
            out.append(Settle(op, f[i + 1], f[i + 2]))
            i += 3
        elif op == "x":
            parts = _int(f, i + 3, "reject", i)
            out.append(Reject(f[i + 1], f[i + 2], parts))
            i += 4
        elif op == "e":
            if i + 4 > len(f):
                raise BadBatch("truncated event operation at field %d" % (i + 1))
            out.append(Event(f[i + 1], f[i + 2], f[i + 3]))
            i += 4
        else:
            raise BadBatch("unknown batch operation %r at field %d" % (op, i + 1))
    return out


# --- answers --------------------------------------------------------------------------------

def parse_pair(reply: str) -> tuple[int, int]:
    """An answer "a:b" (admit: code, balance; lease: granted, free balance)."""
    a, sep, b = reply.partition(":")
    try:
        if sep:
            return int(a), int(b)
    except ValueError:
        pass
    raise BadBatch("bad answer %r: want two integers a:b" % (reply,))


def parse_missing(reply: str) -> list[str]:
    """The ids of a group's answer "-1:id id ..." (parts not recorded); [] for ""."""
    if not reply:
        return []
    if not reply.startswith("-1:"):
        raise BadBatch("bad group answer %r: want '' or '-1:id id ...'" % (reply,))
    return reply[3:].split(" ")


# --- what the batcher keeps -------------------------------------------------------------------

class Queued(NamedTuple):
    """An operation queued for the next call: what to do with its answer (`kind`), its wire
    form, who waits for the answer (a Deferred, an admit's callback, or None) and what the
    answer needs besides (the ids, the amount, when it was first asked)."""
    kind: int
    packed: str
    target: Any
    info: Any


@dataclass(slots=True, eq=False)
class LeasedMessage:
    """A message admitted on this node's lease whose reservation is queued (what
    `Ledger.admit_leased` returns, for `Ledger.settle_leased`). parts[k]: the packed
    `GroupPart` of part k once its outcome came, else None; left: the parts without an
    outcome, or -1 once the reservation was written alone (an outcome that comes then is
    settled apart)."""
    price: int
    to: str
    ids: list[str]
    parts: list[str | None]
    queued_at: float
    left: int
    account: str
