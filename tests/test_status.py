"""The parts of the status page and the scrape-time store read, without sockets: History
(ten minutes of samples), the SVG chart, AccountStates (cache, deadline, failure), the page's
escaping and masking, the collector's metrics."""
from __future__ import annotations

import re

from twisted.internet import defer, task

from proxyd.http.status import AccountRow, StatusView, UpstreamRow, chart_svg, render
from proxyd.metrics import Metrics
from proxyd.monitor import SAMPLES, AccountStates, History, MonitorCollector


class Totals:
    """What History reads: messages (all, by upstream) and refusals, set by the test."""

    def __init__(self) -> None:
        self.n = 0.0
        self.up: dict = {}
        self.ref: dict = {}

    def totals(self):
        return self.n, dict(self.up), dict(self.ref)


def test_history_rates_and_upstream_rate():
    clock = task.Clock()
    t = Totals()
    h = History(t, clock, step_s=5.0)
    h.startService()                    # samples at once, then every 5 s
    for _ in range(3):
        t.n += 50
        t.up["op"] = t.up.get("op", 0) + 50
        clock.advance(5)
    rates = h.rates()
    assert [r for _, r in rates] == [10.0, 10.0, 10.0]
    assert h.upstream_rate("op") == 10.0 and h.upstream_rate("none") == 0.0
    for _ in range(SAMPLES + 10):        # never more than ten minutes kept
        clock.advance(5)
    assert len(h.samples) == SAMPLES
    assert h.rates()[-1][1] == 0.0 and h.upstream_rate("op") == 0.0
    h.stopService()
    assert not clock.getDelayedCalls()


def test_metrics_totals_and_recent_refusals():
    m = Metrics()
    m.outcome("a", "op", 0)
    m.outcome("a", "op", 0x58)
    m.outcome("b", "op2", 0)
    m.refused("a", "content", "13800138000")
    m.refused("b", "content")
    m.refused("b", "balance", "13900139000")
    total, by_up, by_reason = m.totals()
    assert total == 3 and by_up == {"op": 2, "op2": 1}
    assert by_reason == {"content": 2, "balance": 1}
    assert [r[1:] for r in m.recent] == [("a", "content", "13800138000"), ("b", "content", ""),
                                        ("b", "balance", "13900139000")]
    for i in range(50):
        m.refused("c", "rate", "1")
    assert len(m.recent) == 20


def test_chart_points_follow_the_rates():
    now = 1000.0
    svg = chart_svg([(now - 20, 0.0), (now - 10, 40.0), (now, 20.0), (now - 700, 99.0)],
                    now, 600.0)
    pts = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(pts) == 3                            # the one older than 10 min is left out
    ys = [float(p.split(",")[1]) for p in pts]
    xs = [float(p.split(",")[0]) for p in pts]
    assert xs == sorted(xs)
    assert ys[1] < ys[2] < ys[0]                    # 40 highest, 0 lowest
    assert ">50<" in svg                            # the axis rounded up to 50
    assert "no samples yet" in chart_svg([], now, 600.0)


class SlowStore:
    """evalsha answers when the test says so (or never)."""

    def __init__(self) -> None:
        self.calls: list = []
        self.scripts: dict = {}

    def register_script(self, name, src):
        self.scripts[name] = src

    def evalsha(self, name, keys, args):
        d = defer.Deferred()
        self.calls.append((keys, d))
        return d


class Cfg:
    class store:
        timeout_s = 2.0

    def __init__(self, *names):
        self.accounts = [type("A", (), {"system_id": n, "low_balance": 7})() for n in names]


def test_account_states_cached_and_bounded():
    clock = task.Clock()
    st = SlowStore()
    cfg = Cfg("a", "b")
    states = AccountStates(lambda: cfg, st, clock, cache_s=3.0)
    assert "mon_state" in st.scripts
    d1 = states.fresh()
    d2 = states.fresh()                         # one read for both waiters
    assert len(st.calls) == 2 and not d1.called
    assert st.calls[0][0] == ["bal:{a}", "lease:{a}", "low:{a}", "dlv:{a}", "hcb:{a}"]
    st.calls[0][1].callback([120, b"1", 3, 4])
    st.calls[1][1].callback([5, b"0", 0, 0])
    assert d1.called and d2.called and states.up is True
    assert (states.states["a"].balance, states.states["a"].low) == (120, True)
    assert (states.states["a"].backlog, states.states["a"].callbacks) == (3, 4)
    clock.advance(2)
    assert states.fresh().called and len(st.calls) == 2      # cached
    clock.advance(2)
    d3 = states.fresh()
    assert len(st.calls) == 4 and not d3.called
    clock.advance(2.5)                                         # timeout_s + 0.5: given up
    assert d3.called and states.up is False and "no answer" in states.error
    assert states.states["a"].balance == 120                   # the last values kept
    text = exposition(cfg, states)
    assert "proxyd_store_up 0.0" in text
    assert 'proxyd_balance_fen{account="a"} 120.0' in text
    assert 'proxyd_balance_low{account="a"} 1.0' in text
    assert 'proxyd_receipt_backlog{account="a"} 3.0' in text
    assert 'proxyd_low_balance_fen{account="b"} 7.0' in text
    assert 'proxyd_callbacks_total{kind="notify",result="failed"} 0.0' in text


def exposition(cfg, states) -> str:
    m = Metrics()
    dlr = type("D", (), {"results": {("notify", "ok"): 2}})()
    notices = type("N", (), {"counts": {"a": 2}})()
    m.registry.register(MonitorCollector(lambda: cfg, states, dlr, notices))
    text = m.exposition().decode()
    assert 'proxyd_callbacks_total{kind="notify",result="ok"} 2.0' in text
    assert 'proxyd_low_balance_notices_total{account="a"} 2.0' in text
    return text


def test_without_a_store_nothing_is_read():
    cfg = Cfg("a")
    states = AccountStates(lambda: cfg, None, task.Clock())
    assert states.fresh().called and states.up is None
    text = exposition(cfg, states)
    assert "proxyd_store_up" not in text and "proxyd_balance_fen" not in text


def test_page_escapes_and_masks():
    evil = '<script>alert("x")</script>'
    view = StatusView(
        now=0.0, node='n<1>', store="down: <err>",
        accounts=[AccountRow(evil, {"transmitter": 2, "receiver": 0, "transceiver": 1}, 4,
                             55, 100, True, 0, 1)],
        upstreams=[UpstreamRow("op&<1>", 1, 2, 30, 100, 3, 12.5)],
        rates=[], window_s=600.0, refusals={"content<x>": 3}, refusals_recent={},
        last_refusals=[(0.0, evil, "sender", "13812345678")])
    page = render(view).decode()
    assert "<script" not in page and evil not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "op&amp;&lt;1&gt;" in page and "content&lt;x&gt;" in page
    assert "n&lt;1&gt;" in page and "down: &lt;err&gt;" in page
    assert "138****5678" in page and "13812345678" not in page
    assert "partly bound" in page and "30/100" in page and "55 (low)" in page
