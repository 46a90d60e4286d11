"""proxyd.policy: every rule passing and refusing, filter evasions, the token bucket."""
from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings, strategies as st

from proxyd.config import AccountConfig, Config, PolicyConfig
from proxyd.message import Message, Refusal
from proxyd.policy import Policy
from proxyd.policy.caller import check_caller
from proxyd.policy.content import (
    CATEGORIES, ContentFilter, check_binary, check_signature, check_unsubscribe, normalise,
)
from proxyd.policy.optout import (
    check_destination, check_optout, is_unsubscribe, normalise_number,
)
from proxyd.policy.rate import TokenBucket, check_rate, make_bucket
from proxyd.policy.sender import check_sender, effective_source
from proxyd.smpp.constants import STATUS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "conf", "filters")

RINVSRCADR = STATUS["ESME_RINVSRCADR"]
RINVDSTADR = STATUS["ESME_RINVDSTADR"]
RTHROTTLED = STATUS["ESME_RTHROTTLED"]
RCONTENT = STATUS["PROXYD_RCONTENT"]


def acct(**kw) -> AccountConfig:
    base = dict(system_id="acme", password="pw", service_codes=("1069000", "10655"))
    base.update(kw)
    return AccountConfig(**base)


def msg(**kw) -> Message:
    base = dict(account="acme", source_addr="1069000", destination_addr="13800138000",
                text="您的验证码是123456")
    base.update(kw)
    return Message(**base)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def write_lists(tmp_path, **lists) -> str:
    d = tmp_path / "filters"
    d.mkdir()
    for c in CATEGORIES:
        (d / (c + ".txt")).write_text("\n".join(lists.get(c, ())) + "\n", encoding="utf-8")
    return str(d)


@pytest.fixture(scope="module")
def shipped() -> ContentFilter:
    return ContentFilter.load(SHIPPED, {})


# --- caller ----------------------------------------------------------------------------------

@pytest.mark.parametrize("src,ton,text", [
    ("", 0, "empty sender"),
    ("1069000", 5, "alphanumeric TON 5"),
    ("ACME", 5, "alphanumeric TON 5"),
    ("ACME", 0, "non-digit sender"),
    ("+1069000", 1, "non-digit sender"),
    ("10690 00", 0, "non-digit sender"),
    ("106900０", 0, "non-digit sender"),      # full-width digit
    ("10690²", 0, "non-digit sender"),       # str.isdigit() alone accepts this
])
def test_caller_refused(src, ton, text):
    r = check_caller(msg(source_addr=src, source_addr_ton=ton), acct())
    assert r == Refusal(RINVSRCADR, "caller", text)


def test_caller_passes_numeric_sender():
    assert check_caller(msg(source_addr="1069000123", source_addr_ton=0), acct()) is None
    assert check_caller(msg(source_addr="1069000", source_addr_ton=3), acct()) is None


def test_caller_empty_extension_allowed_in_prefix_mode():
    a = acct(sender_mode="prefix")
    assert check_caller(msg(source_addr=""), a) is None
    assert check_caller(msg(source_addr="", source_addr_ton=5), a).text == "alphanumeric TON 5"


# --- sender ----------------------------------------------------------------------------------

@pytest.mark.parametrize("src", ["1069000", "10655", "1069000123", "106550001",
                                 "1069000" + "1" * 13])
def test_sender_own_codes_and_extensions_pass(src):
    assert check_sender(msg(source_addr=src), acct()) is None
    assert effective_source(src, acct()) == src


@pytest.mark.parametrize("src", ["1069001", "106900", "95555", "10656", "", "1069000x",
                                 "1069000" + "1" * 14])
def test_sender_refused(src):
    r = check_sender(msg(source_addr=src), acct())
    assert isinstance(r, Refusal) and r.status == RINVSRCADR and r.reason == "sender"
    assert r.text


def test_sender_max_len():
    a = acct(sender_max_len=10)
    assert check_sender(msg(source_addr="1069000123"), a) is None
    assert "longer" in check_sender(msg(source_addr="10690001234"), a).text


def test_sender_no_service_codes():
    r = check_sender(msg(), acct(service_codes=()))
    assert r.reason == "sender" and "no service code" in r.text


def test_sender_prefix_mode():
    a = acct(sender_mode="prefix")
    assert effective_source("", a) == "1069000"
    assert effective_source("42", a) == "106900042"
    assert check_sender(msg(source_addr="42"), a) is None
    r = effective_source("4x", a)
    assert isinstance(r, Refusal) and r.reason == "sender"
    r = effective_source("1" * 14, a)          # 7 + 14 > 20
    assert isinstance(r, Refusal) and r.status == RINVSRCADR
    assert effective_source("1" * 13, a) == "1069000" + "1" * 13


# --- destination, opt-out --------------------------------------------------------------------

@pytest.mark.parametrize("d", ["13800138000", "+8613800138000", "12345", "1" * 20, "+" + "1" * 20])
def test_destination_passes(d):
    assert check_destination(d) is None


@pytest.mark.parametrize("d", ["", "+", "1234", "1" * 21, "138-0013-8000", "1380013800a",
                               "++8613800138000", "１３８００１３８０００", "13800 138000",
                               "8613800138000+"])
def test_destination_refused(d):
    r = check_destination(d)
    assert r is not None and r.status == RINVDSTADR and r.reason == "destination"
    assert len(d) < 5 or d not in r.text


@pytest.mark.parametrize("raw", ["13800138000", "+8613800138000", "8613800138000",
                                 "008613800138000"])
def test_normalise_number_same_key(raw):
    assert normalise_number(raw) == "13800138000"


def test_normalise_number_keeps_other_numbers():
    assert normalise_number("+447700900123") == "447700900123"
    assert normalise_number("86123") == "86123"           # not a 13-digit 861... mobile
    assert normalise_number("8601012345678") == "8601012345678"


def test_optout():
    assert check_optout("13800138000", False) is None
    r = check_optout("13800138000", True)
    assert r.status == RINVDSTADR and r.reason == "optout" and "13800138000" not in r.text


@pytest.mark.parametrize("text", ["T", "t", "td", " TD ", "Ｔ", " 退订 ", "退訂", "T.", "取消",
                                  "n"])
def test_is_unsubscribe(text):
    assert is_unsubscribe(text, PolicyConfig().unsubscribe_words)


@pytest.mark.parametrize("text", ["", "TT", "退订了吗", "hello", "T退订", "1"])
def test_is_not_unsubscribe(text):
    assert not is_unsubscribe(text, PolicyConfig().unsubscribe_words)


# --- binary, signature, unsubscribe hint -----------------------------------------------------

@pytest.mark.parametrize("dc,text", [(2, None), (4, None), (4, "abc"), (0xF5, None),
                                     (0, None)])
def test_binary_refused_unless_allowed(dc, text):
    m = msg(data_coding=dc, text=text)
    r = check_binary(m, acct())
    assert r is not None and r.status == RCONTENT and r.reason == "binary"
    assert check_binary(m, acct(allow_binary=True)) is None


@pytest.mark.parametrize("dc", [0, 1, 3, 8, 0xF0])
def test_text_is_not_binary(dc):
    assert check_binary(msg(data_coding=dc, text="hello"), acct()) is None


@pytest.mark.parametrize("where,text,ok", [
    ("start", "【阿里云】您的验证码是1234", True),
    ("start", "  【阿里云】您的验证码是1234", True),
    ("start", "您的验证码是1234【阿里云】", False),
    ("end", "您的验证码是1234【阿里云】", True),
    ("end", "您的验证码是1234【阿里云】 ", True),
    ("end", "【阿里云】您的验证码是1234", False),
    ("either", "【阿里云】您的验证码是1234", True),
    ("either", "您的验证码是1234【阿里云】", True),
    ("either", "您的【阿里云】验证码是1234", False),
    ("either", "您的验证码是1234", False),
    ("start", "【】您的验证码是1234", False),
    ("start", "【  】您的验证码是1234", False),
    ("start", "【" + "字" * 16 + "】您好", True),
    ("start", "【" + "字" * 17 + "】您好", False),
    ("start", "[阿里云]您的验证码是1234", False),
])
def test_signature(where, text, ok):
    r = check_signature(text, acct(signature=where))
    if ok:
        assert r is None
    else:
        assert r is not None and r.status == RCONTENT and r.reason == "signature"


def test_signature_not_required():
    assert check_signature("no signature", acct()) is None


@pytest.mark.parametrize("text", ["【店】新品上市 回T退订", "【店】新品上市，退订回T",
                                  "【店】新品上市 回TD退订", "【店】新品上市 拒收请回复R",
                                  "【店】新品上市 回 Ｔ 退订", "【店】新品上市 退訂回T",
                                  "【店】新品上市 回复N退订"])
def test_unsubscribe_hint_present(text):
    assert check_unsubscribe(text, acct(marketing=True)) is None


@pytest.mark.parametrize("text", ["【店】新品上市", "【店】新品上市 退订", "【店】回家吧"])
def test_unsubscribe_hint_missing(text):
    r = check_unsubscribe(text, acct(marketing=True))
    assert r is not None and r.status == RCONTENT and r.reason == "unsubscribe"
    assert check_unsubscribe(text, acct(marketing=False)) is None


# --- normalise and the content filter --------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("赌 博", "赌博"), ("賭博", "赌博"), ("ＡＢＣ", "abc"), ("a.b.c", "abc"),
    ("赌\u200b博", "赌博"), ("①②③", "123"), ("CaSiNo", "casino"), ("赌\u3000博", "赌博"),
    ("赌\t\n博", "赌博"), ("赌\u0301博", "赌博"), ("Ⓐⓑⓒ", "abc"), ("ｃａｓｉｎｏ", "casino"),
    ("\U0001F600赌博\U0001F600", "赌博"), ("\ud83d\ude00赌博\ud83d\ude00", "赌博"),
    ("赌\ufeff博", "赌博"), ("赌\u00ad博", "赌博"), ("六合彩", "六合彩"),
])
def test_normalise(text, want):
    assert normalise(text) == want


@pytest.mark.parametrize("text", [
    "今晚赌博吗",                # plain
    "今晚赌 博吗",               # space
    "今晚赌.博吗",               # punctuation
    "今晚赌，博吗",              # full-width punctuation
    "今晚賭博吗",                # traditional
    "今晚赌\u200b博吗",          # zero width space
    "今晚赌\u200d\u2060博吗",    # joiner, word joiner
    "今晚\U0001F3B2赌\U0001F4B0博\U0001F3B2",  # emoji (astral) around and inside
    "今晚\ud83c\udfb2赌\ud83d\udcb0博",        # emoji as lone UTF-16 surrogates (surrogatepass)
    "六 合 彩 ① 号",
    "六-合-彩",
    "play CASINO now",         # upper case (GSM 7-bit text)
    "play C A S I N O",
    "play ＣＡＳＩＮＯ",          # full width
    "play Cаsinо",             # Cyrillic а and о
    "play CΑSΙNΟ",             # Greek capital Alpha, Iota, Omicron (GSM shows them as Latin)
    "代開發票",                  # traditional
    "代\r\n开\r\n发\r\n票",
    "请 找 办 证",
])
def test_filter_catches_evasions(shipped, text):
    r = shipped.check(text, "acme")
    assert r is not None and r.status == RCONTENT and r.reason == "content"


@pytest.mark.parametrize("text", ["您的验证码是123456，5分钟内有效。", "明天下午三点开会",
                                  "【银行】您尾号1234的卡入账500元", "casin", "",
                                  "\U0001F600\U0001F600"])
def test_filter_passes_clean_text(shipped, text):
    assert shipped.check(text, "acme") is None


def test_filter_none_text_passes(shipped):
    assert shipped.check(None, "acme") is None


def test_filter_names_category_never_the_text(shipped):
    r = shipped.check("买六合彩找我", "acme")
    assert r == Refusal(RCONTENT, "content",
                        "content refused: category obscenity_gambling_violence_terror",
                        category="obscenity_gambling_violence_terror")
    assert "六合彩" not in r.text and "六合彩" not in str(r)
    r = shipped.check("代开发票", "acme")
    assert r.category == "other_unlawful" and "发票" not in str(r)


@settings(max_examples=200, deadline=None)
@given(noise=st.lists(st.sampled_from(
    [" ", ".", "，", "\u200b", "\u00a0", "*", "\U0001F600", "\u3000", "-", "\u0301", "~"]),
    min_size=3, max_size=3),
    prefix=st.text(alphabet="您好明天见欢迎光临", max_size=10))
def test_filter_noise_between_characters(shipped, noise, prefix):
    text = prefix + "六" + noise[0] + "合" + noise[1] + "彩" + noise[2]
    r = shipped.check(text, "acme")
    assert r is not None and r.category == "obscenity_gambling_violence_terror"
    assert "六" not in r.text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalise_idempotent_and_no_refusal_leak(text):
    n = normalise(text)
    assert normalise(n) == n


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.text(alphabet="甲乙丙丁戊己庚辛壬癸abc", min_size=2, max_size=4),
                      min_size=1, max_size=5),
       filler=st.text(alphabet="子丑寅卯", max_size=8), i=st.integers(0, 4))
def test_filter_finds_any_loaded_term(tmp_path_factory, words, filler, i):
    d = write_lists(tmp_path_factory.mktemp("h"), rumours=words)
    cf = ContentFilter.load(d, {})
    term = words[i % len(words)]
    assert cf.check(filler + term.upper() + filler, "x").category == "rumours"
    assert cf.check(filler, "x") is None


def test_load_ignores_comments_blanks_and_punctuation_only(tmp_path):
    d = write_lists(tmp_path, rumours=["# 谣言", "", "   ", "!!!", " 明日 封城 "])
    cf = ContentFilter.load(d, {})
    assert cf.term_count == 1
    assert cf.check("谣言", "a") is None
    assert cf.check("!!!", "a") is None               # an empty term would match everything
    assert cf.check("明日封城", "a").category == "rumours"


def test_load_missing_dir_is_clear(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ValueError, match="nope"):
        ContentFilter.load(missing, {})


def test_load_missing_category_file_names_it(tmp_path):
    d = write_lists(tmp_path)
    os.unlink(os.path.join(d, "rumours.txt"))
    with pytest.raises(ValueError, match="rumours.txt"):
        ContentFilter.load(d, {})


def test_load_missing_account_file_names_it(tmp_path):
    d = write_lists(tmp_path)
    with pytest.raises(ValueError, match="acme_extra.txt"):
        ContentFilter.load(d, {"acme": ("acme_extra.txt",)})


def test_empty_lists_pass_everything(tmp_path):
    cf = ContentFilter.load(write_lists(tmp_path), {})
    assert cf.check("赌博", "a") is None


def test_account_extra_lists(tmp_path):
    d = write_lists(tmp_path, obscenity_gambling_violence_terror=["赌博"])
    with open(os.path.join(d, "competitors.txt"), "w", encoding="utf-8") as f:
        f.write("# brand names this account may not send\n对手牌\n")
    cf = ContentFilter.load(d, {"acme": ("competitors.txt",), "other": ()})
    r = cf.check("买 對手牌 吧", "acme")
    assert r.category == "competitors" and r.text == "content refused: category competitors"
    assert cf.check("买对手牌吧", "other") is None
    assert cf.check("买对手牌吧", "unknown") is None
    assert cf.check("赌博", "acme").category == "obscenity_gambling_violence_terror"
    assert cf.check("赌博", "other") is not None


def test_shipped_lists_cover_nine_categories(shipped):
    assert set(CATEGORIES) <= set(shipped.categories)
    assert len(CATEGORIES) == 9
    for c in CATEGORIES:
        assert os.path.exists(os.path.join(SHIPPED, c + ".txt"))


# --- rate ------------------------------------------------------------------------------------

def test_bucket_burst_then_throttle_then_refill():
    clock = Clock()
    b = TokenBucket(rate=2, burst=5, clock=clock)
    assert [b.take() for _ in range(5)] == [True] * 5        # the burst passes at once
    assert b.take() is False
    assert check_rate(b, 1) == Refusal(RTHROTTLED, "rate", "over the account's rate, retry later")
    clock.t += 0.49
    assert b.take() is False
    clock.t += 0.02                                          # 0.51 s * 2/s = 1 token
    assert b.take() is True
    assert b.take() is False
    clock.t += 100                                           # refills only up to burst
    assert [b.take() for _ in range(6)] == [True] * 5 + [False]


def test_bucket_multi_part():
    clock = Clock()
    b = TokenBucket(rate=1, burst=4, clock=clock)
    assert b.take(3) is True
    assert b.take(2) is False
    clock.t += 1
    assert b.take(2) is True


def test_bucket_message_longer_than_burst_is_slowed_not_refused_forever():
    clock = Clock()
    b = TokenBucket(rate=1, burst=2, clock=clock)
    assert b.take(5) is True              # full bucket: passes, leaves a debt of 3
    assert b.take(1) is False
    clock.t += 4.5                        # -3 + 4.5 = 1.5
    assert b.take(1) is True
    assert b.take(1) is False


def test_bucket_clock_going_backwards():
    clock = Clock()
    b = TokenBucket(rate=1, burst=1, clock=clock)
    assert b.take()
    clock.t -= 50
    assert not b.take()
    clock.t += 1
    assert b.take()


def test_unlimited_rate():
    clock = Clock()
    b = TokenBucket(rate=0, burst=1, clock=clock)
    assert all(b.take() for _ in range(1000))
    assert make_bucket(0, 0, clock) is None
    assert check_rate(None, 100) is None


def test_make_bucket_default_burst():
    clock = Clock()
    b = make_bucket(10, 0, clock)
    assert [b.take() for _ in range(11)] == [True] * 10 + [False]
    b = make_bucket(0.5, 0, clock)
    assert [b.take() for _ in range(2)] == [True, False]


# --- Policy ----------------------------------------------------------------------------------

def make_policy(tmp_path, accounts, clock=None, **lists) -> Policy:
    d = write_lists(tmp_path, **lists)
    cfg = Config(accounts=tuple(accounts), policy=PolicyConfig(filters_dir=d))
    return Policy(cfg, clock=clock or Clock())


def test_policy_passes_good_message(tmp_path):
    a = acct(tps=10)
    p = make_policy(tmp_path, [a], obscenity_gambling_violence_terror=["赌博"])
    assert p.check(msg(), a) is None


def test_policy_order(tmp_path):
    """Each refusal is returned even when every later check would refuse too."""
    a = acct(tps=1, burst=1, signature="start", marketing=True)
    p = make_policy(tmp_path, [a], obscenity_gambling_violence_terror=["赌博"])
    bad = dict(source_addr="ACME", destination_addr="x", data_coding=4, text=None)
    assert p.check(msg(**bad), a).reason == "caller"
    bad["source_addr"] = "999"
    assert p.check(msg(**bad), a).reason == "sender"
    bad["source_addr"] = "1069000"
    assert p.check(msg(**bad), a).reason == "destination"
    bad["destination_addr"] = "13800138000"
    assert p.check(msg(**bad), a).reason == "binary"
    bad.update(data_coding=8, text="赌博")
    assert p.check(msg(**bad), a).reason == "signature"
    bad["text"] = "【店】赌博"
    assert p.check(msg(**bad), a).reason == "unsubscribe"
    bad["text"] = "【店】赌博 回T退订"
    r = p.check(msg(**bad), a)
    assert r.reason == "content" and r.category == "obscenity_gambling_violence_terror"
    bad["text"] = "【店】新品 回T退订"
    assert p.check(msg(**bad), a) is None


def test_policy_check_is_pure_the_rate_is_throttle(tmp_path):
    """check spends no token (a refused or passed message alike); throttle takes them."""
    a = acct(tps=1, burst=1)
    p = make_policy(tmp_path, [a])
    for _ in range(5):
        assert p.check(msg(), a) is None
        assert p.check(msg(source_addr="999"), a).reason == "sender"
    assert p.throttle(a, 1) is None                                 # the only token
    r = p.throttle(a, 1)
    assert r.reason == "rate" and r.status == RTHROTTLED
    p.clock.t += 1
    assert p.throttle(a, 1) is None


def test_policy_rate_counts_parts(tmp_path):
    a = acct(tps=2, burst=4)
    p = make_policy(tmp_path, [a])
    assert p.throttle(a, 3) is None
    assert p.throttle(a, 2).reason == "rate"
    assert p.throttle(a, 1) is None


def test_policy_binary_allowed_skips_text_checks(tmp_path):
    a = acct(allow_binary=True, signature="start")
    p = make_policy(tmp_path, [a])
    assert p.check(msg(data_coding=4, text=None), a) is None


def test_policy_account_unknown_to_config_gets_a_bucket(tmp_path):
    p = make_policy(tmp_path, [])
    a = acct(tps=1)
    assert p.throttle(a, 1) is None
    assert p.throttle(a, 1).reason == "rate"


def test_policy_uses_account_filters(tmp_path):
    d = write_lists(tmp_path)
    with open(os.path.join(d, "brands.txt"), "w", encoding="utf-8") as f:
        f.write("对手牌\n")
    a = acct(filters=("brands.txt",))
    b = acct(system_id="other")
    p = Policy(Config(accounts=(a, b), policy=PolicyConfig(filters_dir=d)), clock=Clock())
    assert p.check(msg(text="对 手 牌"), a).category == "brands"
    assert p.check(msg(text="对 手 牌"), b) is None


def test_policy_rewrite_source(tmp_path):
    pa = acct(sender_mode="prefix")
    ra = acct()
    p = make_policy(tmp_path, [pa])
    assert p.rewrite_source(msg(source_addr="7"), pa) == "10690007"
    assert p.rewrite_source(msg(source_addr=""), pa) == "1069000"
    assert p.check(msg(source_addr=""), pa) is None
    assert p.rewrite_source(msg(source_addr="106550001"), ra) == "106550001"
    with pytest.raises(ValueError):
        p.rewrite_source(msg(source_addr="999"), ra)


def test_policy_reconfigured_keeps_unchanged_buckets(tmp_path):
    a = acct(tps=1)
    p = make_policy(tmp_path, [a])
    assert p.throttle(a, 1) is None
    p2 = p.reconfigured(p.config, content=p.content)
    assert p2.throttle(a, 1).reason == "rate"                # same bucket, still empty
    a2 = dataclasses.replace(a, tps=5)
    p3 = p.reconfigured(dataclasses.replace(p.config, accounts=(a2,)), content=p.content)
    assert p3.throttle(a2, 1) is None                       # new rate, new bucket


def test_refusals_never_carry_message_text_or_numbers(tmp_path):
    a = acct(signature="end", marketing=True)
    p = make_policy(tmp_path, [a], other_unlawful=["代开发票"])
    for m in [msg(text="代开发票13912345678【店】回T退订"), msg(text="代开发票"),
              msg(text="hello 代开发票【店】"), msg(destination_addr="13912345678x"),
              msg(source_addr="13912345678")]:
        r = p.check(m, a)
        assert r is not None
        for secret in ("代开", "发票", "13912345678", "hello"):
            assert secret not in r.text and secret not in str(r)
