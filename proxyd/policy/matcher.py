"""The content filter's matching: one message against every listed term and its variants.

Three scans of C code per message, each an Aho-Corasick automaton (pyahocorasick) over a
string made by one ``str.translate`` or ``re.sub``; Python code runs only on a candidate hit:

1. The normalised text against the terms and their load-time variants (`variants.Expander`:
   pinyin, initials, mixed, homophones, decompositions). The automaton's alphabet is the
   UTF-8 bytes of the text carried as latin-1 characters (fan-out <= 64 a node; ~2 us).
   A variant that begins or ends with Latin letters (``dubo``, ``wsdb``, ``du博``) counts
   only where those letters begin or end a word of the original text (a space, punctuation,
   a Han character or a digit next to them): ``wang shang du bo`` and ``网上du博`` match,
   the letters ``heshi`` inside ``the shirt`` do not.
2. Noise (`max_gap`): the same automaton over the text with every non-Han character taken
   out. A hit on a Han-only term or variant counts if, in the normalised text, at most
   `max_gap` characters stood between each two of its characters (``网上赌①博`` ->
   ``网上赌1博``: one). Han noise (``网上赌你博``) stays in that string, so the gap rule never
   bridges it. Run only when the text has non-Han characters at all.
3. Pinyin (per message): the text with each Han character replaced by its default toneless
   reading (``网上du搏`` -> ``wangshangdubo``), against each term's pinyin. A hit counts
   when it falls on whole syllables of the term, Latin edges on word boundaries as in 1.,
   and at most half of the term's characters are written as other Han characters of the
   same reading (homophones): ``网上堵博`` matches 网上赌博, but ``独播`` (two of two) does
   not match 赌博, which keeps ordinary words that sound like a listed term out.

Terms listed as ``=term`` get scan 1 for the term itself only. Refusals carry the matched
term and its variant class (``exact``, ``gap``, ``pinyin``, ``initials``, ``mixed``,
``homophone``, ``split``) for the journal and the log, never in their text.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ahocorasick

from proxyd.message import Refusal, Verdict
from proxyd.policy.variants import (
    Expander, is_han, pinyin_table, pinyin_upper_table, syllable_table,
)

__all__ = ["Matcher", "build_matcher", "DEFAULT_MAX_GAP"]

DEFAULT_MAX_GAP = 2

B_START, B_END = 1, 2                  # entry flags: a Latin letter at the start / end

_HAN_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0003ffff"
_HAN = re.compile("[%s]" % _HAN_RANGES)
_HAS_LATIN = re.compile("[a-z]")
_HAS_DIGIT = re.compile("[0-9]")
_DIGITS = re.compile("[0-9]+")
_EXACT = "="


def _key(normalised: str) -> str:
    """The main automaton's alphabet: UTF-8 bytes carried as latin-1 characters."""
    return normalised.encode("utf-8").decode("latin-1")


def _latin(ch: str) -> bool:
    return "a" <= ch <= "z"


def _edges(form: str) -> int:
    return (B_START if _latin(form[0]) else 0) | (B_END if _latin(form[-1]) else 0)


class _Text:
    """What the rare path needs to know about one message, computed on first need."""

    __slots__ = ("norm", "text", "words", "_bounds", "_han_pos", "_py_starts")

    def __init__(self, norm: str, text: str | None, words: Mapping) -> None:
        self.norm = norm
        self.text = text
        self.words = words
        self._bounds: set[int] | None = None
        self._han_pos: list[int] | None = None
        self._py_starts: list[int] | None = None

    def bounds(self) -> set[int]:
        """Positions in norm where the original text had a space, punctuation or a symbol."""
        if self._bounds is None:
            got: set[int] = set()
            if self.text is not None:
                parts = self.text.translate(self.words).split(" ")
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

    __slots__ = ("main", "latin", "sound", "pinyin", "max_gap", "upper", "by_char", "syl",
                 "words", "entries")

    def __init__(self, main: Any, latin: Any, sound: Any, pinyin: Any, max_gap: int,
                 words: Mapping, entries: int) -> None:
        self.main = main
        self.latin = latin
        self.sound = sound
        self.pinyin = pinyin
        self.max_gap = max_gap
        self.upper = pinyin_upper_table()
        self.by_char = {chr(cp): r for cp, r in pinyin_table().items()}
        self.syl = syllable_table()
        self.words = words
        self.entries = entries

    def check(self, norm: str, text: str | None = None) -> Verdict:
        ctx = None
        for end, v in self.main.iter(norm.encode("utf-8").decode("latin-1")):
            if v[3]:
                if ctx is None:
                    ctx = _Text(norm, text, self.words)
                if not self._bounded(ctx, end, v):
                    continue
            return _refusal(v[0], v[1], v[2])
        latin = self.latin
        if latin is not None and _HAS_DIGIT.search(norm) is not None:
            for end, v in latin.iter(_DIGITS.sub("", norm)):
                if ctx is None:
                    ctx = _Text(norm, text, self.words)
                if self._digit_gap_ok(ctx, end, v):
                    return _refusal(v[0], v[1], "gap")
        sound = self.sound
        if sound is not None:
            syl = norm.translate(self.syl)
            if syl:
                for end, v in sound.iter(syl):
                    if ctx is None:
                        ctx = _Text(norm, text, self.words)
                    cls = self._sound_ok(ctx, end, v)
                    if cls is not None:
                        return _refusal(v[0], v[1], cls)
                pinyin = self.pinyin
                if pinyin is not None and _HAS_LATIN.search(norm) is not None:
                    upper = norm.translate(self.upper)
                    for end, v in pinyin.iter(upper.lower()):
                        region = upper[end - len(v[2]) + 1:end + 1]
                        if region.isupper() or region.islower():
                            continue    # Han alone: the sound scan's; Latin alone: main's
                        if ctx is None:
                            ctx = _Text(norm, text, self.words)
                        cls = self._pinyin_ok(ctx, end, v)
                        if cls is not None:
                            return _refusal(v[0], v[1], cls)
        return None

    # -- the rare path: a candidate hit -------------------------------------------------
    def _digit_gap_ok(self, ctx: _Text, end: int, v: tuple) -> bool:
        """A term without Han characters, found with the digits taken out: at most max_gap
        digits between two of its characters."""
        pos = ctx.non_digit_pos()
        gap = self.max_gap
        for j in range(end - len(v[1]) + 1, end):
            if pos[j + 1] - pos[j] - 1 > gap:
                return False
        return True

    def _sound_ok(self, ctx: _Text, end: int, v: tuple) -> str | None:
        """A hit among the sounds of the Han characters: at most max_gap characters between
        two of them in the text, and at most half of them homophones (not the listed
        character). Returns the variant class, or None."""
        term = v[1]
        n = len(term)
        last = (end + 1) // 2 - 1           # two characters a syllable
        pos = ctx.han_pos()
        norm = ctx.norm
        gap = self.max_gap if v[3] else 0
        spread = False
        diff = 0
        for j in range(n):
            p = pos[last - n + 1 + j]
            if j and p != prev + 1:
                if p - prev - 1 > gap:
                    return None
                spread = True
            if norm[p] != term[j]:
                diff += 1
            prev = p
        if diff * 2 > n:
            return None
        return "homophone" if diff else ("gap" if spread else "exact")

    @staticmethod
    def _bounded(ctx: _Text, end: int, v: tuple) -> bool:
        """Latin edges of a variant hit fall on word boundaries (end: byte index)."""
        form = v[4]
        key = ctx.norm.encode("utf-8")
        stop = len(key[:end + 1].decode("utf-8"))       # norm index after the hit
        start = stop - len(form)
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


def _refusal(base: Refusal, term: str, variant: str) -> Refusal:
    return Refusal(base.status, base.reason, base.text, base.category, term, variant)


def build_matcher(lists: Iterable[tuple[str, list[str]]], refusals: Mapping[str, Refusal],
                  max_gap: int, cache: dict, normalise: Callable[[str], str],
                  words: Mapping) -> Matcher | None:
    """The automata for `lists` ((category, terms), first category to name a form keeps
    it). `cache` (term -> expansions) is shared between the builds of one load;
    `normalise` is the filter's fold and `words` the same translation table with spaces,
    punctuation and symbols turned into a space instead of deleted."""
    expander = cache.get(None) or cache.setdefault(None, Expander(normalise))
    main = ahocorasick.Automaton()
    latin = ahocorasick.Automaton()
    sound = ahocorasick.Automaton()
    py = ahocorasick.Automaton()
    later: list[tuple[str, Refusal]] = []
    for category, terms in lists:
        base = refusals[category]
        for raw in terms:
            exact = raw.startswith(_EXACT)
            term = raw[1:] if exact else raw
            if not term:
                continue
            k = _key(term)
            if k not in main:
                main.add_word(k, (base, term, "exact", 0, term))
            if not exact:
                later.append((term, base))
                if len(term) > 1 and not any(map(is_han, term)) and term not in latin:
                    latin.add_word(term, (base, term))
    for term, base in later:            # variants after every listed term
        got = cache.get(term)
        if got is None:
            got = cache[term] = (tuple(expander.expand(term)), expander.pinyin_forms(term),
                                 expander.sound_forms(term))
        variants, forms, sounds = got
        nhan = sum(1 for c in term if is_han(c))
        for form, cls in variants:
            k = _key(form)
            if k not in main:
                flags = _edges(form) if cls in ("pinyin", "initials", "mixed") else 0
                main.add_word(k, (base, term, cls, flags, form))
        for key, starts in forms:
            if key not in py:
                py.add_word(key, (base, term, key, starts, nhan))
        for form in sounds:
            if form not in sound:
                sound.add_word(form, (base, term, nhan, True))
    if not len(main):
        return None
    built = []
    for a in (main, latin, sound, py):
        if len(a):
            a.make_automaton()
        built.append(a if len(a) else None)
    return Matcher(built[0], built[1] if max_gap else None, built[2], built[3], max_gap,
                   words, len(main))
