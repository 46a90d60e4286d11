"""The content filter's matching: one message against every listed term and its variants.

Each scan is an Aho-Corasick automaton (pyahocorasick, C) over a string made by one
``str.translate``; Python code runs only on a candidate hit. Every automaton is built when the
lists load, from the terms and their expansions (`variants.Expander`); a class of variants
whose forms all look the same in a scan's alphabet costs one entry there (every homophone of
a term has the term's sounds, every mix of characters and pinyin has the term's pinyin).

1. Han. The text's Han characters alone (every other character deleted), in two forms:
   as characters, and as sounds, two codes a syllable (`variants.syllable_table`: default
   toneless reading). Terms of three or more Han characters are keys of the sounds
   automaton, by their default and their phrase reading; terms of two, and the pure-Han
   variants (decompositions, homophones by a second reading, 都 for 赌, and for two-character
   terms every common character of the same reading in either place) are keys of the
   characters automaton. (Two-syllable sound keys would meet ordinary text at every other
   sentence: ``独播`` sounds like 赌博.) A candidate counts when
   - at most `max_gap` characters (not Han) stood between two of its characters in the
     normalised text: ``网上赌①博`` -> ``网上赌1博``, one. Han noise (``网上赌你博``) is a
     character of its own, so it breaks the sequence: the gap rule never bridges it;
   - for a sounds key, at most half of the term's characters are other characters of the
     same reading (homophones): ``颠复国嫁政权`` matches 颠覆国家政权 (two of six). A term
     written wholly in other characters is another word that sounds alike (``独播`` and
     赌博, ``强制`` and 枪支): it passes. For two characters that means one homophone, which
     is what the characters automaton holds (``网上堵博`` matches 赌博).
   The two scans cover the exact term, noise, homophones and decompositions.
2. Letters. The normalised text with every character that is not ASCII as ``?`` (one a
   character) against every ASCII form: Latin terms (``casino``), full pinyin (``dubo``)
   and initials (``wsdb``, three letters or more). Run only when the text has a Latin
   letter (or a digit, if a listed form is digits alone). (Forms that mix Han and other
   characters, ``qq群``, are scanned over the UTF-8 bytes of the text, carried as latin-1
   characters: fan-out <= 64 a node.) A pinyin form that begins or ends with a Latin
   letter counts only where that letter begins or ends a word of the original text (a
   space, punctuation, a Han character or a digit next to it): ``wang shang du bo``
   matches, the letters ``dubo`` inside ``Dubois`` do not; initials must stand as a word
   of their own (``lhc``, ``LHC开奖``). Terms without Han characters are also looked for
   with the digits taken out: at most `max_gap` digits between two letters (``ca1sino``).
3. Pinyin (per message, texts with both Han characters and Latin letters): the text with
   each Han character replaced by its default reading in capitals, scanned in lower case
   against each term's pinyin (by its phrase and its default reading). A hit that mixes
   the two (``网上du博``, ``du搏``) counts when it falls on whole syllables of the term,
   its Latin edges are word boundaries and at most half of its Han characters are
   homophones. A hit of Han alone is scan 1's, of Latin alone scan 2's.

Terms listed as ``=term`` get their exact form only (scan 1 or 2, no gap). Refusals carry the
matched term and its variant class (``exact``, ``gap``, ``pinyin``, ``initials``, ``mixed``,
``homophone``, ``split``) for the journal and the log, never in their text.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate
from typing import Any

import ahocorasick

from proxyd.message import Refusal, Verdict
from proxyd.policy.variants import (
    Expander, is_han, pinyin_table, pinyin_upper_table, syllable_table,
)

__all__ = ["Matcher", "build_matcher", "DEFAULT_MAX_GAP"]

DEFAULT_MAX_GAP = 2

B_START, B_END = 1, 2                  # letters entry flags: a Latin letter at the start / end

_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0003ffff]")
_NOT_HAN = re.compile("[^\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0003ffff]+")  # = is_han
_HAS_LATIN = re.compile("[a-z]")
_HAS_DIGIT = re.compile("[0-9]")
_DIGITS = re.compile("[0-9]+")
_DIGIT_NOISE = re.compile("[a-z][0-9]{1,8}[a-z]")     # (max_gap is at most 8)
_EXACT = "="


def _key(normalised: str) -> str:
    """The characters automaton's alphabet: UTF-8 bytes carried as latin-1 characters."""
    return normalised.encode("utf-8").decode("latin-1")


def _latin(ch: str) -> bool:
    return "a" <= ch <= "z"


def _edges(form: str) -> int:
    return (B_START if _latin(form[0]) else 0) | (B_END if _latin(form[-1]) else 0)


class _Text:
    """What the rare path needs to know about one message, computed on first need."""

    __slots__ = ("norm", "words", "_bounds", "_han", "_han_pos", "_py_starts")

    def __init__(self, norm: str, words: str | None, han: str | None = None) -> None:
        self.norm = norm
        self.words = words
        self._bounds: set[int] | None = None
        self._han = han
        self._han_pos: list[int] | None = None
        self._py_starts: list[int] | None = None

    def bounds(self) -> set[int]:
        """Positions in norm where the original text had a space, punctuation or a symbol."""
        if self._bounds is None:
            got: set[int] = set()
            if self.words is not None:
                parts = self.words.split(" ")
                if sum(map(len, parts)) == len(self.norm):
                    got = set(accumulate(map(len, parts)))
            self._bounds = got
        return self._bounds

    def boundary(self, i: int) -> bool:
        """A word boundary between norm[i-1] and norm[i] (for Latin letters)."""
        norm = self.norm
        if i <= 0 or i >= len(norm):
            return True
        if not (_latin(norm[i - 1]) and _latin(norm[i])):
            return True
        return i in self.bounds()

    def han(self) -> str:
        """The Han characters that have a reading, in order (what scan 1 saw)."""
        if self._han is None:
            self._han = _NOT_HAN.sub("", self.norm)
        return self._han

    def han_pos(self) -> list[int]:
        if self._han_pos is None:
            self._han_pos = [m.start() for m in _HAN.finditer(self.norm)]
        return self._han_pos

    def non_digit_pos(self) -> list[int]:
        return [i for i, c in enumerate(self.norm) if not ("0" <= c <= "9")]

    def py_starts(self, table: Mapping[str, str]) -> list[int]:
        """Offset of each normalised character in the pinyin string (plus its length)."""
        if self._py_starts is None:
            norm = self.norm
            self._py_starts = [0, *accumulate(map(len, map(table.get, norm, norm)))]
        return self._py_starts


class Matcher:
    """The automata for one set of lists (see the module docstring)."""

    __slots__ = ("sounds", "chars", "letters", "digit_forms", "wide", "latin", "pinyin",
                 "max_gap", "upper", "by_char", "syl", "entries")

    def __init__(self, sounds: Any, chars: Any, letters: Any, wide: Any, latin: Any,
                 pinyin: Any, max_gap: int, entries: int, digit_forms: bool = True) -> None:
        self.sounds = sounds
        self.chars = chars
        self.letters = letters              # forms of ASCII characters
        self.digit_forms = digit_forms      # one of them has no letter: scan texts of digits
        self.wide = wide                    # other forms that are not Han alone ("qq群")
        self.latin = latin
        self.pinyin = pinyin
        self.max_gap = max_gap
        self.upper = pinyin_upper_table()
        self.by_char = {chr(cp): r for cp, r in pinyin_table().items()}
        self.syl = syllable_table()
        self.entries = entries

    def check(self, norm: str, words: str | None = None) -> Verdict:
        """`norm`: the normalised text; `words`: the same with a space where normalisation
        took out spaces, punctuation or symbols (None: no word boundaries known)."""
        ctx = None
        han = "" if norm.isascii() else _NOT_HAN.sub("", norm)
        if han:
            ctx = _Text(norm, words, han)      # (a few slots: cheaper than testing for it)
            if self.chars is not None:
                key = han.encode("utf-8").decode("latin-1")
                bmp = len(key) == 3 * len(han)
                for end, vs in self.chars.iter(key):
                    last = (end + 1) // 3 if bmp else len(
                        key[:end + 1].encode("latin-1").decode("utf-8"))
                    for v in vs:
                        cls = self._sound_ok(ctx, last, v)
                        if cls is not None:
                            return _refusal(v[0], v[1], cls)
            if self.sounds is not None:
                for end, vs in self.sounds.iter(han.translate(self.syl)):
                    last = (end + 1) >> 1       # two codes a syllable: index after the hit
                    for v in vs:
                        form = v[2]
                        seg = han[last - len(form):last]
                        if seg != form:         # fast refusal of most near-hits
                            diff = 0
                            for a, b in zip(seg, form):
                                if a != b:
                                    diff += 1
                            if diff > v[4]:
                                continue
                        cls = self._sound_ok(ctx, last, v)
                        if cls is not None:
                            return _refusal(v[0], v[1], cls)
        has_latin = _HAS_LATIN.search(norm) is not None
        letters = self.letters
        if letters is not None and (has_latin or (
                self.digit_forms and _HAS_DIGIT.search(norm) is not None)):
            # ASCII forms over the text with every other character as "?" (one a character,
            # so an index of the hit is an index of norm; no form contains "?")
            for end, v in letters.iter(norm.encode("ascii", "replace").decode("ascii")):
                if v[3]:
                    if v[2] == "initials" and words is not None:
                        if not _token(words, v[4]):     # (the usual near-hit: in a word)
                            continue
                    else:
                        if ctx is None:
                            ctx = _Text(norm, words)
                        if not self._bounded(ctx, end + 1, v):
                            continue
                return _refusal(v[0], v[1], v[2])
        wide = self.wide
        if wide is not None:                # (rare: terms that mix Han and other characters)
            key = norm.encode("utf-8")
            for end, v in wide.iter(key.decode("latin-1")):
                if v[3]:
                    if ctx is None:
                        ctx = _Text(norm, words)
                    if not self._bounded(ctx, len(key[:end + 1].decode("utf-8")), v):
                        continue
                return _refusal(v[0], v[1], v[2])
        latin = self.latin
        if latin is not None and has_latin and _DIGIT_NOISE.search(norm) is not None:
            for end, v in latin.iter(_DIGITS.sub("", norm)):
                if ctx is None:
                    ctx = _Text(norm, words)
                if self._digit_gap_ok(ctx, end, v):
                    return _refusal(v[0], v[1], "gap")
        pinyin = self.pinyin
        if pinyin is not None and han and has_latin:
            upper = norm.translate(self.upper)
            for end, v in pinyin.iter(upper.lower()):
                region = upper[end - len(v[2]) + 1:end + 1]
                if region.isupper() or region.islower():
                    continue        # Han alone: scan 1's; Latin alone: scan 2's
                if ctx is None:
                    ctx = _Text(norm, words)
                cls = self._pinyin_ok(ctx, end, v)
                if cls is not None:
                    return _refusal(v[0], v[1], cls)
        return None

    # -- the rare path: a candidate hit -------------------------------------------------
    def _sound_ok(self, ctx: _Text, last: int, v: tuple) -> str | None:
        """A hit that ends before the `last`-th Han character; v = (refusal, term, form,
        class, homophones allowed, gap allowed)."""
        form = v[2]
        n = len(form)
        seg = ctx.han()[last - n:last]
        diff = 0
        for a, b in zip(seg, form):
            if a != b:
                diff += 1
        if diff > v[4]:
            return None
        pos = ctx.han_pos()[last - n:last]
        spread = pos[-1] - pos[0] + 1 != n
        if spread:
            gap = self.max_gap if v[5] else 0
            for j in range(1, n):
                if pos[j] - pos[j - 1] - 1 > gap:
                    return None
        if v[3] != "exact":
            return v[3]
        return "homophone" if diff else ("gap" if spread else "exact")

    def _digit_gap_ok(self, ctx: _Text, end: int, v: tuple) -> bool:
        """A term without Han characters, found with the digits taken out: at most max_gap
        digits between two of its characters."""
        pos = ctx.non_digit_pos()
        gap = self.max_gap
        for j in range(end - len(v[1]) + 1, end):
            if pos[j + 1] - pos[j] - 1 > gap:
                return False
        return True

    @staticmethod
    def _bounded(ctx: _Text, stop: int, v: tuple) -> bool:
        """Latin edges of a variant hit fall on word boundaries (stop: norm index after
        the hit)."""
        start = stop - len(v[4])
        if v[3] & B_START and not ctx.boundary(start):
            return False
        return not (v[3] & B_END and not ctx.boundary(stop))

    def _pinyin_ok(self, ctx: _Text, end: int, v: tuple) -> str | None:
        """A pinyin hit: whole syllables, word-bounded Latin, homophones <= half. Returns
        the variant class, or None."""
        _, term, key, starts_t, nhan = v
        s = end - len(key) + 1
        starts = ctx.py_starts(self.by_char)
        i0 = bisect_right(starts, s) - 1
        if starts[i0] != s:
            return None
        i1 = bisect_right(starts, end) - 1
        if starts[i1 + 1] != end + 1:
            return None
        norm = ctx.norm
        if _latin(norm[i0]) and not ctx.boundary(i0):
            return None
        if _latin(norm[i1]) and not ctx.boundary(i1 + 1):
            return None
        bounds = dict((o, j) for j, o in enumerate(starts_t))
        nterm = len(term)
        homophones = 0
        for i in range(i0, i1 + 1):
            ch = norm[i]
            if not is_han(ch):
                continue
            o = starts[i] - s
            j = bounds.get(o)
            nxt = starts[i + 1] - s
            if j is None or (starts_t[j + 1] if j + 1 < nterm else len(key)) != nxt:
                return None             # a Han syllable across the term's syllables
            if ch != term[j]:
                homophones += 1
        if homophones * 2 > nhan:
            return None
        return "homophone" if homophones else "mixed"


def _token(words: str, form: str) -> bool:
    """`form` stands in `words` with no Latin letter right before or after it (initials are
    written as one word: ``lhc``, ``LHC开奖``)."""
    i = words.find(form)
    n = len(form)
    while i >= 0:
        if (i == 0 or not _latin(words[i - 1])) and (
                i + n == len(words) or not _latin(words[i + n])):
            return True
        i = words.find(form, i + 1)
    return False


def _refusal(base: Refusal, term: str, variant: str) -> Refusal:
    return Refusal(base.status, base.reason, base.text, base.category, term, variant)


def build_matcher(lists: Iterable[tuple[str, list[str]]], refusals: Mapping[str, Refusal],
                  max_gap: int, cache: dict, normalise: Callable[[str], str]
                  ) -> Matcher | None:
    """The automata for `lists` ((category, terms); the first category to name a form
    keeps it). `cache` (term -> expansions) is shared between builds (key None: the
    Expander);
    `normalise` is the filter's fold."""
    expander = cache.get(None) or cache.setdefault(None, Expander(normalise))
    syl = syllable_table()
    sounds: dict[str, list[tuple]] = {}
    chars: dict[str, list[tuple]] = {}
    letters = ahocorasick.Automaton()
    wide = ahocorasick.Automaton()
    latin = ahocorasick.Automaton()
    digit_forms = [False]
    py = ahocorasick.Automaton()
    seen: set[str] = set()

    def add(base: Refusal, term: str, form: str, cls: str, homophones: int, gap: bool,
            keys: Iterable[str] = ()) -> None:
        if form in seen:
            return
        seen.add(form)
        if all(map(is_han, form)):
            entry = (base, term, form, cls, homophones, gap)
            if homophones and len(form) >= 3:
                for k in dict.fromkeys([form.translate(syl), *keys]):
                    sounds.setdefault(k, []).append(entry)
            else:
                chars.setdefault(_key(form), []).append(entry)
            return
        flags = _edges(form) if cls in ("pinyin", "initials", "mixed") else 0
        if form.isascii():
            digit_forms[0] = digit_forms[0] or not _HAS_LATIN.search(form)
            if form not in letters:
                letters.add_word(form, (base, term, cls, flags, form))
            return
        k = _key(form)
        if k not in wide:
            wide.add_word(k, (base, term, cls, flags, form))

    later: list[tuple[str, Refusal]] = []
    for category, terms in lists:
        base = refusals[category]
        for raw in terms:
            exact = raw.startswith(_EXACT)
            term = raw[1:] if exact else raw
            if not term or term in seen:
                continue
            if exact:
                add(base, term, term, "exact", 0, False)
                continue
            got = cache.get(term)
            if got is None:
                got = cache[term] = (tuple(expander.expand(term, mixed=False)),
                                     expander.pinyin_forms(term),
                                     expander.sound_forms(term),
                                     tuple(expander.same_reading(term))
                                     if len(term) == 2 else ())
            add(base, term, term, "exact", len(term) // 2, True, got[2])
            later.append((term, base))
            if len(term) > 1 and not any(map(is_han, term)) and term not in latin:
                latin.add_word(term, (base, term))
    for term, base in later:            # variants after every listed term
        variants, forms, term_sounds, same = cache[term]
        nhan = sum(1 for c in term if is_han(c))
        for form in same:               # two characters: one of them as a homophone
            add(base, term, form, "homophone", 0, True)
        for form, cls in variants:
            if cls == "homophone" and form.translate(syl) in term_sounds:
                continue                # the term's own sound entry covers it
            add(base, term, form, cls, 0, True)
        for key, starts in forms:
            if key not in py:
                py.add_word(key, (base, term, key, starts, nhan))
    if not sounds and not chars and not len(letters) and not len(wide):
        return None
    grouped = []
    for table in (sounds, chars):
        a = None
        if table:
            a = ahocorasick.Automaton()
            for k, vs in table.items():
                a.add_word(k, tuple(vs))
            a.make_automaton()
        grouped.append(a)
    built = []
    for a in (letters, wide, latin, py):
        if len(a):
            a.make_automaton()
        built.append(a if len(a) else None)
    return Matcher(grouped[0], grouped[1], built[0], built[1],
                   built[2] if max_gap else None, built[3], max_gap, len(seen),
                   digit_forms[0])
