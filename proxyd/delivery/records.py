"""The records of the delivery path, with pack/parse beside those that are stored.

    Receipt         one receipt as the receipts script (RECEIPTS_LUA in proxyd.store.messages)
                    takes it: ``state|err|upstream|upstream id|command id|callback id|mid|hex``
    PendingReceipt  a receipt waiting for its account's store call: the Receipt, the
                    operator's ack (or proxyd's own retry), and what kind it is
    Lookup          a receipt waiting for its receipt map entry (one MGET per upstream)
    InFlight        a deliver_sm sent to a client session, waiting for its deliver_sm_resp
    hexparts        the parts of an MO for a mo_url as queued: ``seq:hex,seq:hex,...``
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Receipt(NamedTuple):
    """One receipt to store: the message state it brings and what goes to the client."""

    mid: str            # proxyd's message id
    state: int          # SMPP message_state
    err: str            # the 3-digit err of the receipt text
    upstream: str       # "" for proxyd's own receipts
    upstream_id: str
    command_id: int     # of the PDU the client gets (deliver_sm / data_sm)
    body: bytes         # its body, id rewritten
    cb_id: str          # id of the HTTP callback, if the part has HTTP settings

    def pack(self) -> str:
        """The receipts script's argument (a "|" in err is dropped: the field separator)."""
        return "%d|%s|%s|%s|%d|%s|%s|%s" % (self.state, self.err.replace("|", ""),
                                            self.upstream, self.upstream_id,
                                            self.command_id, self.cb_id, self.mid,
                                            self.body.hex())

    @classmethod
    def parse(cls, packed: str) -> "Receipt":
        """The inverse of `pack`; ValueError naming what is wrong for anything else."""
        f = packed.split("|")
        if len(f) != 8:
            raise ValueError("receipt record: %d fields, not 8: %r" % (len(f), packed[:80]))
        state, err, upstream, upstream_id, command_id, cb_id, mid, hx = f
        try:
            return cls(mid, int(state), err, upstream, upstream_id, int(command_id),
                       bytes.fromhex(hx), cb_id)
        except ValueError as e:
            raise ValueError("receipt record %r: %s" % (packed[:80], e)) from None


class PendingReceipt(NamedTuple):
    receipt: Receipt
    ack: Callable[[int], None]      # called with the SMPP status once stored (or not)
    kind: str                       # "receipt" (the operator's) or "own receipt"


class Lookup(NamedTuple):
    upstream: str
    keys: list                      # the forms of the upstream's id (normalise_upstream_id)
    pdu: Any
    ack: Callable[[int], None]
    tries: int                      # lookups that found nothing so far


class InFlight(NamedTuple):
    entry: Any                      # proxyd.store.receipts.Entry
    session: Any
    deadline: float                 # clock time after which it counts as unanswered
    n: int                          # the feed's send counter: a late answer is ignored


def pack_hexparts(parts: list[tuple[int, bytes]]) -> str:
    return ",".join("%d:%s" % (seq, data.hex()) for seq, data in parts)


def parse_hexparts(packed: str) -> list[tuple[int, bytes]]:
    """(seq, payload) of ``seq:hex,...`` in seq order; ValueError for a malformed item."""
    parts = []
    for item in packed.split(","):
        if item:
            seq, _, hx = item.partition(":")
            try:
                parts.append((int(seq), bytes.fromhex(hx)))
            except ValueError as e:
                raise ValueError("MO part %r: %s" % (item[:40], e)) from None
    parts.sort(key=lambda p: p[0])
    return parts
