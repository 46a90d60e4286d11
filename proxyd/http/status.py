"""The status page of the admin listener (``GET /``): one server-rendered HTML page, no
external assets, no JavaScript, reloaded by the browser every `REFRESH_S` seconds
(``<meta http-equiv="refresh">``).

It shows client binds per account, the upstreams (state, window use, rate), messages per
second over the last ten minutes (an inline SVG chart), refusals by reason, balances (with
the low-balance state, receipts and callbacks waiting), and the last refusals (destination
masked by `proxyd.logs.mask`, never a text). Every value from outside (account and upstream
names, reasons, numbers) is HTML-escaped.

`render(view)` is pure: `view` is a `StatusView` (what the admin resource gathers from the
node; built by `gather`).
"""
from __future__ import annotations

import html
import socket
import time
from typing import Any, Iterable, NamedTuple

from ..logs import mask

__all__ = ["StatusView", "gather", "render", "REFRESH_S", "chart_svg"]

REFRESH_S = 5
BIND_MODES = ("transmitter", "receiver", "transceiver")


class UpstreamRow(NamedTuple):
    name: str
    bound: int
    binds: int
    used: int
    size: int
    queue: int
    rate: float


class AccountRow(NamedTuple):
    name: str
    binds: dict          # mode -> count
    max_binds: int
    balance: int | None  # None: not read (no store, or not yet)
    low_balance: int
    low: bool
    backlog: int | None
    callbacks: int | None


class StatusView(NamedTuple):
    now: float
    node: str
    store: str               # "up", "down: <why>", "none"
    accounts: list
    upstreams: list
    rates: list              # [(time, msg/s)]
    window_s: float          # what the chart covers
    refusals: dict           # reason -> count since start
    refusals_recent: dict    # reason -> count over the chart's window
    last_refusals: list      # [(time, account, reason, destination)]


def gather(config: Any, metrics: Any, monitor: Any, upstreams: Iterable[Any],
           binds: dict, clock: Any) -> StatusView:
    """The view of the node now (after `monitor.fresh()`)."""
    cfg = config()
    states = monitor.states
    accounts = []
    for a in cfg.accounts:
        modes = dict.fromkeys(BIND_MODES, 0)
        for s in list(binds.get(a.system_id, ())):
            m = getattr(s, "mode", None) or "unknown"
            modes[m] = modes.get(m, 0) + 1
        st = states.states.get(a.system_id)
        accounts.append(AccountRow(a.system_id, modes, a.max_binds,
                                   st.balance if st else None, a.low_balance,
                                   bool(st and st.low), st.backlog if st else None,
                                   st.callbacks if st else None))
    ups = []
    history = monitor.history
    for u in list(upstreams):
        bound = [b for b in u.binds if b.bound]
        ups.append(UpstreamRow(u.name, len(bound), u.cfg.binds,
                               sum(len(b.inflight) for b in bound),
                               u.cfg.window * len(bound), len(u.waiting),
                               history.upstream_rate(u.name)))
    if states.store is None:
        store = "none"
    elif states.up:
        store = "up"
    elif states.up is None:
        store = "not read yet"
    else:
        store = "down: %s" % states.error
    _, _, refusals = metrics.totals()
    samples = list(history.samples)
    recent: dict = {}
    if samples:
        first = samples[0][3]
        recent = {r: n - first.get(r, 0) for r, n in refusals.items()
                  if n - first.get(r, 0) > 0}
    return StatusView(clock.seconds(), cfg.relay.node_id or socket.gethostname(), store,
                      accounts, ups,
                      history.rates(), history.step_s * (history.samples.maxlen - 1),
                      refusals, recent, list(metrics.recent)[::-1])


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _t(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def chart_svg(rates: list, now: float, window_s: float, width: int = 600,
              height: int = 140) -> str:
    """An inline SVG line chart of msg/s over the last `window_s` before `now`."""
    pad_l, pad_b, pad_t = 48, 18, 8
    w, h = width - pad_l - 4, height - pad_b - pad_t
    top = max([r for _, r in rates] + [1.0])
    scale = _nice(top)
    pts = []
    for t, r in rates:
        age = now - t
        if age > window_s:
            continue
        x = pad_l + w * (1 - age / window_s)
        y = pad_t + h * (1 - r / scale)
        pts.append("%.1f,%.1f" % (x, y))
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'viewBox="0 0 %d %d" role="img" aria-label="messages per second, last %d '
           'minutes">' % (width, height, width, height, window_s // 60),
           '<rect x="%d" y="%d" width="%d" height="%d" fill="#fafafa" stroke="#ccc"/>'
           % (pad_l, pad_t, w, h)]
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + h * (1 - frac)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e4e4e4"/>'
                   % (pad_l, y, pad_l + w, y))
        out.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end">%s</text>'
                   % (pad_l - 4, y + 3, _e(_num(scale * frac))))
    for minutes in range(0, int(window_s // 60) + 1, 2):
        x = pad_l + w * (1 - minutes * 60 / window_s)
        out.append('<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s</text>'
                   % (x, height - 4, "now" if minutes == 0 else "-%dm" % minutes))
    if pts:
        out.append('<polyline fill="none" stroke="#2a6fb0" stroke-width="2" points="%s"/>'
                   % " ".join(pts))
    else:
        out.append('<text x="%d" y="%d" font-size="12" fill="#888">no samples yet</text>'
                   % (pad_l + 10, pad_t + h // 2))
    out.append("</svg>")
    return "".join(out)


def _nice(v: float) -> float:
    """The smallest of 1, 2, 5 x 10^k at least `v`."""
    k = 1.0
    while True:
        for m in (1, 2, 5):
            if m * k >= v:
                return m * k
        k *= 10


def _num(v: float) -> str:
    return ("%d" % v) if v == int(v) else ("%.1f" % v)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.bad{color:#b00;font-weight:bold}
.ok{color:#080}.muted{color:#888}.bar{display:inline-block;height:8px;background:#2a6fb0}
.barbox{display:inline-block;width:80px;height:8px;background:#eee;margin-right:6px}
"""


def render(v: StatusView) -> bytes:
    o: list[str] = []
    a = o.append
    a('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">')
    a('<meta http-equiv="refresh" content="%d">' % REFRESH_S)
    a('<meta name="viewport" content="width=device-width, initial-scale=1">')
    a("<title>proxyd status%s</title>" % (" - " + _e(v.node) if v.node else ""))
    a("<style>%s</style></head><body>" % CSS)
    a("<h1>proxyd%s</h1>" % (" " + _e(v.node) if v.node else ""))
    cls = "ok" if v.store in ("up", "none") else "bad"
    a('<p>%s UTC &middot; store: <span class="%s">%s</span> &middot; refreshed every %d s'
      "</p>" % (_e(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.now))), cls,
                _e(v.store), REFRESH_S))

    a("<h2>Messages per second, last %d minutes</h2>" % (v.window_s // 60))
    a(chart_svg(v.rates, v.now, v.window_s))

    a("<h2>Upstreams</h2>")
    if not v.upstreams:
        a('<p class="muted">none configured</p>')
    else:
        a('<table><tr><th class="l">upstream</th><th class="l">state</th><th>binds</th>'
          '<th class="l">window use</th><th>queued</th><th>msg/s (1 min)</th></tr>')
        for u in v.upstreams:
            state = ('<span class="ok">bound</span>' if u.bound == u.binds else
                     '<span class="bad">down</span>' if u.bound == 0 else
                     '<span class="bad">partly bound</span>')
            pct = (100.0 * u.used / u.size) if u.size else 0.0
            a('<tr><td class="l">%s</td><td class="l">%s</td><td>%d/%d</td>'
              '<td class="l"><span class="barbox"><span class="bar" style="width:%d%%">'
              '</span></span>%d/%d</td><td>%d</td><td>%.1f</td></tr>'
              % (_e(u.name), state, u.bound, u.binds, round(pct), u.used, u.size, u.queue,
                 u.rate))
        a("</table>")

    a("<h2>Accounts: client binds and balances</h2>")
    a('<table><tr><th class="l">account</th><th>transmitter</th><th>receiver</th>'
      '<th>transceiver</th><th>max binds</th><th>balance (fen)</th><th>low_balance</th>'
      '<th>receipts waiting</th><th>callbacks queued</th></tr>')
    for r in v.accounts:
        bal = "&ndash;" if r.balance is None else "%d" % r.balance
        if r.low:
            bal = '<span class="bad">%s (low)</span>' % bal
        a('<tr><td class="l">%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td>'
          "<td>%s</td><td>%s</td><td>%s</td></tr>"
          % (_e(r.name), r.binds.get("transmitter", 0), r.binds.get("receiver", 0),
             r.binds.get("transceiver", 0), r.max_binds, bal,
             _e(r.low_balance) if r.low_balance else "off",
             "&ndash;" if r.backlog is None else r.backlog,
             "&ndash;" if r.callbacks is None else r.callbacks))
    a("</table>")

    a("<h2>Refusals by reason</h2>")
    if not v.refusals:
        a('<p class="muted">none since start</p>')
    else:
        a('<table><tr><th class="l">reason</th><th>last %d min</th><th>since start</th></tr>'
          % (v.window_s // 60))
        for reason, n in sorted(v.refusals.items(), key=lambda x: (-x[1], x[0])):
            a('<tr><td class="l">%s</td><td>%d</td><td>%d</td></tr>'
              % (_e(reason), v.refusals_recent.get(reason, 0), n))
        a("</table>")

    a("<h2>Last refusals</h2>")
    if not v.last_refusals:
        a('<p class="muted">none since start</p>')
    else:
        a('<table><tr><th class="l">time (UTC)</th><th class="l">account</th>'
          '<th class="l">reason</th><th class="l">destination</th></tr>')
        for ts, acct, reason, dest in v.last_refusals:
            a('<tr><td class="l">%s</td><td class="l">%s</td><td class="l">%s</td>'
              '<td class="l">%s</td></tr>' % (_t(ts), _e(acct), _e(reason),
                                              _e(mask(dest)) if dest else "&ndash;"))
        a("</table>")
    a("</body></html>\n")
    return "".join(o).encode("utf-8")
