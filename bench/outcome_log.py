"""The outcome log's own cost (issue 17): CPU per message of what the relay writes ahead
for a message admitted on a lease and answered OK (an S and a P record, and a tenth of a
call's C and A records: calls carry about ten messages at window 10), measured alone,
in-process, without the reactor.

    .venv/bin/python bench/outcome_log.py [--count 200000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from twisted.internet import task  # noqa: E402

from proxyd.store.ledger.ops import LEASED, Queued  # noqa: E402
from proxyd.store.ledger.wal import OutcomeLog  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200_000)
    n = ap.parse_args().count
    wal = OutcomeLog(tempfile.mkdtemp(prefix="proxyd-wal-bench-"), "bench", task.Clock(),
                     fsync_s=3600)
    t0, c0 = os.times(), time.process_time()
    for i in range(0, n, 10):
        ids = ["7ef23a1a230b5f6bc%08x" % (i + k) for k in range(10)]
        for m in ids:
            wal.sent("acme", [m], 5, "13800138000")
        for m in ids:
            wal.part("acme", m, True, "up=op id=6618e46b30a64", 5, "13800138000")
        wal.call("t%d" % i, "acme", [Queued(LEASED, "g\x1f5\x1fn\x1f10\x1f" + "x" * 400,
                                            None, ids)])
        wal.ack("t%d" % i)
    cpu, t1 = time.process_time() - c0, os.times()
    wal.close()
    print("outcome log: %.2f us CPU per message (user %.2f, system %.2f), %d messages"
          % (cpu / n * 1e6, (t1.user - t0.user) / n * 1e6, (t1.system - t0.system) / n * 1e6,
             n))


if __name__ == "__main__":
    main()
