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
from collections.abc import Iterable, Mapping
from typing import Any

import ahocorasick

from proxyd.message import Refusal, Verdict
from proxyd.policy.variants import (
    Expander, is_han, pinyin_table, pinyin_upper_table, syllable_table,
)

__all__ = ["Matcher", "build_matcher", "DEFAULT_MAX_GAP"]

DEFAULT_MAX_GAP = 2

B_START, B_END, GAP = 1, 2, 4          # entry flags: Latin edge at start / end; noise allowed

_HAN_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0003ffff"
_NON_HAN = re.compile("[^%s]+" % _HAN_RANGES)
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

    __slots__ = ("norm", "text", "fold", "_seps", "_han_pos", "_py_starts")

    def __init__(self, norm: str, text: str | None, fold: Mapping) -> None:
        self.norm = norm
        self.text = text
        self.fold = fold
        self._seps: list[bool] | None = None
        self._han_pos: list[int] | None = None
        self._py_starts: list[int] | None = None

    def seps(self) -> list[bool]:
        """seps[i]: something was taken out by normalisation right before norm[i] (a space,
        punctuation, ...), i.e. a word boundary of the original text; len(norm) + 1."""
        if self._seps is None:
            seps: list[bool] = []
            pending = False
            if self.text is not None:
                fold = self.fold
                for ch in self.text:
                    t = fold[ord(ch)]
                    if t is None:
                        pending = True
                        continue
                    n = 1 if type(t) is int else len(t)
                    seps.append(pending)
                    seps.extend([False] * (n - 1))
                    pending = False
            if len(seps) != len(self.norm):     # no original text (or not this one)
                seps = [False] * len(self.norm)
                pending = False
            seps.append(pending)
            self._seps = seps
        return self._seps

    def boundary(self, i: int) -> bool:
        """A word boundary between norm[i-1] and norm[i] (for Latin letters)."""
        norm = self.norm
        if i <= 0 or i >= len(norm):
            return True
        if not (_latin(norm[i - 1]) and _latin(norm[i])):
            return True
        return self.seps()[i]

    def han_pos(self) -> list[int]:
        if self._han_pos is None:
            self._han_pos = [m.start() for m in _HAN.finditer(self.norm)]
        return self._han_pos

    def non_digit_pos(self) -> list[int]:
        return [i for i, c in enumerate(self.norm) if not ("0" <= c <= "9")]

    def py_starts(self, table: Mapping[int, str]) -> list[int]:
        """Offset of each normalised character in the pinyin string (plus its length)."""
        if self._py_starts is None:
            starts, pos = [], 0
            for ch in self.norm:
                starts.append(pos)
                r = table.get(ord(ch))
                pos += len(r) if r is not None else 1
            starts.append(pos)
            self._py_starts = starts
        return self._py_starts


class Matcher:
    """The automata for one set of lists (see the module docstring)."""

    __slots__ = ("main", "latin", "sound", "pinyin", "max_gap", "table", "upper", "syl", "fold",
                 "entries", "pinyin_entries")

    def __init__(self, main: Any, latin: Any, sound: Any, pinyin: Any, max_gap: int,
                 fold: Mapping, entries: int, pinyin_entries: int) -> None:
        self.main = main
        self.latin = latin
        self.sound = sound
        self.pinyin = pinyin
        self.max_gap = max_gap
        self.table = pinyin_table()
        self.upper = pinyin_upper_table()
        self.syl = syllable_table()
        self.fold = fold
        self.entries = entries
        self.pinyin_entries = pinyin_entries

    def check(self, norm: str, text: str | None = None) -> Verdict:
        ctx = None
        main = self.main
        for end, v in main.iter(norm.encode("utf-8").decode("latin-1")):
            flags = v[3]
            if flags & (B_START | B_END):
                if ctx is None:
                    ctx = _Text(norm, text, self.fold)
                if not self._bounded(ctx, end, v):
                    continue
            return _refusal(v[0], v[1], v[2])
        if self.max_gap > 0:
            han = _NON_HAN.sub("", norm)
            if han and len(han) != len(norm):
                key = han.encode("utf-8").decode("latin-1")
                for end, v in main.iter(key):
                    if v[3] & GAP:
                        if ctx is None:
                            ctx = _Text(norm, text, self.fold)
                        if self._gap_ok(ctx, key, end, v):
                            return _refusal(v[0], v[1], "gap" if v[2] == "exact" else v[2])
        latin = self.latin
        if latin is not None and _HAS_DIGIT.search(norm) is not None:
            plain = _DIGITS.sub("", norm)
            for end, v in latin.iter(plain):
                if ctx is None:
                    ctx = _Text(norm, text, self.fold)
                if self._digit_gap_ok(ctx, end, v):
                    return _refusal(v[0], v[1], "gap")
        sound = self.sound
        if sound is not None:
            syl = norm.translate(self.syl)
            if syl != norm:
                key = syl.encode("utf-8").decode("latin-1")
                for end, v in sound.iter(key):
                    if self._homophones_ok(norm, key, end, v):
                        return _refusal(v[0], v[1], "homophone")
        if self.pinyin is not None and _HAS_LATIN.search(norm) is not None:
            upper = norm.translate(self.upper)
            for end, v in self.pinyin.iter(upper.lower()):
                if upper[end - len(v[2]) + 1:end + 1].isupper():
                    continue            # Han characters only: the homophone scan's case
                if ctx is None:
                    ctx = _Text(norm, text, self.fold)
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

    @staticmethod
    def _homophones_ok(norm: str, key: str, end: int, v: tuple) -> bool:
        """Same readings as the term: at most half of its Han characters differ."""
        term = v[1]
        last = len(key[:end + 1].encode("latin-1").decode("utf-8"))
        seg = norm[last - len(term):last]
        diff = 0
        for a, b in zip(seg, term):
            if a != b:
                diff += 1
        return diff * 2 <= v[2]

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

    def _gap_ok(self, ctx: _Text, key: str, end: int, v: tuple) -> bool:
        """A Han-only hit in the Han-only string: at most max_gap between its characters."""
        last = len(key[:end + 1].encode("latin-1").decode("utf-8")) - 1
        first = last - len(v[4]) + 1
        pos = ctx.han_pos()
        gap = self.max_gap
        for j in range(first, last):
            if pos[j + 1] - pos[j] - 1 > gap:
                return False
        return True

    def _pinyin_ok(self, ctx: _Text, end: int, v: tuple) -> str | None:
        """A pinyin hit: whole syllables, word-bounded Latin, homophones <= half. Returns
        the variant class, or None."""
        _, term, key, starts_t, nhan = v
        s = end - len(key) + 1
        starts = ctx.py_starts(self.table)
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
        homophones = latin = han = 0
        for i in range(i0, i1 + 1):
            ch = norm[i]
            if not is_han(ch):
                latin += _latin(ch)
                continue
            o = starts[i] - s
            j = bounds.get(o)
            nxt = starts[i + 1] - s
            if j is None or (starts_t[j + 1] if j + 1 < nterm else len(key)) != nxt:
                return None             # a Han syllable across the term's syllables
            han += 1
            if ch != term[j]:
                homophones += 1
        if homophones * 2 > nhan:
            return None
        if homophones:
            return "homophone"
        if latin:
            return "mixed" if han else "pinyin"
        return "exact"


def _refusal(base: Refusal, term: str, variant: str) -> Refusal:
    return Refusal(base.status, base.reason, base.text, base.category, term, variant)


def build_matcher(lists: Iterable[tuple[str, list[str]]], refusals: Mapping[str, Refusal],
                  max_gap: int, cache: dict, fold: Mapping) -> Matcher | None:
    """The automata for `lists` ((category, terms), first category to name a form keeps
    it); `cache` (term -> expansions) is shared between the builds of one load."""
    lists = list(lists)
    expander = cache.get("") or cache.setdefault("", Expander(lambda s: s.translate(fold)))
    main = ahocorasick.Automaton()
    py = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
    sound = ahocorasick.Automaton()
    latin = ahocorasick.Automaton()
    n = npy = nsound = 0
    later: list[tuple[str, str, Refusal, bool]] = []
    for category, terms in lists:
        base = refusals[category]
        for raw in terms:
            exact = raw.startswith(_EXACT)
            term = raw[1:] if exact else raw
            if not term:
                continue
            k = _key(term)
            if k not in main:
                main.add_word(k, (base, term, "exact", 0 if exact else GAP, term))
                n += 1
            if not exact:
                later.append((category, term, base, exact))
                if len(term) > 1 and not any(map(is_han, term)) and term not in latin:
                    latin.add_word(term, (base, term))
    for category, term, base, _ in later:      # variants after every listed term
        got = cache.get(term)
        if got is None:
            got = cache[term] = (tuple(expander.expand(term)), expander.pinyin_forms(term),
                                 expander.sound_forms(term))
        variants, forms, sounds = got
        nhan = sum(1 for c in term if is_han(c))
        for form, cls in variants:
            k = _key(form)
            if k in main:
                continue
            flags = _edges(form) if cls in ("pinyin", "initials", "mixed") else 0
            if all(is_han(c) for c in form):
                flags |= GAP
            main.add_word(k, (base, term, cls, flags, form))
            n += 1
        for key, starts in forms:
            if key not in py:
                py.add_word(key, (base, term, key, starts, nhan))
                npy += 1
        for form in sounds:
            k = _key(form)
            if k not in sound:
                sound.add_word(k, (base, term, nhan))
                nsound += 1
    if not n:
        return None
    main.make_automaton()
    if npy:
        py.make_automaton()
    if nsound:
        sound.make_automaton()
    if len(latin):
        latin.make_automaton()
    return Matcher(main, latin if len(latin) and max_gap else None, sound if nsound else None, py if npy else None, max_gap, fold,
                   n, npy)
