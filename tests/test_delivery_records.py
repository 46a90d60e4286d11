"""The records of the delivery path (proxyd.delivery.records): pack/parse round trips, and
malformed stored forms refused with an error that says what is wrong (pure, no store)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.delivery.records import (InFlight, Lookup, PendingReceipt, Receipt,
                                     pack_hexparts, parse_hexparts)
from proxyd.delivery.text import mo_facts

# the fields the receipts script splits on "|": none of them may hold one (err is cleaned)
_field = st.text(st.characters(blacklist_characters="|", codec="latin-1"), max_size=24)

RECEIPT = Receipt("m1", 2, "000", "sim", "00ab", 5, b"\x00\x01body", "m1:abc1")


def test_receipt_packs_as_the_script_reads_it():
    assert RECEIPT.pack() == "2|000|sim|00ab|5|m1:abc1|m1|" + b"\x00\x01body".hex()


@given(mid=_field, state=st.integers(0, 255), err=_field, up=_field, uid=_field,
       cid=st.integers(0, 2 ** 32 - 1), body=st.binary(max_size=300), cb=_field)
def test_receipt_round_trip(mid, state, err, up, uid, cid, body, cb):
    r = Receipt(mid, state, err, up, uid, cid, body, cb)
    assert Receipt.parse(r.pack()) == r


def test_a_bar_in_err_is_dropped_not_a_field():
    r = RECEIPT._replace(err="0|1")
    assert Receipt.parse(r.pack()) == RECEIPT._replace(err="01")


@pytest.mark.parametrize("packed,what", [
    ("", "1 fields, not 8"),
    ("2|000|sim|00ab|5|cb|m1", "7 fields, not 8"),
    ("2|000|sim|00ab|5|cb|m1|00|extra", "9 fields, not 8"),
    ("x|000|sim|00ab|5|cb|m1|00", "invalid literal"),
    ("2|000|sim|00ab|five|cb|m1|00", "invalid literal"),
    ("2|000|sim|00ab|5|cb|m1|0g", "non-hexadecimal"),
    ("2|000|sim|00ab|5|cb|m1|abc", "non-hexadecimal"),
])
def test_malformed_receipt_records_are_refused(packed, what):
    with pytest.raises(ValueError, match="receipt record") as e:
        Receipt.parse(packed)
    assert what in str(e.value)


def test_pending_lookup_and_inflight_are_named():
    acks: list = []
    p = PendingReceipt(RECEIPT, acks.append, "own receipt")
    p.ack(0)
    assert (p.receipt.mid, p.kind, acks) == ("m1", "own receipt", [0])
    lk = Lookup("sim", ["ab", "171"], None, acks.append, 0)
    assert lk._replace(tries=lk.tries + 1).tries == 1 and lk.upstream == "sim"
    f = InFlight("entry", "session", 12.5, 3)
    assert (f.entry, f.session, f.deadline, f.n) == ("entry", "session", 12.5, 3)


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=140)), max_size=8,
                unique_by=lambda p: p[0]))
def test_hexparts_round_trip_in_seq_order(parts):
    assert parse_hexparts(pack_hexparts(parts)) == sorted(parts, key=lambda p: p[0])


def test_hexparts_as_the_mo_script_writes_them():
    assert parse_hexparts("2:6c6f,1:68656c,") == [(1, b"hel"), (2, b"lo")]
    assert mo_facts({"hexparts": "2:6c6f,1:68656c", "dc": 0})["text"] == "hello"
    assert parse_hexparts("") == []


@pytest.mark.parametrize("packed", ["1:zz", "x:00", "1:0", ":00"])
def test_malformed_hexparts_are_refused(packed):
    with pytest.raises(ValueError, match="MO part"):
        parse_hexparts(packed)
