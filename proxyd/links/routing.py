"""Choosing an upstream for a destination.

The rule, in order (`pick`):

1. **Eligible**: the upstream is bound now and not already tried for this part; it is open to
   the account (`[[upstream]] accounts`, empty = every account); the account does not pin
   other upstreams (`[[account]] upstreams`, empty = any); the destination matches its
   `prefixes` (empty = any) and its `carriers` (empty = any).
2. **Priority**: the lowest `priority` value among the eligible wins; higher values are
   backups, used only when no better upstream is eligible (not bound, or already tried by the
   relay's failover).
3. **Weight**: among upstreams of that priority that have free window, smooth weighted round
   robin (the nginx algorithm): every pick adds each candidate's `weight` to its running
   score, the highest score wins and has the candidates' total weight taken off. Weights
   5, 1, 1 give the repeating sequence a a b a c a a; equal weights alternate. The scores
   are kept per upstream name in the router, so the sequence is deterministic for a given
   order of picks. An upstream with `weight = 0` is chosen only when every candidate of its
   priority has weight 0 (a drained upstream that still serves as a last resort).
4. **Free window**: an upstream whose window is full is passed over while another of the
   same priority has room (if none has, the round robin runs over all of them and the
   request waits in the chosen upstream's queue for `[relay] queue_wait_s`). Equal scores go
   to the most free window, then to config order.

`routable()` answers whether any upstream (bound or not) is eligible by account, pin, prefix
and carrier: when it is False the relay answers ESME_RINVDSTADR ("no route"); when it is
True but `pick()` finds nothing bound, the relay answers ESME_RMSGQFUL (retry later).

Destinations are compared as the digits after an optional "+". A Chinese mobile number
written internationally (8613800138000, 008613800138000) also matches the prefixes of its
national form (13800138000), so `prefixes = ["138"]` works for both spellings.

Carriers come from the `phonenumbers` library's carrier data (the operator that was
allocated the number range; a number ported to another operator under 携号转网 keeps its
original carrier there). Config names are case-insensitive and may be the English names
("China Mobile"), the Chinese names (中国移动, 中国联通, 中国电信, 中国广电) or the aliases in
`CARRIER_ALIASES` (cmcc, unicom, telecom, ...); any other name is compared with the
English name phonenumbers gives. Parsing a number costs ~20 us, so the carrier is cached:
for Chinese mobile numbers per 7-digit prefix (phonenumbers' Chinese carrier prefixes are
at most 4 digits long, so all numbers sharing 7 digits share their carrier), for other
numbers per number, in a bounded cache.
"""
from __future__ import annotations

from typing import Any, Iterable

import phonenumbers
from phonenumbers import carrier as _carrier

# canonical English carrier name (as phonenumbers spells it) -> accepted spellings
_CARRIERS = {
    "China Mobile": ("china mobile", "chinamobile", "cmcc", "mobile", "中国移动",
                     "移动"),
    "China Unicom": ("china unicom", "chinaunicom", "cucc", "unicom", "中国联通", "联通"),
    "China Telecom": ("china telecom", "chinatelecom", "ctcc", "telecom", "中国电信", "电信"),
    "China Broadnet": ("china broadnet", "chinabroadnet", "cbn", "broadnet", "中国广电",
                       "广电"),
}
CARRIER_ALIASES: dict[str, str] = {alias: name for name, aliases in _CARRIERS.items()
                                   for alias in aliases}

_CACHE_MAX = 100_000


def canonical_carrier(name: str) -> str:
    """The spelling phonenumbers uses for a configured carrier name, case-folded for
    comparison ("CMCC" / "中国移动" / "China Mobile" -> "china mobile")."""
    key = " ".join(name.split()).casefold()
    return CARRIER_ALIASES.get(key, key).casefold()


def known_carrier(name: str) -> bool:
    """True if `name` is an alias above or a carrier name in phonenumbers' data (for
    validating the config: a misspelt carrier would otherwise never match)."""
    key = canonical_carrier(name)
    if key in _KNOWN:
        return True
    if not _ALL_NAMES:
        from phonenumbers.carrierdata import CARRIER_DATA
        for names in CARRIER_DATA.values():
            en = names.get("en")
            if en:
                _ALL_NAMES.add(en.casefold())
    return key in _ALL_NAMES


_KNOWN = frozenset(n.casefold() for n in _CARRIERS)
_ALL_NAMES: set[str] = set()


def national(destination: str) -> str:
    """The digits of a destination without "+", and without the 86 / 0086 country code
    when what follows is an 11-digit Chinese mobile number."""
    d = destination[1:] if destination[:1] == "+" else destination
    n = len(d)
    if n == 13 and d[:3] == "861":
        return d[2:]
    if n == 15 and d[:5] == "00861":
        return d[4:]
    return d


class CarrierLookup:
    """destination -> carrier name (case-folded English, "" if unknown), cached."""

    def __init__(self, cache_max: int = _CACHE_MAX) -> None:
        self.cache: dict[str, str] = {}
        self.cache_max = cache_max
        self.parses = 0          # how many times phonenumbers was asked (for tests)

    def __call__(self, destination: str) -> str:
        nat = national(destination)
        if len(nat) == 11 and nat[0] == "1" and nat.isdigit():
            key = nat[:7]
            number = nat
        else:
            key = destination
            number = destination
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        self.parses += 1
        try:
            name = _carrier.name_for_number(phonenumbers.parse(number, "CN"), "en")
        except phonenumbers.NumberParseException:
            name = ""
        name = name.casefold()
        if len(self.cache) >= self.cache_max:
            self.cache.clear()
        self.cache[key] = name
        return name


class _Rule:
    """An upstream's routing config, prepared for cheap matching."""

    __slots__ = ("cfg", "accounts", "prefixes", "carriers")

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.accounts = frozenset(cfg.accounts)
        self.prefixes = tuple(p.lstrip("+") for p in cfg.prefixes)
        self.carriers = frozenset(canonical_carrier(c) for c in cfg.carriers)


class Router:
    """Picks an upstream per message part; see the module docstring for the rule."""

    def __init__(self, upstreams: Iterable[Any], carriers: CarrierLookup | None = None) -> None:
        # the node's own list, filled and changed in place by the service (reload)
        self.upstreams = upstreams if isinstance(upstreams, list) else list(upstreams)
        self.carrier_of = carriers or CarrierLookup()
        self._rules: dict[str, _Rule] = {}
        self._score: dict[str, int] = {}     # smooth weighted round robin, per upstream name

    def _rule(self, u: Any) -> _Rule:
        r = self._rules.get(u.name)
        if r is None or r.cfg is not u.cfg:
            r = self._rules[u.name] = _Rule(u.cfg)
        return r

    def _matches(self, u: Any, destination: str, account: Any, pinned: Any,
                 carrier: list) -> bool:
        """Account, pin, prefix and carrier (not bound-ness). `carrier` is a one-element
        list memoising the destination's carrier across upstreams (None = not looked up)."""
        if pinned and u.name not in pinned:
            return False
        r = self._rule(u)
        if r.accounts and account.system_id not in r.accounts:
            return False
        if r.prefixes:
            d = destination[1:] if destination[:1] == "+" else destination
            if not d.startswith(r.prefixes):
                nat = national(d)
                if nat is d or not nat.startswith(r.prefixes):
                    return False
        if r.carriers:
            c = carrier[0]
            if c is None:
                c = carrier[0] = self.carrier_of(destination)
            if c not in r.carriers:
                return False
        return True

    def candidates(self, destination: str, account: Any) -> list:
        """Every upstream that may carry this message (bound or not), by priority, then
        most free window, then config order. Does not move the round robin."""
        pinned = getattr(account, "upstreams", ()) or ()
        carrier: list = [None]
        out = [u for u in self.upstreams if self._matches(u, destination, account, pinned,
                                                          carrier)]
        out.sort(key=lambda u: (u.cfg.priority, -u.free_window()))
        return out

    def pick(self, destination: str, account: Any, exclude: tuple = ()) -> Any | None:
        """The upstream for the next part to `destination`, or None (no route, or none of
        the routes bound and untried). Advances the weighted round robin."""
        pinned = account.upstreams
        carrier: list = [None]
        group: list = []
        best_prio = None
        for u in self.upstreams:
            if not u.available or u in exclude:
                continue
            prio = u.cfg.priority
            if best_prio is not None and prio > best_prio:
                continue
            if not self._matches(u, destination, account, pinned, carrier):
                continue
            if best_prio is None or prio < best_prio:
                best_prio = prio
                group = [u]
            else:
                group.append(u)
        if len(group) <= 1:
            return group[0] if group else None
        return self._weighted(group)

    def _weighted(self, group: list) -> Any:
        frees = [u.free_window() for u in group]
        if any(f > 0 for f in frees):
            pairs = [(u, f) for u, f in zip(group, frees) if f > 0]
            if len(pairs) == 1:
                return pairs[0][0]
        else:
            pairs = list(zip(group, frees))
        weights = [u.cfg.weight for u, _f in pairs]
        if not any(weights):
            weights = [1] * len(pairs)
        score = self._score
        total = 0
        best = None
        best_key = None
        for (u, free), w in zip(pairs, weights):
            if w <= 0:
                continue
            total += w
            s = score.get(u.name, 0) + w
            score[u.name] = s
            key = (s, free)
            if best_key is None or key > best_key:
                best, best_key = u, key
        score[best.name] -= total
        return best

    def routable(self, destination: str, account: Any) -> bool:
        """Whether any upstream, bound or not, could carry messages to `destination`."""
        pinned = account.upstreams
        carrier: list = [None]
        for u in self.upstreams:
            if self._matches(u, destination, account, pinned, carrier):
                return True
        return False
