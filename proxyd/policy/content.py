"""The content filter: the whole decoded text against the nine categories' word lists.

Normalisation (`normalise`) folds the ways a banned word is usually disguised into one form,
applied identically to the word lists when they are loaded and to every message text:

- compatibility forms (NFKD per character): full width ``ＡＢＣ`` -> ``abc``, circled digits
  ``①`` -> ``1``, ligatures, CJK compatibility ideographs;
- case (``str.casefold``) and a small map of Greek and Cyrillic letters that look Latin
  (GSM 03.38 renders capital Alpha as ``A`` anyway): ``САSINО`` -> ``casino``;
- traditional -> simplified Chinese, character by character from zhconv's zh-cn table
  (``賭博`` -> ``赌博``);
- deleted: separators, punctuation, symbols (emoji included), control, format (zero width),
  private use, unassigned and surrogate code points -- Unicode categories Z*, P*, S*, C* --
  and also combining marks (M*), so accents or enclosing circles put on a banned word, or
  stray marks put between its characters, do not hide it.

Everything above is computed per code point once, into one translation table, so normalising
a message is a single ``str.translate`` (about 2 us for 70 Chinese characters). The brief asked
for NFKC; per-character NFKD followed by dropping the marks is the same fold for matching
purposes, minus accents, and needs no second pass over the string.

Beyond the fold, a sender writes a term in pinyin, initials, homophones, split characters
or with noise between its characters: the lists are expanded when they load
(`proxyd.policy.variants`) and matched in up to three scans per message
(`proxyd.policy.matcher`, which says how and why). `normalise_words` also keeps where the
original had word boundaries, for pinyin written in Latin letters.

Matching uses pyahocorasick. Its trie looks up a node's children linearly, and the root of a
10,000-term Chinese list has thousands of children (~100 us per message), so no automaton
keys on Han characters directly: UTF-8 bytes carried as latin-1 characters, or two latin-1
codes a syllable (fan-out at most 64 per node). UTF-8 is self-synchronising, so a byte match
is always a character match.

A list line ``=term`` matches that term only (normalised), without variants or gap: for short
or ambiguous terms that would otherwise catch ordinary text.

No I/O at check time; a refusal never contains the matched text. It carries the matched term
and the variant class (`Refusal.term`, `Refusal.variant`) for the journal and the log line.
"""
from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping

from proxyd.config import AccountConfig
from proxyd.message import Message, Refusal, Verdict
from proxyd.policy.matcher import DEFAULT_MAX_GAP, build_matcher
from proxyd.smpp.constants import DC_BINARY, DC_BINARY_2, STATUS

CATEGORIES: tuple[str, ...] = (
    "constitution",
    "state_security",
    "national_honour",
    "ethnic_hatred",
    "religion_cults",
    "rumours",
    "obscenity_gambling_violence_terror",
    "insult_defamation",
    "other_unlawful",
)

_RCONTENT = STATUS["PROXYD_RCONTENT"]

# --- normalisation -------------------------------------------------------------------------

_DROP = frozenset("ZPSCM")

# Letters of other scripts that render like Latin ones (after casefold, so lower case only).
_CONFUSABLE = {
    # Greek
    "α": "a", "β": "b", "ε": "e", "ζ": "z", "η": "h", "ι": "i", "κ": "k", "μ": "m",
    "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c",
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h",
}


def _load_simplified() -> dict[str, str]:
    """zhconv's zh-cn single-character mappings, closed under repetition."""
    import zhconv.zhconv as zz  # loaded once, at import of this module

    table = zz.getdict("zh-cn")
    single = {k: v for k, v in table.items() if len(k) == 1 and len(v) == 1 and k != v}
    for k in list(single):
        seen = {k}
        v = single[k]
        while v in single and v not in seen:
            seen.add(v)
            v = single[v]
        single[k] = v
    return single


_SIMPLIFIED = _load_simplified()


def _fold_once(s: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", s).casefold()):
        if unicodedata.category(ch)[0] in _DROP:
            continue
        ch = _SIMPLIFIED.get(ch, ch)
        out.append(_CONFUSABLE.get(ch, ch))
    return "".join(out)


# Look-alikes that compatibility decomposition would turn into another letter first
# (lunate sigma -> sigma): mapped before any folding.
_CONFUSABLE_RAW = {"ϲ": "c", "Ϲ": "c"}


def _fold_char(cp: int) -> int | str | None:
    """The translation-table entry for one code point (iterated to a fixed point)."""
    s = _CONFUSABLE_RAW.get(chr(cp), chr(cp))
    for _ in range(8):
        t = _fold_once(s)
        if t == s:
            break
        s = t
    if not s:
        return None
    if len(s) == 1:
        return ord(s)
    return s


class _FoldTable(dict):
    """Code point -> folded form. The BMP is precomputed; other planes fill in on first
    sight, up to a bound (beyond it they are computed each time, never stored)."""

    MAX_ENTRIES = 300_000

    def __missing__(self, cp: int) -> int | str | None:
        v = _fold_char(cp)
        if len(self) < self.MAX_ENTRIES:
            self[cp] = v
        return v


_TABLE = _FoldTable((cp, _fold_char(cp)) for cp in range(0x10000))


def _word_char(cp: int) -> int | str | None:
    v = _TABLE[cp]
    if v is None and unicodedata.category(chr(cp))[0] in "ZPS":
        return " "
    return v


class _WordTable(dict):
    """`_TABLE` with spaces, punctuation and symbols turned into one space instead of
    deleted: where the words of the original text were (for pinyin written in Latin)."""

    def __missing__(self, cp: int) -> int | str | None:
        return _word_char(cp)


_WORDS = _WordTable((cp, _word_char(cp)) for cp in range(0x10000))


def normalise(text: str) -> str:
    """The form in which texts and terms are compared (see the module docstring)."""
    return text.translate(_TABLE)


def normalise_words(text: str) -> tuple[str, str]:
    """(normalise(text), the same with one space wherever spaces, punctuation or symbols
    were taken out): one pass for both."""
    words = text.translate(_WORDS)
    return words.replace(" ", ""), words


# --- word lists ----------------------------------------------------------------------------

EXACT = "="     # a list line "=term": that term exactly (normalised), no variants, no gap


def read_terms(path: str) -> list[str]:
    """Normalised terms of one list file: one per line, '#' comments and blanks ignored.
    Lines that normalise to nothing (punctuation only) are skipped: they would match all.
    A line "=term" comes back as "=" + the normalised term (exact match only)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ValueError("content filter word list not found: %s" % path) from None
    except UnicodeDecodeError as e:
        raise ValueError("content filter word list %s: not UTF-8 (%s)" % (path, e)) from None
    terms = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exact = line.startswith(EXACT)
        term = normalise(line[1:] if exact else line)
        if term:
            terms.append(EXACT + term if exact else term)
    return terms


def _category_of(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# --- matching --------------------------------------------------------------------------------

MAX_CACHED_TERMS = 200_000     # expansions kept for the next load (see `ContentFilter`)


class ContentFilter:
    """One `Matcher` for the global lists, one per account that has extra lists (global terms
    included, so each message is scanned once)."""

    __slots__ = ("_global", "_by_account", "_refusals", "categories", "term_count",
                 "max_gap", "entries", "expansions")

    def __init__(self, lists: Mapping[str, list[str]],
                 account_lists: Mapping[str, Mapping[str, list[str]]] | None = None,
                 max_gap: int = DEFAULT_MAX_GAP,
                 previous: "ContentFilter | None" = None) -> None:
        """`lists`: category -> normalised terms ("=term" for exact only); `account_lists`:
        account -> the same for that account's extra lists; `max_gap`: non-Han characters
        tolerated between two characters of a term; `previous`: the filter this one replaces
        (a reload), whose term expansions are reused: only new terms are expanded, which is
        most of the load time. Use `load` to read them from files."""
        account_lists = account_lists or {}
        cats = set(lists)
        for extra in account_lists.values():
            cats.update(extra)
        self.categories = tuple(sorted(cats))
        self.term_count = sum(len(t) for t in lists.values())
        self.max_gap = max_gap
        self._refusals = {c: Refusal(_RCONTENT, "content", "content refused: category %s" % c,
                                     category=c) for c in cats}
        cache = previous.expansions if previous is not None else {}
        if len(cache) > MAX_CACHED_TERMS:       # lists replaced wholesale: start again
            cache = {}
        self.expansions = cache
        self._global = build_matcher(lists.items(), self._refusals, max_gap, cache,
                                     normalise)
        self._by_account = {
            acc: build_matcher(list(lists.items()) + list(extra.items()), self._refusals,
                               max_gap, cache, normalise)
            for acc, extra in account_lists.items()}
        self.entries = self._global.entries if self._global is not None else 0

    @classmethod
    def load(cls, filters_dir: str,
             extra_files_by_account: Mapping[str, tuple[str, ...]] | None = None,
             max_gap: int = DEFAULT_MAX_GAP,
             previous: "ContentFilter | None" = None) -> "ContentFilter":
        """Read `<filters_dir>/<category>.txt` for the nine categories (all must exist) and
        each account's extra files (category = file name without extension; relative
        paths that do not exist from the cwd are taken from `filters_dir`)."""
        if not os.path.isdir(filters_dir):
            raise ValueError("content filter directory not found: %s" % filters_dir)
        lists = {c: read_terms(os.path.join(filters_dir, c + ".txt")) for c in CATEGORIES}
        account_lists: dict[str, dict[str, list[str]]] = {}
        for account, files in (extra_files_by_account or {}).items():
            if not files:
                continue
            extra: dict[str, list[str]] = {}
            for path in files:
                if not os.path.isabs(path) and not os.path.exists(path):
                    path = os.path.join(filters_dir, path)
                extra.setdefault(_category_of(path), []).extend(read_terms(path))
            account_lists[account] = extra
        return cls(lists, account_lists, max_gap, previous)

    def check(self, text: str | None, account_id: str = "") -> Verdict:
        """Refusal(PROXYD_RCONTENT, "content", ...) naming the category, or None. The
        refusal's `term` and `variant` (not part of its text) say what matched."""
        if text is None:
            return None
        words = text.translate(_WORDS)
        return self.check_normalised(words.replace(" ", ""), account_id, words)

    def check_normalised(self, normalised: str, account_id: str = "",
                         words: str | None = None) -> Verdict:
        """`check` for a text already passed through `normalise`; `words` (from
        `normalise_words`) tells where the original had word boundaries, for pinyin
        written in Latin letters (without it, only script changes count as boundaries)."""
        m = self._by_account.get(account_id, self._global)
        if m is None:
            return None
        return m.check(normalised, words)


# --- binary, signature, unsubscribe ----------------------------------------------------------

def is_binary(msg: Message) -> bool:
    """8-bit data: data_coding 2 or 4, the GSM message-class group with 8-bit data
    (0xF4-0xF7, 0xFC-0xFF), or no decoded text at all."""
    dc = msg.data_coding
    return (msg.text is None or dc == DC_BINARY_2 or dc == DC_BINARY
            or (dc & 0xF4) == 0xF4)


BINARY_REFUSED = Refusal(_RCONTENT, "binary", "binary messages are not allowed for this account")


def check_binary(msg: Message, account: AccountConfig) -> Verdict:
    if account.allow_binary or not is_binary(msg):
        return None
    return BINARY_REFUSED


_SIG = r"【([^【】\r\n]{1,16})】"
_SIG_START = re.compile(r"\s*" + _SIG)
_SIG_END = re.compile(_SIG + r"\s*\Z")


def _inner_ok(m: re.Match | None) -> bool:
    return m is not None and not m.group(1).isspace()


_SIGNATURE_REFUSED = {
    w: Refusal(_RCONTENT, "signature",
               "signature required: 【name】 (1-16 characters) at the %s of the text"
               % {"start": "start", "end": "end", "either": "start or end"}[w])
    for w in ("start", "end", "either")
}


def check_signature(text: str | None, account: AccountConfig) -> Verdict:
    """account.signature "start" / "end" / "either": the text must carry a 【...】 signature
    (1-16 characters inside) there. "" = no requirement. Binary (None) texts are not checked."""
    where = account.signature
    if not where or text is None:
        return None
    ok = False
    if where in ("start", "either"):
        ok = _inner_ok(_SIG_START.match(text))
    if not ok and where in ("end", "either"):
        ok = _inner_ok(_SIG_END.search(text))
    return None if ok else _SIGNATURE_REFUSED[where]


# Matched on the normalised text (so "回 T 退订", "回Ｔ退订", "退訂回T" all count).
_UNSUBSCRIBE = re.compile(
    r"(?:回复?|发送?|短信回复?)(?:t|td|n|0000|退订)(?:即可)?退订"
    r"|退订(?:请)?(?:回复?|发送?)(?:t|td|n|0000)"
    r"|拒收请?回复?r"
)

UNSUBSCRIBE_REFUSED = Refusal(_RCONTENT, "unsubscribe",
                               "marketing text must tell how to unsubscribe, e.g. 回T退订")


def has_unsubscribe_hint(normalised: str) -> bool:
    return _UNSUBSCRIBE.search(normalised) is not None


def check_unsubscribe(text: str | None, account: AccountConfig) -> Verdict:
    """Marketing accounts must carry an unsubscribe hint (回T退订, 退订回T, 回TD退订,
    拒收请回复R, ...)."""
    if not account.marketing or text is None:
        return None
    return None if has_unsubscribe_hint(normalise(text)) else UNSUBSCRIBE_REFUSED
