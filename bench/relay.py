"""Relay throughput: simulator + proxyd (real twistd processes) + the windowed load client.

    .venv/bin/python bench/relay.py [--count 30000] [--rounds 3] [--only bare,ledger]
                                    [--baseline DIR]

Prints, measured in this run: msg/s direct to the simulator and through proxyd at window 10
and 100, p50/p99 latency, and the ratio proxyd/direct. Further configurations (ledger on,
every check on) are added as the features land; their ratio is against the plain run.
`cmpp3`, `cmpp2`, `smgp` and `sgip` rows relay to a simulator of that protocol (issue 18),
against `bare`.
Every configuration runs at once and the rounds measure them in turn; the median round is
shown, with the spread, and a ratio is the median of the ratios of the rounds (each round
measures the two one right after the other). "cpu us" is the CPU time (user + system) the
measured process (proxyd, or the simulator for "direct") used per message: steadier than
msg/s on a busy machine.

`--baseline DIR` also runs each variant from another checkout of proxyd (for example
`git worktree add /tmp/before <commit>`), as `<variant>@base`, and prints the ratio of this
checkout to it, measured in the same rounds: how a change moves the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from procs import BIN, Proc, admin, free_port, start_proxyd, start_sim, write_config  # noqa: E402,E501

import loadclient  # noqa: E402

BASE = """
[smpp]
listen = ["tcp:{port}:interface=127.0.0.1"]
window = 1000
[[upstream]]
name = "sim"
connect = "tcp:host=127.0.0.1:port={sim}"
system_id = "{sid}"
password = "pw"
binds = 2
window = 200
[[account]]
system_id = "bench"
password = "bench"
service_codes = ["10690001"]
max_binds = 8
"""

# name -> (extra config, needs funds)
VARIANTS = {
    "bare": ('[store]\nurl = "none"\n[policy]\nenabled = false\n', False),
    "ledger": ('[store]\ndir = "var/{name}"\n[policy]\nenabled = false\n', True),
    # the same without the outcome log (issue 17): what the write-ahead records cost
    "nolog": ('[store]\ndir = "var/{name}"\noutcome_log = ""\n[policy]\nenabled = false\n',
              True),
    "checks": ('[store]\ndir = "var/{name}"\n[policy]\nfilters_dir = "%s"\n'
               % (HERE.parent / "conf" / "filters"), True),
    # every check, and registered_delivery=1: each message also brings a receipt back
    # through the receipt map and the durable delivery queue to the (transceiver) client
    "receipts": ('[store]\ndir = "var/{name}"\n[policy]\nfilters_dir = "%s"\n'
                 % (HERE.parent / "conf" / "filters"), True),
}

# operator protocols (issue 18): the "bare" configuration with an upstream speaking that
# protocol to a simulator of its own (same binds and window as the SMPP row); the ratio is
# against proxyd-bare (an SMPP upstream) measured in the same rounds
PROTOCOL_ROWS = {
    "cmpp3": ('protocol = "cmpp3"\nservice_id = "BENCH"\n', ()),
    "cmpp2": ('protocol = "cmpp2"\nservice_id = "BENCH"\n', ()),
    "smgp": ('protocol = "smgp"\nservice_id = "BENCH"\n', ()),
    "sgip": ('protocol = "sgip"\nservice_id = "BENCH"\nnode_id = 3075512345\n'
             'sp_listen = "tcp:{sp}:interface=127.0.0.1"\n',
             ("--sp-connect", "tcp:host=127.0.0.1:port={sp}")),
}
# the system_id of a row's upstream where "bench" does not fit (CMPP: a 6-digit SP_Id)
PROTOCOL_SID = {"cmpp3": "900003", "cmpp2": "900002"}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` (Linux /proc)."""
    import os
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(port: int, count: int, window: int, binds: int = 1,
            receipts: bool = False) -> dict:
    # (a deadline, so that a lost answer or receipt stops the run instead of hanging it)
    return asyncio.run(asyncio.wait_for(loadclient.run(
        port, "bench", "bench", count, window, binds, b"Your verification code is 123456", 0,
        receipts), 600))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=3,
                    help="measurements of each path and window, taken in turn (median shown)")
    ap.add_argument("--only", default="", help="comma-separated variants (default: all)")
    ap.add_argument("--baseline", default="",
                    help="another proxyd checkout: its variants run too, as <name>@base")
    a = ap.parse_args()
    if a.only:
        for table in (VARIANTS, PROTOCOL_ROWS):
            for k in list(table):
                if k not in a.only.split(","):
                    del table[k]
    tmp = Path(tempfile.mkdtemp(prefix="proxyd-bench-"))
    sim, sim_port, _ = start_sim(tmp, None)
    runs: dict[tuple[str, int], list[dict]] = {}
    procs = []
    try:
        # every variant runs at once (idle while another is measured), so that the rounds
        # can take them in turn: a slow spell of the machine then hits all of them alike
        ports = {"direct": sim_port}
        pids = {"direct": sim.p.pid}      # whose CPU a measurement of that path counts
        runs_of = [(name, name, extra, funds) for name, (extra, funds) in VARIANTS.items()]
        if a.baseline:
            runs_of += [(name + "@base", name, extra, funds)
                        for name, (extra, funds) in VARIANTS.items()]
        for label, name, extra, funds in runs_of:
            port = free_port()
            tag = label.replace("@", "-")
            # (each with its own system_id at the simulator: receipts go back to the binds
            # of the proxyd that sent the message)
            sid = ("base-" if label.endswith("@base") else "proxyd-") + name
            cfg = write_config(tmp, BASE.format(port=port, sim=sim_port, sid=sid)
                               + extra.replace("{name}", tag), "%s.toml" % tag)
            if label.endswith("@base"):
                base = str(Path(a.baseline).resolve())
                proc = Proc([str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "proxyd",
                             "--config", str(cfg)], tmp / ("%s.log" % tag), cwd=tmp,
                            env={"PYTHONPATH": base})
                proc.wait_port(port, 60)
                procs.append(proc)
            else:
                procs.append(start_proxyd(tmp, cfg, port, name=tag))
            if funds:
                admin(tmp, cfg, "topup", "bench", str(10 ** 9))
            measure(port, 2000, 100, receipts=name == "receipts")  # warm up (binds, caches)
            ports["proxyd-" + label] = port
            pids["proxyd-" + label] = procs[-1].p.pid
        for proto, (keys, sim_args) in PROTOCOL_ROWS.items():
            sp = free_port()
            psim, psim_port, _ = start_sim(tmp, None, "--protocol", proto, "--password", "pw",
                                           *(x.format(sp=sp) for x in sim_args), name=proto)
            procs.append(psim)
            port = free_port()
            text = BASE.format(port=port, sim=psim_port,
                               sid=PROTOCOL_SID.get(proto, "bench")).replace(
                "window = 200\n", "window = 200\n" + keys.format(sp=sp))
            cfg = write_config(tmp, text + VARIANTS.get("bare", ("[store]\nurl = \"none\"\n"
                                                                "[policy]\nenabled = false\n",
                                                                False))[0], proto + ".toml")
            procs.append(start_proxyd(tmp, cfg, port, name=proto))
            measure(port, 2000, 100)
            ports["proxyd-" + proto] = port
            pids["proxyd-" + proto] = procs[-1].p.pid
        for _ in range(a.rounds):
            for w in (10, 100):
                for path, port in ports.items():
                    c0 = cpu_s(pids[path])
                    r = measure(port, a.count, w,
                                receipts=path.split("@")[0] == "proxyd-receipts")
                    r["cpu_us"] = (cpu_s(pids[path]) - c0) * 1e6 / a.count
                    r["path"] = path
                    runs.setdefault((path, w), []).append(r)
    finally:
        for p in procs:
            p.stop()
        sim.stop()
    # the median run of each path and window
    results = []
    for key, rs in runs.items():
        rs = sorted(rs, key=lambda r: r["msg_per_s"])
        r = dict(rs[len(rs) // 2])
        r["spread"] = "%d-%d" % (rs[0]["msg_per_s"], rs[-1]["msg_per_s"])
        cpus = sorted(x["cpu_us"] for x in rs)
        r["cpu_us"] = cpus[len(cpus) // 2]
        r["status"] = {}
        for x in rs:
            for k, v in x["status"].items():
                r["status"][k] = r["status"].get(k, 0) + v
        results.append(r)
    results.sort(key=lambda r: (list(ports).index(r["path"]), r["window"]))
    by = {(r["path"], r["window"]): r for r in results}
    print("%d messages per measurement, median of %d rounds (spread: slowest-fastest; a ratio "
          "is the median of the rounds' ratios)" % (a.count, a.rounds))
    print("%-23s %6s %10s %15s %8s %8s %7s  %s" % ("path", "window", "msg/s", "spread",
                                                   "p50 ms", "p99 ms", "cpu us", "ratio"))
    baseline = {"proxyd-bare": "direct", "proxyd-ledger": "proxyd-nolog",
                "proxyd-nolog": "proxyd-bare",
                "proxyd-checks": "proxyd-ledger", "proxyd-receipts": "proxyd-checks"}
    for path in list(ports):
        if path.endswith("@base"):
            plain = path[:-5]
            prev = baseline.get(plain, "direct")
            baseline[path] = prev + "@base" if prev != "direct" else "direct"
            baseline[plain] = path              # this checkout against the baseline's
    for proto in PROTOCOL_ROWS:                 # operator protocols: against the SMPP row
        baseline["proxyd-" + proto] = "proxyd-bare"
    for r in results:
        base = by.get((baseline.get(r["path"], "direct"), r["window"]))
        ratio = ""
        if r["path"] != "direct" and base is not None:
            # per round (the two measured one after the other), then the median of those
            pairs = sorted(x["msg_per_s"] / y["msg_per_s"] for x, y in zip(
                runs[(r["path"], r["window"])], runs[(base["path"], r["window"])]))
            ratio = "%.2f of %s (rounds %s)" % (pairs[len(pairs) // 2], base["path"],
                                                " ".join("%.2f" % x for x in pairs))
        print("%-23s %6d %10d %15s %8.2f %8.2f %7.1f  %s" % (
            r["path"], r["window"], r["msg_per_s"], r["spread"], r["p50_ms"], r["p99_ms"],
            r["cpu_us"], ratio))
        bad = {k: v for k, v in r["status"].items() if k != "ESME_ROK"}
        if bad:
            print("   non-OK answers:", json.dumps(bad))


if __name__ == "__main__":
    main()
