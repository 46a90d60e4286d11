"""Codec throughput: a typical submit_sm through our pdu.py and through smpp.pdu3.

    .venv/bin/python bench/codec.py [--seconds-per-rep 0.3] [--reps 7] [--profile]

Typical submit_sm: 10-digit source, 11-digit destination (both TON/NPI 1/1), 70 UCS-2
characters (140 octets, data_coding 8), registered_delivery 1, no TLVs. Best of several
repetitions (time.perf_counter). Not a test: figures depend on the machine.
Targets: >= 100,000 decodes/s and >= 3x smpp.pdu3.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from proxyd.smpp import pdu as P  # noqa: E402

TEXT = ("Hello from proxyd! Это тестовое сообщение, 70 символов UCS-2 ровно...."[:70]
        ).encode("utf-16-be")
assert len(TEXT) == 140

OURS = P.SubmitSm(seq=123456, source_addr_ton=1, source_addr_npi=1, source_addr=b"4912345678",
                  dest_addr_ton=1, dest_addr_npi=1, destination_addr=b"49123456789",
                  registered_delivery=1, data_coding=8, short_message=TEXT)
WIRE = P.encode(OURS)


def _theirs():
    """smpp.pdu3 encoder/decoder and the same PDU as its object, or None if not installed."""
    try:
        from smpp.pdu import operations as O, pdu_encoding as E, pdu_types as T
    except ImportError:
        return None
    their_pdu = E.PDUEncoder().decode(io.BytesIO(WIRE))
    assert E.PDUEncoder().encode(their_pdu) == WIRE
    assert isinstance(their_pdu, O.SubmitSM) and their_pdu.status == T.CommandStatus.ESME_ROK
    return E, their_pdu


def rate(fn, seconds: float, reps: int) -> float:
    """Best-of-reps calls per second of fn() (fn runs a fixed inner loop of `inner` calls)."""
    inner = 1
    while True:  # calibrate the inner loop to ~seconds
        t0 = time.perf_counter()
        fn(inner)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4:
            break
        inner *= 2
    inner = max(1, int(inner * seconds / dt))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(inner)
        best = min(best, time.perf_counter() - t0)
    return inner / best


def our_decode(n: int) -> None:
    decode = P.decode
    wire = WIRE
    for _ in range(n):
        decode(wire)


BODY = WIRE[16:]
CID, STATUS, SEQ = P.C.SUBMIT_SM, 0, OURS.seq


def our_decode_body(n: int) -> None:
    decode_body = P.decode_body
    body = BODY
    for _ in range(n):
        decode_body(CID, STATUS, SEQ, body)


def our_frame_and_decode(n: int) -> None:
    framer = P.Framer()
    decode_body = P.decode_body
    wire = WIRE
    for _ in range(n):
        for cid, st, seq, body in framer.feed(wire):
            decode_body(cid, st, seq, body)


def our_encode(n: int) -> None:
    encode = P.encode
    pdu = OURS
    for _ in range(n):
        encode(pdu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds-per-rep", type=float, default=0.3)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="cProfile our decode and encode")
    a = ap.parse_args()

    assert type(P.decode(WIRE)) is P.SubmitSm and tuple(P.decode(WIRE)) == tuple(OURS)
    res = {
        "ours decode(frame)": rate(our_decode, a.seconds_per_rep, a.reps),
        "ours decode_body": rate(our_decode_body, a.seconds_per_rep, a.reps),
        "ours Framer+decode_body": rate(our_frame_and_decode, a.seconds_per_rep, a.reps),
        "ours encode": rate(our_encode, a.seconds_per_rep, a.reps),
    }
    theirs = _theirs()
    if theirs is not None:
        E, their_pdu = theirs

        def their_decode(n: int) -> None:
            enc = E.PDUEncoder()
            BytesIO = io.BytesIO
            wire = WIRE
            for _ in range(n):
                enc.decode(BytesIO(wire))

        def their_encode(n: int) -> None:
            enc = E.PDUEncoder()
            for _ in range(n):
                enc.encode(their_pdu)

        res["smpp.pdu3 decode"] = rate(their_decode, a.seconds_per_rep, a.reps)
        res["smpp.pdu3 encode"] = rate(their_encode, a.seconds_per_rep, a.reps)

    print("submit_sm of %d octets (140-octet UCS-2 text), best of %d x ~%.1fs, Python %s"
          % (len(WIRE), a.reps, a.seconds_per_rep, sys.version.split()[0]))
    for k, v in res.items():
        print("  %-26s %12s /s" % (k, format(int(v), ",")))
    if theirs is not None:
        d = res["ours decode(frame)"] / res["smpp.pdu3 decode"]
        db = res["ours decode_body"] / res["smpp.pdu3 decode"]
        e = res["ours encode"] / res["smpp.pdu3 encode"]
        print("  ratio ours/smpp.pdu3: decode %.1fx (decode_body %.1fx), encode %.1fx"
              % (d, db, e))
    ok = res["ours decode(frame)"] >= 100_000 and (
        theirs is None or res["ours decode(frame)"] >= 3 * res["smpp.pdu3 decode"])
    print("  target (>= 100,000 decodes/s and >= 3x smpp.pdu3): %s"
          % ("met" if ok else "MISSED"))

    if a.profile:
        for fn in (our_decode, our_encode):
            prof = cProfile.Profile()
            prof.runcall(fn, 200_000)
            print("\n--- cProfile %s x 200,000" % fn.__name__)
            pstats.Stats(prof).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
