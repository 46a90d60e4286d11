"""Prometheus metrics of one proxyd node (served by `proxyd.http.admin` on /metrics).

Counted as it happens (the relay calls these; each is a dict lookup and an add):

    proxyd_messages_total{account,upstream,outcome}   messages answered after relaying;
                                                      outcome "ok" or the SMPP status name
                                                      (upstream "" if none could be tried)
    proxyd_rejections_total{account,reason}           messages refused before relaying
                                                      (reason: sender, caller, content,
                                                      balance, optout, route, rate, store, ...)
    proxyd_submit_latency_seconds{account}            client submit_sm -> submit_sm_resp
    proxyd_upstream_rtt_seconds{upstream}             upstream submit -> its resp
    proxyd_store_latency_seconds                      store round trips (health PINGs, and
                                                      whatever else reports `store_latency`)

Read from the node's live collections when scraped (a custom collector, so no bookkeeping
per message; only when `Metrics` is given them):

    proxyd_binds{account,mode}                        client binds on this node
    proxyd_client_outstanding                         client submits awaiting an answer
    proxyd_upstream_binds{upstream}                   bound connections per upstream
    proxyd_upstream_window_size{upstream}             window of those bound connections
    proxyd_upstream_window_used{upstream}             requests in flight on them
    proxyd_upstream_queue{upstream}                   requests waiting for a free window

The accounts' balances, the receipt backlog, callbacks and the low-balance notices are
read by `proxyd.monitor` (a collector registered in the same registry). `totals()` and
`recent` (the last refusals: time, account, reason, destination) feed the status page.

Every `Metrics` has its own `CollectorRegistry` (never the process-global one), so several
nodes or tests in one process do not share counters.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Collection, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .smpp import constants as C

NAMESPACE = "proxyd"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 15.0, 30.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)
BIND_MODES = ("transmitter", "receiver", "transceiver")
RECENT_REFUSALS = 20


def outcome_name(status: int) -> str:
    return "ok" if status == 0 else C.status_name(status)


class Metrics:
    """Counters and histograms fed by the relay. With `config` (() -> the current Config),
    also gauges read at scrape time from what the node owns and keeps up to date:
    `accounts` (the account Registry; its `sessions`, bound sessions by account),
    `sessions` (the set of connected client sessions) and `upstreams` (the list of upstream
    links). `Metrics()` has the counters and histograms only."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, config: Callable[[], Any] | None = None, accounts: Any = None,
                 sessions: Collection[Any] = (), upstreams: Collection[Any] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._messages = Counter("messages", "Messages answered after relaying, by outcome",
                                 ("account", "upstream", "outcome"), namespace=NAMESPACE,
                                 registry=r)
        self._rejections = Counter("rejections", "Messages refused before relaying",
                                   ("account", "reason"), namespace=NAMESPACE, registry=r)
        self._submit_latency = Histogram("submit_latency_seconds",
                                         "Client submit_sm to submit_sm_resp",
                                         ("account",), namespace=NAMESPACE, registry=r,
                                         buckets=LATENCY_BUCKETS)
        self._upstream_rtt = Histogram("upstream_rtt_seconds",
                                       "Upstream submit to its response",
                                       ("upstream",), namespace=NAMESPACE, registry=r,
                                       buckets=LATENCY_BUCKETS)
        self._store_latency = Histogram("store_latency_seconds", "Store round trips",
                                        namespace=NAMESPACE, registry=r,
                                        buckets=STORE_BUCKETS)
        # labelled children, so the per-message path is one dict lookup
        self._c_messages: dict[tuple[str, str, int], Any] = {}
        self._c_rejections: dict[tuple[str, str], Any] = {}
        self._c_submit: dict[str, Any] = {}
        self._c_rtt: dict[str, Any] = {}
        # the last refusals: (unix time, account, reason, destination as given)
        self.recent: collections.deque = collections.deque(maxlen=RECENT_REFUSALS)
        if config is not None:
            r.register(NodeCollector(config, accounts, sessions, upstreams))

    # --- fed by the relay (per message: keep cheap) ----------------------------------------
    def outcome(self, account: str, upstream: str, status: int) -> None:
        key = (account, upstream, status)
        child = self._c_messages.get(key)
        if child is None:
            child = self._c_messages[key] = self._messages.labels(
                account, upstream, outcome_name(status))
        child.inc()

    def refused(self, account: str, reason: str, destination: str = "") -> None:
        self.recent.append((time.time(), account, reason, destination))
        key = (account, reason)
        child = self._c_rejections.get(key)
        if child is None:
            child = self._c_rejections[key] = self._rejections.labels(account, reason)
        child.inc()

    def submit_latency(self, account: str, seconds: float) -> None:
        child = self._c_submit.get(account)
        if child is None:
            child = self._c_submit[account] = self._submit_latency.labels(account)
        child.observe(seconds)

    def upstream_rtt(self, upstream: str, seconds: float, status: int = 0) -> None:
        child = self._c_rtt.get(upstream)
        if child is None:
            child = self._c_rtt[upstream] = self._upstream_rtt.labels(upstream)
        child.observe(seconds)

    def store_latency(self, seconds: float) -> None:
        self._store_latency.observe(seconds)

    def totals(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """(messages answered after relaying, the same by upstream, refusals by reason):
        totals since start, summed from the counters (for `proxyd.monitor.History`)."""
        total = 0.0
        by_upstream: dict[str, float] = {}
        for fam in self._messages.collect():
            for smp in fam.samples:
                if smp.name.endswith("_total"):
                    total += smp.value
                    up = smp.labels.get("upstream", "")
                    by_upstream[up] = by_upstream.get(up, 0.0) + smp.value
        by_reason: dict[str, float] = {}
        for fam in self._rejections.collect():
            for smp in fam.samples:
                if smp.name.endswith("_total"):
                    r = smp.labels.get("reason", "")
                    by_reason[r] = by_reason.get(r, 0.0) + smp.value
        return total, by_upstream, by_reason

    # --- exposition -------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The Prometheus text format of everything above."""
        return generate_latest(self.registry)


class NodeCollector(Collector):
    """Gauges computed from the node's live collections at scrape time."""

    def __init__(self, config: Callable[[], Any], accounts: Any, sessions: Collection[Any],
                 upstreams: Collection[Any]) -> None:
        self.config = config
        self.accounts = accounts
        self.sessions = sessions
        self.upstreams = upstreams

    def describe(self) -> list:
        return []     # no describe-time collect: the node may not be complete yet

    def collect(self) -> Iterator[Any]:
        binds = GaugeMetricFamily(NAMESPACE + "_binds", "Client binds on this node",
                                  labels=("account", "mode"))
        counts: dict[tuple[str, str], int] = {}
        for a in self.config().accounts:
            for mode in BIND_MODES:
                counts[(a.system_id, mode)] = 0
        for account, sessions in dict(self.accounts.sessions).items():
            for s in list(sessions):
                key = (account, s.mode or "unknown")
                counts[key] = counts.get(key, 0) + 1
        for (account, mode), n in sorted(counts.items()):
            binds.add_metric((account, mode), n)
        yield binds

        outstanding = 0
        for s in list(self.sessions):
            outstanding += s.outstanding
        yield GaugeMetricFamily(NAMESPACE + "_client_outstanding",
                                "Client submits awaiting an answer", value=outstanding)

        ubinds = GaugeMetricFamily(NAMESPACE + "_upstream_binds",
                                   "Bound connections per upstream", labels=("upstream",))
        wsize = GaugeMetricFamily(NAMESPACE + "_upstream_window_size",
                                  "Window of the bound connections per upstream",
                                  labels=("upstream",))
        wused = GaugeMetricFamily(NAMESPACE + "_upstream_window_used",
                                  "Requests in flight per upstream", labels=("upstream",))
        queue = GaugeMetricFamily(NAMESPACE + "_upstream_queue",
                                  "Requests waiting for a free upstream window",
                                  labels=("upstream",))
        for u in list(self.upstreams):
            bound = [b for b in u.binds if b.bound]
            ubinds.add_metric((u.name,), len(bound))
            wsize.add_metric((u.name,), u.cfg.window * len(bound))
            wused.add_metric((u.name,), sum(len(b.inflight) for b in bound))
            queue.add_metric((u.name,), len(u.waiting))
        yield ubinds
        yield wsize
        yield wused
        yield queue
