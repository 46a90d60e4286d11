"""Routing rules (proxyd.links.routing) with fake upstreams: no sockets, no reactor."""
from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import carrier as pn_carrier

from proxyd.config import AccountConfig, UpstreamConfig
from proxyd.links.routing import CarrierLookup, Router, canonical_carrier, known_carrier, national

MOBILE = "13800138000"     # China Mobile
UNICOM = "13000000000"     # China Unicom
TELECOM = "13300000000"    # China Telecom


class FakeUpstream:
    def __init__(self, name: str, bound: bool = True, free: int = 10, **cfg) -> None:
        self.name = name
        self.cfg = UpstreamConfig(name=name, connect="tcp:host=127.0.0.1:port=1",
                                  system_id="x", **cfg)
        self.available = bound
        self.free = free

    def free_window(self) -> int:
        return self.free if self.available else 0

    def __repr__(self) -> str:
        return "<%s>" % self.name


def acct(system_id: str = "acme", upstreams: tuple = ()) -> AccountConfig:
    return AccountConfig(system_id=system_id, password="x", upstreams=upstreams)


def names(seq) -> list:
    return [u.name if u is not None else None for u in seq]


def picks(router: Router, n: int, dest: str = MOBILE, account=None) -> list:
    account = account or acct()
    return names(router.pick(dest, account) for _ in range(n))


def test_reference_numbers_have_the_expected_carriers():
    # the fixtures below rely on phonenumbers' data saying this
    for number, name in [(MOBILE, "China Mobile"), ("13800131234", "China Mobile"),
                         (UNICOM, "China Unicom"), ("13000001234", "China Unicom"),
                         (TELECOM, "China Telecom"), ("13300001234", "China Telecom")]:
        assert pn_carrier.name_for_number(phonenumbers.parse(number, "CN"), "en") == name


def three_operators(**extra) -> list:
    return [FakeUpstream("cmcc", carriers=("China Mobile",), **extra),
            FakeUpstream("cucc", carriers=("中国联通",), **extra),
            FakeUpstream("ctcc", carriers=("telecom",), **extra)]


@pytest.mark.parametrize("dest,expected", [
    (MOBILE, "cmcc"), ("13800131234", "cmcc"), ("+8613800138000", "cmcc"),
    ("8613800138000", "cmcc"), ("008613800138000", "cmcc"),
    (UNICOM, "cucc"), ("+8613000001234", "cucc"),
    (TELECOM, "ctcc"), ("13300009999", "ctcc"),
])
def test_carrier_routing(dest, expected):
    r = Router(three_operators())
    assert names([r.pick(dest, acct())]) == [expected]
    assert r.routable(dest, acct())
    assert names(r.candidates(dest, acct())) == [expected]


def test_unknown_carrier_is_not_routable():
    r = Router(three_operators())
    for dest in ("1064899", "02012345678", "+442071838750", ""):
        assert not r.routable(dest, acct()), dest
        assert r.pick(dest, acct()) is None


def test_carrier_names_and_aliases():
    for name in ("China Mobile", "china  mobile", "CMCC", "中国移动", "移动", "mobile"):
        assert canonical_carrier(name) == "china mobile", name
    for name in ("China Unicom", "unicom", "CUCC", "中国联通", "联通"):
        assert canonical_carrier(name) == "china unicom", name
    for name in ("China Telecom", "telecom", "ctcc", "中国电信", "电信"):
        assert canonical_carrier(name) == "china telecom", name
    assert canonical_carrier("中国广电") == "china broadnet"
    assert known_carrier("CMCC") and known_carrier("Vodafone")
    assert not known_carrier("China Mobil")


def test_carrier_lookup_is_cached_per_7_digit_prefix():
    look = CarrierLookup()
    assert look(MOBILE) == "china mobile"
    assert look.parses == 1
    for suffix in range(0, 10000, 97):
        assert look("1380013%04d" % suffix) == "china mobile"
        assert look("+861380013%04d" % suffix) == "china mobile"
    assert look.parses == 1
    assert look(UNICOM) == "china unicom"
    assert look.parses == 2
    assert look("garbage") == "" and look("garbage") == ""
    assert look.parses == 3


def test_carrier_cache_is_bounded():
    look = CarrierLookup(cache_max=3)
    for p in ("138", "139", "130", "133", "186"):
        look(p + "00001234")
    assert len(look.cache) <= 3
    assert look("13800001234") == "china mobile"


def test_national_form():
    assert national("+8613800138000") == MOBILE
    assert national("8613800138000") == MOBILE
    assert national("008613800138000") == MOBILE
    assert national(MOBILE) == MOBILE
    assert national("+442071838750") == "442071838750"
    assert national("862012345678") == "862012345678"    # not a mobile: kept


def test_prefix_matches_both_spellings():
    r = Router([FakeUpstream("a", prefixes=("138",)), FakeUpstream("b", prefixes=("+8613",))])
    assert names([r.pick("+8613800138000", acct())]) == ["a"]
    assert names([r.pick("13900000000", acct())]) == [None]
    assert not r.routable("13900000000", acct())
    # "+8613" is compared as "8613": matches the international spelling only
    assert r.routable("8613900000000", acct())
    assert names([r.pick("+8613900000000", acct())]) == ["b"]


def test_prefix_and_carrier_both_must_match():
    r = Router([FakeUpstream("a", carriers=("China Mobile",), prefixes=("1380013",)),
                FakeUpstream("b", carriers=("China Mobile",), priority=5)])
    assert names([r.pick(MOBILE, acct())]) == ["a"]
    assert names([r.pick("13900000000", acct())]) == ["b"]
    assert names([r.pick(UNICOM, acct())]) == [None]


def test_accounts_and_pins():
    ups = [FakeUpstream("shared"), FakeUpstream("vip", accounts=("vip",), priority=-1),
           FakeUpstream("other", priority=5)]
    r = Router(ups)
    assert names([r.pick(MOBILE, acct("acme"))]) == ["shared"]
    assert names([r.pick(MOBILE, acct("vip"))]) == ["vip"]
    assert names([r.pick(MOBILE, acct("acme", upstreams=("other",)))]) == ["other"]
    # pinned to an upstream the account may not use: no route
    pinned = acct("acme", upstreams=("vip",))
    assert not r.routable(MOBILE, pinned) and r.pick(MOBILE, pinned) is None
    assert names(r.candidates(MOBILE, acct("vip"))) == ["vip", "shared", "other"]


def test_lowest_priority_value_wins_and_backups_take_over():
    main = FakeUpstream("main", priority=1)
    backup = FakeUpstream("backup", priority=2)
    r = Router([backup, main])
    assert picks(r, 3) == ["main"] * 3
    assert names([r.pick(MOBILE, acct(), exclude=(main,))]) == ["backup"]
    main.available = False
    assert picks(r, 2) == ["backup"] * 2
    backup.available = False
    assert r.pick(MOBILE, acct()) is None
    assert r.routable(MOBILE, acct())        # a route exists, just nothing bound
    assert names(r.pick(MOBILE, acct(), exclude=(main, backup)) for _ in "x") == [None]


def test_weighted_round_robin_sequence():
    r = Router([FakeUpstream("a", weight=5), FakeUpstream("b", weight=1),
                FakeUpstream("c", weight=1)])
    assert picks(r, 14) == list("aabacaa") * 2
    r = Router([FakeUpstream("a", weight=2), FakeUpstream("b", weight=1)])
    assert picks(r, 6) == list("abaaba")
    r = Router([FakeUpstream("a"), FakeUpstream("b")])
    assert picks(r, 4) == list("abab")


def test_weight_ignores_other_priorities():
    r = Router([FakeUpstream("a", weight=1), FakeUpstream("b", weight=1),
                FakeUpstream("z", weight=100, priority=9)])
    assert picks(r, 4) == list("abab")


def test_weight_zero_is_last_resort():
    a = FakeUpstream("a", weight=0)
    b = FakeUpstream("b", weight=3)
    r = Router([a, b])
    assert picks(r, 3) == ["b"] * 3
    b.available = False
    assert picks(r, 2) == ["a"] * 2


def test_full_window_passed_over_within_priority():
    a = FakeUpstream("a", free=0)
    b = FakeUpstream("b", free=5)
    r = Router([a, b])
    assert picks(r, 3) == ["b"] * 3
    # nobody has room: round robin over all (the request queues at the chosen one)
    b.free = 0
    assert sorted(picks(r, 2)) == ["a", "b"]
    # a full primary is not abandoned for a backup with room: priority comes first
    r = Router([FakeUpstream("p", free=0, priority=1), FakeUpstream("q", free=9, priority=2)])
    assert picks(r, 2) == ["p", "p"]


def test_equal_scores_go_to_most_free_window():
    r = Router([FakeUpstream("a", free=1), FakeUpstream("b", free=7)])
    assert picks(r, 4) == list("baba")


def test_candidates_order_and_not_moving_the_round_robin():
    ups = [FakeUpstream("a", priority=2, free=1), FakeUpstream("b", priority=1, free=1),
           FakeUpstream("c", priority=2, free=8, bound=True)]
    r = Router(ups)
    assert names(r.candidates(MOBILE, acct())) == ["b", "c", "a"]
    assert names(r.candidates(MOBILE, acct())) == ["b", "c", "a"]


def test_reload_replaces_rules():
    u = FakeUpstream("a", carriers=("China Mobile",))
    r = Router([u])
    assert r.routable(MOBILE, acct()) and not r.routable(UNICOM, acct())
    u.cfg = UpstreamConfig(name="a", connect="tcp:host=x:port=1", system_id="x",
                           carriers=("China Unicom",))
    assert r.routable(UNICOM, acct()) and not r.routable(MOBILE, acct())


def test_routable_ignores_binding_but_pick_does_not():
    u = FakeUpstream("a", bound=False, carriers=("China Mobile",))
    r = Router([u])
    assert r.routable(MOBILE, acct())
    assert r.pick(MOBILE, acct()) is None
