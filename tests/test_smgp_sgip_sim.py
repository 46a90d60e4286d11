"""The SMGP and SGIP simulators' fixed-offset Submit scanners accept exactly what the codecs
accept, and read the same fields (their hot path must not be a looser gateway)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from proxyd.links.fixed import BadPdu
from proxyd.links.sgip import pdu as G
from proxyd.links.smgp import pdu as M
from proxyd.sim import sgip as simsgip
from proxyd.sim import smgp as simsmgp

from .codec_strategies import pdu as any_pdu


def _mutations(body: bytes) -> st.SearchStrategy:
    """The body, cut short, lengthened, or with one octet changed."""
    return st.one_of(
        st.just(body),
        st.integers(0, max(0, len(body) - 1)).map(lambda k: body[:k]),
        st.binary(min_size=1, max_size=6).map(lambda x: body + x),
        st.tuples(st.integers(0, max(0, len(body) - 1)), st.integers(0, 255)).map(
            lambda kv: body[:kv[0]] + bytes((kv[1],)) + body[kv[0] + 1:]))


@settings(max_examples=150, deadline=None)
@given(any_pdu(M.Submit, st.just(0)).map(lambda p: M.CODEC.encode_body(p)).flatmap(_mutations))
def test_smgp_scanner_is_the_decoder(body):
    got = simsmgp.scan_submit(body)
    full = M.decode_body(M.SUBMIT, 0, body)
    if isinstance(full, BadPdu):
        assert got is None, full
        return
    udhi = (full.tlv(M.TP_UDHI, b"\0") or b"\0")[0] & 1
    assert got == (full.need_report, full.src_term_id, full.dest_term_ids, full.msg_content,
                   udhi)


@settings(max_examples=150, deadline=None)
@given(any_pdu(G.Submit, st.just((0, 0, 0))).map(lambda p: G.CODEC.encode_body(p))
       .flatmap(_mutations))
def test_sgip_scanner_is_the_decoder(body):
    got = simsgip.scan_submit(body)
    full = G.decode_body(G.SUBMIT, (0, 0, 0), body)
    if isinstance(full, BadPdu):
        assert got is None, full
        return
    assert got == (full.report_flag, full.sp_number, full.user_numbers,
                   full.message_content, full.tp_udhi)
