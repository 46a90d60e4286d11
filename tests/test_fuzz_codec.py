"""Fuzzing the SMPP codec (issue 15 item 9): mutated and random wire octets, not only the
well-formed PDUs of tests/test_pdu.py.

What must hold for any input:

* `pdu.decode` raises nothing but `FramingError` (and only when command_length does not
  match); `decode_body` never raises: it returns a typed PDU, an `UnknownPdu` or a `BadPdu`
  whose status is a real SMPP status;
* whatever decodes to a typed PDU re-encodes to octets that decode to the same PDU (and those
  octets are stable: encode . decode . encode is the identity);
* `Framer` fed any stream in any chunks returns frames that tile the stream, buffers at most
  one header's worth past them, and fails only with `FramingError`;
* the sans-IO `Session` (SMSC role, the one facing clients) swallows any stream without
  raising, never hands the handler a frame it cannot take, and answers at most once per
  request;
* an independent codec agrees: when smpp.pdu3 (tests/test_pdu_oracle.py) reads mutated octets
  of a command whose whole body it parses, we read the same fields; and what we re-encode
  from mutated input reads the same in smpp.pdu3.

Hypothesis runs derandomized (the same examples on every run) so CI is repeatable.
"""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from proxyd.smpp import constants as C
from proxyd.smpp import pdu as P
from proxyd.smpp import session as S

from .test_pdu import any_pdu, same
from .test_pdu_oracle import (COMMANDS, NO_BODY_ON_ERROR, THEIR_CLASS, field_to_ours, pdus,
                              their_decode)

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SMALL = settings(FUZZ, max_examples=150)   # (streams of several PDUs: slower to draw)
HDR = struct.Struct(">IIII")
ALL_IDS = sorted(P.PDU_CLASSES)
STATUSES = set(C.STATUS_NAME)


# --- mutations: what bench/fuzz.py sends too -------------------------------------------------

def _fix_length(w: bytes) -> bytes:
    return struct.pack(">I", len(w)) + w[4:] if len(w) >= 4 else w


@st.composite
def mutated(draw, fix_length: bool = True, base: st.SearchStrategy = any_pdu,
            in_step: bool = False) -> bytes:
    """The octets of a valid PDU after 1-3 mutations: bit flips, an octet set to 0x00 /
    0xFF / random, truncation, extension with random octets, a random or another command id,
    a random command_length. `fix_length`: command_length is rewritten to match the octets
    at the end (a frame `decode` takes) unless a mutation set it on purpose. `base`: the
    PDUs mutated. `in_step`: command_length always matches (the stream stays in step)."""
    w = bytearray(P.encode(draw(base)))
    length_set = False
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "cut", "extend", "cid", "length"]))
        if op == "flip" and len(w) > 0:
            i = draw(st.integers(0, len(w) - 1))
            w[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and len(w) > 0:
            i = draw(st.integers(0, len(w) - 1))
            w[i] = draw(st.one_of(st.sampled_from([0, 0xFF, 1]), st.integers(0, 255)))
        elif op == "cut":
            w = w[:draw(st.integers(16 if in_step else 0, len(w)))]
        elif op == "extend":
            w += draw(st.binary(min_size=1, max_size=40))
        elif op == "cid" and len(w) >= 8:
            cid = draw(st.one_of(st.sampled_from(ALL_IDS), st.integers(0, 0xFFFFFFFF)))
            w[4:8] = struct.pack(">I", cid)
        elif op == "length" and len(w) >= 4:
            w[0:4] = struct.pack(">I", draw(st.one_of(
                st.integers(0, 0xFFFFFFFF), st.integers(0, len(w) + 20))))
            length_set = True
    w = bytes(w)
    if fix_length and (in_step or not length_set) and len(w) >= 16:
        w = _fix_length(w)
    return w


def check_decoded(got, cid: int, status: int, seq: int) -> None:
    """The invariants of any decode_body result."""
    assert (got.command_id, got.status, got.seq) == (cid, status, seq)
    if isinstance(got, P.BadPdu):
        assert got.error in STATUSES, got
        assert got.error != 0 and got.message, got
    elif isinstance(got, P.UnknownPdu):
        assert cid not in P.PDU_CLASSES
    else:
        assert type(got) is P.PDU_CLASSES[cid]
        wire = P.encode(got)
        again = P.decode(wire)
        assert same(again, got), (again, got)
        assert P.encode(again) == wire


# --- decode ----------------------------------------------------------------------------------

@FUZZ
@given(w=mutated())
@example(w=bytes.fromhex("0000001180000006000000004c63994100"))   # unbind_resp + 1 octet
@example(w=bytes.fromhex("0000001e80000000000000005e5f818400020c0009b5330e3f4991c53733"))
def test_decode_of_mutated_pdus_raises_only_framing_errors(w):
    try:
        got = P.decode(w)
    except P.FramingError:
        assert len(w) < 16 or HDR.unpack_from(w)[0] != len(w)
        return
    length, cid, status, seq = HDR.unpack_from(w)
    check_decoded(got, cid, status, seq)


@FUZZ
@given(cid=st.one_of(st.sampled_from(ALL_IDS), st.integers(0, 0xFFFFFFFF)),
       status=st.integers(0, 0xFFFFFFFF), seq=st.integers(0, 0xFFFFFFFF),
       body=st.one_of(st.binary(max_size=300),
                      st.lists(st.sampled_from([b"\0", b"\x01", b"\xff", b"12345", b"\x04\x24",
                                                b"\x00\xff", b"\x02\x04\x00\x02"]),
                               max_size=60).map(b"".join)))
def test_decode_body_of_random_octets(cid, status, seq, body):
    check_decoded(P.decode_body(cid, status, seq, body), cid, status, seq)


# --- framer ----------------------------------------------------------------------------------

@SMALL
@given(pieces=st.lists(mutated(fix_length=False), min_size=1, max_size=6), data=st.data(),
       limit=st.sampled_from([64, 512, 65536]))
def test_framer_on_a_mutated_stream(pieces, data, limit):
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    framer = P.Framer(limit)
    frames: list = []
    broken = None
    for chunk in chunks:
        try:
            frames.extend(framer.feed(chunk))
        except P.FramingError as e:
            frames.extend(e.frames)
            broken = e
            break
    # the frames tile the start of the stream, each within the limit
    p = 0
    for cid, status, seq, body in frames:
        assert len(body) + 16 <= limit
        assert stream[p:p + 16] == HDR.pack(len(body) + 16, cid, status, seq)
        assert stream[p + 16:p + 16 + len(body)] == body
        p += 16 + len(body)
    if broken is not None:
        length = HDR.unpack_from(stream, p)[0]
        assert length < 16 or length > limit
        assert broken.seq == HDR.unpack_from(stream, p)[3]
        assert framer.buffered == 0
    else:
        # what is left is an incomplete PDU (header shorter than 16, or body not all there)
        rest = stream[p:]
        assert framer.buffered == len(rest)
        assert len(rest) < 16 or HDR.unpack_from(rest)[0] > len(rest)


# --- the client-facing session (sans-IO) -----------------------------------------------------

class Recorder(S.SessionHandler):
    """Answers every request at once (OK resp), accepts or refuses binds alternately."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.requests: list[tuple[int, int]] = []
        self.closed: list[str] = []
        self.session: S.Session | None = None
        self.binds = 0

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close_connection(self, reason: str) -> None:
        self.closed.append(reason)

    def on_bind_request(self, command_id, status, seq, body) -> None:
        self.binds += 1
        if self.binds % 2:
            self.session.refuse_bind(command_id, seq, C.STATUS["ESME_RINVPASWD"])
        else:
            self.session.accept_bind(command_id, seq, b"proxyd")

    def on_request(self, command_id, status, seq, body) -> None:
        assert self.session.can_submit, "a request handed over while it may not submit"
        assert not command_id & C.RESP_BIT and command_id in P.PDU_CLASSES
        assert command_id not in C.BIND_COMMANDS and command_id != C.UNBIND
        self.requests.append((command_id, seq))
        self.session.reply(S.error_resp(command_id, seq, 0))


@SMALL
@given(pieces=st.lists(st.one_of(mutated(fix_length=False), mutated(), any_pdu.map(P.encode)),
                       min_size=1, max_size=12),
       good_bind=st.booleans(), data=st.data())
def test_client_session_swallows_any_stream(pieces, good_bind, data):
    h = Recorder()
    cfg = S.SessionConfig(window=10, inbound_window=4, bind_timeout_s=30,
                          max_pdu_bytes=4096, max_unbound_pdu_bytes=512)
    s = h.session = S.Session(S.SMSC, h, cfg, 0.0)
    if good_bind:      # first bind refused by the Recorder, the second one accepted
        h.binds = 1
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        s.receive_data(stream[a:b], 1.0)
        s.tick(2.0)
    assert s.inbound == 0                       # every request handed over was answered
    answers = P.Decoder(1 << 20).feed(b"".join(h.out))
    assert all(not isinstance(a, (P.BadPdu, P.UnknownPdu)) for a in answers), answers
    assert all(a.command_id & C.RESP_BIT for a in answers), answers
    handed = {}
    for cid, seq in h.requests:
        handed[(cid | C.RESP_BIT, seq)] = handed.get((cid | C.RESP_BIT, seq), 0) + 1
    for key, n in handed.items():   # each request handed over: its own resp, once per time
        got = sum(1 for a in answers if (a.command_id, a.seq) == key)
        assert got >= n, (key, n, got)
    if h.closed:
        assert s.state == S.CLOSING
        assert h.closed[0] in (S.FRAMING, S.UNBOUND), h.closed


# --- an independent codec --------------------------------------------------------------------

# commands smpp.pdu3 parses to the end of the body (its other classes ignore what follows
# their mandatory parameters, so they read octets we refuse as a truncated TLV)
WHOLE = [c for c in COMMANDS if THEIR_CLASS[c].optionalParams]
STRINGS = ("c", "sm")
# PDUs of values smpp.pdu3 accepts (its enums), so that its reading is not refused up front
THEIRS = st.sampled_from(WHOLE).flatmap(pdus)


@FUZZ
@given(w=mutated(base=THEIRS))
def test_smpp_pdu3_agrees_on_mutated_octets(w):
    if len(w) < 16:
        return
    length, cid, status, _seq = HDR.unpack_from(w)
    if length != len(w) or cid not in WHOLE or (status and cid in NO_BODY_ON_ERROR):
        return      # (smpp.pdu3 skips the body of an error resp: nothing to compare)
    try:
        theirs = their_decode(w)
    except Exception:       # smpp.pdu3 refuses it: we may refuse or read it
        return
    event("smpp.pdu3 read it")
    ours = P.decode(w)
    assert not isinstance(ours, P.BadPdu), (ours, theirs)
    assert ours.seq == (theirs.seqNum or 0)     # smpp.pdu3 reads sequence 0 as None
    for name, kind in ours.layout:
        if kind[0] in STRINGS:
            assert field_to_ours(name, theirs.params[name]) == getattr(ours, name), name


@FUZZ
@given(w=mutated())
def test_what_we_reencode_from_mutated_input_reads_the_same_in_smpp_pdu3(w):
    try:
        ours = P.decode(w)
    except P.FramingError:
        return
    if isinstance(ours, (P.BadPdu, P.UnknownPdu)) or ours.command_id not in COMMANDS:
        return
    wire = P.encode(ours)
    try:
        theirs = their_decode(wire)
    except Exception:       # a value smpp.pdu3 has no enum for (see test_pdu_oracle.py)
        return
    event("smpp.pdu3 read our re-encoding")
    assert (theirs.seqNum or 0) == ours.seq
    for name, kind in ours.layout:
        if kind[0] in STRINGS and name in theirs.params:
            assert field_to_ours(name, theirs.params[name]) == getattr(ours, name), name
