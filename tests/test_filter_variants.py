"""The content filter against a sender who talks around it (issue 19): one test per variant
class, the clean business corpus, the per-term controls, the gap rule, and the refusal's
detail (term and class) reaching the journal call and the log line but never the reply."""
from __future__ import annotations

import os
import sys

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher, formatEvent

from proxyd.config import AccountConfig, Config, PolicyConfig
from proxyd.delivery.memory import MemoryReceipts
from proxyd.gate import Gate, MessageIds
from proxyd.gate.nulls import FreeLedger
from proxyd.message import Message
from proxyd.metrics import Metrics
from proxyd.policy import Policy
from proxyd.policy.content import CATEGORIES, ContentFilter, normalise
from proxyd.policy.variants import Expander, readings
from proxyd.smpp.constants import STATUS

from .test_policy import write_lists

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "conf", "filters")
sys.path.insert(0, os.path.join(REPO, "bench"))
import corpus  # noqa: E402  (bench/corpus.py: the clean corpus and the evasion generator)

GAMBLING = "obscenity_gambling_violence_terror"


@pytest.fixture(scope="module")
def shipped() -> ContentFilter:
    return ContentFilter.load(SHIPPED, {})


def refused_as(cf: ContentFilter, text: str) -> tuple[str, str] | None:
    r = cf.check(text, "acme")
    return None if r is None else (r.term, r.variant)


# --- one test per variant class --------------------------------------------------------

@pytest.mark.parametrize("text", [
    "网上du博", "今晚 du博 速来",                    # one character as pinyin (mixed)
    "来dubo吧", "du bo 了解一下", "DUBO", "Du Bo",   # every character
    "wang shang du bo", "网上dubo",
])
def test_pinyin_is_caught(shipped, text):
    got = refused_as(shipped, text)
    assert got is not None and got[0] == "赌博" and got[1] in ("pinyin", "mixed")


def test_pinyin_classes_are_told_apart(shipped):
    assert refused_as(shipped, "来dubo吧") == ("赌博", "pinyin")
    assert refused_as(shipped, "来du博吧") == ("赌博", "mixed")
    assert refused_as(shipped, "liu he 彩") == ("六合彩", "mixed")
    assert refused_as(shipped, "dian fu 国家政权") == ("颠覆国家政权", "mixed")


def test_pinyin_inside_other_words_is_not_a_match(shipped):
    # the letters "dubo" and "lhc" occur, but inside words: not a sender's pinyin
    assert shipped.check("Visit Dubois Street today", "acme") is None
    assert shipped.check("please call allhcare support", "acme") is None
    assert shipped.check("play dubo now", "acme") is not None      # a word of its own


@pytest.mark.parametrize("text", ["lhc开奖了", "今晚 LHC 速来", "加我 fdxf 详谈", "DFGJZQ"])
def test_initials_are_caught(shipped, text):
    assert refused_as(shipped, text)[1] == "initials"


def test_two_letters_of_initials_never_match(tmp_path):
    d = write_lists(tmp_path, obscenity_gambling_violence_terror=["赌博", "六合彩"])
    cf = ContentFilter.load(d, {})
    for text in ("db", "DB", "今晚 db 速来", "d b", "db1234"):
        assert cf.check(text, "a") is None, text
    assert cf.check("lhc", "a") is not None          # three letters do


@pytest.mark.parametrize("text,term", [
    ("网上堵博", "赌博"), ("网上睹博", "赌博"), ("来赌搏吧", "赌博"), ("六和彩", "六合彩"),
    ("颠复国嫁政权", "颠覆国家政权"),                # two of six characters
    ("泄漏国家秘密", "泄露国家秘密"),                # 漏: the phrase reading of 露 (xie lou)
])
def test_homophones_are_caught(shipped, text, term):
    assert refused_as(shipped, text) == (term, "homophone")


def test_homophone_with_pinyin_is_caught(shipped):
    assert refused_as(shipped, "来du搏吧") == ("赌博", "homophone")


def test_all_characters_replaced_by_homophones_is_an_ordinary_word(shipped):
    # 独播 (exclusive streaming) reads du bo like 赌博, 强制 reads qiang zhi like 枪支
    assert shipped.check("本剧独播，敬请期待", "acme") is None
    assert shipped.check("系统将强制更新", "acme") is None


@pytest.mark.parametrize("text", ["网上贝者博", "网上賭博".replace("賭", "貝者"), "来贝者十尃吧"])
def test_split_characters_are_caught(shipped, text):
    assert refused_as(shipped, text) == ("赌博", "split")


def test_split_uses_the_decomposition_table():
    ex = Expander(normalise)
    assert "贝者" in ex.splits("赌")
    forms = dict(ex.expand("赌博"))
    assert forms["贝者博"] == "split"


@pytest.mark.parametrize("text", ["网上赌①博", "网上赌1博", "网上赌12博", "赌x博", "赌x#9博",
                                  "六①合②彩", "代1开a发2票"])
def test_noise_up_to_max_gap_is_caught(shipped, text):
    got = refused_as(shipped, text)
    assert got is not None and got[1] == "gap", text


def test_noise_over_max_gap_is_not_bridged(shipped):
    assert shipped.check("网上赌123博", "acme") is None
    assert shipped.check("赌abc博", "acme") is None


def test_han_noise_is_not_bridged_by_the_gap_rule(shipped):
    assert shipped.check("网上赌你博", "acme") is None
    assert shipped.check("赌一博", "acme") is None
    assert shipped.check("六合很彩", "acme") is None


def test_max_gap_is_configurable(tmp_path):
    d = write_lists(tmp_path, obscenity_gambling_violence_terror=["赌博"])
    assert ContentFilter.load(d, {}, max_gap=0).check("赌1博", "a") is None
    assert ContentFilter.load(d, {}, max_gap=3).check("赌123博", "a") is not None
    p = Policy(Config(accounts=(AccountConfig(system_id="a", password="p",
                                              service_codes=("1069",)),),
                      policy=PolicyConfig(filters_dir=d, max_gap=0)))
    assert p.content.max_gap == 0


def test_noise_in_latin_terms(shipped):
    assert refused_as(shipped, "ca1sino") == ("casino", "gap")
    assert refused_as(shipped, "c-a①s①i1n.o") == ("casino", "gap")
    assert shipped.check("c123asino", "acme") is None


@pytest.mark.parametrize("text", ["play cаsino", "CΑSΙNΟ", "ϲasino", "加我 liuhеϲai 详谈"])
def test_cyrillic_and_greek_lookalikes_are_still_caught(shipped, text):
    assert shipped.check(text, "acme") is not None


# --- per-term controls -----------------------------------------------------------------

def test_exact_term_gets_no_variants(tmp_path):
    d = write_lists(tmp_path, rumours=["=封城", "明日封城"])
    cf = ContentFilter.load(d, {})
    assert refused_as(cf, "今天封城了") == ("封城", "exact")
    for text in ("fengcheng", "feng城", "封1城", "丰城", "疯城"):
        assert cf.check(text, "a") is None, text
    assert cf.check("明日疯城", "a") is not None     # the other term still has variants
    assert cf.term_count == 2


def test_exact_marker_alone_is_skipped(tmp_path):
    d = write_lists(tmp_path, rumours=["=", "= ", "=!!"])
    cf = ContentFilter.load(d, {})
    assert cf.term_count == 0 and cf.check("anything", "a") is None


def test_single_character_terms_get_no_variants(tmp_path):
    d = write_lists(tmp_path, rumours=["赌"])
    cf = ContentFilter.load(d, {})
    assert cf.check("赌", "a") is not None
    for text in ("du", "堵", "贝者", "都"):
        assert cf.check(text, "a") is None, text


# --- measured precision (bench/corpus.py) ----------------------------------------------

def test_clean_corpus_passes(shipped):
    texts = corpus.clean_corpus(10000)
    assert len(texts) == 10000 and len(set(texts)) > 9000
    refused = [(t, r.term, r.variant) for t in texts for r in (shipped.check(t, "a"),) if r]
    assert refused == []


def test_evasion_set_is_caught_per_class(shipped):
    ev = corpus.evasions(corpus.shipped_terms())
    assert set(ev) == set(corpus.CLASSES)
    assert sum(len(v) for v in ev.values()) >= 500
    for cls, pairs in ev.items():
        assert len(pairs) >= 40, cls
        missed = [t for t, term in pairs if shipped.check(t, "a") is None]
        assert len(missed) <= len(pairs) // 100, (cls, missed)


def test_reverse_index_covers_common_characters():
    r = readings()
    assert r["赌"][0] == "du" and "zhang" in r["长"] and "chang" in r["长"]


# --- the refusal's detail: journal and log, never the reply --------------------------------

class RecordingLedger(FreeLedger):
    def __init__(self) -> None:
        self.rejected: list[tuple] = []

    def count_rejected(self, account, reason, msg_id="", parts=1, detail=""):
        self.rejected.append((account, reason, parts, detail))
        return super().count_rejected(account, reason, msg_id, parts, detail)


def test_refusal_detail_reaches_journal_and_log_not_reply():
    account = AccountConfig(system_id="acme", password="pw", service_codes=("10690001",))
    cfg = Config(accounts=(account,), policy=PolicyConfig(filters_dir=SHIPPED))
    clock = Clock()
    ledger = RecordingLedger()
    gate = Gate(cfg, Policy(cfg, clock=clock.seconds), ledger, None,
                MemoryReceipts(lambda: cfg, None, clock), Metrics(), clock, MessageIds("t"))
    lines: list[str] = []

    def observer(event):
        lines.append(formatEvent(event))

    replies: list = []
    globalLogPublisher.addObserver(observer)
    try:
        gate.send(account, Message(account="acme", source_addr="10690001",
                                   destination_addr="13800138000", data_coding=8,
                                   text="今晚来du搏吧"),
                  lambda status, ids, refusal, n: replies.append((status, refusal)))
    finally:
        globalLogPublisher.removeObserver(observer)
    status, refusal = replies[0]
    assert status == STATUS["PROXYD_RCONTENT"]
    assert refusal.text == "content refused: category %s" % GAMBLING
    assert "赌博" not in refusal.text and "homophone" not in refusal.text
    assert ledger.rejected == [("acme", GAMBLING, 1, "term=赌博 variant=homophone")]
    line = [x for x in lines if x.startswith("refused acme")]
    assert len(line) == 1 and "term=赌博 variant=homophone" in line[0]
    assert "category %s" % GAMBLING in line[0]


def test_every_category_refusal_names_only_its_category(tmp_path):
    d = write_lists(tmp_path, **{c: ["测试词%d" % i] for i, c in enumerate(CATEGORIES)})
    cf = ContentFilter.load(d, {})
    for i, c in enumerate(CATEGORIES):
        r = cf.check("ce shi ci%d" % i, "a")
        assert r is not None and r.category == c and r.variant == "pinyin"
        assert r.text == "content refused: category %s" % c


def test_a_reload_expands_only_new_terms(tmp_path):
    d = write_lists(tmp_path, rumours=["明日封城"])
    first = ContentFilter.load(d, {})
    with open(os.path.join(d, "rumours.txt"), "a", encoding="utf-8") as f:
        f.write("散布谣言\n")
    second = ContentFilter.load(d, {}, previous=first)
    assert second.expansions is first.expansions
    assert {"明日封城", "散布谣言"} <= set(second.expansions)
    assert second.check("明日疯城", "a") is not None and second.check("san bu yao yan", "a")
    assert first.check("散布谣言", "a") is None         # the old filter is unchanged


from hypothesis import given, settings, strategies as st  # noqa: E402

_PIECES = st.sampled_from(["赌", "博", "du", "bo", "1", "①", " ", "贝者", "𠀀", "\ud83d", "\u200b",
                           "lhc", "ca", "sino", "六", "合", "彩", "liu", "he", "cai", "A", "é"])


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.lists(_PIECES, max_size=30).map("".join)))
def test_any_text_gets_an_answer_never_an_error(shipped, text):
    r = shipped.check(text, "acme")
    assert r is None or (r.category == GAMBLING and r.term and r.variant and
                         r.text == "content refused: category %s" % GAMBLING)


def test_terms_of_digits_are_found_in_texts_without_letters(tmp_path):
    d = write_lists(tmp_path, rumours=["8964", "明日封城"])
    cf = ContentFilter.load(d, {})
    assert refused_as(cf, "纪念8964活动") == ("8964", "exact")
    assert cf.check("纪念1989年活动", "a") is None
