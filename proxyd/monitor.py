"""What the admin listener shows besides the relay's own counters (`proxyd.metrics`): the
accounts' state in the store, the traffic of the last ten minutes, callbacks, notices.

    AccountStates  per account, read from the store (one small script per account, all in
                   parallel, each within `[store] timeout_s`) when /metrics or the status
                   page asks and the last read is older than `CACHE_S`: balance (free +
                   leases, what `balance` shows), the low-balance flag, receipts and MO
                   waiting for a receiver bind (``dlv:{A}``), HTTP callbacks waiting
                   (``hcb:{A}``); `up` is whether the store answered the last read
    History        every `SAMPLE_S` the totals of messages (all and per upstream) and
                   refusals, `SAMPLES` of them (ten minutes): msg/s for the status page's
                   chart and each upstream's rate
    MonitorCollector  the gauges and counters of these for /metrics:

    proxyd_balance_fen{account}              balance (fen), free + leases, from the store
    proxyd_low_balance_fen{account}          the account's low_balance (0 = off)
    proxyd_balance_low{account}              1 while the low-balance notice is sent and not
                                             re-armed by a top-up
    proxyd_low_balance_notices_total{account}  notices this node took from the queue
    proxyd_receipt_backlog{account}          receipts and MO waiting in the store for the
                                             account's receiver binds
    proxyd_callback_backlog{account}         HTTP callbacks (dlr-url, mo_url, notices) queued
    proxyd_callbacks_total{kind,result}      HTTP callbacks made by this node: kind dlr, mo,
                                             notify; result ok, retried, failed
    proxyd_store_up                          1 if the store answered the last read
    proxyd_store_read_seconds                how long that read took

Nothing here blocks the reactor: a scrape waits (asynchronously) for a read that is due,
and every read has a deadline; a failed read keeps the last values and sets store_up 0.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .store.ledger.keys import balance_key, lease_key, low_key
from .store.messages import cb_key
from .store.receipts import stream_key

__all__ = ["AccountStates", "History", "MonitorCollector", "Monitor", "CACHE_S", "SAMPLE_S",
           "SAMPLES"]

log = Logger(namespace="proxyd.monitor")

CACHE_S = 3.0        # a store read answers every scrape within this
SAMPLE_S = 5.0       # History's step
SAMPLES = 121        # ten minutes of steps, both ends included

# KEYS bal, lease, low, dlv, hcb of one account -> {balance, low flag, dlv length, hcb size}
STATE_LUA = """
local b = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
  local a = string.match(v, '^(%d+):')
  if a then b = b + tonumber(a) end
end
local low = redis.call('HGET', KEYS[3], 'low') or '0'
return {b, low, redis.call('XLEN', KEYS[4]), redis.call('ZCARD', KEYS[5])}
"""


class AccountState:
    __slots__ = ("balance", "low", "backlog", "callbacks")

    def __init__(self, balance: int, low: bool, backlog: int, callbacks: int) -> None:
        self.balance = balance
        self.low = low
        self.backlog = backlog
        self.callbacks = callbacks


class AccountStates:
    """The accounts' state in the store, cached for `cache_s` (see the module docstring).
    `store` None (``[store] url = "none"``): nothing is read, `up` stays None."""

    def __init__(self, config: Callable[[], Any], store: Any, clock: Any,
                 cache_s: float = CACHE_S, deadline_s: float | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.cache_s = cache_s
        self.deadline_s = deadline_s
        self.states: dict[str, AccountState] = {}
        self.up: bool | None = None
        self.error = ""
        self.read_s = 0.0
        self.read_at = -1e18
        self._reading: defer.Deferred | None = None
        if store is not None:
            store.register_script("mon_state", STATE_LUA)

    def fresh(self) -> defer.Deferred:
        """Deferred[None], fired once the cached values are at most `cache_s` old (or the
        read failed: `up` False, the last values kept). Never errbacks."""
        if self.store is None or self.clock.seconds() - self.read_at < self.cache_s:
            return defer.succeed(None)
        if self._reading is None:
            self._reading = self._read()
        waiter: defer.Deferred = defer.Deferred()
        self._reading.addBoth(lambda r: (waiter.callback(None), r)[1])
        return waiter

    def _read(self) -> defer.Deferred:
        t0 = self.clock.seconds()
        names = [a.system_id for a in self.config().accounts]
        calls = [self.store.evalsha("mon_state", [balance_key(n), lease_key(n), low_key(n),
                                                  stream_key(n), cb_key(n)], [])
                 for n in names]
        d = defer.gatherResults(calls, consumeErrors=True)
        deadline_s = self.deadline_s or (self.config().store.timeout_s + 0.5)
        timer = self.clock.callLater(deadline_s, d.cancel)

        def got(results: list) -> None:
            states = {}
            for name, r in zip(names, results):
                states[name] = AccountState(int(r[0]), _s(r[1]) == "1", int(r[2]), int(r[3]))
            self.states = states
            self.up = True
            self.error = ""

        def failed(f: Any) -> None:
            err = f.value.subFailure if isinstance(f.value, defer.FirstError) else f
            if err.check(defer.CancelledError):
                why = "no answer in %gs" % deadline_s
            else:
                why = " ".join((err.getErrorMessage() or err.type.__name__).split())
            if self.up is not False or why != self.error:
                log.warn("store read for the status page and /metrics failed: {why}", why=why)
            self.up = False
            self.error = why

        def done(_: Any) -> None:
            if timer.active():
                timer.cancel()
            now = self.clock.seconds()
            self.read_s = now - t0
            self.read_at = now
            self._reading = None
        d.addCallbacks(got, failed).addBoth(done)
        return d


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class History(service.Service):
    """Totals sampled every `step_s`: (time, messages, {upstream: messages}, refusals).
    `metrics` gives `totals()` (proxyd.metrics.Metrics)."""

    name = "history"

    def __init__(self, metrics: Any, clock: Any, step_s: float = SAMPLE_S,
                 samples: int = SAMPLES) -> None:
        self.metrics = metrics
        self.clock = clock
        self.step_s = step_s
        self.samples: collections.deque = collections.deque(maxlen=samples)
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        if not self._loop.running:
            self._loop.start(self.step_s, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> None:
        messages, by_upstream, refusals = self.metrics.totals()
        self.samples.append((self.clock.seconds(), messages, by_upstream, refusals))

    def rates(self) -> list[tuple[float, float]]:
        """[(time, msg/s over the step before it)], oldest first."""
        out = []
        prev = None
        for s in self.samples:
            if prev is not None and s[0] > prev[0]:
                out.append((s[0], max(0.0, (s[1] - prev[1]) / (s[0] - prev[0]))))
            prev = s
        return out

    def upstream_rate(self, name: str, window_s: float = 60.0) -> float:
        """msg/s of an upstream over the last `window_s` (what the samples cover of it)."""
        if len(self.samples) < 2:
            return 0.0
        last = self.samples[-1]
        first = last
        for s in reversed(self.samples):
            if last[0] - s[0] > window_s:
                break
            first = s
        if last[0] <= first[0]:
            return 0.0
        return max(0.0, (last[2].get(name, 0) - first[2].get(name, 0)) / (last[0] - first[0]))


class MonitorCollector(Collector):
    """The metrics of the module docstring, from `states`, the DlrCaller's `results`
    (`dlr`, None without a store) and the notices' `counts`."""

    def __init__(self, config: Callable[[], Any], states: AccountStates, dlr: Any,
                 notices: Any) -> None:
        self.config = config
        self.states = states
        self.dlr = dlr
        self.notices = notices

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        accounts = [a for a in self.config().accounts]
        threshold = GaugeMetricFamily("proxyd_low_balance_fen",
                                      "The account's low_balance threshold (fen, 0 = off)",
                                      labels=("account",))
        for a in accounts:
            threshold.add_metric((a.system_id,), a.low_balance)
        yield threshold
        counts = dict(getattr(self.notices, "counts", {}))
        notices = CounterMetricFamily("proxyd_low_balance_notices",
                                      "Low-balance notices this node took from the queue",
                                      labels=("account",))
        for a in accounts:
            notices.add_metric((a.system_id,), counts.get(a.system_id, 0))
        yield notices
        results = dict(getattr(self.dlr, "results", {}))
        calls = CounterMetricFamily("proxyd_callbacks",
                                    "HTTP callbacks (dlr-url, mo_url, low-balance notices) "
                                    "made by this node, by result",
                                    labels=("kind", "result"))
        for kind in ("dlr", "mo", "notify"):
            for result in ("ok", "retried", "failed"):
                calls.add_metric((kind, result), results.get((kind, result), 0))
        yield calls
        st = self.states
        if st.store is None:
            return
        yield GaugeMetricFamily("proxyd_store_up", "1 if the store answered the last read",
                                value=1 if st.up else 0)
        yield GaugeMetricFamily("proxyd_store_read_seconds",
                                "Duration of the last read of the accounts' state",
                                value=st.read_s)
        bal = GaugeMetricFamily("proxyd_balance_fen", "Balance (fen): free + leases",
                                labels=("account",))
        low = GaugeMetricFamily("proxyd_balance_low",
                                "1 while the low-balance notice is sent and not re-armed",
                                labels=("account",))
        backlog = GaugeMetricFamily("proxyd_receipt_backlog",
                                    "Receipts and MO waiting for a receiver bind",
                                    labels=("account",))
        cbs = GaugeMetricFamily("proxyd_callback_backlog", "HTTP callbacks queued",
                                labels=("account",))
        states = st.states
        for a in accounts:
            s = states.get(a.system_id)
            if s is None:
                continue
            bal.add_metric((a.system_id,), s.balance)
            low.add_metric((a.system_id,), 1 if s.low else 0)
            backlog.add_metric((a.system_id,), s.backlog)
            cbs.add_metric((a.system_id,), s.callbacks)
        yield bal
        yield low
        yield backlog
        yield cbs


class Monitor:
    """The node's monitoring parts, built once the store answers (`store` None without
    one): `states`, `history` (a service: give it a parent), the collector registered in
    `metrics`' registry. `refusals()` and `totals` come from `metrics`."""

    def __init__(self, config: Callable[[], Any], metrics: Any, store: Any, clock: Any,
                 dlr: Any = None, notices: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.states = AccountStates(config, store, clock)
        self.history = History(metrics, clock)
        metrics.registry.register(MonitorCollector(config, self.states, dlr, notices))

    def fresh(self) -> defer.Deferred:
        return self.states.fresh()
