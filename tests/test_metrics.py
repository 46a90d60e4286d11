"""Metrics (proxyd.metrics) and the admin site (proxyd.http.admin) without sockets."""
from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web import server
from twisted.web.test.requesthelper import DummyRequest

from proxyd.config import AccountConfig, Config, StoreConfig, UpstreamConfig
from proxyd.http.admin import HEALTH_TIMEOUT_S, make_admin_site
from proxyd.metrics import Metrics
from proxyd.smpp import constants as C

S = C.STATUS


def samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} of a text exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


# --- a fake node ----------------------------------------------------------------------------

class FakeBind:
    def __init__(self, bound: bool, inflight: int) -> None:
        self.bound = bound
        self.inflight = {i: None for i in range(inflight)}


class FakeUpstream:
    def __init__(self, name: str, binds: list, waiting: int = 0, window: int = 50) -> None:
        self.name = name
        self.cfg = UpstreamConfig(name=name, connect="tcp:host=x:port=1", system_id="x",
                                  window=window)
        self.binds = binds
        self.waiting = [None] * waiting

    @property
    def available(self) -> bool:
        return any(b.bound for b in self.binds)


class FakeStore:
    def __init__(self) -> None:
        self.pings: list[defer.Deferred] = []

    def ping(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pings.append(d)
        return d


class FakeSession:
    def __init__(self, account: str, mode: str, outstanding: int = 0) -> None:
        self.account = SimpleNamespace(system_id=account)
        self.mode = mode
        self.outstanding = outstanding
        self.window = 100


session = FakeSession


def make_node(store_url: str = "embedded") -> SimpleNamespace:
    cfg = Config(accounts=(AccountConfig("acme", "x"), AccountConfig("beta", "y")),
                 store=StoreConfig(url=store_url))
    s1, s2, s3 = (session("acme", "transmitter", 3), session("acme", "transmitter", 4),
                  session("acme", "receiver"))
    node = SimpleNamespace(
        cfg=cfg, reactor=Clock(), store=None,
        registry=SimpleNamespace(sessions={"acme": {s1, s2, s3}, "beta": set()}),
        sessions={s1, s2, s3},
        upstreams=[FakeUpstream("cmcc", [FakeBind(True, 7), FakeBind(True, 2),
                                         FakeBind(False, 0)], waiting=5),
                   FakeUpstream("cucc", [FakeBind(False, 0)])])
    node.metrics = Metrics(lambda: node.cfg, node.registry, node.sessions, node.upstreams)
    return node


# --- counters and histograms ------------------------------------------------------------------

def feed(m: Metrics) -> None:
    for _ in range(5):
        m.outcome("acme", "cmcc", 0)
    m.outcome("acme", "cmcc", S["ESME_RTHROTTLED"])
    m.outcome("acme", "", S["ESME_RMSGQFUL"])
    m.outcome("beta", "cucc", 0)
    for _ in range(3):
        m.refused("acme", "content")
    m.refused("beta", "balance")
    for s in (0.004, 0.02, 0.3):
        m.submit_latency("acme", s)
    m.upstream_rtt("cmcc", 0.002, 0)
    m.upstream_rtt("cmcc", 0.2, S["ESME_RTHROTTLED"])
    m.store_latency(0.0003)


def test_counters_in_the_exposition():
    m = Metrics()
    feed(m)
    text = m.exposition().decode()
    assert value(text, "proxyd_messages_total", account="acme", upstream="cmcc",
                 outcome="ok") == 5
    assert value(text, "proxyd_messages_total", account="acme", upstream="cmcc",
                 outcome="ESME_RTHROTTLED") == 1
    assert value(text, "proxyd_messages_total", account="acme", upstream="",
                 outcome="ESME_RMSGQFUL") == 1
    assert value(text, "proxyd_messages_total", account="beta", upstream="cucc",
                 outcome="ok") == 1
    assert value(text, "proxyd_rejections_total", account="acme", reason="content") == 3
    assert value(text, "proxyd_rejections_total", account="beta", reason="balance") == 1
    assert value(text, "proxyd_messages_total", account="beta", upstream="cmcc",
                 outcome="ok") is None


def test_histograms_in_the_exposition():
    m = Metrics()
    feed(m)
    text = m.exposition().decode()
    assert value(text, "proxyd_submit_latency_seconds_count", account="acme") == 3
    assert abs(value(text, "proxyd_submit_latency_seconds_sum", account="acme") - 0.324) < 1e-9
    assert value(text, "proxyd_submit_latency_seconds_bucket", account="acme", le="0.005") == 1
    assert value(text, "proxyd_submit_latency_seconds_bucket", account="acme", le="0.025") == 2
    assert value(text, "proxyd_submit_latency_seconds_bucket", account="acme", le="+Inf") == 3
    assert value(text, "proxyd_upstream_rtt_seconds_count", upstream="cmcc") == 2
    assert value(text, "proxyd_upstream_rtt_seconds_bucket", upstream="cmcc", le="0.0025") == 1
    assert value(text, "proxyd_store_latency_seconds_count") == 1
    assert value(text, "proxyd_store_latency_seconds_bucket", le="0.0005") == 1


def test_each_metrics_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.outcome("acme", "cmcc", 0)
    assert value(b.exposition().decode(), "proxyd_messages_total", account="acme",
                 upstream="cmcc", outcome="ok") is None
    assert REGISTRY.get_sample_value("proxyd_messages_total",
                                     {"account": "acme", "upstream": "cmcc",
                                      "outcome": "ok"}) is None


def test_children_are_cached():
    m = Metrics()
    m.outcome("acme", "cmcc", 0)
    m.refused("acme", "sender")
    m.submit_latency("acme", 0.1)
    m.upstream_rtt("cmcc", 0.1, 0)
    kids = (dict(m._c_messages), dict(m._c_rejections), dict(m._c_submit), dict(m._c_rtt))
    m.outcome("acme", "cmcc", 0)
    m.refused("acme", "sender")
    m.submit_latency("acme", 0.1)
    m.upstream_rtt("cmcc", 0.1, 0)
    for before, after in zip(kids, (m._c_messages, m._c_rejections, m._c_submit, m._c_rtt)):
        assert len(before) == 1 and all(after[k] is v for k, v in before.items())


# --- gauges from the node ---------------------------------------------------------------------

def test_gauges_read_from_the_node():
    node = make_node()
    text = node.metrics.exposition().decode()
    assert value(text, "proxyd_binds", account="acme", mode="transmitter") == 2
    assert value(text, "proxyd_binds", account="acme", mode="receiver") == 1
    assert value(text, "proxyd_binds", account="acme", mode="transceiver") == 0
    assert value(text, "proxyd_binds", account="beta", mode="transceiver") == 0
    assert value(text, "proxyd_client_outstanding") == 7
    assert value(text, "proxyd_upstream_binds", upstream="cmcc") == 2
    assert value(text, "proxyd_upstream_binds", upstream="cucc") == 0
    assert value(text, "proxyd_upstream_window_size", upstream="cmcc") == 100
    assert value(text, "proxyd_upstream_window_used", upstream="cmcc") == 9
    assert value(text, "proxyd_upstream_queue", upstream="cmcc") == 5
    assert value(text, "proxyd_upstream_queue", upstream="cucc") == 0
    # live: a change in the node shows at the next scrape
    node.upstreams[0].binds[0].bound = False
    node.registry.sessions["beta"].add(session("beta", "transceiver"))
    text = node.metrics.exposition().decode()
    assert value(text, "proxyd_upstream_binds", upstream="cmcc") == 1
    assert value(text, "proxyd_upstream_window_used", upstream="cmcc") == 2
    assert value(text, "proxyd_binds", account="beta", mode="transceiver") == 1
    # a reload replaces the node's config: the accounts are read through the callable
    node.cfg = Config(accounts=(AccountConfig("gamma", "z"),), store=node.cfg.store)
    text = node.metrics.exposition().decode()
    assert value(text, "proxyd_binds", account="gamma", mode="receiver") == 0
    assert value(text, "proxyd_binds", account="acme", mode="transmitter") == 2
    assert value(text, "proxyd_binds", account="acme", mode="transceiver") is None


# --- the admin site ---------------------------------------------------------------------------

def get(node, path: bytes, method: bytes = b"GET") -> tuple[DummyRequest, list]:
    site = make_admin_site(lambda: node.cfg, node.metrics, node.upstreams, node.store,
                           node.reactor)
    req = DummyRequest(path.lstrip(b"/").split(b"/"))
    req.path = req.uri = path
    req.method = method
    done: list = []
    req.notifyFinish().addBoth(done.append)
    body = site.resource.render(req)
    if body is not server.NOT_DONE_YET:
        req.write(body)
        req.finish()
    return req, done


def body(req: DummyRequest) -> str:
    return b"".join(req.written).decode()


def test_metrics_endpoint():
    node = make_node()
    node.metrics.outcome("acme", "cmcc", 0)
    req, done = get(node, b"/metrics")
    assert done and req.responseCode == 200
    assert req.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    assert value(body(req), "proxyd_messages_total", account="acme", upstream="cmcc",
                 outcome="ok") == 1
    assert value(body(req), "proxyd_upstream_binds", upstream="cmcc") == 2


def test_unknown_path_404():
    req, done = get(make_node(), b"/nothing")
    assert done and req.responseCode == 404
    req, done = get(make_node(), b"/nothing", b"POST")
    assert req.responseCode == 404


def test_health_without_store_needs_a_bound_upstream():
    node = make_node(store_url="none")
    req, done = get(node, b"/health")
    assert done and (req.responseCode, body(req)) == (200, "ok\n")
    for u in node.upstreams:
        for b in u.binds:
            b.bound = False
    req, done = get(node, b"/health")
    assert done and (req.responseCode, body(req)) == (503, "no upstream bound\n")


def test_health_store_not_connected_yet():
    node = make_node()
    req, done = get(node, b"/health")
    assert done and req.responseCode == 503 and body(req) == "store not connected\n"


def test_health_waits_for_the_store_ping():
    node = make_node()
    node.store = FakeStore()
    req, done = get(node, b"/health")
    assert not done and len(node.store.pings) == 1
    node.reactor.advance(0.002)
    node.store.pings[0].callback("PONG")
    assert done and (req.responseCode, body(req)) == (200, "ok\n")
    text = node.metrics.exposition().decode()
    assert value(text, "proxyd_store_latency_seconds_count") == 1
    assert value(text, "proxyd_store_latency_seconds_bucket", le="0.001") == 0
    assert value(text, "proxyd_store_latency_seconds_bucket", le="0.0025") == 1
    assert not node.reactor.getDelayedCalls()


def test_health_store_error_and_timeout():
    node = make_node()
    node.store = FakeStore()
    req, done = get(node, b"/health")
    node.store.pings[0].errback(RuntimeError("connection\nrefused"))
    assert done and (req.responseCode, body(req)) == (503, "store: connection refused\n")
    req, done = get(node, b"/health")
    node.reactor.advance(HEALTH_TIMEOUT_S - 0.01)
    assert not done
    node.reactor.advance(0.02)
    assert done and req.responseCode == 503 and body(req).startswith("store: no answer")
    assert "\n" not in body(req).rstrip("\n")
    node.store.pings[1].callback("PONG")      # late answer: ignored, nothing written twice
    assert body(req).count("\n") == 1


def test_health_client_gone_before_the_answer():
    node = make_node()
    node.store = FakeStore()
    req, done = get(node, b"/health")
    req.processingFailed(Exception("client went away"))  # fires notifyFinish's errback
    assert done
    node.store.pings[0].callback("PONG")       # must not write to a finished request
    assert req.written == [] and req.finished == 0
