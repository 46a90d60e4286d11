"""The shipped monitoring files against a real node (issue 16, items 3 and 4): every metric
the Grafana dashboard and the Prometheus alert rules name is on /metrics, and the status
page (GET / on the admin listener) shows the node as it is, escaped and masked."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxyd.smpp import pdu as P

from .conftemplate import config_text
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, write_config
from .test_metrics_e2e import bind, read_pdu, submit_all

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "conf" / "monitoring"
TOKEN = "status-page-token-0123456789"
ODD = "<b>o&d'\""           # an account name that must be escaped on the page
METRIC = re.compile(r"\bproxyd_[a-z0-9_]+")


def dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = []
    for p in dash["panels"]:
        for t in p.get("targets", ()):
            exprs.append(t["expr"])
    for v in dash["templating"]["list"]:
        exprs.append(v["definition"])
    return exprs


def rules() -> list[dict]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_the_files_are_well_formed():
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    # importable: a datasource input, panels with a type, a grid place and queries
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    assert dash["title"] == "proxyd" and dash["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for what in ("outcome", "refusals by reason", "latency percentiles", "upstream binds",
                 "window use", "store latency", "receipt backlog", "balances"):
        assert what in titles, what
    for p in dash["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["type"]
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"].strip() for t in p["targets"])
    # the alerts the issue lists, each with an expression, a severity and a summary
    by_name = {r["alert"]: r for r in rules()}
    for name in ("ProxydUpstreamDown", "ProxydStoreDown", "ProxydRefusalSpike",
                 "ProxydBalanceLow", "ProxydWindowSaturated", "ProxydReceiptBacklogGrowing",
                 "ProxydCallbacksFailing"):
        r = by_name[name]
        assert r["expr"].strip() and r["labels"]["severity"] and r["annotations"]["summary"]
    assert len(by_name) == len(rules())


def test_every_expression_is_promql():
    with pytest.raises(Exception):      # the parser does refuse a bad one
        promql_parser.parse("sum(rate(proxyd_messages_total[5m])")
    grafana = {"$__rate_interval": "1m", "$instance": ".*", "$account": ".*"}
    exprs = [r["expr"] for r in rules()]
    for e in dashboard_exprs():
        if e.startswith("label_values("):   # a Grafana variable query, not PromQL
            continue
        for k, v in grafana.items():
            e = e.replace(k, v)
        exprs.append(e)
    for e in exprs:
        promql_parser.parse(e)


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    sim, sim_port, _ = start_sim(tmp)
    port, admin_port = free_port(), free_port()
    cfg = write_config(tmp, config_text(
        port, sim_port, account={"low_balance": 10000},
        accounts=[{"system_id": ODD, "password": "pw", "service_codes": ["10690002"]}],
        admin={"listen": ["tcp:%d:interface=127.0.0.1" % admin_port], "token": TOKEN},
        store={"dir": str(tmp / "store")}))
    proc = start_proxyd(tmp, cfg, port)
    try:
        wait_until(lambda: "upstream sim bound" in proc.text(), "the upstream bind", 20)
        admin(tmp, cfg, "topup", "acme", "1000")
        s = bind(port)
        # one relayed, one refused (a sender that is not the account's service code)
        assert submit_all(s, ["13800138000"], tag="ok") == {0: 0}
        s.sendall(P.encode(P.SubmitSm(
            seq=9, source_addr=b"999", source_addr_ton=0, source_addr_npi=1,
            dest_addr_ton=1, dest_addr_npi=1, destination_addr=b"13912345678",
            short_message=b"secret words")))
        r = read_pdu(s)
        assert r.seq == 9 and r.status != 0
        yield proc, admin_port, s
        s.close()
    finally:
        proc.stop()
        sim.stop()


def test_every_metric_of_the_dashboard_and_the_rules_is_exported(node):
    proc, admin_port, _s = node
    status, ctype, text = get(admin_port, "/metrics")
    assert status == 200, text
    exported = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    named = set()
    for expr in dashboard_exprs() + [r["expr"] for r in rules()]:
        named.update(METRIC.findall(expr))
    assert len(named) >= 15, named
    missing = sorted(named - exported)
    assert not missing, missing
    # and the balances are the store's
    assert 'proxyd_balance_fen{account="acme"} 995.0' in text
    assert 'proxyd_low_balance_fen{account="acme"} 10000.0' in text
    assert 'proxyd_balance_low{account="acme"} 1.0' in text     # 995 < 10000
    assert "proxyd_store_up 1.0" in text


def test_status_page(node):
    proc, admin_port, _s = node
    assert get(admin_port, "/", token=None)[0] == 401           # the admin token applies
    assert get(admin_port, "/", token="x" * 30)[0] == 401
    status, ctype, page = get(admin_port, "/")
    assert status == 200 and ctype.startswith("text/html"), (status, ctype)
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', page)
    # self-contained: no script, no external reference
    low = page.lower()
    assert "<script" not in low and "src=" not in low and "href=" not in low
    assert "http://" not in low.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<svg" in page and "messages per second" in low
    # client binds per account, upstreams with state and window, balances
    row = re.search(r"<tr><td class=\"l\">acme</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[:4] == ["1", "0", "0", "4"], cells        # one transmitter, max_binds 4
    assert "995 (low)" in row and "10000" in row
    up = re.search(r"<tr><td class=\"l\">sim</td>(.*?)</tr>", page).group(1)
    assert "bound" in up and "1/1" in up and "0/100" in up
    # refusals by reason and the last refusals, masked, without the text
    assert re.search(r"<td class=\"l\">sender</td><td>1</td><td>1</td>", page), page
    assert "139****5678" in page and "13912345678" not in page
    assert "secret words" not in page
    # escaped: the odd account name never appears raw
    assert ODD not in page
    assert "&lt;b&gt;o&amp;d&#x27;&quot;" in page
    # the store read is cached: a page does not need the store every time, and says it is up
    assert "store: <span class=\"ok\">up</span>" in page


CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).exists()),
                None)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine")
def test_status_page_screenshot(node, tmp_path):
    """Renders in a real browser (without the token the page is a 401: the test serves it
    through a file, as a browser behind an authenticating proxy would get it)."""
    proc, admin_port, _s = node
    status, _ctype, page = get(admin_port, "/")
    html = tmp_path / "status.html"
    html.write_text(page)
    png = tmp_path / "status.png"
    subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox",
                    "--window-size=1280,1400", "--screenshot=%s" % png, html.as_uri()],
                   check=True, timeout=120, capture_output=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
