"""What the low-balance check (issue 16) adds to the ledger's batch script: server-side
microseconds per EVALSHA of a one-admit batch (INFO commandstats), the script of a git
revision (`--baseline`, default main) against this checkout's, the latter with the notice
off (no low:{A} key) and on (a threshold set, already notified). Rounds alternate the three;
prints the median of each and the ratios, measured in this run.

    .venv/bin/python bench/lowcheck.py [--baseline main] [--rounds 7] [--calls 3000]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would shadow the standard library's http (Twisted imports it)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import valkey  # noqa: E402

from proxyd.store.embedded import start_blocking  # noqa: E402
from proxyd.store.ledger import keys as K  # noqa: E402
from proxyd.store.ledger import ops as O  # noqa: E402
from proxyd.store.ledger.scripts import SCRIPTS  # noqa: E402


def script_at(rev: str) -> str:
    def src(name: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show",
                               "%s:proxyd/store/ledger/%s.lua" % (rev, name)],
                              capture_output=True, text=True, check=True).stdout
    return "\n%s\n%s" % (src("prelude"), src("batch"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3000)
    a = ap.parse_args()
    base_src = script_at(a.baseline)
    nkeys_base = 8 if "KEYS[9]" not in base_src else 11
    path, stop = start_blocking(tempfile.mkdtemp(prefix="proxyd-bench-low-"))
    try:
        c = valkey.Valkey(unix_socket_path=path, decode_responses=True)
        sha_base, sha_new = c.script_load(base_src), c.script_load(SCRIPTS["batch"])

        def run(sha: str, acct: str, nkeys: int) -> float:
            c.execute_command("CONFIG", "RESETSTAT")
            now = time.time()
            keys, args = K.script_call(acct, now, K.day_of(now), "")
            keys = keys[:nkeys]
            for i in range(a.calls):
                args[4] = O.pack_ops([O.Admit("f", 1, "", "13800138000", ["m%d" % i])])
                c.evalsha(sha, len(keys), *keys, *args)
            return c.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]

        res: dict[str, list[float]] = {"baseline": [], "off": [], "on": []}
        for r in range(a.rounds):
            for name in ("base", "off", "on"):
                c.set("bal:{%s%d}" % (name, r), 10 ** 9)
            c.hset("low:{on%d}" % r, mapping={"t": 10 ** 10, "low": "1", "url": ""})
            res["baseline"].append(run(sha_base, "base%d" % r, nkeys_base))
            res["off"].append(run(sha_new, "off%d" % r, 11))
            res["on"].append(run(sha_new, "on%d" % r, 11))
        b = statistics.median(res["baseline"])
        print("batch script, one admit per call, %d calls x %d rounds (server us/call):"
              % (a.calls, a.rounds))
        for k, v in res.items():
            print("  %-9s median %7.2f  (min %.2f, max %.2f)  x%.2f of %s"
                  % (k, statistics.median(v), min(v), max(v), statistics.median(v) / b,
                     a.baseline))
    finally:
        stop()


if __name__ == "__main__":
    main()
