"""Issue 17, the shared store under load: it stalls for 5 s (a TCP proxy between proxyd
and a valkey-server stops forwarding), and two nodes whose clocks are 30 s apart share it.
Each case makes the three checks of `harness.audit`."""
from __future__ import annotations

import time

import pytest

from tests.procs import Proc, BIN, free_port, start_sim, wait_until, write_config

from .harness import S, Load, TcpProxy, TcpStore, audit, bound, fault_config, topup


def start_node(tmp, cfg, port: int, name: str, env: dict | None = None) -> Proc:
    proc = Proc([str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "proxyd", "--config",
                 str(cfg)], tmp / ("%s.log" % name), cwd=tmp, env=env)
    try:
        proc.wait_port(port, 60)
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.mark.slow
def test_store_stalls_5s_under_load(tmp_path):
    """The store goes silent for 5 s (timeout_s = 1): every submit still gets an answer —
    ESME_RSYSERR during the stall, within timeout_s, not a hang — and OK again after it.
    Records of parts relayed on the lease before the stall are sent again (same token:
    never written twice) once the store answers, so every OK is charged."""
    sim, sim_port, record = start_sim(tmp_path, None, "--latency-ms", "5")
    valkey = TcpStore(tmp_path / "vk")
    proxy = TcpProxy(valkey.port)
    port = free_port()
    cfg = write_config(tmp_path, fault_config(port, sim_port, store={
        "url": "redis://127.0.0.1:%d" % proxy.port, "timeout_s": 1.0}))
    node = start_node(tmp_path, cfg, port, "proxyd")
    try:
        bound(node)
        topup(tmp_path, cfg)
        load = Load(port, 6000, b"v-").start()
        wait_until(lambda: len(load.answers) >= 1000, "traffic flowing", 30)
        proxy.stall()
        load.phase = "stalled"
        stalled_at = len(load.answers)
        time.sleep(5)
        # during the stall the client was answered, and told the store is down
        during = load.statuses("stalled")
        assert during.get(S["ESME_RSYSERR"]), during
        assert len(load.answers) > stalled_at
        proxy.resume()
        load.phase = "after"
        load.join()
        assert load.statuses("after").get(0), "traffic did not resume"
        unknown = load.statuses().get(S["ESME_RSYSERR"], 0)
        audit(tmp_path, cfg, [load], [record], uncharged_max=unknown)
        assert "Traceback" not in node.text()
    finally:
        node.stop()
        proxy.close()
        valkey.stop()
        sim.stop()


def test_two_nodes_30s_apart_share_one_store(tmp_path):
    """Two nodes, one 30 s behind the other (PROXYD_TEST_CLOCK_SKEW_S), leases of 10 s and a
    sweeper for reservations older than 3 s on both: neither takes the other's live lease
    or young reservations back (no "outcome unknown" refund, every OK charged)."""
    sim, sim_port, record = start_sim(tmp_path, None, "--latency-ms", "5")
    valkey = TcpStore(tmp_path / "vk")
    ports = [free_port(), free_port()]
    cfgs = [write_config(tmp_path, fault_config(p, sim_port, store={
        "url": valkey.url, "lease_ttl_s": 10, "lease_idle_s": 5},
        relay={"node_id": "n%d" % i}), "node%d.toml" % i) for i, p in enumerate(ports)]
    nodes = [start_node(tmp_path, cfgs[i], ports[i], "node%d" % i,
                        env={"PROXYD_TEST_CLOCK_SKEW_S": str(skew)})
             for i, skew in enumerate((0, -30))]
    try:
        for n in nodes:
            bound(n)
        assert "shifted by -30.0s" in nodes[1].text()
        topup(tmp_path, cfgs[0])
        loads = [Load(ports[i % 2], 2000, b"n%d-" % i).start() for i in range(4)]
        for ld in loads:
            ld.join()
        a = audit(tmp_path, cfgs[0], loads, [record])
        assert a.ok == 8000 and a.charged == 8000
        assert a.report["parts"]["outcome_unknown"] == 0
        for n in nodes:
            assert "outcome unknown" not in n.text()
            assert "which the store no longer had" not in n.text()
    finally:
        for n in nodes:
            n.stop()
        valkey.stop()
        sim.stop()
