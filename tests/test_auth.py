"""The authentication throttle and the Authenticator, without sockets (a Clock)."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from proxyd.auth import Authenticator, MemoryThrottle, judge, source_of
from proxyd.auth.throttle import delay_for
from proxyd.config import AccountConfig, AuthConfig, Config
from proxyd.passwords import hash_password
from proxyd.smpp.constants import STATUS

AUTH = AuthConfig(max_failures=3, max_failures_per_address=5, lockout_s=60, window_s=30,
                  delay_s=0.5, max_delay_s=2.0)
HASHED = hash_password("good")
CFG = Config(auth=AUTH, accounts=(AccountConfig(system_id="acme", password=HASHED),
                                  AccountConfig(system_id="plain", password="good")))
REFUSED = STATUS["ESME_RINVPASWD"]


def test_judge_grows_the_delay_then_locks() -> None:
    assert judge(AUTH, 0, 0) == (False, 0.0)
    assert judge(AUTH, 1, 1) == (False, 0.5)
    assert judge(AUTH, 2, 2) == (False, 1.0)
    assert judge(AUTH, 0, 4) == (False, 2.0)        # capped at max_delay_s
    assert judge(AUTH, 3, 3).locked                  # per (address, account)
    assert judge(AUTH, 0, 5).locked                  # per address
    assert delay_for(AUTH, 1000) == 2.0


def test_sources() -> None:
    assert source_of("127.0.0.2") == "127.0.0.2"
    assert source_of("::ffff:10.0.0.1") == "10.0.0.1"
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff") == "2001:db8::/64"
    assert source_of("2001:db8:0:1::1") != source_of("2001:db8::1")


def pending(d: defer.Deferred) -> bool:
    out: list = []
    d.addBoth(lambda r: (out.append(r), r)[1])
    return not out


def result(d: defer.Deferred) -> Any:
    out: list = []
    d.addBoth(out.append)
    assert out, "not fired"
    return out[0]


def test_memory_throttle_locks_one_address_only_and_forgets() -> None:
    clock = Clock()
    t = MemoryThrottle(lambda: CFG, clock)
    for _ in range(3):
        t.failed("10.0.0.2", "acme")
    assert result(t.begin("10.0.0.2", "acme")).locked
    assert not result(t.begin("10.0.0.1", "acme")).locked    # the customer's own address
    assert result(t.begin("10.0.0.2", "other")) == (False, 2.0)  # address count 3: delayed
    clock.advance(59)
    assert result(t.begin("10.0.0.2", "acme")).locked
    clock.advance(2)                                            # lockout over
    assert result(t.begin("10.0.0.2", "acme")) == (False, 0.0)


def test_memory_throttle_per_address_across_accounts_and_success_clears_the_pair() -> None:
    clock = Clock()
    t = MemoryThrottle(lambda: CFG, clock)
    t.failed("10.0.0.2", "acme")
    t.succeeded("10.0.0.2", "acme")
    assert t.counts("10.0.0.2", "acme") == (0, 1)   # the address count stays
    for i in range(4):
        t.failed("10.0.0.2", "user%d" % i)
    assert result(t.begin("10.0.0.2", "someone")).locked
    clock.advance(61)
    assert not result(t.begin("10.0.0.2", "someone")).locked


def test_memory_throttle_window_forgets_old_failures() -> None:
    clock = Clock()
    t = MemoryThrottle(lambda: CFG, clock)
    t.failed("10.0.0.2", "acme")
    t.failed("10.0.0.2", "acme")
    clock.advance(31)
    assert t.counts("10.0.0.2", "acme") == (0, 0)


def test_memory_throttle_is_bounded() -> None:
    t = MemoryThrottle(lambda: CFG, Clock(), max_entries=10)
    for i in range(100):
        t.failed("10.0.%d.%d" % (i // 250, i % 250), "u")
    assert len(t._counts) <= 10


class FakeHasher:
    """Verifies at once; `busy` answers None; counts the verifications."""

    max_in_flight = 1

    def __init__(self) -> None:
        self.calls: list = []
        self.busy = False

    def verify(self, stored: str, given: str) -> defer.Deferred:
        from proxyd.passwords import verify_password
        self.calls.append(stored)
        if self.busy:
            return defer.succeed(None)
        return defer.succeed(verify_password(stored, given))


def make() -> tuple:
    clock = Clock()
    cfg = [CFG]
    throttle = MemoryThrottle(lambda: cfg[0], clock)
    hasher = FakeHasher()
    return clock, hasher, throttle, Authenticator(lambda: cfg[0], throttle, hasher, clock), cfg


def test_unknown_user_and_wrong_password_same_answer_and_same_work() -> None:
    clock, hasher, _, auth, _ = make()
    wrong = result(auth.authenticate("acme", "bad", "10.0.0.5"))
    clock.advance(10)
    unknown = result(auth.authenticate("nobody", "bad", "10.0.0.6"))
    plain = result(auth.authenticate("plain", "bad", "10.0.0.7"))
    assert wrong == unknown == plain == (REFUSED, None)
    assert len(hasher.calls) == 3       # one scrypt each, the dummy one for nobody and plain
    assert result(auth.authenticate("plain", "good", "10.0.0.8"))[0] == 0


def test_a_locked_attempt_waits_then_fails_without_a_password_check() -> None:
    clock, hasher, _, auth, _ = make()
    for i in range(3):
        d = auth.authenticate("acme", "bad", "10.0.0.2")
        clock.advance(2)
        assert result(d) == (REFUSED, None)
    n = len(hasher.calls)
    d = auth.authenticate("acme", "good", "10.0.0.2")       # the right password, locked
    assert pending(d)
    clock.advance(2)
    assert result(d) == (REFUSED, None) and len(hasher.calls) == n
    ok = result(auth.authenticate("acme", "good", "10.0.0.1"))  # another address: served
    assert ok[0] == 0 and ok[1].system_id == "acme"


def test_the_second_attempt_is_delayed() -> None:
    clock, hasher, _, auth, _ = make()
    result(auth.authenticate("acme", "bad", "10.0.0.2"))
    d = auth.authenticate("acme", "good", "10.0.0.2")
    clock.advance(0.4)
    assert pending(d) and len(hasher.calls) == 1
    clock.advance(0.2)
    assert result(d)[0] == 0


def test_busy_hasher_refuses_at_once_and_counts_nothing() -> None:
    clock, hasher, throttle, auth, _ = make()
    hasher.busy = True
    assert result(auth.authenticate("acme", "good", "10.0.0.2")) == (REFUSED, None)
    assert throttle.counts("10.0.0.2", "acme") == (0, 0)


def test_a_verified_password_is_remembered_until_a_reload() -> None:
    clock, hasher, _, auth, cfg = make()
    assert result(auth.authenticate("acme", "good", "10.0.0.2"))[0] == 0
    assert result(auth.authenticate("acme", "good", "10.0.0.2"))[0] == 0
    assert len(hasher.calls) == 1
    cfg[0] = Config(auth=AUTH, accounts=(AccountConfig(system_id="acme",
                                                       password=hash_password("new")),))
    auth.reconfigured()
    assert result(auth.authenticate("acme", "good", "10.0.0.2")) == (REFUSED, None)


def test_slots_per_address_wait_in_order_then_refuse() -> None:
    from proxyd.auth.core import Slots
    slots = Slots(limit=2, queue=1)
    a, b = slots.acquire("x"), slots.acquire("x")
    assert result(a) is True and result(b) is True
    c = slots.acquire("x")              # waits its turn
    assert pending(c)
    assert result(slots.acquire("x")) is False      # the queue is full
    assert result(slots.acquire("y")) is True       # another address is not held up
    slots.release("x")
    assert result(c) is True
    slots.release("x")
    slots.release("x")
    assert slots._running == {"y": 1} and slots._waiting == {}


def test_a_brute_force_holds_only_its_own_address_slots() -> None:
    class HeldHasher(FakeHasher):
        def verify(self, stored: str, given: str) -> defer.Deferred:
            self.calls.append(stored)
            d: defer.Deferred = defer.Deferred()
            self.held.append((d, stored, given))
            return d
    clock = Clock()
    hasher = HeldHasher()
    hasher.held = []
    cfg = Config(auth=AuthConfig(max_verifying_per_address=2, max_verifying=3),
                 accounts=CFG.accounts)
    auth = Authenticator(lambda: cfg, MemoryThrottle(lambda: cfg, clock), hasher, clock)
    attacks = [auth.authenticate("acme", "bad%d" % i, "10.0.0.2") for i in range(6)]
    assert len(hasher.held) == 2                    # two checks, three waiting, one refused
    clock.advance(cfg.auth.max_delay_s)
    assert [result(d) for d in attacks if not pending(d)] == [(REFUSED, None)]
    customer = auth.authenticate("acme", "good", "10.0.0.1")
    assert len(hasher.held) == 3                    # checked at once, not queued behind
    from proxyd.passwords import verify_password
    d, stored, given = hasher.held[2]
    d.callback(verify_password(stored, given))
    assert result(customer)[0] == 0
