"""Tests for proxyd.text: GSM 03.38, codecs, UDH, splitting and reassembly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyd.text import (
    TooManyParts,
    choose_encoding,
    concat_key,
    concat_udh,
    count_parts,
    decode_gsm,
    decode_text,
    encode_gsm,
    gsm_length,
    is_gsm,
    join_parts,
    pack_septets,
    parse_concat,
    split_text,
    split_udh,
    strip_udh,
    unpack_septets,
)
from proxyd.text.gsm import GSM_BASIC, GSM_EXTENSION

BASIC_CHARS = [c for i, c in enumerate(GSM_BASIC) if i != 0x1B]
EXT_CHARS = list(GSM_EXTENSION.values())
ALL_GSM = BASIC_CHARS + EXT_CHARS

gsm_text = st.text(alphabet=st.sampled_from(ALL_GSM), max_size=700)
# Escape-heavy GSM text, to hit part boundaries on escape pairs often.
gsm_escapey = st.text(alphabet=st.sampled_from(EXT_CHARS + ["a", "b"]), max_size=700)
# Any unicode except lone surrogates (a str cannot be sent with those).
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=600)
EMOJI_CJK = ["😀", "👍", "🇨", "🇳", "𠀀", "𝄞", "你", "好", "退", "订", "a", "é", "€", " "]
emoji_cjk = st.text(alphabet=st.sampled_from(EMOJI_CJK), min_size=1, max_size=600)

# Texts that are surely multipart, with the interesting characters near the first boundary.
gsm_near_boundary = st.builds(
    lambda k, tail: "a" * k + tail,
    st.integers(140, 160),
    st.text(alphabet=st.sampled_from(EXT_CHARS + ["b"]), min_size=20, max_size=500),
)
ucs2_near_boundary = st.builds(
    lambda k, tail: "你" * k + tail,
    st.integers(55, 70),
    st.text(alphabet=st.sampled_from(EMOJI_CJK), min_size=20, max_size=400),
)

SAR_REF, SAR_TOTAL, SAR_SEQ = 0x020C, 0x020E, 0x020F


# --------------------------------------------------------------------------- helpers


def parts_of(payloads: list[bytes]) -> list[tuple[tuple[int, int, int], bytes]]:
    """(key, body) for each payload of a multipart split, checking UDH structure."""
    out = []
    for p in payloads:
        udh, body = split_udh(p)
        key = parse_concat(udh)
        assert key is not None
        out.append((key, body))
    return out


def rejoin(dc: int, payloads: list[bytes]) -> str | None:
    if len(payloads) == 1:
        return decode_text(payloads[0], dc)
    parts = []
    for p in payloads:
        key = concat_key(0x40, p, {})
        assert key is not None
        parts.append((key[2], strip_udh(0x40, p)))
    return join_parts(parts, dc)


def check_split(text: str, ref: int = 0, ref16: bool = False) -> tuple[int, list[bytes]]:
    dc, payloads = split_text(text, ref=ref, ref16=ref16)
    assert len(payloads) == count_parts(text, ref16=ref16)
    assert dc == (0 if is_gsm(text) else 8)
    if len(payloads) == 1:
        p = payloads[0]
        if dc == 0:
            assert len(p) <= 160
        else:
            assert len(p) <= 140 and len(p) % 2 == 0
        assert decode_text(p, dc) == text
        return dc, payloads
    n = len(payloads)
    keys = parts_of(payloads)
    assert [k for k, _ in keys] == [(ref, n, i) for i in range(1, n + 1)]
    for (_, body), p in zip(keys, payloads):
        assert len(p) <= 159 and len(p) <= (6 if not ref16 else 7) + len(body)
        if dc == 0:
            assert 0 < len(body) <= (152 if ref16 else 153)
            assert body[-1] != 0x1B  # escape pair never split
        else:
            assert 0 < len(body) <= (132 if ref16 else 134) and len(body) % 2 == 0
            assert not 0xD8 <= body[-2] <= 0xDB  # no trailing high surrogate
            assert not 0xDC <= body[0] <= 0xDF  # no leading low surrogate
            # each part decodes on its own without replacement characters
            assert "\ufffd" not in body.decode("utf-16-be", "replace") or "\ufffd" in text
    assert rejoin(dc, payloads) == text
    return dc, payloads


# --------------------------------------------------------------------------- GSM


def test_gsm_table_shape() -> None:
    assert len(GSM_BASIC) == 128
    assert len(set(BASIC_CHARS)) == 127
    assert not set(BASIC_CHARS) & set(EXT_CHARS)


def test_encode_gsm_known_values() -> None:
    assert encode_gsm("@£$") == b"\x00\x01\x02"
    assert encode_gsm("Hello") == b"Hello"
    assert encode_gsm("€") == b"\x1b\x65"
    assert encode_gsm("{}[]~|^\\\x0c") == bytes.fromhex("1b281b291b3c1b3e1b3d1b401b141b2f1b0a")
    assert encode_gsm("ΔΩäöñüàÄÖÑÜ§¿¡_") == bytes(
        [0x10, 0x15, 0x7B, 0x7C, 0x7D, 0x7E, 0x7F, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F, 0x60, 0x40, 0x11]
    )
    assert encode_gsm("") == b""


@pytest.mark.parametrize("ch", ["`", "ç", "á", "你", "😀", "\t", "\x1b", "\x00", "Ω"[0] + "\u0301"])
def test_encode_gsm_rejects(ch: str) -> None:
    with pytest.raises(ValueError):
        encode_gsm("ok" + ch)
    assert not is_gsm("ok" + ch)
    assert gsm_length("ok" + ch) is None


def test_encode_gsm_error_names_character() -> None:
    with pytest.raises(ValueError, match=r"U\+0060.*index 2"):
        encode_gsm("ab`c")


def test_decode_gsm_known_values() -> None:
    assert decode_gsm(b"\x00\x01\x02\x03Hi\x1b\x65") == "@£$¥Hi€"
    assert decode_gsm(b"\x1b\x14\x1b\x28\x1b\x29\x1b\x2f\x1b\x3c\x1b\x3d\x1b\x3e\x1b\x40") == "^{}\\[~]|"
    assert decode_gsm(b"\x1b\x0a") == "\x0c"
    assert decode_gsm(b"\n\r") == "\n\r"


def test_decode_gsm_never_raises_on_garbage() -> None:
    assert decode_gsm(b"a\x80b\xff") == "a\ufffdb\ufffd"
    assert decode_gsm(b"ab\x1b") == "ab "  # trailing lone ESC
    assert decode_gsm(b"\x1b\x1bA") == " A"  # reserved ESC ESC
    assert decode_gsm(b"\x1bA") == "A"  # unknown extension -> default alphabet
    assert decode_gsm(b"\x1b\x00") == "@"
    assert decode_gsm(b"\x1b\xc0") == "\ufffd"
    assert decode_gsm(b"\x1b\x1b\x1b\x65") == " €"
    assert decode_gsm(b"") == ""


@given(st.binary(max_size=400))
def test_decode_gsm_total(data: bytes) -> None:
    out = decode_gsm(data)
    assert isinstance(out, str)
    assert len(out) <= len(data)
    assert decode_text(data, 0) == out


@given(gsm_text)
def test_gsm_round_trip(text: str) -> None:
    enc = encode_gsm(text)
    assert decode_gsm(enc) == text
    assert is_gsm(text)
    assert gsm_length(text) == len(enc) == len(text) + sum(c in EXT_CHARS for c in text)
    assert all(b < 0x80 for b in enc)


@given(any_text)
def test_is_gsm_matches_encode(text: str) -> None:
    try:
        enc = encode_gsm(text)
    except ValueError:
        assert not is_gsm(text)
        assert gsm_length(text) is None
    else:
        assert is_gsm(text)
        assert gsm_length(text) == len(enc)


def test_gsm_length_escapes_count_two() -> None:
    assert gsm_length("") == 0
    assert gsm_length("abc") == 3
    assert gsm_length("€[]") == 6
    assert gsm_length("a\x0cb") == 4


def test_pack_septets_known() -> None:
    # Classic example: "hellohello" packed.
    assert pack_septets(encode_gsm("hellohello")) == bytes.fromhex("e8329bfd4697d9ec37")
    assert unpack_septets(bytes.fromhex("e8329bfd4697d9ec37"), 10) == b"hellohello"
    assert pack_septets(b"") == b""
    assert pack_septets(b"\x7f" * 8) == b"\xff" * 7
    with pytest.raises(ValueError):
        pack_septets(b"\x80")
    with pytest.raises(ValueError):
        pack_septets(b"a", fill_bits=7)


@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_unpack_round_trip(septets: bytes, fill: int) -> None:
    packed = pack_septets(septets, fill)
    assert len(packed) == ((fill + 7 * len(septets) + 7) // 8 if septets else 0)
    assert unpack_septets(packed, len(septets), fill) == septets
    # without a count, all whole septets come back (maybe one padding septet more)
    free = unpack_septets(packed, fill_bits=fill)
    assert free[: len(septets)] == septets and len(free) - len(septets) in (0, 1)


# --------------------------------------------------------------------------- codec


def test_decode_text_by_data_coding() -> None:
    assert decode_text(b"Hi\x1b\x65", 0) == "Hi€"
    assert decode_text(b"Hi\xe9", 1) == "Hi\ufffd"
    assert decode_text(b"caf\xe9", 3) == "café"
    assert decode_text("你好😀".encode("utf-16-be"), 8) == "你好😀"
    assert decode_text(b"\x01\x02", 2) is None
    assert decode_text(b"\x01\x02", 4) is None
    assert decode_text(b"Hi\x1b\x65", 0xF0) == "Hi€"
    assert decode_text(b"Hi\x1b\x65", 0xF3) == "Hi€"
    for dc in (0xF4, 0xF5, 0xF6, 0xF7, 0xFC, 0xFF):
        assert decode_text(b"\x00\xff", dc) is None
    assert decode_text(b"caf\xe9", 0x0B) == "café"  # reserved -> Latin-1
    assert decode_text(b"caf\xe9", 0x90) == "café"  # reserved group -> Latin-1
    assert decode_text(b"caf\xe9", 300) == "café"  # nonsense value -> Latin-1
    assert decode_text("ü".encode("utf-16-be"), 0x18) == "ü"  # general group, UCS2
    assert decode_text("ü".encode("utf-16-be"), 0xE0) == "ü"  # MWI store, UCS2
    assert decode_text(b"\x00@", 0x10) == "@¡"  # general group, GSM default alphabet
    assert decode_text(b"\x00@", 0xC0) == "@¡"
    assert decode_text(b"\x00", 0x14) is None  # general group, 8-bit data
    assert decode_text(b"\x00", 0x30) is None  # compressed


def test_decode_ucs2_malformed_does_not_raise() -> None:
    assert decode_text(b"\x00a\x00", 8) == "a\ufffd"  # odd length
    assert decode_text(b"\xd8\x00\x00a", 8) == "\ufffda"  # lone high surrogate
    assert decode_text(b"\x00a\xdc\x00", 8) == "a\ufffd"  # lone low surrogate
    assert decode_text(b"\xd8\x3d", 8) == "\ufffd"  # high surrogate at end


@given(st.binary(max_size=300), st.integers(0, 255))
def test_decode_text_total(data: bytes, dc: int) -> None:
    out = decode_text(data, dc)
    assert out is None or isinstance(out, str)


def test_choose_encoding() -> None:
    assert choose_encoding("Hello €") == (0, b"Hello \x1b\x65")
    assert choose_encoding("Hello `") == (8, "Hello `".encode("utf-16-be"))
    assert choose_encoding("退订") == (8, "退订".encode("utf-16-be"))
    assert choose_encoding("😀") == (8, b"\xd8\x3d\xde\x00")
    assert choose_encoding("") == (0, b"")


# --------------------------------------------------------------------------- UDH


def test_concat_udh_build_and_parse() -> None:
    assert concat_udh(0x42, 3, 1) == bytes.fromhex("050003420301")
    assert concat_udh(0x1234, 3, 2, ref16=True) == bytes.fromhex("06080412340302")
    assert parse_concat(bytes.fromhex("050003420301")) == (0x42, 3, 1)
    assert parse_concat(bytes.fromhex("06080412340302")) == (0x1234, 3, 2)


@given(st.integers(0, 0xFFFF), st.integers(1, 255), st.data(), st.booleans())
def test_concat_udh_round_trip(ref: int, total: int, data: st.DataObject, ref16: bool) -> None:
    seq = data.draw(st.integers(1, total))
    if not ref16:
        ref &= 0xFF
    udh = concat_udh(ref, total, seq, ref16)
    assert len(udh) == (7 if ref16 else 6)
    assert split_udh(udh + b"body") == (udh, b"body")
    assert parse_concat(udh) == (ref, total, seq)


@pytest.mark.parametrize(
    "args",
    [(256, 2, 1, False), (-1, 2, 1, False), (0x10000, 2, 1, True), (1, 0, 0, False),
     (1, 2, 0, False), (1, 2, 3, False), (1, 256, 1, False)],
)
def test_concat_udh_rejects(args: tuple[int, int, int, bool]) -> None:
    with pytest.raises(ValueError):
        concat_udh(*args)


def test_parse_concat_skips_other_ies() -> None:
    # port addressing IE (0x05, len 4) before the concat IE
    udh = bytes.fromhex("0b" "050412341234" "0003aa0201")
    assert parse_concat(udh) == (0xAA, 2, 1)
    assert parse_concat(bytes.fromhex("06050412341234")) is None
    assert parse_concat(b"\x00") is None


@pytest.mark.parametrize(
    "udh, msg",
    [
        (b"", "empty"),
        (bytes.fromhex("0500030102"), "length octet"),  # UDHL 5 but 4 follow
        (bytes.fromhex("06000301020300"), "truncated"),  # 1 octet left after the IE
        (bytes.fromhex("0400020102"), "must have length 3"),
        (bytes.fromhex("050004010201"), "declares length 4"),  # IE overruns UDH
        (bytes.fromhex("0100"), "truncated"),
        (bytes.fromhex("050003010000"), "total"),  # total 0
        (bytes.fromhex("050003010200"), "sequence"),  # seq 0
        (bytes.fromhex("050003010203"), "sequence"),  # seq > total
        (bytes.fromhex("0500080112"), "length octet"),
        (bytes.fromhex("050803010201"), "length 4"),  # 16-bit IE with IEL 3
        (bytes.fromhex("0a000301020100030102 02"), "more than one"),
    ],
)
def test_parse_concat_malformed(udh: bytes, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_concat(udh)


@given(st.binary(max_size=40))
def test_parse_concat_never_index_error(data: bytes) -> None:
    try:
        key = parse_concat(data)
    except ValueError:
        return
    if key is not None:
        ref, total, seq = key
        assert 1 <= seq <= total <= 255


@given(st.binary(max_size=60))
def test_split_udh_never_index_error(data: bytes) -> None:
    try:
        udh, rest = split_udh(data)
    except ValueError:
        assert not data or data[0] + 1 > len(data)
    else:
        assert udh + rest == data and len(udh) == data[0] + 1


def test_split_udh_malformed() -> None:
    with pytest.raises(ValueError, match="empty"):
        split_udh(b"")
    with pytest.raises(ValueError, match="exceeds"):
        split_udh(b"\x05\x00\x03\x01")
    assert split_udh(b"\x00abc") == (b"\x00", b"abc")


# --------------------------------------------------------------------------- split


def test_gsm_single_part_boundary() -> None:
    dc, parts = split_text("a" * 160)
    assert dc == 0 and parts == [b"a" * 160]
    dc, parts = split_text("a" * 161)
    assert dc == 0 and len(parts) == 2
    assert [len(p) for p in parts] == [6 + 153, 6 + 8]
    assert count_parts("a" * 160) == 1
    assert count_parts("a" * 161) == 2
    assert count_parts("a" * 306) == 2
    assert count_parts("a" * 307) == 3


def test_gsm_escapes_count_toward_single_limit() -> None:
    assert count_parts("€" * 80) == 1
    assert count_parts("a" + "€" * 80) == 2
    assert split_text("€" * 80)[1] == [b"\x1b\x65" * 80]


def test_gsm_escape_not_split_at_boundary() -> None:
    # 152 plain chars then '€': the escape pair would straddle octets 153/154.
    text = "a" * 152 + "€" + "b" * 20
    dc, parts = check_split(text, ref=7)
    assert dc == 0
    bodies = [b for _, b in parts_of(parts)]
    assert bodies[0] == b"a" * 152
    assert bodies[1] == b"\x1b\x65" + b"b" * 20
    # 151 chars then '€': fits exactly into 153 septets
    text = "a" * 151 + "€" + "b" * 20
    bodies = [b for _, b in parts_of(check_split(text)[1])]
    assert bodies[0] == b"a" * 151 + b"\x1b\x65"


def test_ucs2_boundary() -> None:
    dc, parts = split_text("你" * 70)
    assert dc == 8 and parts == ["你".encode("utf-16-be") * 70]
    dc, parts = split_text("你" * 71)
    assert dc == 8 and len(parts) == 2
    assert [len(p) for p in parts] == [6 + 134, 6 + 8]
    assert count_parts("你" * 134) == 2
    assert count_parts("你" * 135) == 3


def test_ucs2_limit_counts_code_units() -> None:
    assert count_parts("😀" * 35) == 1  # 70 code units
    assert count_parts("😀" * 35 + "a") == 2  # 71 code units


def test_surrogate_pair_not_split_at_boundary() -> None:
    text = "你" * 66 + "😀" + "好" * 10  # the emoji occupies units 67-68
    dc, parts = check_split(text)
    bodies = [b for _, b in parts_of(parts)]
    assert bodies[0] == "你".encode("utf-16-be") * 66
    assert bodies[1] == "😀好".encode("utf-16-be") + "好".encode("utf-16-be") * 9
    text = "你" * 65 + "😀" + "好" * 10  # fits exactly in 67 units
    bodies = [b for _, b in parts_of(check_split(text)[1])]
    assert bodies[0] == ("你" * 65 + "😀").encode("utf-16-be")


def test_chinese_300_chars_five_parts() -> None:
    text = (("退订回复T" + "你好世界中文短信测试内容") * 18)[:299] + "结"
    assert len(text) == 300
    dc, parts = check_split(text, ref=0x99)
    assert dc == 8 and len(parts) == 5
    assert [parse_concat(split_udh(p)[0]) for p in parts] == [(0x99, 5, i) for i in range(1, 6)]
    assert [len(split_udh(p)[1]) // 2 for p in parts] == [67, 67, 67, 67, 32]


def test_ref16_split() -> None:
    dc, parts = check_split("a" * 400, ref=0xBEEF, ref16=True)
    assert len(parts) == 3
    assert [len(b) for _, b in parts_of(parts)] == [152, 152, 96]
    assert parts[0][:3] == b"\x06\x08\x04"


def test_split_empty() -> None:
    assert split_text("") == (0, [b""])
    assert count_parts("") == 1


def test_too_many_parts() -> None:
    with pytest.raises(TooManyParts) as info:
        split_text("a" * (153 * 3 + 1), max_parts=3)
    assert info.value.parts_needed == 4
    assert isinstance(info.value, ValueError)
    assert len(split_text("a" * 153 * 3, max_parts=3)[1]) == 3
    with pytest.raises(TooManyParts) as info:
        split_text("a" * (153 * 255 + 1), max_parts=1000)
    assert info.value.parts_needed == 256
    assert len(split_text("a" * 153 * 255)[1]) == 255
    with pytest.raises(TooManyParts):
        split_text("a" * 161, max_parts=1)


def test_split_rejects_bad_ref_and_lone_surrogate() -> None:
    with pytest.raises(ValueError):
        split_text("hello", ref=256)
    with pytest.raises(ValueError):
        split_text("bad \ud800 text")


@settings(max_examples=200)
@given(gsm_text, st.integers(0, 255))
def test_split_join_gsm(text: str, ref: int) -> None:
    check_split(text, ref=ref)


@settings(max_examples=200)
@given(gsm_escapey)
def test_split_join_gsm_escapes(text: str) -> None:
    check_split(text)


@settings(max_examples=200)
@given(emoji_cjk, st.integers(0, 0xFFFF))
def test_split_join_emoji_cjk(text: str, ref: int) -> None:
    check_split(text, ref=ref, ref16=True)
    check_split(text, ref=ref & 0xFF)


@settings(max_examples=300)
@given(gsm_near_boundary)
def test_split_join_gsm_near_boundary(text: str) -> None:
    dc, payloads = check_split(text)
    assert dc == 0 and len(payloads) >= 2


@settings(max_examples=300)
@given(ucs2_near_boundary, st.booleans())
def test_split_join_ucs2_near_boundary(text: str, ref16: bool) -> None:
    dc, payloads = check_split(text, ref=200, ref16=ref16)
    assert dc == 8 and len(payloads) >= 2


@settings(max_examples=200)
@given(any_text)
def test_split_join_any_unicode(text: str) -> None:
    check_split(text)


# --------------------------------------------------------------------------- reassembly


def test_concat_key_from_udh() -> None:
    sm = concat_udh(9, 2, 1) + b"hello"
    assert concat_key(0x40, sm, {}) == (9, 2, 1)
    assert concat_key(0x43, sm, {}) == (9, 2, 1)  # other esm bits do not matter
    assert concat_key(0x00, sm, {}) is None  # UDHI not set: not a UDH
    assert concat_key(0x40, bytes.fromhex("0605041234abcd") + b"x", {}) is None
    assert strip_udh(0x40, sm) == b"hello"
    assert strip_udh(0x00, sm) == sm


def test_concat_key_from_message_payload() -> None:
    payload = concat_udh(3, 4, 2, ref16=True) + b"text"
    assert concat_key(0x40, b"", {0x0424: payload}) == (3, 4, 2)


def test_concat_key_from_sar() -> None:
    tlvs = {SAR_REF: b"\x12\x34", SAR_TOTAL: b"\x03", SAR_SEQ: b"\x02"}
    assert concat_key(0, b"hello", tlvs) == (0x1234, 3, 2)
    assert concat_key(0, b"hello", {0x0005: b"\x01"}) is None
    # consistent UDH and SAR are fine
    sm = concat_udh(0x1234, 3, 2, ref16=True) + b"x"
    assert concat_key(0x40, sm, tlvs) == (0x1234, 3, 2)


@pytest.mark.parametrize(
    "tlvs, msg",
    [
        ({SAR_REF: b"\x00\x01", SAR_TOTAL: b"\x02"}, "incomplete"),
        ({SAR_SEQ: b"\x01"}, "incomplete"),
        ({SAR_REF: b"\x01", SAR_TOTAL: b"\x02", SAR_SEQ: b"\x01"}, "2 octets"),
        ({SAR_REF: b"\x00\x01", SAR_TOTAL: b"\x00\x02", SAR_SEQ: b"\x01"}, "1 octet"),
        ({SAR_REF: b"\x00\x01", SAR_TOTAL: b"\x02", SAR_SEQ: b""}, "1 octet"),
        ({SAR_REF: b"\x00\x01", SAR_TOTAL: b"\x00", SAR_SEQ: b"\x01"}, ">= 1"),
        ({SAR_REF: b"\x00\x01", SAR_TOTAL: b"\x02", SAR_SEQ: b"\x03"}, "outside"),
        ({SAR_REF: b"\x00\x01", SAR_TOTAL: b"\x02", SAR_SEQ: b"\x00"}, "outside"),
    ],
)
def test_concat_key_bad_sar(tlvs: dict[int, bytes], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        concat_key(0, b"hi", tlvs)


def test_concat_key_udh_sar_conflict_and_malformed() -> None:
    tlvs = {SAR_REF: b"\x00\x01", SAR_TOTAL: b"\x02", SAR_SEQ: b"\x01"}
    with pytest.raises(ValueError, match="disagree"):
        concat_key(0x40, concat_udh(1, 2, 2) + b"x", tlvs)
    with pytest.raises(ValueError):
        concat_key(0x40, b"", {})
    with pytest.raises(ValueError):
        concat_key(0x40, b"\x09\x00\x03", {})
    with pytest.raises(ValueError):
        strip_udh(0x40, b"\x09\x00\x03")


def test_join_parts_out_of_order_and_sloppy_splits() -> None:
    # a sloppy client split a surrogate pair between parts
    data = "ab😀cd".encode("utf-16-be")
    parts = [(2, data[6:]), (1, data[:6])]  # cut inside the emoji
    assert join_parts(parts, 8) == "ab😀cd"
    # ... or even a code unit in half
    assert join_parts([(1, data[:5]), (2, data[5:])], 8) == "ab😀cd"
    # a GSM escape pair split between parts
    assert join_parts([(2, b"\x65x"), (1, b"a\x1b")], 0) == "a€x"
    assert join_parts([(1, b"\x01")], 4) is None
    assert join_parts([(1, b"caf"), (2, b"\xe9")], 3) == "café"
    with pytest.raises(ValueError, match="duplicate"):
        join_parts([(1, b"a"), (1, b"b")], 0)


@settings(max_examples=100)
@given(emoji_cjk, st.randoms(use_true_random=False))
def test_join_parts_shuffled(text: str, rnd) -> None:  # type: ignore[no-untyped-def]
    dc, payloads = split_text(text)
    if len(payloads) == 1:
        pairs = [(1, payloads[0])]
    else:
        pairs = []
        for p in payloads:
            key = concat_key(0x40, p, {})
            assert key is not None and key[1] == len(payloads)
            pairs.append((key[2], strip_udh(0x40, p)))
    rnd.shuffle(pairs)
    assert join_parts(pairs, dc) == text


def test_data_coding_15_is_read_as_gbk():
    from proxyd.text.codec import decode_text
    assert decode_text("赌博网站".encode("gbk"), 15) == "赌博网站"
    assert decode_text(b"\xff\xfe\x81", 15) is not None     # malformed: replaced, no raise
