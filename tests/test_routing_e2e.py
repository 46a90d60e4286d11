"""Three simulators as three operators: each destination reaches its carrier's simulator."""
from __future__ import annotations

import pytest

from proxyd.smpp import constants as C

from .conftemplate import config_text, listen, sim_upstream
from .procs import admin, free_port, start_proxyd, start_sim, wait_until, wait_log, write_config
from .test_metrics_e2e import ACCOUNT, bind, recorded_destinations, sample, scrape, submit_all

S = C.STATUS

UPSTREAM = {"binds": 1, "window": 50, "response_timeout_s": 5, "reconnect_max_s": 0.5}
CONFIG = dict(relay={"queue_wait_s": 0.2}, account=ACCOUNT)


# three spellings on purpose: English, Chinese, alias
OPERATORS = {"cmcc": ["China Mobile"], "cucc": ["中国联通"], "ctcc": ["telecom"]}


@pytest.fixture
def operators(tmp_path):
    sims = {name: start_sim(tmp_path, None, name=name) for name in OPERATORS}
    port, admin_port = free_port(), free_port()
    ups = [sim_upstream(sims[name][1], name=name, **UPSTREAM, carriers=carriers)
           for name, carriers in OPERATORS.items()]
    cfg = write_config(tmp_path, config_text(port, admin={"listen": listen(admin_port)},
                                             upstreams=ups, **CONFIG))
    proxyd = start_proxyd(tmp_path, cfg, port)
    for name in OPERATORS:
        wait_log(proxyd, "upstream %s bound" % name)
    admin(tmp_path, cfg, "topup", "acme", "100000", "--note", "test funds")
    yield {"port": port, "admin": admin_port, "proxyd": proxyd,
           "records": {name: sims[name][2] for name in OPERATORS}}
    proxyd.stop()
    for sim, _port, _record in sims.values():
        sim.stop()


def test_destinations_reach_their_carriers_simulator(operators):
    expected = {
        # China Mobile 138-0013, also in international spellings
        "cmcc": ["1380013%04d" % i for i in range(20)] + ["+8613800130100", "8613800130101"],
        "cucc": ["1300000%04d" % i for i in range(15)] + ["+8613000000100"],   # China Unicom
        "ctcc": ["1330000%04d" % i for i in range(10)] + ["008613300000100"],  # China Telecom
    }
    unroutable = ["1064899", "02012345678"]     # no carrier: no upstream takes them
    dests = [d for ds in expected.values() for d in ds] + unroutable
    # interleave the carriers, as real traffic does
    dests = dests[::2] + dests[1::2]
    s = bind(operators["port"])
    answers = submit_all(s, dests)
    s.close()
    for i, d in enumerate(dests):
        want = S["ESME_RINVDSTADR"] if d in unroutable else 0
        assert answers[i] == want, (d, C.status_name(answers[i]))
    for name, ds in expected.items():
        record = operators["records"][name]
        wait_until(lambda: len(recorded_destinations(record)) >= len(ds), name, 10)
        assert sorted(recorded_destinations(record)) == sorted(ds), name

    m = scrape(operators["admin"])
    for name, ds in expected.items():
        assert sample(m, "proxyd_messages_total", account="acme", upstream=name,
                      outcome="ok") == len(ds), name
        assert sample(m, "proxyd_upstream_rtt_seconds_count", upstream=name) == len(ds)
        assert sample(m, "proxyd_upstream_binds", upstream=name) == 1
    assert sample(m, "proxyd_rejections_total", account="acme", reason="route") == 2
    assert sample(m, "proxyd_submit_latency_seconds_count", account="acme") == len(dests)
