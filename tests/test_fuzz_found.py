"""Regressions for what fuzzing (tests/test_fuzz_*.py, bench/fuzz.py) found, one test each,
written before the fix."""
from __future__ import annotations

import pytest

from proxyd.smpp import constants as C
from proxyd.smpp import session as S

from .test_session import bound, esme_bound, hdr, smsc


@pytest.mark.parametrize("state", ["open", "bound"])
def test_a_stray_unbind_resp_does_not_end_a_client_session(state):
    """bench/fuzz.py: an unbind_resp nobody asked for closed the session (every mutated
    stream with one lost its connection). It is an answer to nothing: ignored."""
    s, h = bound() if state == "bound" else smsc()
    s.receive_data(hdr(C.UNBIND_RESP, 0, 9) + hdr(C.ENQUIRE_LINK, 0, 10), 101.0)
    assert h.out() == hdr(C.ENQUIRE_LINK_RESP, 0, 10)
    assert h.take() == []
    assert s.state == (S.BOUND if state == "bound" else S.OPEN)


def test_a_stray_unbind_resp_does_not_end_an_upstream_session():
    s, h = esme_bound()
    s.receive_data(hdr(C.UNBIND_RESP, 0, 77), 2.0)
    assert h.take() == [] and s.state == S.BOUND
    s.unbind(3.0)                                   # ours is still answered as before
    s.receive_data(hdr(C.UNBIND_RESP, 0, 102), 4.0)
    assert h.take() == [("close", S.UNBOUND)]
