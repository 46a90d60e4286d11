"""Hypothesis strategies for the fixed-layout codecs (SGIP, SMGP): any valid PDU of a class,
built from its layout, so a round trip covers every field of every PDU."""
from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_INT_MAX = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}


def _text(n: int) -> Any:
    # a text field loses its NUL padding: values never end with a NUL
    return st.binary(max_size=n).map(lambda b: b.rstrip(b"\0"))


def field(layout: Any, name: str, kind: tuple) -> Any:
    k = kind[0]
    if name in layout.allowed:
        return st.sampled_from(sorted(layout.allowed[name]))
    if k in _INT_MAX:
        return st.integers(0, _INT_MAX[k])
    if k == "s":
        return _text(kind[1])
    if k == "x":
        return st.binary(min_size=kind[1], max_size=kind[1])
    lo, hi = layout.limits.get(name, (0, 255 if k in ("v8", "l8") else 600))
    if k in ("v8", "v32"):
        return st.binary(min_size=lo, max_size=hi)
    return st.lists(_text(kind[1]), min_size=lo, max_size=min(hi, 12)).map(tuple)


def tlvs(sizes: dict[int, int]) -> Any:
    known = st.sampled_from(sorted(sizes)).flatmap(
        lambda t: st.tuples(st.just(t), st.binary(min_size=sizes[t], max_size=sizes[t])))
    unknown = st.tuples(st.integers(0, 0xFFFF).filter(lambda t: t not in sizes),
                        st.binary(max_size=40))
    return st.lists(known | unknown, max_size=5).map(tuple)


def pdu(cls: Any, seq: Any) -> Any:
    layout = cls.layout
    kw = {name: field(layout, name, kind) for name, kind in layout.fields}
    kw["seq"] = seq
    if layout.tlvs:
        kw["tlvs"] = tlvs(cls.codec.tlv_sizes)
    # rules across fields (e.g. SMGP: 160 octets only for ASCII) hold for valid PDUs
    check = layout.check
    return st.builds(cls, **kw).filter(lambda p: check is None or check(p) is None)
